"""The verdict on a small warehouse: the regressions use the models' folds (the same split definition as
training), every strategy of a market is scored on the same bars, only current runs count, the selection reads
validation tails only, the regression follows CONVTRADE_HORIZON, and the page leads with the numbers."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from pipeline.backtest.baselines import market_grid_folds, run_baseline_suite
from pipeline.backtest.comparison import results_markdown, run_comparison
from pipeline.backtest.tables import store_runs
from pipeline.backtest.verdict import verdict_sentence
from pipeline.config import Settings
from pipeline.warehouse import Warehouse

SYMBOLS = ("BTCUSDT", "ETHUSDT", "SOLUSDT")
N_BARS = 1500


def _labels_with_volatility_and_horizon_4(wh: Warehouse) -> None:
    """The fixture's labels get a forward volatility (the models need one) and horizon-4 rows."""
    with wh.connect() as con:
        con.execute("update features.labels set fwd_volatility = abs(fwd_return) where fwd_return is not null")
        con.execute("""
            insert into features.labels
            select symbol, interval, ts, 4 as horizon, fwd_return,
                   case when fwd_return is null then null when fwd_return > 0.001 then 1
                        when fwd_return < -0.001 then -1 else 0 end::tinyint as direction,
                   abs(fwd_return) as fwd_volatility
            from (select symbol, interval, ts,
                         lead(close, 4) over (partition by symbol, interval order by ts) / close - 1 as fwd_return
                  from raw.candles)""")


@pytest.fixture(scope="module")
def warehouse(tmp_path_factory, market_factory, store_market_rows):
    tmp = tmp_path_factory.mktemp("verdict")
    wh = Warehouse(tmp / "warehouse.duckdb")
    wh.ensure_schema()
    for k, symbol in enumerate(SYMBOLS):
        store_market_rows(wh, market_factory(symbol, N_BARS, 40 + k, signal=0.003 if k == 0 else 0.0))
    _labels_with_volatility_and_horizon_4(wh)
    return wh, tmp


def _settings(tmp, **kw) -> Settings:
    return Settings(data_dir=tmp, symbols=SYMBOLS, intervals=("60",), start="2023-01-01", window=16,
                    bootstrap_samples=300, **kw)


def _fake_models(runs):
    """Two 'architectures' traded on the models' folds: the regressions' runs under model names, their equity
    perturbed on the test bars so that no model equals a baseline."""
    out = []
    rng = np.random.default_rng(0)
    for r in runs:
        if r.strategy in ("logistic_regression", "logistic_regression_window"):
            name = "tcn" if r.strategy == "logistic_regression" else "wavenet"
            first = int(r.metrics["first_test_index"])
            noise = np.zeros(r.result.equity.shape[0])
            noise[first:] = rng.normal(0, 0.002, noise.shape[0] - first)
            result = dataclasses.replace(r.result, equity=r.result.equity * np.exp(np.cumsum(noise)))
            out.append(dataclasses.replace(r, strategy=name, family="models", run_id=r.run_id.replace(r.strategy, name),
                                           result=result,
                                           metrics={**r.metrics, "selection_val_loss": 1.0 if name == "tcn" else 0.9}))
    return out


def _no_reports(out_dir):
    """The suite without its per-run HTML reports (tested elsewhere; they are most of its time)."""
    mp = pytest.MonkeyPatch()
    mp.setattr("pipeline.backtest.baselines.write_reports", lambda runs, out, extra="", **_: out)
    return mp


@pytest.fixture(scope="module")
def compared(warehouse):
    wh, tmp = warehouse
    settings = _settings(tmp)
    mp = _no_reports(tmp)
    try:
        suite = run_baseline_suite(wh, settings, log=lambda m: None)
    finally:
        mp.undo()
    store_runs(wh, _fake_models(suite.runs))
    # an older run of the regression on BTCUSDT (another config): history, never counted
    old = next(r for r in suite.runs if r.strategy == "logistic_regression" and r.symbol == "BTCUSDT")
    old = dataclasses.replace(old, run_id=old.run_id + "-old", config={**old.config, "note": "older"})
    store_runs(wh, [old])
    with wh.connect() as con:
        con.execute("update backtest.runs set created_at = created_at - interval 1 day where run_id = ?", [old.run_id])
    return settings, suite, run_comparison(wh, settings)


