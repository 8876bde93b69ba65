"""Trading and classification metrics (365-day year; bars per year from the interval).

Returns are simple per-bar returns of the equity curve, the first one measured
from the initial equity. Sharpe and Sortino use a zero risk-free rate.
"""

from __future__ import annotations

import math

import numpy as np

from pipeline.core.timegrid import bars_per_year as _bars_per_year

CLASS_NAMES = ("down", "flat", "up")


def bar_returns(equity: np.ndarray, initial_equity: float) -> np.ndarray:
    equity = np.asarray(equity, dtype=np.float64)
    prev = np.concatenate(([initial_equity], equity[:-1]))
    return equity / prev - 1.0


def drawdown(equity: np.ndarray) -> np.ndarray:
    """Drawdown at each bar: equity / running peak - 1 (<= 0)."""
    equity = np.asarray(equity, dtype=np.float64)
    return equity / np.maximum.accumulate(equity) - 1.0


def max_drawdown_duration(equity: np.ndarray) -> int:
    """Longest run of bars spent below a previous peak (bars from the peak to the recovery)."""
    equity = np.asarray(equity, dtype=np.float64)
    peak = np.maximum.accumulate(equity)
    under = equity < peak
    longest = run = 0
    for flag in under:
        run = run + 1 if flag else 0
        longest = max(longest, run)
    return longest


def sharpe_ratio(returns: np.ndarray, periods_per_year: float) -> float:
    r = np.asarray(returns, dtype=np.float64)
    if r.size < 2:
        return math.nan
    sd = r.std(ddof=1)
    if sd == 0:
        mean = r.mean()
        return math.copysign(math.inf, mean) if mean != 0 else math.nan
    return float(r.mean() / sd * math.sqrt(periods_per_year))


def sortino_ratio(returns: np.ndarray, periods_per_year: float) -> float:
    """Mean return over the downside deviation sqrt(mean(min(r, 0)^2)), annualised."""
    r = np.asarray(returns, dtype=np.float64)
    if r.size < 2:
        return math.nan
    downside = math.sqrt(np.mean(np.minimum(r, 0.0) ** 2))
    if downside == 0:
        return math.inf if r.mean() > 0 else math.nan
    return float(r.mean() / downside * math.sqrt(periods_per_year))


