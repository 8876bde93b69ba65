"""Interactive backtest reports: derived costs, per-year table, trade list, safe names, and a headless browser."""

from __future__ import annotations

import math
import os
import re
from pathlib import Path

import numpy as np
import pytest

from pipeline.core.costs import CostModel
from pipeline.backtest.engine import prepare_inputs
from pipeline.backtest.reports import (costs_per_bar, display_index, gross_equity, out_of_sample_mask,
                                       report_file_name, write_reports, year_table)
from pipeline.backtest.risk import RiskRules
from pipeline.backtest.evaluation import add_overfitting_statistics, evaluate
from pipeline.backtest.tables import store_runs

H4 = 4 * 3_600_000
START_MS = 1_727_740_800_000  # 2024-10-01: the runs span two calendar years
N = 900  # 150 days of 4h bars
BARS_PER_YEAR = 365 * 6


@pytest.fixture(scope="module")
def report_market():
    rng = np.random.default_rng(7)
    c = 50_000 * np.exp(np.cumsum(rng.normal(0, 0.01, N)))
    o = np.r_[50_000.0, c[:-1]]
    ts = START_MS + np.arange(N) * H4
    funding = np.where(np.arange(N) % 2 == 0, 0.0001, 0.0)
    inputs = prepare_inputs(ts, o, np.maximum(o, c) * 1.003, np.minimum(o, c) * 0.997, c,
                            rng.uniform(100, 200, N), funding)
    return inputs


@pytest.fixture(scope="module")
def runs(report_market):
    market = report_market
    costs = CostModel()
    c = market.close
    fast = np.convolve(c, np.ones(6) / 6)[:N]
    slow = np.convolve(c, np.ones(30) / 30)[:N]
    momentum = np.where(np.arange(N) < 30, 0.0, np.sign(fast - slow))  # long and short
    oos_start = "2024-12-15T00:00"
    out = [
        evaluate("buy_and_hold", "BTCUSDT", "240", market, np.ones(N), {}, costs, RiskRules(), family="benchmark"),
        evaluate("momentum", "BTCUSDT", "240", market, momentum, {"fast": 6, "slow": 30}, costs, RiskRules()),
        evaluate("fitted", "BTCUSDT", "240", market, np.where(np.arange(N) % 40 < 20, 0.5, 0.0),
                 {"n_folds": 2, "oos_start": oos_start}, costs, RiskRules()),
    ]
    add_overfitting_statistics(out)
    return out


def test_derived_costs_match_the_run_totals_and_an_independent_slippage(runs, report_market):
    market = report_market
    for run in runs:
        costs = costs_per_bar(run)
        assert costs["fees"].sum() == pytest.approx(run.result.fees_paid, rel=1e-12)
        assert costs["funding"].sum() == pytest.approx(run.result.funding_paid, rel=1e-12)
        gross = gross_equity(run, costs)
        paid = run.result.fees_paid + run.result.funding_paid + costs["slippage"].sum()
        assert gross[-1] - run.result.equity[-1] == pytest.approx(paid, rel=1e-12)
    # buy and hold buys once at the open of bar 1: slippage = quantity * open * s, fee = quantity * fill * fee rate
    bh = runs[0]
    qty = bh.result.position[1] * bh.result.equity[1] / bh.result.close[1]
    s = CostModel().slippage
    costs = costs_per_bar(bh)
    assert costs["slippage"][1] == pytest.approx(qty * market.open[1] * s, rel=1e-9)
    assert costs["fees"][1] == pytest.approx(qty * market.open[1] * (1 + s) * CostModel().fee_rate, rel=1e-9)
    assert np.count_nonzero(costs["fees"]) == 1  # the open trade paid no exit fee


def test_year_table_compounds_to_the_total_and_matches_numpy(runs):
    run = runs[1]
    years = year_table(run)
    assert [y["year"] for y in years] == [2024, 2025]
    assert np.prod([1 + y["return"] for y in years]) - 1 == pytest.approx(run.metrics["total_return"], rel=1e-9)
    assert sum(y["trades"] for y in years) == run.result.n_trades
    yr = run.result.ts_ms >= 1_735_689_600_000  # 2025-01-01
    eq = run.result.equity
    r = eq[yr] / np.r_[eq[~yr][-1], eq[yr][:-1]] - 1
    assert years[1]["sharpe"] == pytest.approx(r.mean() / r.std(ddof=1) * math.sqrt(BARS_PER_YEAR), rel=1e-9)
    path = np.r_[eq[~yr][-1], eq[yr]]
    assert years[1]["max_drawdown"] == pytest.approx((path / np.maximum.accumulate(path) - 1).min(), rel=1e-9)
    assert years[1]["exposure"] == pytest.approx(np.mean(run.result.position[yr] != 0))


def test_out_of_sample_span_and_display_index(runs):
    mask = out_of_sample_mask(runs[2])
    assert mask is not None and 0 < mask.sum() < N
    assert runs[2].result.ts_ms[mask].min() == 1_734_220_800_000  # 2024-12-15
    assert out_of_sample_mask(runs[0]) is None
    x = np.sin(np.arange(100_000) / 50.0) + np.arange(100_000) * 1e-5
    x[12_345] = -5.0
    idx = display_index(x.size, [x], max_points=2000)
    assert idx.size <= 2002 and idx[0] == 0 and idx[-1] == x.size - 1
    assert x[idx].min() == x.min() and x[idx].max() == x.max()


