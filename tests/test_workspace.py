"""The code location loads the way `make ui` loads it (workspace.yaml, DAGSTER_HOME with dagster_instance.yaml as its dagster.yaml)."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parents[1]


def test_workspace_loads_with_dagster_cli(tmp_path):
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(PROJECT_ROOT / "dagster_instance.yaml", home / "dagster.yaml")
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
    assert "enabled: false" in (PROJECT_ROOT / "dagster_instance.yaml").read_text().split("telemetry:")[1].splitlines()[1]
    dbt_project = (PROJECT_ROOT / "dbt_features" / "dbt_project.yml").read_text()
    assert "send_anonymous_usage_stats: false" in dbt_project


def test_importing_the_definitions_runs_no_subprocess_and_sets_no_environment(tmp_path):
    code = (
        "import os, subprocess, sys\n"
        "before = dict(os.environ)\n"
        "real_popen = subprocess.Popen\n"
        "def refuse(args, *a, **k):\n"
        "    # third-party imports may probe the platform (`file -b python`); dbt or dagster may not run\n"
        "    if 'dbt' in str(args) or 'dagster' in str(args):\n"
        "        raise AssertionError(f'dbt/dagster subprocess at import: {args!r}')\n"
        "    return real_popen(args, *a, **k)\n"
        "subprocess.Popen = refuse\n"
        "import assets.definitions\n"
        "changed = {k for k in set(before) | set(os.environ) if before.get(k) != os.environ.get(k)\n"
        "           and k.startswith(('CONVTRADE_', 'DBT_', 'DAGSTER_', 'DATA_DIR'))}\n"
        "print('CHANGED', sorted(changed))\n"
    )
    env = dict(os.environ, DAGSTER_HOME=str(tmp_path), DATA_DIR=str(tmp_path / "data"))
    env.pop("DAGSTER_IS_DEV_CLI", None)
    done = subprocess.run([sys.executable, "-c", code], cwd=PROJECT_ROOT, env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "CHANGED []" in done.stdout, done.stdout[-2000:]


CONTRACTS = ("pipeline/ is plain Python: no Dagster, no dagster-dbt, no assets/",
             "pipeline/ layers: imports run one way, down", "pipeline/ has no import cycle")


def _lint_imports(root: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(Path(sys.executable).parent / "lint-imports")], cwd=root,
                          env={**os.environ, "PYTHONPATH": str(root)}, capture_output=True, text=True, timeout=300)


def test_pipeline_has_no_dagster_import_no_upward_import_and_no_cycle():
    """The import-linter contracts in pyproject.toml (also run by `make test`) hold."""
    done = _lint_imports(PROJECT_ROOT)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert f"Contracts: {len(CONTRACTS)} kept, 0 broken" in done.stdout, done.stdout[-3000:]
    for name in CONTRACTS:
        assert f"{name} KEPT" in done.stdout


@pytest.mark.parametrize("module, probe, broken", [
    ("pipeline/core/splits.py", "import pipeline.config", CONTRACTS[1]),  # the floor imports a layer above it
    ("pipeline/market/stored.py", "import pipeline.models.zoo", CONTRACTS[1]),  # independent siblings
    ("pipeline/backtest/engine.py", "import pipeline.backtest.baselines", CONTRACTS[2]),  # a circle in a package
])
def test_the_layer_contracts_catch_an_upward_import_and_a_cycle(tmp_path, module, probe, broken):
    """The contracts are not vacuous: one added import in a copy of the tree breaks the one it should."""
    for part in ("pipeline", "assets"):
        shutil.copytree(PROJECT_ROOT / part, tmp_path / part, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(PROJECT_ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    path = tmp_path / module
    path.write_text(path.read_text() + f"\n{probe}  # probe\n")
    done = _lint_imports(tmp_path)
    assert done.returncode != 0, done.stdout[-3000:]
    assert f"{broken} BROKEN" in done.stdout, done.stdout[-3000:]


def test_partition_range_tags_reach_the_asset():
    """The one place that names Dagster's partition-range run tags: fails when an upgrade renames them."""
    import dagster as dg

    from assets.definitions import partition_range_tags

    days = dg.DailyPartitionsDefinition(start_date="2025-01-01", end_date="2025-01-10")
    seen = {}

    @dg.asset(partitions_def=days, backfill_policy=dg.BackfillPolicy.single_run())
    def probe(context: dg.AssetExecutionContext) -> None:
        seen["range"] = context.partition_key_range
        seen["keys"] = context.partition_keys

    assert dg.materialize([probe], tags=partition_range_tags("2025-01-02", "2025-01-05")).success
    assert (seen["range"].start, seen["range"].end) == ("2025-01-02", "2025-01-05")
    assert seen["keys"] == ["2025-01-02", "2025-01-03", "2025-01-04", "2025-01-05"]
