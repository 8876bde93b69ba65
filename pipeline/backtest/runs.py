"""One backtest run as a record (strategy, market, config, result, metrics) and the baseline suite."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math

import numpy as np

from pipeline.backtest import baselines
from pipeline.backtest.costs import CostModel
from pipeline.backtest.engine import BacktestResult, EngineInputs, run_backtest
from pipeline.backtest.metrics import classification_metrics, trading_metrics
from pipeline.backtest.risk import RiskRules
from pipeline.backtest.signals import SignalRule


@dataclasses.dataclass
class BacktestRun:
    run_id: str
    strategy: str
    symbol: str
    interval: str
    config: dict
    result: BacktestResult
    metrics: dict[str, float]
    classification: dict | None = None  # classification_metrics() of the direction head, if any
    model_ids: list[str] = dataclasses.field(default_factory=list)
    data_fingerprint: str = ""
    report_path: str | None = None


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


def evaluate(strategy: str, symbol: str, interval: str, inputs: EngineInputs, target: np.ndarray, config: dict,
             costs: CostModel, risk: RiskRules, execution: str = "next_open", classification: dict | None = None,
             model_ids: list[str] | None = None, initial_equity: float = 10_000.0) -> BacktestRun:
    """Backtest ``target`` and compute its metrics; returns the run record."""
    full_config = {
        **config,
        "execution": execution,
        "costs": dataclasses.asdict(costs),
        "risk": dataclasses.asdict(risk),
        "initial_equity": initial_equity,
    }
    result = run_backtest(inputs, target, costs, risk, execution, initial_equity)
    metrics = trading_metrics(result.equity, result.position, result.trades_table(), initial_equity, interval,
                              result.fees_paid, result.funding_paid, result.turnover)
    if classification is not None:
        for key, value in classification.items():
            if isinstance(value, float):
                metrics[f"clf_{key}"] = value
    return BacktestRun(
        run_id=make_run_id(strategy, symbol, interval, full_config),
        strategy=strategy, symbol=symbol, interval=interval, config=full_config, result=result,
        metrics=metrics, classification=classification, model_ids=list(model_ids or []),
        data_fingerprint=data_fingerprint(inputs),
    )


def run_baselines(symbol: str, interval: str, inputs: EngineInputs, costs: CostModel, risk: RiskRules = RiskRules(),
                  features: np.ndarray | None = None, feature_source: str = "candles", lr_folds: int = 4,
                  ma_fast: int = 24, ma_slow: int = 96, lr_rule: SignalRule = SignalRule(0.4),
                  log=None) -> list[BacktestRun]:
    """Every baseline on one market. ``features=None`` computes the small candle feature set.

    The logistic regression is skipped (with a log line) when there are too
    few bars for its walk-forward folds.
    """
    log = log or (lambda msg: None)
    n = inputs.close.shape[0]
    runs = [
        evaluate("buy_and_hold", symbol, interval, inputs, baselines.buy_and_hold_targets(n), {}, costs, RiskRules()),
        evaluate("flat", symbol, interval, inputs, baselines.flat_targets(n), {}, costs, RiskRules()),
        evaluate("ma_momentum", symbol, interval, inputs,
                 baselines.ma_momentum_targets(inputs.close, ma_fast, ma_slow),
                 {"fast": ma_fast, "slow": ma_slow}, costs, risk),
    ]
    if features is None:
        features, _ = baselines.candle_features(inputs.open, inputs.high, inputs.low, inputs.close, inputs.volume)
        feature_source = "candles"
    try:
        lr = baselines.logistic_regression_baseline(features, inputs.close, lr_rule, n_folds=lr_folds)
    except ValueError as exc:
        log(f"logistic_regression baseline skipped for {symbol} {interval}: {exc}")
        return runs
    tested = lr.tested & (lr.labels >= 0)
    clf = classification_metrics(lr.labels[tested], lr.proba[tested]) if tested.sum() > 0 else None
    config = {"threshold": lr_rule.threshold, "sizing": lr_rule.sizing, "fraction": lr_rule.fraction,
              "n_folds": lr.n_folds, "features": feature_source}
    runs.append(evaluate("logistic_regression", symbol, interval, inputs, lr.targets, config, costs, risk,
                         classification=clf))
    return runs


def finite_or_none(value) -> float | None:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def add_overfitting_statistics(runs: list[BacktestRun], n_splits: int = 8) -> dict[tuple[str, str], float]:
    """Set ``deflated_sharpe`` on every run (trials: the runs on the same market) and return PBO per market.

    PBO (CSCV over the runs' bar returns) needs at least two runs and
    ``2 * n_splits`` bars per market; otherwise it is NaN.
    """
    from pipeline.backtest.metrics import bar_returns
    from pipeline.backtest.overfitting import deflated_sharpe_of_returns, probability_of_backtest_overfitting, sharpe_moments

    groups: dict[tuple[str, str], list[BacktestRun]] = {}
    for r in runs:
        groups.setdefault((r.symbol, r.interval), []).append(r)
    pbo = {}
    for key, members in groups.items():
        rets = [bar_returns(r.result.equity, r.result.initial_equity) for r in members]
        srs = np.array([sharpe_moments(x)[0] if x.std() > 0 else np.nan for x in rets])
        for r, x, sr in zip(members, rets, srs):
            r.metrics["deflated_sharpe"] = deflated_sharpe_of_returns(x, srs) if np.isfinite(sr) else math.nan
        lengths = {x.shape[0] for x in rets}
        if len(members) >= 2 and len(lengths) == 1 and lengths.pop() >= 2 * n_splits:
            pbo[key] = probability_of_backtest_overfitting(np.column_stack(rets), n_splits)["pbo"]
        else:
            pbo[key] = math.nan
    return pbo
