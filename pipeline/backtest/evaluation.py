"""One backtest run as a record (strategy, family, market, config, result, metrics), the baselines of one
market, and the overfitting statistics over each strategy family's trials."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math

import numpy as np

from pipeline.backtest import strategies
from pipeline.core.costs import CostModel
from pipeline.backtest.engine import BacktestResult, EngineInputs, run_backtest
from pipeline.backtest.metrics import (bar_returns, per_bar_log_loss, scored_classification, sharpe_ratio,
                                       trading_metrics)
from pipeline.core.splits import GridFold
from pipeline.core.timegrid import bars_per_year, interval_ms
from pipeline.backtest.risk import RiskRules
from pipeline.core.positions import round_trip_cost_of
from pipeline.backtest.strategies import LabelledFeatures


@dataclasses.dataclass
class BacktestRun:
    run_id: str
    strategy: str
    family: str  # the strategy family whose trials deflate this run's Sharpe; "benchmark" for benchmarks
    symbol: str
    interval: str
    config: dict
    result: BacktestResult
    metrics: dict[str, float]
    classification: dict | None = None  # classification_metrics() of the direction head, if any
    model_ids: list[str] = dataclasses.field(default_factory=list)
    data_fingerprint: str = ""
    report_path: str | None = None
    # per-bar Sharpe ratios of every configuration tried for this run (itself included) that are not runs of
    # their own, e.g. the configurations of a grid it was picked from; None: the run is one trial
    trial_sharpes: np.ndarray | None = None
    # per-bar log-loss of the direction head (-log p of the true class) where it predicted a labelled bar,
    # NaN elsewhere; None: the strategy has no direction head. Stored as backtest.equity.log_loss.
    bar_log_loss: np.ndarray | None = None


def data_fingerprint(inputs: EngineInputs) -> str:
    """Short hash of the candle and funding arrays a run saw."""
    h = hashlib.sha256()
    for arr in (inputs.ts_ms, inputs.open, inputs.high, inputs.low, inputs.close, inputs.volume, inputs.funding):
        h.update(np.ascontiguousarray(arr).tobytes())
    return h.hexdigest()[:16]


def make_run_id(strategy: str, symbol: str, interval: str, config: dict) -> str:
    """Deterministic id: the same strategy, market and config always map to the same run (reruns replace it)."""
    digest = hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()[:10]
    return f"{strategy}-{symbol}-{interval}-{digest}"


def gross_metrics(inputs: EngineInputs, target: np.ndarray, risk: RiskRules, execution: str,
                  initial_equity: float, interval: str) -> dict[str, float]:
    """Sharpe and total return of the same targets before costs: no fees, no slippage, no funding."""
    free = CostModel(taker_fee=0.0, maker_fee=0.0, slippage_bps=0.0, impact_coef=0.0)
    no_funding = dataclasses.replace(inputs, funding=np.zeros(inputs.close.shape[0]))
    gross = run_backtest(no_funding, target, free, risk, execution, initial_equity)
    m = trading_metrics(gross.equity, gross.position, gross.trades_table(), initial_equity, interval)
    return {"gross_sharpe": m["sharpe"], "gross_total_return": m["total_return"]}


def evaluate(strategy: str, symbol: str, interval: str, inputs: EngineInputs, target: np.ndarray, config: dict,
             costs: CostModel, risk: RiskRules, execution: str = "next_open", classification: dict | None = None,
             model_ids: list[str] | None = None, initial_equity: float = 10_000.0, family: str | None = None,
             trial_sharpes: np.ndarray | None = None) -> BacktestRun:
    """Backtest ``target`` and compute its metrics (net of costs, and ``gross_*`` before them); the run record.

    ``family`` (default: the strategy name) groups the runs that are trials of
    one another for the deflated Sharpe; ``trial_sharpes`` adds configurations
    tried for this run that are not runs themselves (see :class:`BacktestRun`).
    """
    family = family or strategy
    full_config = {
        **config,
        "family": family,
        "execution": execution,
        "costs": dataclasses.asdict(costs),
        "risk": dataclasses.asdict(risk),
        "initial_equity": initial_equity,
    }
    result = run_backtest(inputs, target, costs, risk, execution, initial_equity)
    metrics = trading_metrics(result.equity, result.position, result.trades_table(), initial_equity, interval,
                              result.fees_paid, result.funding_paid, result.turnover)
    metrics["liquidation_shortfall"] = result.liquidation_shortfall  # loss past zero equity the exchange took
    metrics.update(gross_metrics(inputs, target, risk, execution, initial_equity, interval))
    if classification is not None:
        for key, value in classification.items():
            if isinstance(value, float):
                metrics[f"clf_{key}"] = value
    return BacktestRun(
        run_id=make_run_id(strategy, symbol, interval, full_config),
        strategy=strategy, family=family, symbol=symbol, interval=interval, config=full_config, result=result,
        metrics=metrics, classification=classification, model_ids=list(model_ids or []),
        data_fingerprint=data_fingerprint(inputs),
        trial_sharpes=None if trial_sharpes is None else np.asarray(trial_sharpes, dtype=np.float64),
    )


BENCHMARK_FAMILY = "benchmark"


def validation_sharpe(inputs: EngineInputs, targets: np.ndarray, span: tuple[int, int], costs: CostModel,
                      risk: RiskRules, interval: str, execution: str = "next_open") -> float:
    """Net Sharpe (annualised) of ``targets`` traded on the bars ``span`` (first, last index, inclusive) only:
    a validation tail, where the best baseline is chosen. NaN for an empty span."""
    lo, hi = span
    if lo < 0 or hi <= lo:
        return math.nan
    part = EngineInputs(*(np.ascontiguousarray(getattr(inputs, f.name)[lo:hi + 1])
                          for f in dataclasses.fields(EngineInputs)))
    res = run_backtest(part, np.asarray(targets, dtype=np.float64)[lo:hi + 1], costs, risk, execution)
    r = bar_returns(res.equity, res.initial_equity)
    return sharpe_ratio(r, bars_per_year(interval)) if r.std() > 0 else 0.0  # never traded there: Sharpe 0


def _mark_test_span(run: BacktestRun, ts_ms: np.ndarray, first: int, last: int) -> None:
    """The run's out-of-sample span, as bar index (``first_test_index``) and ts (``test_start_ms``/``test_end_ms``)."""
    ok = 0 <= first <= last
    run.metrics["first_test_index"] = float(first) if ok else math.nan
    run.metrics["test_start_ms"] = float(ts_ms[first]) if ok else math.nan
    run.metrics["test_end_ms"] = float(ts_ms[last]) if ok else math.nan


