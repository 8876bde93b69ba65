"""Warehouse rows (idempotent), self-contained reports, the baseline suite and the Dagster asset."""

from __future__ import annotations

import re
from pathlib import Path

import dagster as dg
import numpy as np
import polars as pl
import pytest

from assets.backtests import backtest_baselines
from pipeline.backtest.costs import CostModel
from pipeline.backtest.engine import prepare_inputs
from pipeline.backtest.reports import monthly_returns, write_reports
from pipeline.backtest.runs import add_overfitting_statistics, run_baselines
from pipeline.backtest.store import store_runs
from pipeline.backtest.suite import backtest_baselines as suite
from pipeline.config import Settings
from pipeline.market.schemas import CANDLE_SCHEMA, FUNDING_SCHEMA
from assets.resources import SettingsResource, default_resources
from pipeline.warehouse import Warehouse

H = 3_600_000
START_MS = 1_704_067_200_000  # 2024-01-01


def candles_frame(symbol: str, n: int, seed: int) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    c = 40_000 * np.exp(np.cumsum(rng.normal(0, 0.006, n)))
    o = np.r_[40_000.0, c[:-1]]
    ts = (START_MS + np.arange(n) * H) * 1000
    return pl.DataFrame(
        {"symbol": symbol, "interval": "60", "ts": pl.Series(ts).cast(pl.Datetime("us")), "open": o,
         "high": np.maximum(o, c) * 1.002, "low": np.minimum(o, c) * 0.998, "close": c,
         "volume": rng.uniform(100, 200, n), "turnover": None, "source": "test"}
    ).cast(CANDLE_SCHEMA)


def funding_frame(symbol: str, n_bars: int) -> pl.DataFrame:
    ts = (START_MS + np.arange(0, n_bars, 8) * H) * 1000
    return pl.DataFrame(
        {"symbol": symbol, "ts": pl.Series(ts).cast(pl.Datetime("us")), "funding_rate": 0.0001, "source": "test"}
    ).cast(FUNDING_SCHEMA)


def seed(wh: Warehouse, symbol: str, n: int, seed_: int) -> None:
    wh.replace_rows("raw.candles", candles_frame(symbol, n, seed_), "symbol = ?", [symbol])
    wh.replace_rows("raw.funding", funding_frame(symbol, n), "symbol = ?", [symbol])


@pytest.fixture(scope="module")
def runs():
    df = candles_frame("BTCUSDT", 1500, 1)
    inp = prepare_inputs(df["ts"].to_numpy(), *(df[k].to_numpy() for k in ("open", "high", "low", "close", "volume")))
    out = run_baselines("BTCUSDT", "60", inp, CostModel())
    add_overfitting_statistics(out)
    return out


def test_store_is_idempotent_and_matches_the_runs(runs, warehouse):
    first = store_runs(warehouse, runs)
    snapshot = {t: warehouse.query(f"select * exclude (created_at) from {t} order by all") if t == "backtest.runs"
                else warehouse.query(f"select * from {t} order by all") for t in first}
    second = store_runs(warehouse, runs)
    assert first == second
    for table, before in snapshot.items():
        after = (warehouse.query(f"select * exclude (created_at) from {table} order by all") if table == "backtest.runs"
                 else warehouse.query(f"select * from {table} order by all"))
        assert after.equals(before), table
    lr = next(r for r in runs if r.strategy == "logistic_regression")
    eq = warehouse.query("select equity, position from backtest.equity where run_id = ? order by ts", [lr.run_id])
    np.testing.assert_array_equal(eq["equity"].to_numpy(), lr.result.equity)
    n_trades = warehouse.query("select count(*) as n from backtest.trades where run_id = ?", [lr.run_id])["n"][0]
    assert n_trades == lr.result.n_trades
    sharpe = warehouse.query("select value from backtest.metrics where run_id = ? and metric = 'sharpe'", [lr.run_id])
    assert sharpe["value"][0] == pytest.approx(lr.metrics["sharpe"])
    assert warehouse.query("select count(*) as n from backtest.runs")["n"][0] == len(runs)


