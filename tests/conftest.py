"""Shared fixtures: a temporary warehouse and the real Bybit files in ../shared/data."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pipeline.warehouse import Warehouse

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