def _regression_run(name: str, lr, symbol: str, interval: str, inputs: EngineInputs, labelled: LabelledFeatures,
                    costs: CostModel, risk: RiskRules, extra: dict) -> BacktestRun:
    clf = scored_classification(lr.proba, labelled.label_class)
    config = {"features": labelled.source, "labels": "features.labels", "horizon": labelled.horizon,
              "n_folds": lr.n_folds, "fitted_folds": len(lr.rules), "signal": "edge_rule",
              "round_trip_cost": round_trip_cost_of(costs), "margins_tried_per_fold": lr.n_margins,
              "fold_rules": [rule.as_config() for rule in lr.rules], **extra}
    run = evaluate(name, symbol, interval, inputs, lr.targets, config, costs, risk, classification=clf,
                   family=name)
    # the out-of-sample span starts at the first fitted fold's test block (the report shades the bars before it)
    _mark_test_span(run, inputs.ts_ms, lr.first_test_index,
                    lr.last_test_index if lr.last_test_index >= 0 else inputs.ts_ms.shape[0] - 1)
    run.bar_log_loss = per_bar_log_loss(lr.proba, labelled.label_class)
    if lr.validation_targets is not None:
        run.metrics["val_sharpe"] = validation_sharpe(inputs, lr.validation_targets, lr.validation_span, costs,
                                                      risk, interval)
    return run


