"""Warehouse rows (idempotent), self-contained reports, the baseline suite and the Dagster asset."""

from __future__ import annotations

import re
from pathlib import Path

import dagster as dg
import numpy as np
import polars as pl
import pytest

from assets.backtests import backtest_baselines
from assets.resources import SettingsResource, default_resources
from pipeline.core.costs import CostModel
from pipeline.backtest.engine import prepare_inputs
from pipeline.backtest.reports import monthly_returns, write_reports
from pipeline.backtest.evaluation import add_overfitting_statistics, run_market_baselines
from pipeline.backtest.tables import resolve_report_path, store_runs
from pipeline.backtest.baselines import run_baseline_suite as suite
from pipeline.backtest.baselines import summary_markdown as suite_summary
from pipeline.config import Settings
from pipeline.warehouse import Warehouse

STRATEGIES = ["buy_and_hold", "buy_and_hold_spot", "flat", "ma_momentum", "logistic_regression",
              "logistic_regression_window"]


@pytest.fixture
def runs(market_factory):
    m = market_factory("BTCUSDT", 1500, 1, signal=0.004)
    df = m.candles
    inp = prepare_inputs(df["ts"].to_numpy(), *(df[k].to_numpy() for k in ("open", "high", "low", "close", "volume")))
    out = run_market_baselines("BTCUSDT", "60", inp, CostModel(), labelled=m.labelled())
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
    assert lr.result.n_trades > 0
    eq = warehouse.query("select equity, position from backtest.equity where run_id = ? order by ts", [lr.run_id])
    np.testing.assert_array_equal(eq["equity"].to_numpy(), lr.result.equity)
    n_trades = warehouse.query("select count(*) as n from backtest.trades where run_id = ?", [lr.run_id])["n"][0]
    assert n_trades == lr.result.n_trades
    sharpe = warehouse.query("select value from backtest.metrics where run_id = ? and metric = 'sharpe'", [lr.run_id])
    assert sharpe["value"][0] == pytest.approx(lr.metrics["sharpe"])
    assert warehouse.query("select count(*) as n from backtest.runs")["n"][0] == len(runs)
    # every deflated Sharpe is stored beside its trials and the Sharpe variance it used; benchmarks have a PSR
    stored = warehouse.query(
        "select r.strategy, m.metric, m.value from backtest.metrics m join backtest.runs r using (run_id) "
        "where m.metric in ('deflated_sharpe', 'dsr_trials', 'dsr_sharpe_variance', 'psr', 'gross_sharpe')")
    have = {(row["strategy"], row["metric"]) for row in stored.iter_rows(named=True)}
    for strategy in ("ma_momentum", "logistic_regression"):
        assert {(strategy, k) for k in ("deflated_sharpe", "dsr_trials", "dsr_sharpe_variance", "gross_sharpe")} <= have
    assert ("buy_and_hold", "psr") in have and ("buy_and_hold", "deflated_sharpe") not in have
    family = warehouse.query("select config->>'family' as f from backtest.runs where run_id = ?", [lr.run_id])
    assert family["f"][0] == "logistic_regression"


def test_reports_load_nothing_but_their_folder(runs, tmp_path):
    comparison = write_reports(runs, tmp_path)
    text = comparison.read_text()

    def markup(html: str) -> str:  # the page outside its inline scripts (plotly's JS holds URL strings)
        return re.sub(r"<script[^>]*>.*?</script>", "", html, flags=re.S)

    # the folder is self-contained: the one script file is its own plotly.js, no markup fetches anything
    scripts = lambda page: re.findall(r"<script[^>]*\bsrc=\"([^\"]*)\"", page)  # noqa: E731
    assert (tmp_path / "plotly.min.js").is_file()
    assert scripts(text) == ["plotly.min.js"] and not re.search(r'(src|href)="https?:', markup(text))
    for r in runs:
        page = Path(r.report_path).read_text()
        assert scripts(page) == ["plotly.min.js"] and not re.search(r'(src|href)="https?:', markup(page))
        assert page.count("data:image/png;base64,") >= (4 if r.classification else 3)  # the rest are plotly charts
        assert Path(r.report_path).name in text  # linked from the comparison
    years, mat = monthly_returns(runs[0].result.ts_ms, runs[0].result.equity, runs[0].result.initial_equity)
    assert years == [2024] and np.isfinite(mat[0, :3]).all()
    # compounding the monthly returns gives the total return
    assert np.nanprod(1 + mat) - 1 == pytest.approx(runs[0].metrics["total_return"])


