"""Honesty of the trained models, end to end on small dbt-built synthetic warehouses.

* Planted pattern (``Settings.planted_pattern``): the synthetic market drifts each hour
  with the sign of the previous hour's return. Every sequence architecture, trained
  walk-forward by ``train_architecture`` and backtested by ``run_model_backtests``
  (the product's own path), must beat the majority class out of sample with a
  binomial p < 0.01 and make money after costs, on every symbol.
* Random walk (planted off): no architecture's backtest reaches a deflated Sharpe above 0.95.
* Leakage: candles changed after fold 0's last training label leave fold 0's weights and
  normalisation unchanged (same seed); candles changed after t leave every window and
  prediction at or before t unchanged.
* A retrain on other samples never resumes the previous training's checkpoint.

Sizes are the CI profile: 2 symbols, ~5 months of 1h bars, window 32 (the shortest window
every architecture accepts), 2 folds, 3 epochs of at most 4,000 windows, one torch thread.
The loss is unweighted cross-entropy (``class_weighting="none"``): the guarantee is raw
accuracy against the majority class, which inverse-frequency class weights trade away
for balanced recall. The test block is never tuned.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import tempfile
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch
from safetensors.torch import load_file

from pipeline.backtest.model_backtests import binomial_p_value, run_model_backtests
from pipeline.config import Settings
from pipeline.dbt_runner.invoke import run_dbt
from pipeline.market.ingest import build_source, ingest_candles
from pipeline.market.schemas import CANDLE_SCHEMA, conform
from pipeline.training.datasets import build_window_store, load_series, robust_stats
from pipeline.models.catalogue import sequence_model_names
from pipeline.training.artifacts import load_artifact
from pipeline.training.inference import predict
from pipeline.training.recipe import TrainingConfig
from pipeline.training.results import store_training
from pipeline.training.walk_forward import time_folds, train_architecture, train_fold
from pipeline.warehouse import Warehouse

SEQUENCE_ARCHITECTURES = sequence_model_names()

H = 3_600_000
SYMBOLS = ("ETHUSDT", "SOLUSDT")
START = dt.datetime(2024, 1, 1)
PLANTED_DAYS = 150
RANDOM_DAYS = 120
CONFIG = dict(window=32, n_folds=2, epochs=3, embargo=2, max_train_windows=4000, threads=1,
              class_weighting="none")
RANDOM_CONFIG = dict(CONFIG, epochs=1, max_train_windows=2000)
LEAK_ARCHITECTURES = ("tcn", "inception")  # one causal (last-step head), one non-causal (pooled) network


@dataclasses.dataclass
class Trained:
    settings: Settings
    warehouse: Warehouse
    outcomes: dict
    runs: dict  # (architecture, symbol) -> BacktestRun


def build_market(root: Path, planted: bool, days: int) -> tuple[Settings, Warehouse]:
    """Synthetic candles through the ingest gate, then the dbt features and labels."""
    settings = Settings(data_dir=root, symbols=SYMBOLS, start=START.date().isoformat(), planted_pattern=planted)
    end = START + dt.timedelta(days=days)
    wh = Warehouse(settings.warehouse_path)
    wh.ensure_schema()
    ingest_candles(build_source(settings, now=lambda: end), wh, SYMBOLS, ["60"], START, end, now=end)
    run_dbt(["build"], wh.path)
    return settings, wh


def train_all(settings: Settings, wh: Warehouse, overrides: dict,
              architectures: tuple[str, ...] = SEQUENCE_ARCHITECTURES) -> Trained:
    """Train ``architectures`` walk-forward, store them, and backtest every stored model."""
    outcomes = {}
    for arch in architectures:
        outcome = train_architecture(wh, settings, TrainingConfig.from_settings(settings, arch, **overrides),
                                     log=lambda _: None, live_refit=False)  # the walk-forward is judged here
        store_training(wh, outcome)
        outcomes[arch] = outcome
    runs, _ = run_model_backtests(wh, settings, log=lambda _: None)
    return Trained(settings, wh, outcomes, {(r.strategy, r.symbol): r for r in runs})


@pytest.fixture(scope="module")
def planted(tmp_path_factory) -> Trained:
    settings, wh = build_market(tmp_path_factory.mktemp("planted"), True, PLANTED_DAYS)
    return train_all(settings, wh, CONFIG)


@pytest.fixture(scope="module")
def random_walk(tmp_path_factory) -> Trained:
    settings, wh = build_market(tmp_path_factory.mktemp("random_walk"), False, RANDOM_DAYS)
    return train_all(settings, wh, RANDOM_CONFIG)


def oos_scores(wh: Warehouse, architecture: str, symbol: str) -> tuple[int, int, float]:
    """(correct, scored, majority share) of the stored out-of-sample predictions against features.labels."""
    frame = wh.query(
        "select p.p_down, p.p_flat, p.p_up, l.direction from predictions.oos p "
        "join models.registry r using (model_id) "
        "join features.labels l on l.symbol = p.symbol and l.interval = p.interval and l.ts = p.ts "
        "and l.horizon = 1 where r.architecture = ? and p.symbol = ? and l.direction is not null",
        [architecture, symbol])
    y = frame["direction"].to_numpy().astype(np.int64) + 1
    guess = frame.select("p_down", "p_flat", "p_up").to_numpy().argmax(1)
    return int((guess == y).sum()), int(y.size), float(np.bincount(y, minlength=3).max() / y.size)


def assert_finds_the_planted_pattern(trained: Trained, arch: str, min_scored: int = 1000) -> None:
    """Out of sample, on every symbol: accuracy above the majority class with binomial p < 0.01, the backtest's
    own scoring agrees, and the model's backtest makes money after fees, slippage and funding."""
    outcome = trained.outcomes[arch]
    assert outcome.weights_finite
    for symbol in SYMBOLS:
        correct, scored, majority = oos_scores(trained.warehouse, arch, symbol)
        assert scored >= min_scored, f"{arch} {symbol}: only {scored} scored test bars"
        p = binomial_p_value(correct, scored, majority)
        assert correct / scored > majority and p < 0.01, (
            f"{arch} {symbol}: accuracy {correct / scored:.3f} vs majority {majority:.3f}, binomial p {p:.3g}")
        run = trained.runs[(arch, symbol)]
        m = run.metrics
        # the backtest's own scoring agrees, and the money is after fees, slippage and funding
        assert m["clf_binomial_p"] < 0.01 and m["clf_accuracy"] > m["clf_majority_accuracy"]
        assert m["fees_paid"] > 0 and m["total_return"] > 0, (
            f"{arch} {symbol}: total return {m['total_return']:.3f} after {m['fees_paid']:.1f} fees")
        assert np.abs(run.result.position[: int(m["first_test_index"])]).max(initial=0.0) == 0.0


