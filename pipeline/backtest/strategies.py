"""The strategies traded by the baseline backtests, on the same engine and costs as the models.

Benchmarks (family ``benchmark``: not selected among any trials):

- ``buy_and_hold``: long 100 % of equity in the perpetual from the first bar,
  paying and receiving funding; ``buy_and_hold_spot`` holds the same coin as
  spot, with no funding;
- ``flat``: never in the market (its equity stays at the start: a sanity line).

Reference strategies:

- ``ma_momentum``: long when the fast simple moving average of the close is
  above the slow one, short when below (flat while they warm up);
- ``logistic_regression``: a multinomial logistic regression on the model
  inputs of ``features.candle_features`` that learns the one label definition
  (``features.labels``, classes 0 down / 1 flat / 2 up) walk-forward on the
  shared purged splits, and trades its out-of-sample probabilities through the
  cost-aware edge rule of :mod:`pipeline.backtest.signals` (the rule the
  trained models use), fitted on each fold's validation tail.
"""

from __future__ import annotations

import dataclasses
import warnings

import numpy as np

from pipeline.backtest.signals import DEFAULT_MARGINS, EdgeRule, edge_targets, fit_edge_rule
from pipeline.training.splits import walk_forward_splits

BENCHMARKS = ("buy_and_hold", "buy_and_hold_spot", "flat")
REFERENCE_STRATEGIES = ("ma_momentum", "logistic_regression")


def buy_and_hold_targets(n: int) -> np.ndarray:
    return np.ones(n)


def flat_targets(n: int) -> np.ndarray:
    return np.zeros(n)


def _sma(x: np.ndarray, window: int) -> np.ndarray:
    out = np.full(x.shape[0], np.nan)
    if x.shape[0] >= window:
        c = np.cumsum(np.concatenate(([0.0], x)))
        out[window - 1 :] = (c[window:] - c[:-window]) / window
    return out


def ma_momentum_targets(close: np.ndarray, fast: int = 24, slow: int = 96, allow_short: bool = True) -> np.ndarray:
    """+1 / -1 (or 0 when ``allow_short`` is off) by the fast / slow SMA cross of the close."""
    if not 1 <= fast < slow:
        raise ValueError(f"fast={fast}, slow={slow}: need 1 <= fast < slow")
    close = np.asarray(close, dtype=np.float64)
    f, s = _sma(close, fast), _sma(close, slow)
    out = np.zeros(close.shape[0])
    ready = np.isfinite(s)
    out[ready & (f > s)] = 1.0
    if allow_short:
        out[ready & (f < s)] = -1.0
    return out


@dataclasses.dataclass(frozen=True)
class LogisticRegressionOutput:
    proba: np.ndarray  # (n, 3) down / flat / up out of sample; NaN on bars without a prediction
    tested: np.ndarray  # bool (n,): bar has an out-of-sample prediction
    targets: np.ndarray  # (n,) target positions from the fold's edge rule
    rules: tuple[EdgeRule, ...]  # the edge rule of each fold that was fitted
    n_folds: int
    n_margins: int  # margins each fold's rule was chosen among
    first_test_index: int = -1  # first bar of the first fitted fold's test block (-1: no fold was fitted)