def test_regression_folds_are_the_models_folds(warehouse):
    """grid_folds over the baselines' time grid cuts the folds training cuts (time_folds on its window store)."""
    from pipeline.training.datasets import build_window_store, load_series
    from pipeline.training.recipe import TrainingConfig
    from pipeline.training.walk_forward import time_folds

    wh, tmp = warehouse
    settings = _settings(tmp)
    config = TrainingConfig.from_settings(settings, "tcn")
    series = [load_series(wh, s, "60", settings.horizon) for s in SYMBOLS]
    store = build_window_store(series, tmp / "artifacts", settings.window, settings.horizon)
    theirs = [(int(grid[fold.test[0]]), int(grid[fold.test[-1]])) for fold, _, _, _, grid in time_folds(store, config)]
    ours = [f.test for f in market_grid_folds(_labelled(wh, settings), settings, "60", settings.horizon)]
    assert ours == theirs and len(ours) == settings.n_folds


def test_every_strategy_of_a_market_is_scored_on_the_same_bars(compared):
    settings, suite, result = compared
    verdict = result.verdict
    assert {mv.symbol for mv in verdict.markets} == set(SYMBOLS) and verdict.pooled
    for mv in verdict.markets + verdict.pooled:
        strategies = {s.strategy for s in mv.scores}
        assert {"tcn", "wavenet", "logistic_regression", "logistic_regression_window", "ma_momentum", "buy_and_hold",
                "buy_and_hold_spot", "flat"} <= strategies
        spans = {(s.first_ts, s.last_ts, s.n_bars, s.returns.shape[0], int(s.ts_ms[0]), int(s.ts_ms[-1]))
                 for s in mv.scores}
        assert len(spans) == 1, (mv.symbol, spans)
        first, last, n, *_ = spans.pop()
        assert (first, last) == mv.span and n == mv.n_bars
    # the span runs from the first fold's first test bar to the last test bar of the models' folds
    lr = next(r for r in suite.runs if r.strategy == "logistic_regression" and r.symbol == "ETHUSDT")
    mv = next(m for m in verdict.markets if m.symbol == "ETHUSDT")
    assert mv.span == (int(lr.metrics["test_start_ms"]), int(lr.metrics["test_end_ms"]))
    assert lr.config["n_folds"] == settings.n_folds and lr.config["horizon"] == 1
    first = int(lr.metrics["first_test_index"])
    assert np.all(lr.result.position[:first] == 0)  # nothing before the first test bar is traded
    for r in suite.runs:  # the benchmarks carry the same span
        ref = next(x for x in suite.runs if x.strategy == "logistic_regression" and x.symbol == r.symbol)
        assert (r.metrics["test_start_ms"], r.metrics["test_end_ms"]) == (ref.metrics["test_start_ms"],
                                                                          ref.metrics["test_end_ms"])


def test_regression_has_its_out_of_sample_classification_figures(compared):
    _, suite, _ = compared
    for r in suite.runs:
        if r.strategy.startswith("logistic_regression"):
            for k in ("clf_log_loss", "clf_accuracy", "clf_macro_f1"):
                assert math.isfinite(r.metrics[k]), (r.strategy, k)
            assert r.bar_log_loss is not None and np.isfinite(r.bar_log_loss).sum() == r.metrics["clf_n_scored"]


def test_only_current_runs_count_and_older_ones_are_labelled_history(compared):
    _, _, result = compared
    btc = next(m for m in result.verdict.markets if m.symbol == "BTCUSDT")
    assert [h[0] for h in btc.history] == [r for r in [h[0] for h in btc.history] if r.endswith("-old")] != []
    assert sum(s.strategy == "logistic_regression" for s in btc.scores) == 1
    assert not any(s.run_id.endswith("-old") for s in btc.scores)
    assert "-old" not in result.markdown  # the per-run table holds current runs only
    html = result.report_path.read_text()
    assert "History, not counted" in html