def assert_no_deflated_sharpe_above_095(trained: Trained, architectures: tuple[str, ...]) -> None:
    """Every (architecture, symbol) backtest on a random walk: deflated Sharpe (trials = architectures) <= 0.95."""
    runs = list(trained.runs.values())
    assert len(runs) == len(architectures) * len(SYMBOLS)
    assert sum(r.metrics["n_trades"] for r in runs) > 0  # not vacuous: models trade the noise
    for r in runs:
        assert r.metrics["dsr_trials"] == len(architectures)
        dsr = r.metrics["deflated_sharpe"]
        assert not dsr > 0.95, f"{r.strategy} {r.symbol}: deflated Sharpe {dsr:.3f} on a random walk"


@pytest.mark.parametrize("arch", SEQUENCE_ARCHITECTURES)
def test_every_architecture_finds_the_planted_pattern_out_of_sample(planted, arch):
    assert_finds_the_planted_pattern(planted, arch)


def test_no_architecture_is_deflated_above_095_on_a_random_walk(random_walk):
    assert_no_deflated_sharpe_above_095(random_walk, SEQUENCE_ARCHITECTURES)


# ------------------------------------------------------------------------------------------ the verdict
def verdict_of(trained: Trained, overrides: dict):
    """The baselines on the models' folds (the training's fold settings), then the comparison's verdict."""
    from pipeline.backtest.baselines import run_baseline_suite
    from pipeline.backtest.comparison import run_comparison

    settings = dataclasses.replace(trained.settings, window=overrides["window"], n_folds=overrides["n_folds"],
                                   embargo_bars=overrides["embargo"])
    with pytest.MonkeyPatch.context() as mp:  # the per-run HTML reports are tested elsewhere (most of the time)
        mp.setattr("pipeline.backtest.baselines.write_reports", lambda runs, out, extra="", **_: out)
        run_baseline_suite(trained.warehouse, settings, log=lambda _: None)
    return run_comparison(trained.warehouse, settings).verdict


