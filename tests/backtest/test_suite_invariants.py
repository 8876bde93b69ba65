"""The baseline suite on a small demo-like warehouse: account invariants on every run, liquidations as metrics,
the per-symbol maintenance margin, the family column (and its migration), the logistic regression's
out-of-sample start."""

from __future__ import annotations

import json
import re

import duckdb
import numpy as np
import pytest

from pipeline.core.costs import CostModel
from pipeline.backtest.metrics import drawdown
from pipeline.backtest.reports import out_of_sample_mask, run_report_html
from pipeline.backtest.tables import store_runs
from pipeline.backtest.baselines import run_baseline_suite, summary_markdown
from pipeline.config import Settings
from pipeline.warehouse import Warehouse

N_BARS = 1200


@pytest.fixture(scope="module")
def suite_result(tmp_path_factory, market_factory, store_market_rows, funding_rows):
    """Two markets: BTCUSDT with a learnable signal, ETHUSDT whose longs pay 1 % funding every 8 hours."""
    tmp = tmp_path_factory.mktemp("suite")
    wh = Warehouse(tmp / "warehouse.duckdb")
    wh.ensure_schema()
    store_market_rows(wh, market_factory("BTCUSDT", N_BARS, 11, signal=0.004))
    store_market_rows(wh, market_factory("ETHUSDT", N_BARS, 12))
    wh.replace_rows("raw.funding", funding_rows("ETHUSDT", N_BARS, 0.01), "symbol = ?", ["ETHUSDT"])
    settings = Settings(data_dir=tmp, symbols=("BTCUSDT", "ETHUSDT"), intervals=("60",), start="2023-01-01",
                        maintenance_margin="0.01,BTCUSDT=0.005")
    return wh, settings, run_baseline_suite(wh, settings, log=lambda m: None)


def test_equity_never_below_zero_and_drawdown_never_below_minus_100_on_every_run(suite_result):
    _, _, result = suite_result
    assert len(result.runs) == 12  # 2 markets x (3 benchmarks, MA, the regression, the window regression)
    for r in result.runs:
        eq = r.result.equity
        assert np.all(eq >= 0.0), (r.run_id, float(eq.min()))
        assert drawdown(np.r_[r.result.initial_equity, eq]).min() >= -1.0, r.run_id
        assert r.metrics["max_drawdown"] >= -1.0 and r.metrics["final_equity"] >= 0.0


def test_liquidations_are_counted_stored_and_shown(suite_result):
    wh, _, result = suite_result
    by = {(r.strategy, r.symbol): r for r in result.runs}
    perp, spot = by["buy_and_hold", "ETHUSDT"], by["buy_and_hold_spot", "ETHUSDT"]
    # 1 % funding every 8 hours drains the perpetual long into liquidation; spot pays no funding
    assert perp.metrics["n_liquidations"] == 1 == perp.result.n_liquidations
    assert spot.metrics["n_liquidations"] == 0 and by["buy_and_hold", "BTCUSDT"].metrics["n_liquidations"] == 0
    for r in result.runs:
        reasons = r.result.trades_table()["exit_reason"]
        assert r.metrics["n_liquidations"] == np.count_nonzero(reasons == "liquidation") == r.result.n_liquidations
    stored = wh.query("select value from backtest.metrics where run_id = ? and metric = 'n_liquidations'",
                      [perp.run_id])
    assert stored["value"].to_list() == [1.0]
    row = [line for line in summary_markdown(result.runs).splitlines() if line.startswith("| buy_and_hold | ")
           and "ETHUSDT" in line][0]
    assert row.split("|")[10].strip() == "1"  # the liquidations column
    assert "| liquidations |" in summary_markdown(result.runs)
    page = run_report_html(perp)
    table = page[page.index("<h2>Metrics</h2>"):]
    table = table[:table.index("</table>")]
    heads = re.findall(r"<th[^>]*>(.*?)</th>", table)
    cells = re.findall(r"<td[^>]*>(.*?)</td>", re.findall(r'<tr><td class="l">.*?</tr>', table)[0])
    assert cells[heads.index("n_liquidations")] == "1"  # the run's own row of the metrics table
    assert "<th>liquidations</th>" in result.comparison_report.read_text()