def _fit_logistic(x: np.ndarray, y: np.ndarray, seed: int):
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler().fit(x)
    model = LogisticRegression(C=1.0, max_iter=300, random_state=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.fit(scaler.transform(x), y)
    return scaler, model


def _predict(scaler, model, x: np.ndarray) -> np.ndarray:
    p = model.predict_proba(scaler.transform(x))
    out = np.zeros((x.shape[0], 3))
    for j, cls in enumerate(model.classes_):
        out[:, int(cls)] = p[:, j]
    return out


def logistic_regression_strategy(features: np.ndarray, usable: np.ndarray, fwd_return: np.ndarray,
                                 label_class: np.ndarray, round_trip_cost: float, horizon: int = 1,
                                 n_folds: int = 4, train_min: int | None = None, embargo: int = 0,
                                 validation_fraction: float = 0.2, margins: tuple[float, ...] = DEFAULT_MARGINS,
                                 fraction: float = 1.0, allow_short: bool = True, seed: int = 0,
                                 ) -> LogisticRegressionOutput:
    """Walk-forward logistic regression traded through the cost-aware edge rule.

    Rows are bars in time order. ``usable`` marks bars whose model inputs are
    complete (not warm-up, no NULL input); only those are fitted or predicted.
    Training rows also need a known label (``label_class >= 0``). Per fold of
    :func:`~pipeline.training.splits.walk_forward_splits` (purge = ``horizon``):

    1. the last ``validation_fraction`` of the training range is the
       validation tail; a model fitted on the rows before it (purged by
       ``horizon``) predicts it, and :func:`~pipeline.backtest.signals.fit_edge_rule`
       takes the class returns and the margin from those rows;
    2. a model refitted on all training rows predicts the test block, traded by
       that rule. The test block's labels are never read.

    Bars outside every test block, or not usable, have no prediction (NaN) and are flat.
    """
    x = np.asarray(features, dtype=np.float64)
    n = x.shape[0]
    usable = np.asarray(usable, dtype=bool)
    fwd = np.asarray(fwd_return, dtype=np.float64)
    cls = np.asarray(label_class, dtype=np.int64)
    if x.ndim != 2 or any(a.shape != (n,) for a in (usable, fwd, cls)):
        raise ValueError(f"features has shape {x.shape}; usable, fwd_return and label_class must have ({n},), "
                         f"have {usable.shape}, {fwd.shape}, {cls.shape}")
    if not 0.0 < validation_fraction < 1.0:
        raise ValueError(f"validation_fraction={validation_fraction!r}: must be in (0, 1)")
    usable = usable & np.all(np.isfinite(x), axis=1)
    labelled = usable & (cls >= 0) & np.isfinite(fwd)
    train_min = train_min or max(200, n // 5)
    folds = walk_forward_splits(n, n_folds, train_min, purge=horizon, embargo=embargo)
    proba = np.full((n, 3), np.nan)
    targets = np.zeros(n)
    rules = []
    first_test = -1
    for fold in folds:
        train_end = fold.train_end
        val_start = int(train_end * (1.0 - validation_fraction))
        inner = np.flatnonzero(labelled[: max(0, val_start - horizon)])
        val = val_start + np.flatnonzero(labelled[val_start:train_end])
        train = np.flatnonzero(labelled[:train_end])
        test = fold.test[usable[fold.test]]
        if min(inner.size, val.size) < 10 or np.unique(cls[inner]).size < 2 or test.size == 0:
            continue
        scaler, model = _fit_logistic(x[inner], cls[inner], seed)
        rule = fit_edge_rule(_predict(scaler, model, x[val]), fwd[val], cls[val], round_trip_cost, margins,
                             fraction, allow_short, horizon=horizon)
        scaler, model = _fit_logistic(x[train], cls[train], seed)
        proba[test] = _predict(scaler, model, x[test])
        block = np.arange(*fold.test_range)
        targets[block] = edge_targets(proba[block], rule)  # each fold's block starts flat and follows its rule
        rules.append(rule)
        if first_test < 0:
            first_test = int(fold.test_range[0])
    tested = ~np.isnan(proba).any(axis=1)
    return LogisticRegressionOutput(proba, tested, targets, tuple(rules), len(folds), len(margins), first_test)


@dataclasses.dataclass(frozen=True)
class LabelledFeatures:
    """Model inputs and labels of one market, aligned bar by bar to its candles."""

    features: np.ndarray  # (n, k) MODEL_INPUT_COLUMNS of features.candle_features, NaN where NULL / missing
    usable: np.ndarray  # bool (n,): a features row exists, is not warm-up and has every input
    fwd_return: np.ndarray  # (n,) features.labels fwd_return at ``horizon``, NaN where unknown
    label_class: np.ndarray  # (n,) int64 class 0 down / 1 flat / 2 up, -1 unknown
    horizon: int
    source: str = "features.candle_features"