def test_reports_are_self_contained(runs, tmp_path):
    comparison = write_reports(runs, tmp_path)
    text = comparison.read_text()
    assert "<script" not in text and not re.search(r'(src|href)="https?:', text)
    for r in runs:
        page = Path(r.report_path).read_text()
        assert not re.search(r'(src|href)="https?:', page)
        assert page.count("data:image/png;base64,") >= (5 if r.classification else 4)
        assert Path(r.report_path).name in text  # linked from the comparison
    years, mat = monthly_returns(runs[0].result.ts_ms, runs[0].result.equity, runs[0].result.initial_equity)
    assert years == [2024] and np.isfinite(mat[0, :3]).all()
    # compounding the monthly returns gives the total return
    assert np.nanprod(1 + mat) - 1 == pytest.approx(runs[0].metrics["total_return"])


def test_suite_rejects_bad_candles_without_writing_reports(tmp_path):
    wh = Warehouse(tmp_path / "warehouse.duckdb")
    wh.ensure_schema()
    bad = candles_frame("BTCUSDT", 400, 2).with_columns(
        pl.when(pl.int_range(pl.len()) == 123).then(0.0).otherwise(pl.col("close")).alias("close"))
    wh.replace_rows("raw.candles", bad, "true")
    settings = Settings(data_dir=tmp_path, symbols=("BTCUSDT",), intervals=("60",), start="2023-01-01")
    with pytest.raises(ValueError, match=r"close\[123\]=0\.0 at ts=2024-01-06T03:00"):
        suite(wh, settings, log=lambda m: None)
    assert not settings.reports_dir.exists()
    assert wh.query("select count(*) as n from backtest.runs")["n"][0] == 0


def test_suite_uses_warehouse_features_when_present(tmp_path):
    from pipeline.features.columns import MODEL_INPUT_COLUMNS

    wh = Warehouse(tmp_path / "warehouse.duckdb")
    wh.ensure_schema()
    seed(wh, "BTCUSDT", 800, 3)
    rng = np.random.default_rng(4)
    feats = candles_frame("BTCUSDT", 800, 3).select("symbol", "interval", "ts").with_columns(
        [pl.Series(c, rng.normal(size=800)) for c in MODEL_INPUT_COLUMNS])
    with wh.connect() as con:
        con.register("f", feats)
        con.execute("create table features.candle_features as select * from f")
    settings = Settings(data_dir=tmp_path, symbols=("BTCUSDT",), intervals=("60",), start="2023-01-01")
    result = suite(wh, settings, log=lambda m: None)
    lr = next(r for r in result.runs if r.strategy == "logistic_regression")
    assert lr.config["features"] == "features.candle_features"


def test_asset_materializes_baselines_and_reports(tmp_path):
    wh = Warehouse(tmp_path / "warehouse.duckdb")
    wh.ensure_schema()
    seed(wh, "BTCUSDT", 1200, 5)
    seed(wh, "ETHUSDT", 50, 6)  # too short: skipped with a message
    resources = default_resources(SettingsResource(data_dir=str(tmp_path), symbols="BTCUSDT,ETHUSDT",
                                                   intervals="60", start="2023-06-01"))
    for _ in range(2):  # a rerun replaces the same rows
        result = dg.materialize([backtest_baselines], resources=resources)
        assert result.success
    mat = result.get_asset_materialization_events()[0].materialization
    meta = mat.metadata
    assert meta["runs"].value == 4
    assert "| logistic_regression | BTCUSDT | 60 |" in meta["summary"].value
    assert Path(meta["comparison_report"].value).exists()
    assert Path(meta["comparison_report"].value).parent == tmp_path / "reports" / "backtests"
    assert "ETHUSDT" in meta["skipped"].value
    counts = wh.query("select (select count(*) from backtest.runs) as runs, (select count(*) from backtest.equity) as eq")
    assert counts["runs"][0] == 4 and counts["eq"][0] == 4 * 1200 == meta["rows_equity"].value
    paths = wh.query("select report_path from backtest.runs")["report_path"].to_list()
    assert all(Path(p).exists() for p in paths)