def test_verdict_on_the_planted_pattern_the_selected_model_beats_the_baselines(planted):
    verdict = verdict_of(planted, CONFIG)
    pooled = verdict.headline
    assert pooled.symbol == "pooled" and pooled.selected in SEQUENCE_ARCHITECTURES
    t = pooled.test_of(pooled.selected, "best baseline")
    # selected on validation before any test bar is read: one pre-specified comparison, no multiplicity
    assert t.test.difference > 0 and t.test.p_value < 0.01, (pooled.selected, pooled.best_baseline, t.test)
    # Not asserted: beating the one-bar logistic regression. The planted pattern (the sign of the previous
    # hour) is linear in its input log_ret_1, so it finds the pattern too; measured here it out-earned the
    # selected model on the test bars (pooled daily Sharpe 12.9 against 10.0); the window regression, not
    # it, was the best baseline on validation.


def test_verdict_on_a_random_walk_no_model_significantly_beats_spot_buy_and_hold(random_walk):
    """No information, so no edge: no model beats spot buy and hold significantly after Holm, on any market or
    pooled. Not asserted against the best baseline: on this seed (7) the best baseline on validation was the
    window regression on ETHUSDT, which overfits 1,000 rows of noise, trades it and lost its costs on the
    test bars (Sharpe -6.7); four models "beat" it with Holm p 0.013-0.043, a real difference in costs paid,
    not information (README, The verdict)."""
    verdict = verdict_of(random_walk, RANDOM_CONFIG)
    tests = [t for mv in verdict.markets + verdict.pooled for t in mv.sharpe_tests if t.role == "spot buy and hold"]
    assert len(tests) == len(SEQUENCE_ARCHITECTURES) * (len(SYMBOLS) + 1)
    assert not [(t.model, t.p_holm) for t in tests if t.p_holm < 0.05 and t.test.difference > 0]


# ------------------------------------------------------------------------------------------ leakage
@dataclasses.dataclass
class Perturbed:
    config: TrainingConfig
    store: object  # WindowStore of the planted warehouse
    changed: object  # WindowStore of the same warehouse with candles changed after ``cutoff_ms``
    cutoff_ms: int  # the last unchanged candle: fold 0's last training label reads it


def perturbed_market(wh: Warehouse, cutoff_ms: int, root: Path) -> Warehouse:
    """A copy of ``wh``'s candles in a new warehouse under ``root``, changed after ``cutoff_ms`` (a different random
    path per symbol, candle rules kept: one factor per bar), then the dbt features and labels."""
    candles = wh.query("select * from raw.candles order by symbol, interval, ts")
    after = candles["ts"].dt.epoch("ms").to_numpy() > cutoff_ms
    rng = np.random.default_rng(123)
    factor = np.ones(candles.height)
    for symbol in candles["symbol"].unique(maintain_order=True):
        rows = np.flatnonzero(after & (candles["symbol"].to_numpy() == symbol))
        factor[rows] = np.exp(np.cumsum(rng.normal(0.0, 0.01, rows.size)))
    volume = np.where(after, rng.lognormal(0.0, 0.3, candles.height), 1.0)
    changed_candles = conform(candles.with_columns(
        *[(pl.col(c) * pl.lit(pl.Series(factor))).alias(c) for c in ("open", "high", "low", "close")],
        volume=pl.col("volume") * pl.lit(pl.Series(volume)),
        turnover=pl.col("turnover") * pl.lit(pl.Series(volume * factor)),
        source=pl.lit("perturbed")), CANDLE_SCHEMA, "perturbed candles")
    wh2 = Warehouse(root / "warehouse.duckdb")
    wh2.ensure_schema()
    wh2.replace_rows("raw.candles", changed_candles, "true")
    run_dbt(["build"], wh2.path)
    return wh2


@pytest.fixture(scope="module")
def perturbed(planted, tmp_path_factory) -> Perturbed:
    settings, wh = planted.settings, planted.warehouse
    config = TrainingConfig.from_settings(settings, "tcn", **CONFIG)
    series = [load_series(wh, s, "60", config.horizon) for s in SYMBOLS]
    store = build_window_store(series, tmp_path_factory.mktemp("store"), config.window, config.horizon)
    fold, fit, val, test, grid = time_folds(store, config)[0]
    cutoff = int(grid[fold.train[-1]]) + config.horizon * H  # the label of the last training bar reads this candle
    root = tmp_path_factory.mktemp("perturbed")
    wh2 = perturbed_market(wh, cutoff, root)
    changed = build_window_store([load_series(wh2, s, "60", config.horizon) for s in SYMBOLS], root / "artifacts",
                                 config.window, config.horizon)
    return Perturbed(config, store, changed, cutoff)


