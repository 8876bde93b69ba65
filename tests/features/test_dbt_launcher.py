"""The dbt launcher that dagster-dbt calls answers `--version` locally (dagster-dbt parses it at start-up)."""

import re
import subprocess

import dbt.version

from pipeline.features.dbt_cli import dbt_executable


def test_version_is_answered_without_looking_up_pypi():
    env = {"PATH": "/usr/bin:/bin", "HTTPS_PROXY": "http://127.0.0.1:9", "HTTP_PROXY": "http://127.0.0.1:9"}
    done = subprocess.run([str(dbt_executable()), "--version"], capture_output=True, text=True, timeout=60, env=env)
    assert done.returncode == 0, done.stderr
    assert re.search(r"(\d+\.\d+\.\d+)", done.stdout).group(1) == dbt.version.__version__
    assert "Update available" not in done.stdout and "latest" not in done.stdout