def test_suite_rejects_bad_candles_without_writing_reports(tmp_path, market_factory):
    wh = Warehouse(tmp_path / "warehouse.duckdb")
    wh.ensure_schema()
    bad = market_factory("BTCUSDT", 400, 2).candles.with_columns(
        pl.when(pl.int_range(pl.len()) == 123).then(0.0).otherwise(pl.col("close")).alias("close"))
    wh.replace_rows("raw.candles", bad, "true")
    settings = Settings(data_dir=tmp_path, symbols=("BTCUSDT",), intervals=("60",), start="2023-01-01")
    with pytest.raises(ValueError, match=r"close\[123\]=0\.0 at ts=2024-01-06T03:00"):
        suite(wh, settings, log=lambda m: None)
    assert not settings.reports_dir.exists()
    assert wh.query("select count(*) as n from backtest.runs")["n"][0] == 0


def test_suite_trains_on_features_labels_and_skips_without_them(tmp_path, market_factory, store_market_rows):
    wh = Warehouse(tmp_path / "warehouse.duckdb")
    wh.ensure_schema()
    market = market_factory("BTCUSDT", 900, 3, signal=0.004)
    store_market_rows(wh, market, features=False)
    settings = Settings(data_dir=tmp_path, symbols=("BTCUSDT",), intervals=("60",), start="2023-01-01")
    lines: list[str] = []
    result = suite(wh, settings, log=lines.append)
    assert [r.strategy for r in result.runs] == STRATEGIES[:-2]
    assert any("features.candle_features is not in the warehouse: logistic regression skipped" in x for x in lines)
    store_market_rows(wh, market)
    result = suite(wh, settings, log=lambda m: None)
    assert [r.strategy for r in result.runs] == STRATEGIES
    lr = result.runs[-2]
    assert lr.config["features"] == "features.candle_features" and lr.config["labels"] == "features.labels"
    assert lr.config["horizon"] == 1 and lr.classification is not None
    assert "DSR trials" in suite_summary(result.runs) and "Deflation over each strategy" in result.comparison_report.read_text()


def test_asset_materializes_baselines_and_reports(tmp_path, market_factory, store_market_rows):
    wh = Warehouse(tmp_path / "warehouse.duckdb")
    wh.ensure_schema()
    store_market_rows(wh, market_factory("BTCUSDT", 1200, 5))
    store_market_rows(wh, market_factory("ETHUSDT", 50, 6), features=False)  # too short: skipped with a message
    resources = default_resources(SettingsResource(data_dir=str(tmp_path), symbols="BTCUSDT,ETHUSDT",
                                                   intervals="60", start="2023-06-01"))
    for _ in range(2):  # a rerun replaces the same rows
        result = dg.materialize([backtest_baselines], resources=resources)
        assert result.success
    mat = result.get_asset_materialization_events()[0].materialization
    meta = mat.metadata
    assert meta["runs"].value == 6
    assert "| logistic_regression | logistic_regression | BTCUSDT | 60 |" in meta["summary"].value
    assert Path(meta["comparison_report"].value).exists()
    assert Path(meta["comparison_report"].value).parent == tmp_path / "reports" / "backtests"
    assert "ETHUSDT" in meta["skipped"].value
    counts = wh.query("select (select count(*) from backtest.runs) as runs, (select count(*) from backtest.equity) as eq")
    assert counts["runs"][0] == 6 and counts["eq"][0] == 6 * 1200 == meta["rows_equity"].value
    paths = wh.query("select report_path from backtest.runs")["report_path"].to_list()
    # stored relative to DATA_DIR (issue 17): the same runs in another folder store the same rows
    assert all(not Path(p).is_absolute() and resolve_report_path(p, tmp_path).exists() for p in paths)