def _row_ts(store) -> np.ndarray:
    return store.index["ts_ms"].to_numpy()


def test_perturbation_keeps_the_time_grid_and_changes_the_future(perturbed):
    store, changed = perturbed.store, perturbed.changed
    np.testing.assert_array_equal(store.sample_ts_ms, changed.sample_ts_ms)
    np.testing.assert_array_equal(store.sample_rows, changed.sample_rows)
    late = _row_ts(store) > perturbed.cutoff_ms + 250 * H  # past the longest recursion's memory of old prices
    assert not np.array_equal(np.asarray(store.rows[late]), np.asarray(changed.rows[late]))


def test_changing_candles_after_t_changes_no_window_or_prediction_at_or_before_t(perturbed, planted):
    store, changed, t = perturbed.store, perturbed.changed, perturbed.cutoff_ms
    early_rows = np.flatnonzero(_row_ts(store) <= t)
    np.testing.assert_array_equal(np.asarray(store.rows[early_rows]), np.asarray(changed.rows[early_rows]))
    early = np.flatnonzero(store.sample_ts_ms <= t)
    later = np.flatnonzero(store.sample_ts_ms > t)
    np.testing.assert_array_equal(store.gather(store.sample_rows[early]), changed.gather(changed.sample_rows[early]))
    for arch in LEAK_ARCHITECTURES:  # the last fold's model: it predicts bars on both sides of t
        path = planted.outcomes[arch].registry.sort("fold")["artifact_path"][-1]
        module = load_artifact(path)
        before, before_changed = predict(module, store, early)[0], predict(module, changed, early)[0]
        np.testing.assert_array_equal(before, before_changed)
        assert not np.array_equal(predict(module, store, later)[0], predict(module, changed, later)[0])


@pytest.mark.parametrize("arch", LEAK_ARCHITECTURES)
def test_changing_candles_after_the_training_end_changes_nothing_in_that_fold(perturbed, planted, arch):
    config = dataclasses.replace(perturbed.config, architecture=arch)
    fold, fit, val, test, grid = time_folds(perturbed.changed, config)[0]
    fold0, fit0, val0, _, _ = time_folds(perturbed.store, config)[0]
    np.testing.assert_array_equal(fit, fit0)
    np.testing.assert_array_equal(val, val0)
    rows = perturbed.store.sample_rows[fit]  # the rows train_fold fits the normalisation on
    for a, b in zip(robust_stats(perturbed.store, rows), robust_stats(perturbed.changed, rows)):
        np.testing.assert_array_equal(a, b)
    # fold 0 retrained on the changed market (fresh folder, same seed) == the planted run's fold-0 artifact
    module, _, info = train_fold(perturbed.changed, config, 0, fit, val, Path(tempfile.mkdtemp()), log=lambda _: None)
    registry = planted.outcomes[arch].registry.filter(pl.col("fold") == 0)
    stored = load_file(Path(registry["artifact_path"][0]) / "weights.safetensors")
    got = module.state_dict()
    assert set(got) == set(stored)
    for name, value in stored.items():  # weights and the normalisation buffers (center, scale)
        assert torch.equal(got[name], value), f"{arch} fold 0: {name} changed"


def test_a_retrain_on_other_samples_does_not_resume_the_old_checkpoint(perturbed, tmp_path):
    store = perturbed.store
    config = dataclasses.replace(perturbed.config, epochs=1, max_train_windows=600)
    _, fit, val, _, _ = time_folds(store, config)[0]
    first, _, _ = train_fold(store, config, 0, fit, val, tmp_path / "fold", log=lambda _: None)
    other = fit[:-50]  # new data moved the fold: other training samples, same folder
    retrained, _, _ = train_fold(store, config, 0, other, val, tmp_path / "fold", log=lambda _: None)
    fresh, _, _ = train_fold(store, config, 0, other, val, tmp_path / "fresh", log=lambda _: None)
    for name, value in fresh.state_dict().items():
        assert torch.equal(retrained.state_dict()[name], value), name
    assert not all(torch.equal(first.state_dict()[k], v) for k, v in fresh.state_dict().items())
