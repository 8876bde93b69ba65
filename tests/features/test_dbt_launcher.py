"""The dbt launcher that dagster-dbt calls answers `--version` locally (dagster-dbt parses it at start-up)."""

import re
import subprocess

import dbt.version
import pytest

from pipeline.dbt_runner.invoke import dbt_executable


def test_version_is_answered_without_looking_up_pypi():
    env = {"PATH": "/usr/bin:/bin", "HTTPS_PROXY": "http://127.0.0.1:9", "HTTP_PROXY": "http://127.0.0.1:9"}
    done = subprocess.run([str(dbt_executable()), "--version"], capture_output=True, text=True, timeout=60, env=env)
    assert done.returncode == 0, done.stderr
    assert re.search(r"(\d+\.\d+\.\d+)", done.stdout).group(1) == dbt.version.__version__
    assert "Update available" not in done.stdout and "latest" not in done.stdout


def test_gap_policy_reaches_the_dbt_process_as_its_environment(tmp_path):
    from pipeline.dbt_runner.invoke import environment_from_launcher_args, launcher_args

    args = launcher_args(tmp_path / "w.duckdb", "2025-01-01", None, ("fill", 6))
    rest, env = environment_from_launcher_args(["run", *args])
    assert rest == ["run"]
    assert (env["CONVTRADE_GAP_POLICY"], env["CONVTRADE_MAX_FILL_BARS"]) == ("fill", "6")
    assert env["CONVTRADE_FEATURES_START"] == "2025-01-01 00:00:00"
    _, inherited = environment_from_launcher_args(["run", *launcher_args(tmp_path / "w.duckdb")])
    assert "CONVTRADE_GAP_POLICY" not in inherited  # without the option, the process environment decides
    with pytest.raises(ValueError, match="--convtrade-gaps="):
        environment_from_launcher_args(["--convtrade-gaps=fill"])