def run_market_baselines(symbol: str, interval: str, inputs: EngineInputs, costs: CostModel,
                         risk: RiskRules = RiskRules(), labelled: LabelledFeatures | None = None,
                         lr_folds: int = 4, ma_fast: int = 24, ma_slow: int = 96, log=None,
                         folds: list[GridFold] | None = None, window: int | None = None) -> list[BacktestRun]:
    """Every baseline on one market: the benchmarks, MA momentum and (given ``labelled``) the logistic regressions.

    ``folds``: the models' folds (:func:`pipeline.core.splits.grid_folds` over the market's time grid):
    the logistic regression fits and trades on them, every run records the span from the first fold's
    first test bar to the last test bar (``test_start_ms`` / ``test_end_ms``), and each baseline's net
    Sharpe on the first fold's validation tail (``val_sharpe``, where the best baseline is chosen).
    ``window`` (with ``folds``): also the regression on the flattened window of the model inputs
    (``logistic_regression_window``). Without ``folds`` the regression runs its own ``lr_folds`` folds.

    The logistic regression needs the model inputs and labels of this market
    (``labelled``); without them, or with too few bars for its folds, it is
    skipped with a log line.
    """
    log = log or (lambda msg: None)
    n = inputs.close.shape[0]
    spot = dataclasses.replace(inputs, funding=np.zeros(n))
    ma = strategies.ma_momentum_targets(inputs.close, ma_fast, ma_slow)
    hold = strategies.buy_and_hold_targets(n)
    runs = [
        evaluate("buy_and_hold", symbol, interval, inputs, hold, {"market": "perpetual"}, costs, RiskRules(),
                 family=BENCHMARK_FAMILY),
        evaluate("buy_and_hold_spot", symbol, interval, spot, hold, {"market": "spot"}, costs, RiskRules(),
                 family=BENCHMARK_FAMILY),
        evaluate("flat", symbol, interval, inputs, strategies.flat_targets(n), {}, costs, RiskRules(),
                 family=BENCHMARK_FAMILY),
        evaluate("ma_momentum", symbol, interval, inputs, ma, {"fast": ma_fast, "slow": ma_slow}, costs, risk,
                 family="ma_momentum"),
    ]
    val_span = (-1, -1)
    if folds:
        ts = inputs.ts_ms
        first = int(np.searchsorted(ts, folds[0].test[0]))
        last = int(np.searchsorted(ts, folds[-1].test[1], side="right")) - 1
        v0, v1 = (int(np.searchsorted(ts, folds[0].validation[0])),
                  int(np.searchsorted(ts, folds[0].validation[1], side="right")) - 1)
        val_span = (v0, v1)
        for run, market, target, rules in zip(runs, (inputs, spot, inputs, inputs), (hold, hold, hold * 0, ma),
                                               (RiskRules(), RiskRules(), RiskRules(), risk)):
            _mark_test_span(run, ts, first, last)
            if run.strategy != "flat":
                run.metrics["val_sharpe"] = validation_sharpe(market, target, val_span, costs, rules, interval)
    if labelled is None:
        log(f"logistic_regression skipped for {symbol} {interval}: no features.candle_features / features.labels rows")
        return runs
    if labelled.features.shape[0] != n:
        raise ValueError(f"{symbol} {interval}: labelled features have {labelled.features.shape[0]} rows "
                         f"but the candles have {n}: align them to the candles first")
    rtc = round_trip_cost_of(costs)
    try:
        lr = strategies.logistic_regression_strategy(
            labelled.features, labelled.usable, labelled.fwd_return, labelled.label_class, rtc,
            horizon=labelled.horizon, n_folds=lr_folds, grid=(inputs.ts_ms, folds) if folds else None)
    except ValueError as exc:
        log(f"logistic_regression skipped for {symbol} {interval}: {exc}")
        return runs
    extra = {"split": "models' folds (core.splits.grid_folds)" if folds else f"own {lr_folds} folds"}
    runs.append(_regression_run("logistic_regression", lr, symbol, interval, inputs, labelled, costs, risk, extra))
    if folds and window:
        w = strategies.window_regression_strategy(
            labelled.features, labelled.usable, labelled.fwd_return, labelled.label_class, rtc, inputs.ts_ms,
            interval_ms(interval), window, folds, horizon=labelled.horizon)
        if w.rules:
            runs.append(_regression_run("logistic_regression_window", w, symbol, interval, inputs, labelled, costs,
                                        risk, {**extra, "window": window, "solver": "lbfgs"}))
        else:
            log(f"logistic_regression_window skipped for {symbol} {interval}: no fold had enough full windows")
    return runs


