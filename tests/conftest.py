"""Shared fixtures: a temporary warehouse, the real Bybit files in ../shared/data and a headless Chromium."""

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
os.environ.setdefault("DAGSTER_DISABLE_TELEMETRY", "1")
# A convtrade.yaml beside the project (a user's settings file) never reaches the tests: they set what they need.
os.environ.setdefault("CONVTRADE_CONFIG", "")

PROJECT_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("CONVTRADE_SHARED_DATA", PROJECT_ROOT.parent / "shared" / "data"))
CHROMIUM = Path("/usr/bin/chromium")  # Debian's chromium (.ci/run installs it), driven by Playwright
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture
def one_torch_thread():
    """Tiny models run faster on one torch thread (no OpenMP hand-offs), and the suite shares 2 cores."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


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


def _browser_missing(what: str) -> None:
    """Skip the browser test, except under CI, where a missing browser is a failure."""
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"{what} is missing under CI (.ci/run installs it)")
    pytest.skip(f"{what} is not installed; the browser test needs it")


@pytest.fixture(scope="module")
def chromium():
    """A launched headless Chromium (Playwright ``Browser``) for a module's browser tests, closed after them."""
    if not CHROMIUM.exists():
        _browser_missing(f"{CHROMIUM} (apt-get install -y chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _browser_missing("the playwright package (make setup installs it)")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()
