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
from pipeline.core.splits import GridFold, in_range, walk_forward_splits

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
    last_test_index: int = -1  # last bar of the last fitted fold's test block
    # the first fitted fold's validation tail traded by its rule (the model fitted before it): what the
    # best baseline is chosen on; zeros elsewhere. validation_span: its (first, last) bar index, (-1, -1): none
    validation_targets: np.ndarray | None = None
    validation_span: tuple[int, int] = (-1, -1)


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


def _fit_classes(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """The classes of a logistic fit's labels; a clear error when the shapes or the classes cannot be fitted."""
    if x.ndim != 2 or y.shape != (x.shape[0],):
        raise ValueError(f"x has shape {x.shape}, y {y.shape}: need (n, k) and (n,)")
    classes = np.unique(y)
    if classes.size < 2:
        raise ValueError(f"y has {classes.size} class(es) {classes.tolist()}: need at least 2")
    return classes


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
    classes = _fit_classes(x, y)
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
                                 solver: str | None = None,
                                 grid: "tuple[np.ndarray, list[GridFold]] | None" = None) -> LogisticRegressionOutput:
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

    ``grid`` = ``(ts_ms, folds)``: the bars' timestamps and the models' folds of
    :func:`~pipeline.core.splits.grid_folds` (one split definition for every strategy of a market). Each
    fold then fits on its ``fit`` time, chooses its rule on its validation tail (as the models do), refits
    on the whole training time and trades its test block; ``n_folds``, ``train_min``, ``embargo`` and
    ``validation_fraction`` are the folds' and not used.

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
    if grid is not None:
        return _grid_strategy(x, usable, labelled, fwd, cls, round_trip_cost, horizon, grid, margins, fraction,
                              allow_short)
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


def _grid_strategy(x, usable, labelled, fwd, cls, round_trip_cost, horizon, grid, margins, fraction, allow_short,
                   refit: bool = True, fitter=None) -> LogisticRegressionOutput:
    """:func:`logistic_regression_strategy` on the models' grid folds (see its ``grid``).

    ``refit=False`` trades each test block with the model fitted before the validation tail (the models'
    way: the tail only stops early); ``fitter(x, y, init)`` replaces :func:`fit_logistic`.
    """
    ts_ms, folds = grid
    ts_ms = np.asarray(ts_ms, dtype=np.int64)
    n = x.shape[0]
    if ts_ms.shape != (n,):
        raise ValueError(f"grid: ts_ms has shape {ts_ms.shape}, the features {x.shape}: need one ts per row")
    fitter = fitter or (lambda xx, yy, init: fit_logistic(xx, yy, init=init))
    proba = np.full((n, 3), np.nan)
    targets = np.zeros(n)
    val_targets = np.zeros(n)
    val_span = (-1, -1)
    rules = []
    first_test = last_test = -1
    last: LogisticFit | None = None
    for fold in folds:
        inner = np.flatnonzero(labelled & in_range(ts_ms, fold.fit))
        val = np.flatnonzero(labelled & in_range(ts_ms, fold.validation))
        block = np.flatnonzero(in_range(ts_ms, fold.test))
        test = block[usable[block]]
        if min(inner.size, val.size) < 10 or np.unique(cls[inner]).size < 2 or test.size == 0:
            continue
        last = fitter(x[inner], cls[inner], last)
        val_proba = last.predict_proba(x[val])
        rule = fit_edge_rule(val_proba, fwd[val], cls[val], round_trip_cost, margins, fraction, allow_short,
                             horizon=horizon)
        if val_span[0] < 0:  # the first fitted fold's tail: before every test bar
            lo, hi = int(val[0]), int(val[-1]) + 1
            segment = np.full((hi - lo, 3), np.nan)
            segment[val - lo] = val_proba
            val_targets[lo:hi] = edge_targets(segment, rule)
            val_span = (lo, hi - 1)
        if refit:
            train = np.flatnonzero(labelled & in_range(ts_ms, fold.train))
            last = fitter(x[train], cls[train], last)
        proba[test] = last.predict_proba(x[test])
        targets[block[0]:block[-1] + 1] = edge_targets(proba[block[0]:block[-1] + 1], rule)
        rules.append(rule)
        if first_test < 0:
            first_test = int(block[0])
        last_test = int(block[-1])
    tested = ~np.isnan(proba).any(axis=1)
    return LogisticRegressionOutput(proba, tested, targets, tuple(rules), len(folds), len(margins), first_test,
                                    last_test, val_targets, val_span)


# The linear baseline with the models' information: the flattened window of the model inputs (window x inputs
# values per bar) is too wide for Newton's Hessian, so it is fitted by L-BFGS on the same objective.
LR_WINDOW_MAX_ITER = 200


