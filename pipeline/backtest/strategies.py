"""Baseline strategies on the same engine and costs as the models.

- ``buy_and_hold``: long 100 % of equity from the first bar;
- ``flat``: never in the market (its equity stays at the start: a sanity line);
- ``ma_momentum``: long when the fast simple moving average of the close is
  above the slow one, short when below (flat while they warm up);
- ``logistic_regression``: a multinomial logistic regression on candle
  features predicting the direction class (down / flat / up) of the next
  ``horizon`` bars, fitted per purged walk-forward fold; only out-of-sample
  probabilities are traded (flat before the first test fold), through the
  same confidence-threshold rule as the models.
"""

from __future__ import annotations

import dataclasses
import warnings

import numpy as np

from pipeline.backtest.signals import SignalRule, target_positions
from pipeline.training.splits import walk_forward_splits

BASELINES = ("buy_and_hold", "flat", "ma_momentum", "logistic_regression")


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


def candle_features(open_, high, low, close, volume) -> tuple[np.ndarray, list[str]]:
    """A small causal feature set from candles (each row uses bars up to and including its own).

    Used by the logistic-regression baseline when ``features.candle_features``
    is not in the warehouse. The first rows are NaN while windows warm up.
    """
    o, h, lo, c, v = (np.asarray(a, dtype=np.float64) for a in (open_, high, low, close, volume))
    logc = np.log(c)
    n = c.shape[0]

    def lag_diff(x, k):
        out = np.full(n, np.nan)
        out[k:] = x[k:] - x[:-k]
        return out

    r1 = lag_diff(logc, 1)
    cols = {
        "log_ret_1": r1,
        "log_ret_4": lag_diff(logc, 4),
        "log_ret_24": lag_diff(logc, 24),
        "range_pct": (h - lo) / c,
        "close_pos": np.where(h > lo, (c - lo) / np.where(h > lo, h - lo, 1.0), 0.5),
        "body_ratio": (c - o) / np.where(h > lo, h - lo, 1.0),
        "realized_vol_24": np.sqrt(_sma(np.nan_to_num(r1) ** 2, 24)),
        "sma_dist_24": c / _sma(c, 24) - 1.0,
        "sma_dist_96": c / _sma(c, 96) - 1.0,
        "volume_ratio_24": v / np.where(_sma(v, 24) > 0, _sma(v, 24), np.nan),
    }
    cols["realized_vol_24"][:24] = np.nan
    names = list(cols)
    return np.column_stack([cols[k] for k in names]), names


def direction_labels(close: np.ndarray, horizon: int = 1, dead_zone: float = 0.0015) -> np.ndarray:
    """Class of the forward return over ``(t, t + horizon]``: 0 down, 1 flat, 2 up; -1 where unknown."""
    close = np.asarray(close, dtype=np.float64)
    n = close.shape[0]
    out = np.full(n, -1, dtype=np.int64)
    if n > horizon:
        fwd = close[horizon:] / close[:-horizon] - 1.0
        out[:-horizon] = np.where(fwd > dead_zone, 2, np.where(fwd < -dead_zone, 0, 1))
    return out


@dataclasses.dataclass(frozen=True)
class LogisticBaselineOutput:
    proba: np.ndarray  # (n, 3) down / flat / up; zeros outside the test folds
    tested: np.ndarray  # bool (n,): bar is out-of-sample in some fold
    labels: np.ndarray  # (n,) direction class, -1 where unknown
    targets: np.ndarray  # (n,) target positions
    n_folds: int


def logistic_regression_baseline(features: np.ndarray, close: np.ndarray, rule: SignalRule = SignalRule(0.4),
                                 n_folds: int = 4, horizon: int = 1, dead_zone: float = 0.0015,
                                 train_min: int | None = None, embargo: int = 0, seed: int = 0,
                                 ) -> LogisticBaselineOutput:
    """Walk-forward logistic regression: fit on each fold's purged training rows, predict its test rows.

    Rows with a NaN feature are not used for fitting and stay flat when tested.
    Scaling statistics are fitted on the fold's training rows only.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    x = np.asarray(features, dtype=np.float64)
    n = x.shape[0]
    if x.ndim != 2 or n != np.asarray(close).shape[0]:
        raise ValueError(f"features has shape {x.shape}; expected ({np.asarray(close).shape[0]}, k) like close")
    labels = direction_labels(close, horizon, dead_zone)
    valid_x = np.all(np.isfinite(x), axis=1)
    train_min = train_min or max(200, n // 5)
    folds = walk_forward_splits(n, n_folds, train_min, purge=horizon, embargo=embargo)
    proba = np.zeros((n, 3))
    tested = np.zeros(n, dtype=bool)
    for fold in folds:
        tr = fold.train[valid_x[fold.train] & (labels[fold.train] >= 0)]
        te = fold.test[valid_x[fold.test]]
        if tr.size < 10 or np.unique(labels[tr]).size < 2 or te.size == 0:
            continue
        scaler = StandardScaler().fit(x[tr])
        model = LogisticRegression(C=1.0, max_iter=300, random_state=seed)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model.fit(scaler.transform(x[tr]), labels[tr])
        p = model.predict_proba(scaler.transform(x[te]))
        for j, cls in enumerate(model.classes_):
            proba[te, int(cls)] = p[:, j]
        tested[te] = True
    targets = target_positions(proba[:, 0], proba[:, 2], rule)
    return LogisticBaselineOutput(proba, tested, labels, targets, len(folds))
