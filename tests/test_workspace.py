"""The code location loads the way `make ui` loads it (workspace.yaml, DAGSTER_HOME with dagster.yaml)."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]


def test_workspace_loads_with_dagster_cli(tmp_path):
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(PROJECT_ROOT / "dagster.yaml", home / "dagster.yaml")
    env = dict(os.environ, DAGSTER_HOME=str(home), DATA_DIR=str(tmp_path / "data"))
    done = subprocess.run(
        [str(Path(sys.executable).parent / "dagster"), "definitions", "validate", "-w", "workspace.yaml"],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "Validation successful" in done.stdout + done.stderr
    assert not (PROJECT_ROOT / "tmp").exists()


def test_telemetry_is_off():
    assert "enabled: false" in (PROJECT_ROOT / "dagster.yaml").read_text().split("telemetry:")[1].splitlines()[1]
    dbt_project = (PROJECT_ROOT / "dbt_features" / "dbt_project.yml").read_text()
    assert "send_anonymous_usage_stats: false" in dbt_project