def test_selection_on_validation_and_the_tests_are_there(compared):
    _, _, result = compared
    for mv in result.verdict.markets + result.verdict.pooled:
        assert mv.selected == "wavenet"  # the lower first-fold validation loss, whatever the test span says
        vals = {s.strategy: s.metrics.get("val_sharpe", math.nan) for s in mv.scores if s.kind != "model"}
        finite = {k: v for k, v in vals.items() if math.isfinite(v) and k != "flat"}
        assert mv.best_baseline == max(finite, key=finite.get)
        roles = {(t.model, t.role) for t in mv.sharpe_tests}
        assert roles == {(m, r) for m in ("tcn", "wavenet") for r in ("best baseline", "spot buy and hold")}
        for t in mv.sharpe_tests:
            assert t.test.ci_low <= t.test.difference <= t.test.ci_high and 0 < t.test.p_value <= 1
            assert t.p_holm >= t.test.p_value and t.test.resolvable > 0
        assert {i.model for i in mv.info_tests} == {"tcn", "wavenet"}
        assert all(i.test.lags >= 1 for i in mv.info_tests)


def test_the_page_leads_with_the_verdict_sentence_and_a_chart(compared):
    settings, _, result = compared
    sentence = verdict_sentence(result.verdict)
    mv = result.verdict.headline
    t = mv.test_of(mv.selected, "best baseline")
    assert sentence.startswith(f"On {mv.n_days:,} test days of BTCUSDT, ETHUSDT and SOLUSDT")
    assert f"{t.test.difference:.2f}".replace("-", "−") in sentence and "resolves differences of" in sentence
    html = result.report_path.read_text()
    body = html[html.index("<body>"):]
    assert body.index("<h2>Verdict") < body.index("<svg xmlns") < body.index("<table")
    assert body.count("<svg xmlns") == len(result.verdict.markets) + len(result.verdict.pooled)
    md = results_markdown(result, settings, "make evaluate", 1.0)
    assert md.index("## Verdict") < md.index("| strategy | family |") and sentence in md
    assert "0.000 |" not in md.split("## Verdict")[1].split("| strategy | family |")[0]


def test_regression_follows_convtrade_horizon(warehouse, monkeypatch):
    wh, tmp = warehouse
    monkeypatch.setenv("CONVTRADE_HORIZON", "4")
    settings = Settings.from_env(data_dir=tmp / "h4", symbols=SYMBOLS, intervals=("60",), start="2023-01-01",
                                 window=16)
    assert settings.horizon == 4
    import shutil

    (tmp / "h4").mkdir(exist_ok=True)
    shutil.copy(wh.path, tmp / "h4" / "warehouse.duckdb")
    monkeypatch.setattr("pipeline.backtest.baselines.write_reports", lambda runs, out, extra="", **_: out)
    suite = run_baseline_suite(Warehouse(tmp / "h4" / "warehouse.duckdb"), settings, log=lambda m: None)
    lrs = [r for r in suite.runs if r.strategy == "logistic_regression"]
    assert len(lrs) == len(SYMBOLS)
    folds = market_grid_folds(_labelled(Warehouse(tmp / "h4" / "warehouse.duckdb"), settings), settings, "60", 4)
    for r in lrs:
        assert r.config["horizon"] == 4 and r.classification is not None
        assert r.metrics["test_start_ms"] == folds[0].test[0] and r.metrics["test_end_ms"] == folds[-1].test[1]
    # purge = horizon: the first fold's validation tail ends 4 + embargo grid bars before its test block
    assert folds[0].validation[1] < folds[0].test[0]


def _labelled(wh, settings):
    from pipeline.backtest.baselines import load_labelled_features
    from pipeline.market.stored import load_candles

    out = []
    for s in SYMBOLS:
        candles = load_candles(wh, s, "60", settings.start)
        out.append((candles["ts"].dt.epoch("ms").to_numpy(),
                    load_labelled_features(wh, s, "60", candles, settings.horizon, lambda m: None)))
    return out