def value_at_risk(returns: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """Historical VaR and expected shortfall at ``level``, as positive loss fractions."""
    r = np.asarray(returns, dtype=np.float64)
    if r.size == 0:
        return math.nan, math.nan
    q = float(np.quantile(r, 1.0 - level))
    tail = r[r <= q]
    return -q, float(-tail.mean())


def trading_metrics(equity, position, trades: dict, initial_equity: float, interval: str,
                    fees_paid: float = 0.0, funding_paid: float = 0.0, turnover: float = 0.0) -> dict[str, float]:
    """Every trading metric of one run, as a flat name -> value mapping."""
    equity = np.asarray(equity, dtype=np.float64)
    position = np.asarray(position, dtype=np.float64)
    n = equity.shape[0]
    if n == 0:
        raise ValueError("equity is empty: no bars, no metrics")
    bpy = _bars_per_year(interval)
    r = bar_returns(equity, initial_equity)
    growth = equity[-1] / initial_equity
    years = n / bpy
    cagr = growth ** (1.0 / years) - 1.0 if growth > 0 else -1.0
    dd = drawdown(np.concatenate(([initial_equity], equity)))
    mdd = float(dd.min())
    var95, es95 = value_at_risk(r, 0.95)
    pnl = np.asarray(trades.get("pnl", []), dtype=np.float64)
    holding = np.asarray(trades.get("holding_bars", []), dtype=np.float64)
    reasons = np.asarray(trades.get("exit_reason", []), dtype=object)
    wins = pnl[pnl > 0].sum()
    losses = -pnl[pnl < 0].sum()
    mean_equity = float(equity.mean())
    return {
        "total_return": float(growth - 1.0),
        "cagr": float(cagr),
        "annual_volatility": float(r.std(ddof=1) * math.sqrt(bpy)) if n > 1 else math.nan,
        "sharpe": sharpe_ratio(r, bpy),
        "sortino": sortino_ratio(r, bpy),
        "calmar": float(cagr / abs(mdd)) if mdd < 0 else math.nan,
        "max_drawdown": mdd,
        "max_drawdown_duration_bars": float(max_drawdown_duration(np.concatenate(([initial_equity], equity)))),
        "win_rate": float((pnl > 0).mean()) if pnl.size else math.nan,
        "profit_factor": float(wins / losses) if losses > 0 else (math.inf if wins > 0 else math.nan),
        "expectancy": float(pnl.mean()) if pnl.size else math.nan,
        "expectancy_pct": float((pnl / initial_equity).mean()) if pnl.size else math.nan,
        "n_trades": float(pnl.size),
        "n_liquidations": float(np.count_nonzero(reasons == "liquidation")),
        "avg_holding_bars": float(holding.mean()) if holding.size else math.nan,
        "exposure": float((position != 0).mean()),
        "turnover": float(turnover / mean_equity) if mean_equity > 0 else math.nan,
        "annual_turnover": float(turnover / mean_equity / years) if mean_equity > 0 else math.nan,
        "fees_paid": float(fees_paid),
        "funding_paid": float(funding_paid),
        "var_95": var95,
        "es_95": es95,
        "final_equity": float(equity[-1]),
        "bars": float(n),
    }


# ---- classification (direction head) -------------------------------------------------------------


def confusion_matrix(y_true, y_pred, n_classes: int = 3) -> np.ndarray:
    """Rows: true class, columns: predicted class."""
    y_true = np.asarray(y_true, dtype=np.int64)
    y_pred = np.asarray(y_pred, dtype=np.int64)
    if y_true.shape != y_pred.shape:
        raise ValueError(f"y_true has {y_true.shape[0]} labels but y_pred has {y_pred.shape[0]}")
    for name, y in (("y_true", y_true), ("y_pred", y_pred)):
        if y.size and (y.min() < 0 or y.max() >= n_classes):
            raise ValueError(f"{name} holds classes outside 0..{n_classes - 1}")
    cm = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(cm, (y_true, y_pred), 1)
    return cm


def _auc_binary(positive: np.ndarray, score: np.ndarray) -> float:
    """ROC AUC by the Mann-Whitney rank statistic (ties get average ranks)."""
    n_pos = int(positive.sum())
    n_neg = positive.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return math.nan
    order = np.argsort(score, kind="mergesort")
    sorted_scores = score[order]
    ranks = np.empty(score.size, dtype=np.float64)
    i = 0
    while i < score.size:
        j = i
        while j + 1 < score.size and sorted_scores[j + 1] == sorted_scores[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2.0 + 1.0
        i = j + 1
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def classification_metrics(y_true, proba, class_names=CLASS_NAMES) -> dict:
    """Accuracy, per-class precision / recall / F1, macro F1, one-vs-rest ROC AUC, confusion matrix.

    ``proba`` has one column per class (down, flat, up); the prediction is its argmax.
    """
    y_true = np.asarray(y_true, dtype=np.int64)
    proba = np.asarray(proba, dtype=np.float64)
    k = len(class_names)
    if proba.ndim != 2 or proba.shape[1] != k:
        raise ValueError(f"proba has shape {proba.shape}; expected (n, {k})")
    if proba.shape[0] != y_true.shape[0]:
        raise ValueError(f"y_true has {y_true.shape[0]} labels but proba has {proba.shape[0]} rows")
    if y_true.size == 0:
        raise ValueError("y_true is empty: no labels to score")
    if not np.all(np.isfinite(proba)):
        i = int(np.flatnonzero(~np.isfinite(proba).all(axis=1))[0])
        raise ValueError(f"proba row {i} holds NaN or infinite values")
    y_pred = proba.argmax(axis=1)
    cm = confusion_matrix(y_true, y_pred, k)
    out: dict = {"accuracy": float(np.trace(cm) / cm.sum())}
    f1s, aucs = [], []
    for c, name in enumerate(class_names):
        tp = cm[c, c]
        predicted = cm[:, c].sum()
        actual = cm[c, :].sum()
        precision = tp / predicted if predicted else 0.0
        recall = tp / actual if actual else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        auc = _auc_binary(y_true == c, proba[:, c])
        out[f"precision_{name}"] = float(precision)
        out[f"recall_{name}"] = float(recall)
        out[f"f1_{name}"] = float(f1)
        out[f"roc_auc_{name}"] = auc
        f1s.append(f1)
        if not math.isnan(auc):
            aucs.append(auc)
    out["macro_f1"] = float(np.mean(f1s))
    out["roc_auc_ovr"] = float(np.mean(aucs)) if aucs else math.nan
    out["confusion_matrix"] = cm
    return out


def binomial_p_value(successes: int, trials: int, p: float) -> float:
    """One-sided P(X >= successes) for X ~ Binomial(trials, p)."""
    from scipy import stats

    if trials <= 0:
        return math.nan
    return float(stats.binom.sf(successes - 1, trials, p))


def per_bar_log_loss(proba: np.ndarray, label_class: np.ndarray) -> np.ndarray:
    """-log p(true class) of each bar with a prediction and a known label; NaN elsewhere (probabilities are
    clipped at 1e-12, as the reported log-loss is)."""
    proba = np.asarray(proba, dtype=np.float64)
    y = np.asarray(label_class, dtype=np.int64)
    out = np.full(y.shape[0], np.nan)
    scored = np.isfinite(proba).all(axis=1) & (y >= 0)
    out[scored] = -np.log(np.clip(proba[scored, y[scored]], 1e-12, 1.0))
    return out


def scored_classification(proba: np.ndarray, label_class: np.ndarray) -> dict | None:
    """Classification metrics of predicted bars with a known label, plus log-loss, majority and binomial p."""
    scored = np.isfinite(proba).all(axis=1) & (label_class >= 0)
    if not scored.any():
        return None
    y, p = label_class[scored], proba[scored]
    out = classification_metrics(y, p)
    out["log_loss"] = float(-np.mean(np.log(np.clip(p[np.arange(y.size), y], 1e-12, 1.0))))
    counts = np.bincount(y, minlength=3)
    majority = float(counts.max() / y.size)
    out["majority_accuracy"] = majority
    out["n_scored"] = float(y.size)
    out["binomial_p"] = binomial_p_value(int(round(out["accuracy"] * y.size)), int(y.size), majority)
    return out