def test_report_file_names_stay_inside_the_folder(runs, tmp_path):
    assert report_file_name("../../etc/passwd") not in ("passwd.html",)
    for bad in ("../../x", "a/b", "..", "comparison", "ok\\x"):
        name = report_file_name(bad)
        assert "/" not in name and "\\" not in name and not name.startswith(".")
        assert (tmp_path / name).resolve().parent == tmp_path.resolve()
    assert report_file_name("comparison") != "comparison.html"
    assert report_file_name("a/b") != report_file_name("a_b")


def test_reports_open_in_headless_chromium(runs, warehouse, tmp_path, chromium):
    store_runs(warehouse, runs)
    comparison = write_reports(runs, tmp_path / "reports")
    pages = [Path(r.report_path) for r in runs] + [comparison]
    shared = tmp_path / "reports" / "plotly.min.js"  # the one copy; the pages are small
    assert shared.stat().st_size > 1_000_000 and all(p.stat().st_size < shared.stat().st_size / 4 for p in pages)
    shot = os.environ.get("REPORT_SCREENSHOT_DIR")
    for page_path in pages:
        markup = re.sub(r"<script[^>]*>.*?</script>", "", page_path.read_text(), flags=re.S)
        # one script file, the folder's own plotly.js by a relative path; everything else inline
        assert re.findall(r"<script[^>]*\ssrc=\"([^\"]+)\"", page_path.read_text()) == ["plotly.min.js"]
        assert not re.search(r'(src|href)=["\']?https?:', markup), page_path.name  # no link to the network
        page = chromium.new_page(viewport={"width": 1280, "height": 900})
        errors: list[str] = []
        page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.on("request", lambda req: errors.append(f"network request {req.url}")
                if not req.url.startswith(("file:", "data:", "about:")) else None)
        page.goto(page_path.as_uri())
        page.wait_for_function("document.querySelectorAll('.js-plotly-plot').length > 0 && "
                               "Array.from(document.querySelectorAll('.js-plotly-plot'))"
                               ".every(d => d.querySelector('svg.main-svg') && d.querySelectorAll('path.js-line, path.point').length > 0)",
                               timeout=15_000)
        n_charts = page.locator(".js-plotly-plot").count()
        assert n_charts == (3 if page_path != comparison else 1), page_path.name
        assert errors == [], (page_path.name, errors)
        run = next((r for r in runs if Path(r.report_path) == page_path), None)
        if run is not None:
            rows = page.locator("table.trades tbody tr").count()
            stored = warehouse.query("select count(*) as n from backtest.trades where run_id = ?", [run.run_id])["n"][0]
            assert rows == stored == run.result.n_trades, run.run_id
            # sorting by pnl (descending on the second click) puts the largest pnl first
            header = page.locator("table.trades thead th", has_text="pnl")
            header.click()
            header.click()
            first = float(page.locator("table.trades tbody tr").first.locator("td").nth(7).get_attribute("data-v"))
            assert first == pytest.approx(run.result.trades_table()["pnl"].max())
            if shot and run.strategy == "fitted":
                page.screenshot(path=str(Path(shot) / "report.png"), full_page=False)
        else:
            assert page.locator("table.strategies tbody tr").count() == len(runs)
            dsr_trials = page.locator("table.strategies tbody tr").nth(1).locator("td").nth(11).inner_text()
            assert dsr_trials == f"{runs[1].metrics['dsr_trials']:.0f}"
        page.close()


def test_a_reports_tree_shares_one_plotly_file_by_relative_paths(runs, tmp_path, chromium):
    """Reports in subfolders load the root's one plotly.js (``../plotly.min.js``): the tree opens offline
    from anywhere it is copied, and rewriting reports leaves the shared file alone."""
    root = tmp_path / "copied" / "reports"
    write_reports(runs, tmp_path / "reports" / "models", plotly_folder=tmp_path / "reports")
    shared = tmp_path / "reports" / "plotly.min.js"
    first = shared.stat().st_mtime_ns
    comparison = write_reports(runs, tmp_path / "reports" / "models", plotly_folder=tmp_path / "reports")
    assert shared.stat().st_mtime_ns == first  # unchanged content: not rewritten
    assert sorted(p.name for p in (tmp_path / "reports").rglob("*.js")) == ["plotly.min.js"]
    assert 'src="../plotly.min.js"' in comparison.read_text()
    import shutil

    shutil.copytree(tmp_path / "reports", root)  # moved as a whole (zipped, mailed)
    page = chromium.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("request", lambda req: errors.append(f"network request {req.url}")
            if not req.url.startswith(("file:", "data:", "about:")) else None)
    page.goto((root / "models" / "comparison.html").as_uri())
    page.wait_for_function("document.querySelectorAll('.js-plotly-plot svg.main-svg').length > 0", timeout=15_000)
    assert errors == []
    page.close()