def test_each_symbol_trades_with_its_own_maintenance_margin(suite_result):
    _, settings, result = suite_result
    rates = {r.symbol: r.config["costs"]["maintenance_margin_rate"] for r in result.runs}
    assert rates == {"BTCUSDT": 0.005, "ETHUSDT": 0.01}
    assert CostModel.from_settings(settings, "ETHUSDT").maintenance_margin_rate == 0.01
    assert CostModel.from_settings(settings).maintenance_margin_rate == 0.01  # no symbol: the default rate


def test_runs_table_has_the_family_column(suite_result):
    wh, _, result = suite_result
    stored = dict(wh.query("select run_id, family from backtest.runs").iter_rows())
    assert stored == {r.run_id: r.family for r in result.runs}
    assert {stored[r.run_id] for r in result.runs if r.strategy.startswith("buy_and_hold")} == {"benchmark"}


def test_logistic_regression_records_its_out_of_sample_start(suite_result):
    _, _, result = suite_result
    lr = next(r for r in result.runs if r.strategy == "logistic_regression" and r.symbol == "BTCUSDT")
    first = int(lr.metrics["first_test_index"])
    assert 0 < first < N_BARS
    target_free = lr.result.position[:first]
    assert np.all(target_free == 0.0)  # no prediction, no position before the first test block
    assert np.any(lr.result.position[first:] != 0.0)
    mask = out_of_sample_mask(lr)
    np.testing.assert_array_equal(mask, np.arange(N_BARS) >= first)
    page = run_report_html(lr)
    assert f"out of sample ({N_BARS - first} of {N_BARS} bars)" in page and "grey: in sample" in page


def test_store_adds_the_family_column_to_an_old_runs_table(suite_result, tmp_path):
    _, _, result = suite_result
    path = tmp_path / "old.duckdb"
    with duckdb.connect(str(path)) as con:  # backtest.runs as warehouses written before the column had it
        con.execute("create schema backtest")
        con.execute("""create table backtest.runs (run_id varchar primary key, strategy varchar not null,
                       symbol varchar not null, interval varchar not null, config json, model_ids varchar[],
                       data_fingerprint varchar, start_ts timestamp, end_ts timestamp, report_path varchar,
                       created_at timestamp not null default current_timestamp)""")
        con.execute("insert into backtest.runs (run_id, strategy, symbol, interval) values ('old', 'x', 'BTCUSDT', '60')")
    wh = Warehouse(path)
    store_runs(wh, result.runs[:2])
    rows = wh.query("select run_id, family from backtest.runs order by run_id")
    assert dict(rows.iter_rows()) == {"old": None, **{r.run_id: r.family for r in result.runs[:2]}}
    wh.ensure_schema()  # the migration is idempotent
    assert wh.query("select count(*) as n from backtest.runs")["n"][0] == 3
    config = wh.query("select config from backtest.runs where run_id = ?", [result.runs[0].run_id])["config"][0]
    assert json.loads(config)["family"] == result.runs[0].family


@pytest.mark.parametrize("value, rates", [
    ("0.005", {"BTCUSDT": 0.005, "SOLUSDT": 0.005}),
    ("SOLUSDT=0.01", {"BTCUSDT": 0.005, "SOLUSDT": 0.01}),
    ("0.02, BTCUSDT=0.005", {"BTCUSDT": 0.005, "SOLUSDT": 0.02}),
])
def test_maintenance_margin_setting_from_the_environment(value, rates):
    s = Settings.from_env({"CONVTRADE_MAINTENANCE_MARGIN": value})
    assert {sym: CostModel.from_settings(s, sym).maintenance_margin_rate for sym in rates} == rates
    assert Settings().maintenance_margin_rate("ANYUSDT") == 0.005


@pytest.mark.parametrize("value, message", [
    ("abc", r"CONVTRADE_MAINTENANCE_MARGIN: 'abc' is not a rate or SYMBOL=rate"),
    ("btc=0.01", r"'btc' is not an exchange symbol"),
    ("1.0", r"'1.0': the rate must be a fraction of position value in \[0, 1\)"),
    ("-0.01", r"the rate must be a fraction"),
    ("nan", r"the rate must be a fraction"),
    ("0.01,0.02", r"one default rate at most"),
    ("BTCUSDT=0.01,BTCUSDT=0.02", r"BTCUSDT is given twice"),
])
def test_bad_maintenance_margin_is_refused_with_the_setting_named(value, message):
    with pytest.raises(ValueError, match=message):
        Settings.from_env({"CONVTRADE_MAINTENANCE_MARGIN": value})