def finite_or_none(value) -> float | None:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def add_overfitting_statistics(runs: list[BacktestRun], n_splits: int = 8) -> dict[tuple[str, str, str], float]:
    """Probabilistic and deflated Sharpe of every run; PBO per (symbol, interval, family) with two runs or more.

    Every run gets ``psr`` (probabilistic Sharpe ratio against zero). A run of
    a strategy family other than ``benchmark`` also gets ``deflated_sharpe``,
    deflated by the trials of its family on its market: every run of the family
    there (or, for a run with ``trial_sharpes``, each configuration in it),
    stored beside it as ``dsr_trials`` and ``dsr_sharpe_variance`` (variance of
    the trials' per-bar Sharpe ratios). Alone in its family a run's DSR is its
    PSR. Benchmarks were not selected among trials: they get ``psr`` only.
    A run whose returns do not vary (it never traded) has NaN statistics of its
    own but still counts as a trial with Sharpe 0: it was tried and selected
    against (an architecture whose edge never beat its costs).

    PBO (CSCV over the family's bar returns) needs two runs of equal length
    and ``2 * n_splits`` bars; the returned mapping holds the families where
    it could be computed.
    """
    from pipeline.backtest.overfitting import (deflated_sharpe, probabilistic_sharpe,
                                               probability_of_backtest_overfitting, sharpe_moments)

    groups: dict[tuple[str, str, str], list[BacktestRun]] = {}
    for r in runs:
        groups.setdefault((r.symbol, r.interval, r.family), []).append(r)
    pbo = {}
    for key, members in groups.items():
        rets = [bar_returns(r.result.equity, r.result.initial_equity) for r in members]
        moments = [sharpe_moments(x) if x.size > 1 and x.std() > 0 else None for x in rets]
        trials = []
        for r, m in zip(members, moments):
            if r.trial_sharpes is not None:
                trials.extend(float(v) for v in r.trial_sharpes if math.isfinite(v))
            elif m is not None:
                trials.append(m[0])
            elif r.family != BENCHMARK_FAMILY:
                trials.append(0.0)  # tried, never traded (its edge never beat the costs): a trial with Sharpe 0
        n_trials = max(1, len(trials))
        variance = float(np.var(trials, ddof=1)) if len(trials) > 1 else 0.0
        for r, m in zip(members, moments):
            psr = probabilistic_sharpe(m[0], 0.0, m[3], m[1], m[2]) if m is not None else math.nan
            r.metrics["psr"] = psr
            if r.family == BENCHMARK_FAMILY:
                for name in ("deflated_sharpe", "dsr_trials", "dsr_sharpe_variance"):
                    r.metrics.pop(name, None)
                continue
            r.metrics["deflated_sharpe"] = (deflated_sharpe(m[0], variance, n_trials, m[3], m[1], m[2])
                                            if m is not None else math.nan)
            r.metrics["dsr_trials"] = float(n_trials)
            r.metrics["dsr_sharpe_variance"] = variance
        lengths = {x.shape[0] for x in rets}
        if key[2] != BENCHMARK_FAMILY and len(members) >= 2 and len(lengths) == 1 and lengths.pop() >= 2 * n_splits:
            pbo[key] = probability_of_backtest_overfitting(np.column_stack(rets), n_splits)["pbo"]
            for r in members:  # stored with the run, so a reader of backtest.metrics sees it too
                r.metrics["pbo"] = pbo[key]
    return pbo
