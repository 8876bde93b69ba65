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
  cost-aware edge rule of :mod:`pipeline.core.positions` (the rule the
  trained models use), fitted on each fold's validation tail. Each fit is an
  exact L2 logistic regression (sklearn's objective, C = 1) by Newton's method
  (:func:`fit_logistic`), each fold starting from the previous fold's model.
"""

from __future__ import annotations

import dataclasses
import warnings

import numpy as np

from pipeline.core.columns import FEATURES_TABLE
from pipeline.core.positions import DEFAULT_MARGINS, EdgeRule, edge_targets, fit_edge_rule
from pipeline.core.splits import walk_forward_splits

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


# The logistic regression: L2 with sklearn's C (objective C * sum of log losses + ||W||^2 / 2, intercepts not
# penalised) on standardised inputs, multinomial over the classes present (binary when only two are).
LR_C = 1.0
# "newton": fit_logistic below, exact to LR_TOL (the default); "lbfgs": sklearn's LogisticRegression
# (L-BFGS, max_iter=300), the previous path, kept as a reference for bench/baselines.py and the tests.
LR_SOLVER = "newton"
LR_SOLVERS = ("newton", "lbfgs")
LR_TOL = 1e-9  # Newton stops when every gradient entry of the mean objective is below this
LR_MAX_ITER = 100


@dataclasses.dataclass(frozen=True)
class LogisticFit:
    """A fitted logistic regression: standardisation, classes and coefficients (sklearn's layout)."""

    mean: np.ndarray  # (k,) input means (StandardScaler)
    scale: np.ndarray  # (k,) population standard deviations, 1 for a constant input
    classes: np.ndarray  # sorted class labels seen in the fit
    coef: np.ndarray  # (n_classes, k), or (1, k) for two classes (the second class's logit)
    intercept: np.ndarray  # (n_classes,) centred to sum 0, or (1,)
    n_iter: int
    converged: bool

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        """(n, 3) probabilities of classes 0 / 1 / 2 (0 for a class not seen in the fit)."""
        logits = ((np.asarray(x, dtype=np.float64) - self.mean) / self.scale) @ self.coef.T + self.intercept
        out = np.zeros((logits.shape[0], 3))
        out[:, self.classes] = _softmax(logits, self.classes.size == 2)
        return out


def _softmax(logits: np.ndarray, binary: bool) -> np.ndarray:
    """Class probabilities from free logits (binary: one column, the first class's logit is 0)."""
    if binary:
        logits = np.column_stack([np.zeros(logits.shape[0]), logits[:, 0]])
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _standardise(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mean = x.mean(axis=0)
    scale = x.std(axis=0)
    # StandardScaler's rule for a constant column: scale 1 (it stays 0 after centring)
    return mean, np.where(scale < 10 * np.finfo(np.float64).eps * np.maximum(1.0, np.abs(mean)), 1.0, scale)


def _one_blas_thread():
    """BLAS on one thread: these products are small, and a second thread only waits on a busy machine."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # threadpoolctl comes with scikit-learn; without it, BLAS keeps its threads
        import contextlib

        return contextlib.nullcontext()
    return threadpool_limits(limits=1, user_api="blas")


def fit_logistic(x: np.ndarray, y: np.ndarray, c: float = LR_C, init: LogisticFit | None = None,
                 tol: float = LR_TOL, max_iter: int = LR_MAX_ITER) -> LogisticFit:
    """L2 logistic regression by Newton's method with a backtracking line search, in float64.

    The same model as ``sklearn.linear_model.LogisticRegression(C=c)`` on
    ``StandardScaler``-ed inputs: it minimises ``mean log loss + ||W||^2 / (2 c n)``
    (W: the coefficients, not the intercepts), multinomial over the classes of
    ``y`` (binary, one coefficient vector, for two classes). The objective is
    strictly convex in W, so its minimum is unique; with a few dozen inputs the
    Hessian is small ((k + 1) * (classes - 1) square), and Newton reaches
    ``tol`` on the gradient in a handful of steps where L-BFGS takes hundreds on
    correlated indicator inputs. The multinomial logits are defined up to a
    common shift that leaves the probabilities unchanged, and the penalty puts
    the optimal coefficients' class sum at 0: the fit works in that sum-0
    subspace (an orthonormal basis of it, so the penalty is unchanged), where
    the Hessian is positive definite; the intercepts come out centred to sum 0.
    ``init`` (a fit on the same classes, e.g. the previous fold's) starts the
    iterations from its model; the optimum does not depend on it.
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y)
    if x.ndim != 2 or y.shape != (x.shape[0],):
        raise ValueError(f"x has shape {x.shape}, y {y.shape}: need (n, k) and (n,)")
    classes = np.unique(y)
    if classes.size < 2:
        raise ValueError(f"y has {classes.size} class(es) {classes.tolist()}: need at least 2")
    n, k = x.shape
    n_classes = classes.size
    binary = n_classes == 2
    mean, scale = _standardise(x)
    z = np.empty((n, k + 1))
    np.subtract(x, mean, out=z[:, :k])
    z[:, :k] /= scale
    z[:, k] = 1.0
    # class logits = z @ (basis @ v).T; binary: the first class's logit is 0 and v is sklearn's one vector
    if binary:
        basis = np.array([[0.0], [1.0]])
    else:
        basis = np.linalg.svd(np.eye(n_classes) - 1.0 / n_classes)[0][:, : n_classes - 1]
    m = basis.shape[1]
    y_index = np.searchsorted(classes, y)
    rows = np.arange(n)
    onehot = np.zeros((n, n_classes))
    onehot[rows, y_index] = 1.0
    lam = 1.0 / (c * n)
    penal = np.ones(k + 1)
    penal[k] = 0.0  # intercepts are not penalised
    v = np.zeros((m, k + 1))
    if init is not None and np.array_equal(init.classes, classes):
        start = np.empty((init.coef.shape[0], k + 1))  # the same function of the raw inputs, in these units
        start[:, :k] = init.coef * (scale / init.scale)
        start[:, k] = init.intercept + init.coef @ ((mean - init.mean) / init.scale)
        v = start if binary else basis.T @ start

    def objective(vv):
        logits = z @ (basis @ vv).T
        top = logits.max(axis=1)
        e = np.exp(logits - top[:, None])
        total = e.sum(axis=1)
        loss = float(np.mean(np.log(total) + top - logits[rows, y_index]))
        return loss + 0.5 * lam * float(np.sum(vv * vv * penal)), e / total[:, None]

    pairs = [(a, b) for a in range(m) for b in range(a, m)]
    converged = False
    it = 0
    with _one_blas_thread():
        loss, p = objective(v)
        for it in range(max_iter):
            grad = basis.T @ (((p - onehot).T @ z) / n) + lam * v * penal
            if np.max(np.abs(grad)) < tol:
                converged = True
                break
            # per row, basis.T @ (diag(p) - p p.T) @ basis, then one (k + 1)-square product per entry
            q = p @ basis
            hess = np.empty((m, k + 1, m, k + 1))
            for a, b in pairs:
                w = (p @ (basis[:, a] * basis[:, b]) - q[:, a] * q[:, b]) / n
                block = (z * w[:, None]).T @ z
                hess[a, :, b, :] = block
                hess[b, :, a, :] = block.T
            for a in range(m):
                hess[a, :, a, :] += lam * np.diag(penal)
            step = np.linalg.solve(hess.reshape(m * (k + 1), m * (k + 1)), grad.ravel()).reshape(m, k + 1)
            slope = float(np.sum(grad * step))
            t = 1.0
            while True:  # backtracking (Armijo): full steps near the optimum
                new_loss, new_p = objective(v - t * step)
                if new_loss <= loss - 1e-4 * t * slope or t < 1e-10:
                    break
                t *= 0.5
            if t < 1e-10:  # no decrease left at float64 precision: as near the optimum as it gets
                converged = bool(np.max(np.abs(grad)) < 1e3 * tol)
                break
            v = v - t * step
            loss, p = new_loss, new_p
        else:
            it = max_iter
    theta = v if binary else basis @ v
    return LogisticFit(mean, scale, classes, theta[:, :k].copy(), theta[:, k].copy(), it, converged)


def _fit_sklearn(x: np.ndarray, y: np.ndarray, seed: int):
    """The previous path: sklearn's L-BFGS LogisticRegression (max_iter=300) on StandardScaler-ed inputs."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler().fit(x)
    model = LogisticRegression(C=LR_C, max_iter=300, random_state=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.fit(scaler.transform(x), y)
    return scaler, model


def _predict_sklearn(fitted, x: np.ndarray) -> np.ndarray:
    scaler, model = fitted
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
                                 solver: str | None = None) -> LogisticRegressionOutput:
    """Walk-forward logistic regression traded through the cost-aware edge rule.

    Rows are bars in time order. ``usable`` marks bars whose model inputs are
    complete (not warm-up, no NULL input); only those are fitted or predicted.
    Training rows also need a known label (``label_class >= 0``). Per fold of
    :func:`~pipeline.core.splits.walk_forward_splits` (purge = ``horizon``):

    1. the last ``validation_fraction`` of the training range is the
       validation tail; a model fitted on the rows before it (purged by
       ``horizon``) predicts it, and :func:`~pipeline.core.positions.fit_edge_rule`
       takes the class returns and the margin from those rows;
    2. a model refitted on all training rows predicts the test block, traded by
       that rule. The test block's labels are never read.

    Bars outside every test block, or not usable, have no prediction (NaN) and are flat.

    Each fit is :func:`fit_logistic` (``solver`` ``"newton"``, the default
    :data:`LR_SOLVER`), or sklearn's L-BFGS ``LogisticRegression`` (``"lbfgs"``,
    the previous path, two orders of magnitude slower on years of hourly bars);
    ``seed`` only seeds the latter.
    """
    solver = LR_SOLVER if solver is None else solver
    if solver not in LR_SOLVERS:
        raise ValueError(f"solver={solver!r}: must be one of {LR_SOLVERS}")
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
    last: LogisticFit | None = None
    for fold in folds:
        train_end = fold.train_end
        val_start = int(train_end * (1.0 - validation_fraction))
        inner = np.flatnonzero(labelled[: max(0, val_start - horizon)])
        val = val_start + np.flatnonzero(labelled[val_start:train_end])
        train = np.flatnonzero(labelled[:train_end])
        test = fold.test[usable[fold.test]]
        if min(inner.size, val.size) < 10 or np.unique(cls[inner]).size < 2 or test.size == 0:
            continue
        if solver == "lbfgs":
            fitted = _fit_sklearn(x[inner], cls[inner], seed)
            rule = fit_edge_rule(_predict_sklearn(fitted, x[val]), fwd[val], cls[val], round_trip_cost, margins,
                                 fraction, allow_short, horizon=horizon)
            proba[test] = _predict_sklearn(_fit_sklearn(x[train], cls[train], seed), x[test])
        else:  # each fit starts from the previous one (nested, expanding training rows: a few Newton steps)
            last = fit_logistic(x[inner], cls[inner], init=last)
            rule = fit_edge_rule(last.predict_proba(x[val]), fwd[val], cls[val], round_trip_cost, margins,
                                 fraction, allow_short, horizon=horizon)
            last = fit_logistic(x[train], cls[train], init=last)
            proba[test] = last.predict_proba(x[test])
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
    source: str = FEATURES_TABLE