def fit_logistic_lbfgs(x: np.ndarray, y: np.ndarray, c: float = LR_C, init: LogisticFit | None = None,
                       max_iter: int = LR_WINDOW_MAX_ITER) -> LogisticFit:
    """The objective of :func:`fit_logistic` (mean log loss + ||W||^2 / (2 c n), multinomial over the classes of
    ``y``) by scipy's L-BFGS on float32 inputs: for wide inputs (a flattened window: hundreds of columns),
    where a Newton step's Hessian would cost minutes. ``init`` on the same classes warm-starts it."""
    from scipy.optimize import minimize

    x = np.asarray(x)
    y = np.asarray(y)
    classes = _fit_classes(x, y)
    n, k = x.shape
    kc = classes.size
    mean = x.mean(axis=0, dtype=np.float64)
    scale = x.std(axis=0, dtype=np.float64)
    scale = np.where(scale < 1e-12 * np.maximum(1.0, np.abs(mean)), 1.0, scale)
    z = ((x - mean.astype(np.float32)) / scale.astype(np.float32)).astype(np.float32, copy=False)
    onehot = np.zeros((n, kc))
    onehot[np.arange(n), np.searchsorted(classes, y)] = 1.0
    lam = 1.0 / (c * n)
    w0 = np.zeros((kc, k + 1))
    if init is not None and np.array_equal(init.classes, classes):
        coef = init.coef if kc > 2 else np.vstack([np.zeros(k), init.coef[0]])
        icpt = init.intercept if kc > 2 else np.array([0.0, init.intercept[0]])
        w0[:, :k] = coef * (scale / init.scale)
        w0[:, k] = icpt + coef @ ((mean - init.mean) / init.scale)

    def f(flat):
        w = flat.reshape(kc, k + 1)
        logits = (z @ w[:, :k].T.astype(np.float32)).astype(np.float64) + w[:, k]
        top = logits.max(axis=1, keepdims=True)
        e = np.exp(logits - top)
        total = e.sum(axis=1, keepdims=True)
        loss = float(np.mean(np.log(total[:, 0]) + top[:, 0] - np.sum(logits * onehot, axis=1)))
        g = (e / total - onehot) / n
        grad = np.empty((kc, k + 1))
        grad[:, :k] = (g.T.astype(np.float32) @ z).astype(np.float64) + lam * w[:, :k]
        grad[:, k] = g.sum(axis=0)
        return loss + 0.5 * lam * float(np.sum(w[:, :k] ** 2)), grad.ravel()

    with _one_blas_thread():
        res = minimize(f, w0.ravel(), jac=True, method="L-BFGS-B", options={"maxiter": max_iter, "gtol": 1e-6})
    w = res.x.reshape(kc, k + 1)
    w = w - w.mean(axis=0)  # the common shift of the logits is free: centre it away
    if kc == 2:
        coef, icpt = (w[1:, :k] - w[:1, :k]), np.array([w[1, k] - w[0, k]])
    else:
        coef, icpt = w[:, :k], w[:, k]
    return LogisticFit(mean, scale, classes, coef.copy(), icpt.copy(), int(res.nit), bool(res.success))


def flattened_windows(features: np.ndarray, usable: np.ndarray, ts_ms: np.ndarray, step_ms: int,
                      window: int) -> tuple[np.ndarray, np.ndarray]:
    """(n, window * k) float32 rows: bar ``t``'s row is the model inputs of bars ``t - window + 1 .. t``, oldest
    first (zeros where not usable), and the mask of the bars whose whole window is usable, gap-free rows."""
    from pipeline.core.windows import valid_window_ends

    x = np.asarray(features, dtype=np.float32)
    n, k = x.shape
    ok, _ = valid_window_ends(np.asarray(ts_ms, dtype=np.int64), ~np.asarray(usable, dtype=bool),
                              np.ones(n, dtype=bool), step_ms, window, 0, features=x)
    clean = np.where(np.isfinite(x), x, 0.0).astype(np.float32)
    out = np.zeros((n, window * k), dtype=np.float32)
    rows = np.flatnonzero(ok)
    for j in range(window):  # column block j: the input of bar t - window + 1 + j
        out[rows, j * k:(j + 1) * k] = clean[rows - window + 1 + j]
    return out, ok


def window_regression_strategy(features: np.ndarray, usable: np.ndarray, fwd_return: np.ndarray,
                               label_class: np.ndarray, round_trip_cost: float, ts_ms: np.ndarray, step_ms: int,
                               window: int, folds: list[GridFold], horizon: int = 1,
                               margins: tuple[float, ...] = DEFAULT_MARGINS, fraction: float = 1.0,
                               allow_short: bool = True) -> LogisticRegressionOutput:
    """The logistic regression on the flattened window of the model inputs (the models' ``window`` bars), on the
    models' folds: each fold fits before its validation tail (L-BFGS, :func:`fit_logistic_lbfgs`), chooses
    its edge rule on the tail and trades its test block with that model, as the models do."""
    x, ok = flattened_windows(features, usable, ts_ms, step_ms, window)
    cls = np.asarray(label_class, dtype=np.int64)
    fwd = np.asarray(fwd_return, dtype=np.float64)
    labelled = ok & (cls >= 0) & np.isfinite(fwd)
    return _grid_strategy(x, ok, labelled, fwd, cls, round_trip_cost, horizon, (ts_ms, folds), margins, fraction,
                          allow_short, refit=False,
                          fitter=lambda xx, yy, init: fit_logistic_lbfgs(xx, yy, init=init))
