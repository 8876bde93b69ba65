"""Self-contained HTML reports (PNG plots embedded as base64): one per run, one comparing runs.

The files open without the internet: no scripts, no external styles or images.
"""

from __future__ import annotations

import base64
import html
import io
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from pipeline.backtest.metrics import CLASS_NAMES, bar_returns, drawdown
from pipeline.backtest.runs import BacktestRun
from pipeline.market.timegrid import bars_per_year

STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:24px;color:#222;max-width:1200px}
h1{font-size:22px}h2{font-size:17px;margin-top:28px}
table{border-collapse:collapse;font-size:13px}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}
th{background:#f3f3f3}td.l,th.l{text-align:left}img{max-width:100%}.muted{color:#777;font-size:12px}
"""

# metrics shown in the tables, with their display format
TABLE_METRICS: tuple[tuple[str, str], ...] = (
    ("total_return", "pct"), ("cagr", "pct"), ("annual_volatility", "pct"), ("sharpe", "num"),
    ("sortino", "num"), ("calmar", "num"), ("max_drawdown", "pct"), ("max_drawdown_duration_bars", "int"),
    ("n_trades", "int"), ("win_rate", "pct"), ("profit_factor", "num"), ("expectancy", "num"),
    ("avg_holding_bars", "num"), ("exposure", "pct"), ("turnover", "num"), ("fees_paid", "num"),
    ("funding_paid", "num"), ("var_95", "pct"), ("es_95", "pct"), ("deflated_sharpe", "num"),
)


def _fmt(value, kind: str) -> str:
    if value is None:
        return "–"
    v = float(value)
    if math.isnan(v):
        return "–"
    if math.isinf(v):
        return "∞" if v > 0 else "-∞"
    if kind == "pct":
        return f"{100 * v:.2f}%"
    if kind == "int":
        return f"{v:.0f}"
    return f"{v:.3f}"


def _png(fig) -> str:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80, bbox_inches="tight")
    plt.close(fig)
    return '<img alt="plot" src="data:image/png;base64,' + base64.b64encode(buf.getvalue()).decode() + '">'


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def _dates(ts_ms: np.ndarray) -> np.ndarray:
    return np.asarray(ts_ms, dtype=np.int64).astype("datetime64[ms]")


def equity_figure(run: BacktestRun, benchmark: BacktestRun | None) -> str:
    plt = _pyplot()
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(11, 5.5), sharex=True, gridspec_kw={"height_ratios": [2, 1]})
    x = _dates(run.result.ts_ms)
    init = run.result.initial_equity
    ax1.plot(x, run.result.equity / init, label=run.strategy, lw=1.2)
    ax2.fill_between(x, drawdown(run.result.equity) * 100, 0, alpha=0.5, label=run.strategy)
    if benchmark is not None and benchmark.run_id != run.run_id:
        ax1.plot(x, benchmark.result.equity / benchmark.result.initial_equity, label="buy and hold", lw=1, color="gray")
        ax2.plot(x, drawdown(benchmark.result.equity) * 100, color="gray", lw=0.8, label="buy and hold")
    ax1.set_ylabel("equity (× start)")
    ax1.legend(loc="upper left")
    ax1.grid(alpha=0.3)
    ax2.set_ylabel("drawdown %")
    ax2.grid(alpha=0.3)
    return _png(fig)


def monthly_returns(ts_ms: np.ndarray, equity: np.ndarray, initial_equity: float) -> tuple[list[int], np.ndarray]:
    """(years, matrix years × 12) of calendar-month returns; NaN where the month has no bars."""
    months = _dates(ts_ms).astype("datetime64[M]")
    uniq, first = np.unique(months, return_index=True)
    last = np.r_[first[1:] - 1, len(equity) - 1]
    start_eq = np.r_[initial_equity, equity[last[:-1]]]
    rets = equity[last] / start_eq - 1.0
    years = sorted({int(str(m)[:4]) for m in uniq})
    mat = np.full((len(years), 12), np.nan)
    for m, r in zip(uniq, rets):
        y, mo = int(str(m)[:4]), int(str(m)[5:7])
        mat[years.index(y), mo - 1] = r
    return years, mat


def monthly_heatmap_figure(run: BacktestRun) -> str:
    plt = _pyplot()
    years, mat = monthly_returns(run.result.ts_ms, run.result.equity, run.result.initial_equity)
    fig, ax = plt.subplots(figsize=(11, 0.5 + 0.45 * len(years)))
    lim = np.nanmax(np.abs(mat)) if np.isfinite(mat).any() else 0.01
    ax.imshow(mat * 100, cmap="RdYlGn", vmin=-lim * 100, vmax=lim * 100, aspect="auto")
    ax.set_xticks(range(12), ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"])
    ax.set_yticks(range(len(years)), [str(y) for y in years])
    for i in range(mat.shape[0]):
        for j in range(12):
            if np.isfinite(mat[i, j]):
                ax.text(j, i, f"{100 * mat[i, j]:.1f}", ha="center", va="center", fontsize=8)
    ax.set_title("monthly returns %")
    return _png(fig)


def trade_distribution_figure(run: BacktestRun) -> str:
    plt = _pyplot()
    t = run.result.trades_table()
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 3.2))
    if t["pnl"].size:
        pct = t["pnl"] / run.result.initial_equity * 100
        ax1.hist(pct, bins=min(60, max(5, pct.size // 3)), color="steelblue")
        ax2.hist(t["holding_bars"], bins=min(60, max(5, pct.size // 3)), color="gray")
    ax1.set_title("trade pnl (% of initial equity)")
    ax2.set_title("holding time (bars)")
    return _png(fig)


def rolling_sharpe(run: BacktestRun, window_days: float = 30.0) -> tuple[np.ndarray, int]:
    bpy = bars_per_year(run.interval)
    window = max(2, int(round(window_days * bpy / 365)))
    r = bar_returns(run.result.equity, run.result.initial_equity)
    out = np.full(r.shape[0], np.nan)
    if r.shape[0] >= window:
        c1 = np.cumsum(np.r_[0.0, r])
        c2 = np.cumsum(np.r_[0.0, r * r])
        s1 = c1[window:] - c1[:-window]
        s2 = c2[window:] - c2[:-window]
        mean = s1 / window
        var = np.maximum((s2 - window * mean * mean) / (window - 1), 0.0)
        with np.errstate(divide="ignore", invalid="ignore"):
            out[window - 1 :] = np.where(var > 0, mean / np.sqrt(var) * math.sqrt(bpy), np.nan)
    return out, window


def rolling_sharpe_figure(run: BacktestRun) -> str:
    plt = _pyplot()
    values, window = rolling_sharpe(run)
    fig, ax = plt.subplots(figsize=(11, 2.8))
    ax.plot(_dates(run.result.ts_ms), values, lw=0.9)
    ax.axhline(0, color="gray", lw=0.6)
    ax.set_title(f"rolling Sharpe ({window} bars, annualised)")
    ax.grid(alpha=0.3)
    return _png(fig)


def confusion_figure(cm: np.ndarray) -> str:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(3.8, 3.4))
    ax.imshow(cm, cmap="Blues")
    k = cm.shape[0]
    names = CLASS_NAMES[:k]
    ax.set_xticks(range(k), names)
    ax.set_yticks(range(k), names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for i in range(k):
        for j in range(k):
            ax.text(j, i, str(int(cm[i, j])), ha="center", va="center", fontsize=9)
    return _png(fig)


def _metrics_table(runs: Sequence[BacktestRun], links: dict[str, str] | None = None) -> str:
    head = "".join(f"<th>{html.escape(name)}</th>" for name, _ in TABLE_METRICS)
    rows = []
    for r in runs:
        label = html.escape(f"{r.strategy} · {r.symbol} · {r.interval}")
        if links and r.run_id in links:
            label = f'<a href="{html.escape(links[r.run_id])}">{label}</a>'
        cells = "".join(f"<td>{_fmt(r.metrics.get(name), kind)}</td>" for name, kind in TABLE_METRICS)
        rows.append(f'<tr><td class="l">{label}</td>{cells}</tr>')
    return f'<table><tr><th class="l">run</th>{head}</tr>{"".join(rows)}</table>'


def _page(title: str, body: str) -> str:
    return (f'<!doctype html><html><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
            f"<style>{STYLE}</style></head><body><h1>{html.escape(title)}</h1>{body}</body></html>")


def run_report_html(run: BacktestRun, benchmark: BacktestRun | None = None) -> str:
    res = run.result
    start, end = _dates(res.ts_ms[[0, -1]])
    parts = [
        f'<p class="muted">run {html.escape(run.run_id)} · {start} → {end} · {res.ts_ms.shape[0]} bars · '
        f"data {html.escape(run.data_fingerprint)}"
        + (f" · models {html.escape(', '.join(run.model_ids))}" if run.model_ids else "") + "</p>",
        "<h2>Metrics</h2>", _metrics_table([run] + ([benchmark] if benchmark and benchmark.run_id != run.run_id else [])),
        "<h2>Equity and drawdown</h2>", equity_figure(run, benchmark),
        "<h2>Monthly returns</h2>", monthly_heatmap_figure(run),
        "<h2>Trades</h2>", trade_distribution_figure(run),
        "<h2>Rolling Sharpe</h2>", rolling_sharpe_figure(run),
    ]
    if run.classification is not None:
        clf = run.classification
        rows = "".join(
            f'<tr><td class="l">{html.escape(k)}</td><td>{_fmt(v, "num")}</td></tr>'
            for k, v in clf.items() if isinstance(v, float)
        )
        parts += ["<h2>Direction head (out-of-sample)</h2>", confusion_figure(clf["confusion_matrix"]),
                  f"<table>{rows}</table>"]
    parts.append("<h2>Configuration</h2><pre>" + html.escape(_pretty(run.config)) + "</pre>")
    return _page(f"Backtest: {run.strategy} · {run.symbol} · {run.interval}", "".join(parts))


def _pretty(config: dict) -> str:
    import json

    return json.dumps(config, indent=2, sort_keys=True, default=str)


def comparison_report_html(runs: Sequence[BacktestRun], links: dict[str, str] | None = None,
                           extra_html: str = "") -> str:
    plt = _pyplot()
    groups: dict[tuple[str, str], list[BacktestRun]] = {}
    for r in runs:
        groups.setdefault((r.symbol, r.interval), []).append(r)
    parts = ["<h2>Metrics</h2>", _metrics_table(runs, links), extra_html]
    for (symbol, interval), members in groups.items():
        fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(11, 5), sharex=True, gridspec_kw={"height_ratios": [2, 1]})
        for r in members:
            x = _dates(r.result.ts_ms)
            ax1.plot(x, r.result.equity / r.result.initial_equity, lw=1, label=r.strategy)
            ax2.plot(x, drawdown(r.result.equity) * 100, lw=0.8, label=r.strategy)
        ax1.set_ylabel("equity (× start)")
        ax1.legend(loc="upper left", fontsize=8)
        ax1.grid(alpha=0.3)
        ax2.set_ylabel("drawdown %")
        ax2.grid(alpha=0.3)
        parts += [f"<h2>{html.escape(symbol)} · {html.escape(interval)}</h2>", _png(fig)]
    return _page("Backtest comparison", "".join(parts))


def write_reports(runs: Sequence[BacktestRun], out_dir: Path, extra_html: str = "") -> Path:
    """One HTML file per run (``<run_id>.html``) plus ``comparison.html``; sets ``run.report_path``.

    Buy and hold on the same market is drawn as the benchmark of each run.
    Returns the path of the comparison report.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    benchmarks = {(r.symbol, r.interval): r for r in runs if r.strategy == "buy_and_hold"}
    links = {}
    for r in runs:
        path = out_dir / f"{r.run_id}.html"
        path.write_text(run_report_html(r, benchmarks.get((r.symbol, r.interval))), encoding="utf-8")
        r.report_path = str(path)
        links[r.run_id] = path.name
    comparison = out_dir / "comparison.html"
    comparison.write_text(comparison_report_html(runs, links, extra_html), encoding="utf-8")
    return comparison
