"""Shared fixtures: a temporary warehouse and the real Bybit files in ../shared/data."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from pipeline.warehouse import Warehouse

# The virtualenv's console scripts (dbt, dagster) must be found even when pytest
# is called by path without activating the environment.
_BIN = str(Path(sys.executable).parent)
if _BIN not in os.environ.get("PATH", "").split(os.pathsep):
    os.environ["PATH"] = _BIN + os.pathsep + os.environ.get("PATH", "")
os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DAGSTER_DISABLE_TELEMETRY", "1")

PROJECT_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("CONVTRADE_SHARED_DATA", PROJECT_ROOT.parent / "shared" / "data"))


@pytest.fixture
def shared_data() -> Path:
    """The folder of real Bybit exports; the test skips cleanly when it is absent."""
    if not (SHARED_DATA / "bybit_BTCUSDT_60.csv.gz").exists():
        pytest.skip(f"real market data not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture
def warehouse(tmp_path: Path) -> Warehouse:
    """An empty warehouse file with every table created."""
    wh = Warehouse(tmp_path / "warehouse.duckdb")
    wh.ensure_schema()
    return wh
