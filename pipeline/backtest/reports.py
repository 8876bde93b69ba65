"""Self-contained HTML reports: one per run, one comparing runs.

Interactive charts (zoom, hover) are plotly figures. Their JavaScript (about
4.8 MB) is written once per reports folder, ``$DATA_DIR/reports/plotly.min.js``,
and every report of the folder and its subfolders loads it by a relative path
(:func:`write_plotly_js`), so the folder opens offline and can be zipped and
mailed whole; a page built on its own (:func:`run_report_html` without
``plotly_src``) embeds it. The small static charts (monthly returns, trade
distribution, rolling Sharpe, confusion matrix) stay PNGs embedded as base64.
Nothing is loaded from the network.

Costs per bar are derived from the trade records (the ``backtest.trades``
rows) and the run's cost settings, see :func:`costs_per_bar`.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
import os
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from pipeline.backtest.metrics import CLASS_NAMES, bar_returns, drawdown, trading_metrics
from pipeline.backtest.evaluation import BacktestRun
from pipeline.core.timegrid import bars_per_year, interval_ms

STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:24px;color:#222;max-width:1200px}
h1{font-size:22px}h2{font-size:17px;margin-top:28px}
table{border-collapse:collapse;font-size:13px}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}
th{background:#f3f3f3}td.l,th.l{text-align:left}img{max-width:100%}.muted{color:#777;font-size:12px}
table.sortable th{cursor:pointer;user-select:none}table.sortable th[aria-sort=ascending]::after{content:" \\25B2"}
table.sortable th[aria-sort=descending]::after{content:" \\25BC"}.scroll{max-height:520px;overflow:auto}
td.pos{color:#1a7f37}td.neg{color:#c62828}.warn{color:#b35c00}
"""

# click a header of a table.sortable to sort its body by that column (numbers by data-v, else text)
SORT_JS = """
document.querySelectorAll('table.sortable').forEach(function(t){
  t.querySelectorAll('thead th').forEach(function(th,col){
    th.addEventListener('click',function(){
      var asc=th.getAttribute('aria-sort')!=='ascending';
      t.querySelectorAll('thead th').forEach(function(h){h.removeAttribute('aria-sort');});
      th.setAttribute('aria-sort',asc?'ascending':'descending');
      var body=t.tBodies[0],rows=Array.prototype.slice.call(body.rows);
      var key=function(r){var c=r.cells[col],v=c.getAttribute('data-v');return v===null?c.textContent:parseFloat(v);};
      rows.sort(function(a,b){var x=key(a),y=key(b);
        if(typeof x==='number'&&typeof y==='number'){if(isNaN(x))return 1;if(isNaN(y))return -1;return asc?x-y:y-x;}
        return asc?String(x).localeCompare(String(y)):String(y).localeCompare(String(x));});
      var frag=document.createDocumentFragment();rows.forEach(function(r){frag.appendChild(r);});body.appendChild(frag);
    });
  });
});
"""

# metrics shown in the tables, with their display format
TABLE_METRICS: tuple[tuple[str, str], ...] = (
    ("total_return", "pct"), ("cagr", "pct"), ("annual_volatility", "pct"), ("sharpe", "num"),
    ("sortino", "num"), ("calmar", "num"), ("max_drawdown", "pct"), ("max_drawdown_duration_bars", "int"),
    ("n_trades", "int"), ("n_liquidations", "int"), ("win_rate", "pct"), ("profit_factor", "num"),
    ("expectancy", "num"),
    ("avg_holding_bars", "num"), ("exposure", "pct"), ("turnover", "num"), ("fees_paid", "num"),
    ("funding_paid", "num"), ("var_95", "pct"), ("es_95", "pct"), ("gross_sharpe", "num"),
    ("gross_total_return", "pct"), ("psr", "num"), ("deflated_sharpe", "num"), ("dsr_trials", "int"),
    ("dsr_sharpe_variance", "num"),
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
    if v != 0 and abs(v) < 0.01:  # significant digits, never 0.000 for a small value
        return f"{v:.3g}"
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


# ---- derived series: costs, gross equity, years, out-of-sample span --------------------------------


def costs_per_bar(run: BacktestRun) -> dict[str, np.ndarray]:
    """Fees, slippage and funding paid at each bar (quote currency, positive = paid), from the trade records.

    Fees and funding per trade are the recorded ones (``backtest.trades``), so
    their totals equal the run's ``fees_paid`` / ``funding_paid``. A trade's
    fee is split between its entry and exit bar in proportion to the entry and
    exit fill prices (exact for a trade that is opened and closed in one fill
    each; an open trade paid its entry fee only). Slippage is not recorded: it
    is derived from the fee, since both are proportional to the traded value
    (``fee = value * fee_rate``, slippage ``= value * s / (1 ± s)`` with the
    fixed slippage ``s`` of the run's costs); impact (``impact_coef``) is not
    included, and without a fee rate slippage cannot be derived (NaN).
    Funding, paid at the settlements while the trade was held, is spread
    evenly over the bars after its entry up to its exit.
    """
    res = run.result
    n = res.ts_ms.shape[0]
    out = {"fees": np.zeros(n), "slippage": np.zeros(n), "funding": np.zeros(n)}
    t = res.trades_table()
    if not t["pnl"].size:
        return out
    costs = run.config.get("costs", {})
    fee_rate = costs.get("taker_fee" if costs.get("order_type", "taker") == "taker" else "maker_fee", math.nan)
    slip = costs.get("slippage_bps", math.nan) / 1e4
    entry_i, exit_i = t["entry_i"], t["exit_i"]
    closed = t["exit_reason"] != "open"
    entry_value_w = t["entry_price"]
    exit_value_w = np.where(closed, t["exit_price"], 0.0)
    share = entry_value_w / (entry_value_w + exit_value_w)
    np.add.at(out["fees"], entry_i, t["fees"] * share)
    np.add.at(out["fees"], exit_i[closed], (t["fees"] * (1 - share))[closed])
    if fee_rate and fee_rate > 0 and math.isfinite(slip):
        value = t["fees"] / fee_rate
        buy_first = t["side"] > 0  # a long buys to enter and sells to exit
        entry_slip = np.where(buy_first, slip / (1 + slip), slip / (1 - slip))
        exit_slip = np.where(buy_first, slip / (1 - slip), slip / (1 + slip))
        np.add.at(out["slippage"], entry_i, value * share * entry_slip)
        np.add.at(out["slippage"], exit_i[closed], (value * (1 - share) * exit_slip)[closed])
    else:
        out["slippage"][:] = math.nan
    paid = -t["funding"]  # the record is signed as cash flow: negative when paid
    for e, x, amount in zip(entry_i, exit_i, paid):
        if amount == 0.0:
            continue
        lo, hi = (e + 1, x + 1) if x > e else (e, e + 1)
        hi = min(hi, n)
        out["funding"][lo:hi] += amount / (hi - lo)
    return out


def gross_equity(run: BacktestRun, costs: dict[str, np.ndarray] | None = None) -> np.ndarray:
    """Net equity plus the costs paid so far (fees, slippage, funding): the same trades before their costs."""
    costs = costs or costs_per_bar(run)
    paid = costs["fees"] + np.nan_to_num(costs["slippage"]) + costs["funding"]
    return run.result.equity + np.cumsum(paid)


def _years(ts_ms: np.ndarray) -> np.ndarray:
    return _dates(ts_ms).astype("datetime64[Y]").astype(np.int64) + 1970


def year_table(run: BacktestRun, costs: dict[str, np.ndarray] | None = None) -> list[dict]:
    """One row per calendar year (UTC): return, Sharpe (365-day year), max drawdown, trades opened, exposure, costs.

    Each year starts from the equity at the previous year's last close (the
    initial equity for the first year), so the years compound to the total return.
    """
    res = run.result
    costs = costs or costs_per_bar(run)
    years = _years(res.ts_ms)
    t = res.trades_table()
    entry_year = years[t["entry_i"]] if t["pnl"].size else np.zeros(0, dtype=np.int64)
    rows = []
    start_equity = res.initial_equity
    for year in np.unique(years):
        sel = np.flatnonzero(years == year)
        in_year = entry_year == year
        m = trading_metrics(res.equity[sel], res.position[sel], {k: v[in_year] for k, v in t.items()},
                            start_equity, run.interval)
        rows.append({"year": int(year), "return": m["total_return"], "sharpe": m["sharpe"],
                     "max_drawdown": m["max_drawdown"], "trades": int(in_year.sum()), "exposure": m["exposure"],
                     "fees": float(costs["fees"][sel].sum()), "slippage": float(costs["slippage"][sel].sum()),
                     "funding": float(costs["funding"][sel].sum()), "start_equity": float(start_equity)})
        start_equity = float(res.equity[sel[-1]])
    return rows


def _to_ms(value) -> int:
    if isinstance(value, (int, np.integer)):
        return int(value)
    try:
        return int(np.datetime64(str(value).replace("Z", ""), "ms").astype(np.int64))
    except ValueError:
        raise ValueError(f"oos_start={value!r}: give an ISO time (2024-01-01T00:00) or milliseconds") from None


def out_of_sample_mask(run: BacktestRun) -> np.ndarray | None:
    """Bars traded out of sample: ``run.oos_mask`` (bool per bar), ``config["oos_start"]`` or, for walk-forward
    runs (models, the logistic regression), every bar from ``metrics["first_test_index"]`` on; None when
    unrecorded."""
    n = run.result.ts_ms.shape[0]
    mask = getattr(run, "oos_mask", None)
    if mask is None:
        mask = run.config.get("oos_mask")
    if mask is not None:
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != (n,):
            raise ValueError(f"run {run.run_id}: oos_mask has shape {mask.shape}, the run has {n} bars")
        return mask
    if run.config.get("oos_start") is not None:
        return run.result.ts_ms >= _to_ms(run.config["oos_start"])
    first = run.metrics.get("first_test_index")
    if first is not None and math.isfinite(first):
        return np.arange(n) >= int(first)
    return None


def is_trained(run: BacktestRun) -> bool:
    """A run whose signal was fitted to data (models, or a classifier), so in-sample bars matter."""
    return bool(run.model_ids) or run.classification is not None or "n_folds" in run.config


def _spans(mask: np.ndarray) -> list[tuple[int, int]]:
    """(first, last) index of every run of True in ``mask``."""
    edges = np.diff(np.r_[0, mask.astype(np.int8), 0])
    return list(zip(np.flatnonzero(edges == 1), np.flatnonzero(edges == -1) - 1))


# Points drawn per line: more than one per pixel of a wide chart (1,200 px); each bucket keeps its min and max, so no
# extreme is lost. The demo's reports with one shared plotly.js: 44 MB at 8,000 points, 22 MB at 2,400, 18.5 MB at 1,600.
DISPLAY_POINTS = 1600


def display_index(n: int, keys: Sequence[np.ndarray], max_points: int = DISPLAY_POINTS) -> np.ndarray:
    """Bars to draw: all of them up to ``max_points``, else the first, last and each bucket's min and max of ``keys``."""
    if n <= max_points:
        return np.arange(n)
    buckets = max(1, max_points // (2 * max(1, len(keys))))
    size = -(-n // buckets)
    idx = [np.array([0, n - 1])]
    for key in keys:
        pad = np.full(buckets * size, np.nan)
        pad[:n] = np.where(np.isfinite(key), key, np.nan)
        block = pad.reshape(buckets, size)
        ok = ~np.all(np.isnan(block), axis=1)
        base = np.arange(buckets)[ok] * size
        idx += [base + np.nanargmin(block[ok], axis=1), base + np.nanargmax(block[ok], axis=1)]
    return np.unique(np.concatenate(idx))


# ---- interactive charts (plotly) --------------------------------------------------------------


PLOT_CONFIG = {"displaylogo": False, "responsive": True, "scrollZoom": False}


def _plot_div(fig) -> str:
    fig.update_layout(template="plotly_white", margin=dict(l=60, r=20, t=30, b=30), hovermode="x unified",
                      legend=dict(orientation="h", y=1.06, x=0))
    for trace in fig.data:  # values go out as base64 typed arrays (plotly's "bdata"), y in float32: screen precision
        if isinstance(getattr(trace, "y", None), np.ndarray) and trace.y.dtype == np.float64:
            trace.y = trace.y.astype(np.float32)
    return '<div class="chart">' + fig.to_html(include_plotlyjs=False, full_html=False, config=PLOT_CONFIG) + "</div>"


def _iso(ms) -> str:
    return str(np.datetime64(int(ms), "ms"))


def _x(ts_ms: np.ndarray) -> np.ndarray:
    # ms since the epoch as float64 (exact below 2**53), sent as a base64 typed array: a third of ISO strings'
    # size; the time axes are set to date axes, which read epoch milliseconds
    return np.asarray(ts_ms, dtype=np.int64).astype(np.float64)


def _shade_sample(fig, run: BacktestRun, rows: int) -> str:
    """Shade the out-of-sample span green and, for trained runs, the in-sample span grey; returns a caption."""
    mask = out_of_sample_mask(run)
    ts = run.result.ts_ms
    if mask is None:
        return ('<p class="warn">This run was fitted to data but records no out-of-sample span: '
                "treat every bar as possibly in-sample.</p>") if is_trained(run) else ""
    half = interval_ms(run.interval) / 2
    for flag, color, label in ((True, "rgba(46,160,67,0.10)", "out of sample"), (False, "rgba(120,120,120,0.18)", "in sample")):
        if not flag and not is_trained(run):
            continue
        for k, (a, b) in enumerate(_spans(mask if flag else ~mask)):
            for row in range(1, rows + 1):
                # a label on the first span of the top row only (an annotation with no text reads "new text")
                labelled = {"annotation_text": label, "annotation_position": "top left"} if row == 1 and k == 0 else {}
                fig.add_vrect(x0=_iso(ts[a] - half), x1=_iso(ts[b] + half), fillcolor=color, line_width=0,
                              layer="below", row=row, col=1, **labelled)
    n_oos = int(mask.sum())
    return (f'<p class="muted">Shaded green: out of sample ({n_oos} of {mask.size} bars)'
            + ("; grey: in sample (fitted or warm-up)" if is_trained(run) else "") + ".</p>")


def equity_chart(run: BacktestRun, benchmark: BacktestRun | None) -> str:
    """Equity (× start, log scale) against buy and hold, drawdown underneath, the out-of-sample span shaded."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    res = run.result
    eq = res.equity / res.initial_equity
    bench = None
    if benchmark is not None and benchmark.run_id != run.run_id and benchmark.result.ts_ms.shape == res.ts_ms.shape:
        bench = benchmark.result.equity / benchmark.result.initial_equity
    keys = [eq] + ([bench] if bench is not None else [])
    idx = display_index(eq.shape[0], keys)
    x = _x(res.ts_ms[idx])
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, row_heights=[0.7, 0.3], vertical_spacing=0.04)
    fig.update_xaxes(type="date")  # x: epoch ms (_x)
    with np.errstate(divide="ignore", invalid="ignore"):
        fig.add_trace(go.Scatter(x=x, y=np.where(eq[idx] > 0, eq[idx], np.nan), name=run.strategy,
                                 line=dict(width=1.4, color="#1f77b4")), row=1, col=1)
        fig.add_trace(go.Scatter(x=x, y=100 * drawdown(res.equity)[idx], name=f"{run.strategy} drawdown %",
                                 fill="tozeroy", line=dict(width=0.8, color="#1f77b4"), showlegend=False), row=2, col=1)
        if bench is not None:
            fig.add_trace(go.Scatter(x=x, y=np.where(bench[idx] > 0, bench[idx], np.nan), name="buy and hold",
                                     line=dict(width=1, color="gray")), row=1, col=1)
            fig.add_trace(go.Scatter(x=x, y=100 * drawdown(benchmark.result.equity)[idx], name="buy and hold drawdown %",
                                     line=dict(width=0.8, color="gray"), showlegend=False), row=2, col=1)
    caption = _shade_sample(fig, run, 2)
    fig.update_yaxes(type="log", title_text="equity (× start, log)", row=1, col=1)
    fig.update_yaxes(title_text="drawdown %", row=2, col=1)
    fig.update_layout(height=520)
    note = (f'<p class="muted">Drawn at {idx.size} of {eq.size} bars (each bucket\'s low and high kept).</p>'
            if idx.size < eq.size else "")
    return _plot_div(fig) + caption + note


def position_chart(run: BacktestRun) -> str:
    """Price with entries, exits and liquidations marked, and the position (fraction of equity) underneath."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    res = run.result
    idx = display_index(res.close.shape[0], [res.close, res.position])
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, row_heights=[0.68, 0.32], vertical_spacing=0.04)
    fig.update_xaxes(type="date")  # x: epoch ms (_x)
    fig.add_trace(go.Scatter(x=_x(res.ts_ms[idx]), y=res.close[idx], name="close", line=dict(width=1, color="#555")),
                  row=1, col=1)
    t = res.trades_table()
    if t["pnl"].size:
        side = np.where(t["side"] > 0, "long", "short")
        text = [f"#{no} {s} pnl {p:,.2f}" for no, s, p in zip(t["trade_no"], side, t["pnl"])]
        text = np.array(text, dtype=object)
        for sign, name, symbol, color in ((1, "long entry", "triangle-up", "#1a7f37"),
                                          (-1, "short entry", "triangle-down", "#c62828")):
            sel = t["side"] == sign
            if sel.any():
                fig.add_trace(go.Scatter(x=_x(t["entry_ts_ms"][sel]), y=t["entry_price"][sel], mode="markers",
                                         name=name, text=text[sel], hoverinfo="text+y",
                                         marker=dict(symbol=symbol, size=9, color=color)), row=1, col=1)
        reasons = t["exit_reason"]
        for sel, name, symbol, color, size in (
                ((reasons != "open") & (reasons != "liquidation"), "exit", "x-thin-open", "#333", 8),
                (reasons == "liquidation", "liquidation", "x", "#d00000", 14)):
            if sel.any():
                fig.add_trace(go.Scatter(x=_x(t["exit_ts_ms"][sel]), y=t["exit_price"][sel], mode="markers",
                                         name=name, text=[f"{s} ({r})" for s, r in zip(text[sel], reasons[sel])],
                                         hoverinfo="text+y", marker=dict(symbol=symbol, size=size, color=color,
                                                                         line=dict(width=2, color=color))),
                              row=1, col=1)
    fig.add_trace(go.Scatter(x=_x(res.ts_ms[idx]), y=res.position[idx], name="position", line_shape="hv",
                             fill="tozeroy", line=dict(width=1, color="#6a3d9a"), showlegend=False), row=2, col=1)
    fig.update_yaxes(type="log", title_text="price (log)", row=1, col=1)
    fig.update_yaxes(title_text="position (× equity)", row=2, col=1)
    fig.update_layout(height=520)
    return _plot_div(fig)


def costs_chart(run: BacktestRun, costs: dict[str, np.ndarray], years: list[dict]) -> str:
    """Net equity against net plus the costs paid, and the costs per year as stacked bars."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    res = run.result
    gross = gross_equity(run, costs)
    idx = display_index(gross.shape[0], [gross, res.equity])
    x = _x(res.ts_ms[idx])
    fig = make_subplots(rows=1, cols=2, column_widths=[0.68, 0.32], horizontal_spacing=0.08,
                        subplot_titles=("equity before and after costs", "costs per year"))
    fig.add_trace(go.Scatter(x=x, y=gross[idx], name="before costs (net + costs paid)",
                             line=dict(width=1.2, color="#ff7f0e")), row=1, col=1)
    fig.add_trace(go.Scatter(x=x, y=res.equity[idx], name="net", line=dict(width=1.2, color="#1f77b4")), row=1, col=1)
    labels = [str(y["year"]) for y in years]
    for key, color in (("fees", "#8c564b"), ("slippage", "#e377c2"), ("funding", "#17becf")):
        fig.add_trace(go.Bar(x=labels, y=[y[key] for y in years], name=key, marker_color=color,
                             hovertemplate="%{x} " + key + ": %{y:,.2f}<extra></extra>"), row=1, col=2)
    fig.update_layout(barmode="relative", height=380, hovermode="closest")
    fig.update_xaxes(type="date", row=1, col=1)  # x: epoch ms (_x)
    fig.update_xaxes(type="category", row=1, col=2)
    fig.update_yaxes(title_text="equity", row=1, col=1)
    fig.update_yaxes(title_text="paid (quote)", row=1, col=2)
    return _plot_div(fig)


def comparison_chart(members: Sequence[BacktestRun]) -> str:
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, row_heights=[0.7, 0.3], vertical_spacing=0.04)
    fig.update_xaxes(type="date")  # x: epoch ms (_x)
    for k, r in enumerate(members):
        eq = r.result.equity / r.result.initial_equity
        idx = display_index(eq.shape[0], [eq])
        x = _x(r.result.ts_ms[idx])
        color = _COLORS[k % len(_COLORS)]
        fig.add_trace(go.Scatter(x=x, y=np.where(eq[idx] > 0, eq[idx], np.nan), name=r.strategy, legendgroup=r.run_id,
                                 line=dict(width=1.2, color=color)), row=1, col=1)
        fig.add_trace(go.Scatter(x=x, y=100 * drawdown(r.result.equity)[idx], name=r.strategy, legendgroup=r.run_id,
                                 showlegend=False, line=dict(width=0.8, color=color)), row=2, col=1)
    fig.update_yaxes(type="log", title_text="equity (× start, log)", row=1, col=1)
    fig.update_yaxes(title_text="drawdown %", row=2, col=1)
    fig.update_layout(height=480)
    return _plot_div(fig)


_COLORS = ("#1f77b4", "#7f7f7f", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#bcbd22", "#17becf")


# ---- tables --------------------------------------------------------------------------------------


def _cell(value, kind: str, signed: bool = False) -> str:
    text = _fmt(value, kind)
    v = float(value) if value is not None else math.nan
    cls = ""
    if signed and math.isfinite(v) and v != 0:
        cls = ' class="pos"' if v > 0 else ' class="neg"'
    return f'<td{cls} data-v="{v if math.isfinite(v) else "NaN"}">{text}</td>'


def _metrics_table(runs: Sequence[BacktestRun], links: dict[str, str] | None = None) -> str:
    head = "".join(f"<th>{html.escape(name)}</th>" for name, _ in TABLE_METRICS)
    rows = []
    for r in runs:
        label = html.escape(f"{r.strategy} · {r.symbol} · {r.interval}")
        if links and r.run_id in links:
            label = f'<a href="{html.escape(links[r.run_id])}">{label}</a>'
        cells = "".join(f"<td>{_fmt(r.metrics.get(name), kind)}</td>" for name, kind in TABLE_METRICS)
        rows.append(f'<tr><td class="l">{label}</td>{cells}</tr>')
    return f'<div class="scroll"><table><tr><th class="l">run</th>{head}</tr>{"".join(rows)}</table></div>'


def year_table_html(years: list[dict], costs_derived: bool) -> str:
    head = ("<thead><tr><th>year</th><th>return</th><th>Sharpe</th><th>max drawdown</th><th>trades opened</th>"
            "<th>exposure</th><th>fees</th><th>slippage</th><th>funding</th><th>costs % of start</th></tr></thead>")
    rows = []
    for y in years:
        total = y["fees"] + (y["slippage"] if costs_derived else 0.0) + y["funding"]
        rows.append(f'<tr><td data-v="{y["year"]}">{y["year"]}</td>{_cell(y["return"], "pct", True)}'
                    f'{_cell(y["sharpe"], "num")}{_cell(y["max_drawdown"], "pct")}{_cell(y["trades"], "int")}'
                    f'{_cell(y["exposure"], "pct")}{_cell(y["fees"], "num")}{_cell(y["slippage"], "num")}'
                    f'{_cell(y["funding"], "num")}{_cell(total / y["start_equity"], "pct")}</tr>')
    return f'<table class="sortable years">{head}<tbody>{"".join(rows)}</tbody></table>'


def _duration(ms: float) -> str:
    hours = ms / 3_600_000
    if hours < 48:
        return f"{hours:.0f}h"
    return f"{hours / 24:.1f}d"


TRADE_COLUMNS = ("#", "side", "entry time", "entry price", "exit time", "exit price", "size (× equity)", "pnl",
                 "fees", "funding", "holding", "exit reason")


def trade_list_html(run: BacktestRun) -> str:
    """Every trade of the run (the rows of ``backtest.trades``), in a table sortable by any column."""
    t = run.result.trades_table()
    bar_ms = interval_ms(run.interval)
    head = "".join(f"<th>{c}</th>" for c in TRADE_COLUMNS)
    rows = []
    for k in range(t["pnl"].size):
        still_open = t["exit_reason"][k] == "open"
        exit_ts = t["exit_ts_ms"][k]
        held = t["holding_bars"][k]
        rows.append(
            f'<tr><td data-v="{t["trade_no"][k]}">{t["trade_no"][k]}</td>'
            f'<td>{"long" if t["side"][k] > 0 else "short"}</td>'
            f'<td data-v="{t["entry_ts_ms"][k]}">{_iso(t["entry_ts_ms"][k])[:16]}</td>{_cell(t["entry_price"][k], "num")}'
            + (f'<td data-v="NaN">–</td><td data-v="NaN">–</td>' if still_open else
               f'<td data-v="{exit_ts}">{_iso(exit_ts)[:16]}</td>{_cell(t["exit_price"][k], "num")}')
            + f'{_cell(t["size"][k], "num")}{_cell(t["pnl"][k], "num", True)}{_cell(t["fees"][k], "num")}'
            f'{_cell(t["funding"][k], "num", True)}<td data-v="{held}">{_duration(held * bar_ms)}</td>'
            f'<td>{html.escape(str(t["exit_reason"][k]))}</td></tr>')
    return (f'<div class="scroll"><table class="sortable trades"><thead><tr>{head}</tr></thead>'
            f'<tbody>{"".join(rows)}</tbody></table></div>')


def _comparison_rows(runs: Sequence[BacktestRun], links: dict[str, str] | None) -> str:
    head = ("<thead><tr><th class='l'>strategy</th><th class='l'>family</th><th class='l'>market</th>"
            "<th>total return</th><th>Sharpe (net)</th><th>Sharpe (gross)</th><th>max drawdown</th><th>trades</th>"
            "<th>liquidations</th>"
            "<th>PSR</th><th>deflated Sharpe</th><th>trials</th><th>Sharpe variance of trials</th></tr></thead>")
    rows = []
    for r in runs:
        m = r.metrics
        label = html.escape(r.strategy)
        if links and r.run_id in links:
            label = f'<a href="{html.escape(links[r.run_id])}">{label}</a>'
        family = getattr(r, "family", None) or r.config.get("family", "")
        rows.append(
            f"<tr><td class='l'>{label}</td><td class='l'>{html.escape(str(family))}</td>"
            f"<td class='l'>{html.escape(f'{r.symbol} · {r.interval}')}</td>"
            f"{_cell(m.get('total_return'), 'pct', True)}{_cell(m.get('sharpe'), 'num')}"
            f"{_cell(m.get('gross_sharpe'), 'num')}{_cell(m.get('max_drawdown'), 'pct')}{_cell(m.get('n_trades'), 'int')}"
            f"{_cell(m.get('n_liquidations'), 'int')}"
            f"{_cell(m.get('psr'), 'num')}{_cell(m.get('deflated_sharpe'), 'num')}{_cell(m.get('dsr_trials'), 'int')}"
            f"{_cell(m.get('dsr_sharpe_variance'), 'num')}</tr>")
    return f'<table class="sortable strategies">{head}<tbody>{"".join(rows)}</tbody></table>'


# ---- pages ---------------------------------------------------------------------------------------


PLOTLY_JS = "plotly.min.js"  # the one copy of plotly.js in a reports folder


def write_plotly_js(folder: Path) -> Path:
    """``folder/plotly.min.js`` (the installed plotly's bundle), written atomically when missing or different."""
    from plotly.offline import get_plotlyjs

    path = Path(folder) / PLOTLY_JS
    text = get_plotlyjs()
    if not path.is_file() or path.read_text(encoding="utf-8") != text:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{PLOTLY_JS}.{os.getpid()}.tmp")
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(path)
    return path


def plotly_src_for(page: Path, plotly_js: Path) -> str:
    """The relative URL from a report at ``page`` to the folder's shared plotly.js."""
    return Path(os.path.relpath(Path(plotly_js).resolve(), Path(page).resolve().parent)).as_posix()


def _page(title: str, body: str, interactive: bool = True, plotly_src: str | None = None) -> str:
    scripts = ""
    if interactive and plotly_src:
        scripts = f'<script type="text/javascript" src="{html.escape(plotly_src)}"></script>'
    elif interactive:
        from plotly.offline import get_plotlyjs

        scripts = f'<script type="text/javascript">{get_plotlyjs()}</script>'
    return (f'<!doctype html><html><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
            f"<style>{STYLE}</style>{scripts}</head><body><h1>{html.escape(title)}</h1>{body}"
            f"<script>{SORT_JS}</script></body></html>")


def run_report_html(run: BacktestRun, benchmark: BacktestRun | None = None, plotly_src: str | None = None) -> str:
    res = run.result
    start, end = _dates(res.ts_ms[[0, -1]])
    costs = costs_per_bar(run)
    years = year_table(run, costs)
    slippage_known = bool(np.isfinite(costs["slippage"]).all())
    parts = [
        f'<p class="muted">run {html.escape(run.run_id)} · {start} → {end} · {res.ts_ms.shape[0]} bars · '
        f"data {html.escape(run.data_fingerprint)}"
        + (f" · models {html.escape(', '.join(run.model_ids))}" if run.model_ids else "") + "</p>",
        "<h2>Metrics</h2>", _metrics_table([run] + ([benchmark] if benchmark and benchmark.run_id != run.run_id else [])),
        "<h2>Equity and drawdown</h2>", equity_chart(run, benchmark),
        "<h2>Price and position</h2>", position_chart(run),
        "<h2>Costs</h2>", costs_chart(run, costs, years),
        '<p class="muted">Fees and funding are the recorded ones per trade; slippage is derived from each fill\'s '
        "value and the fixed slippage rate (impact not included); funding is spread over the bars each trade was "
        "held.</p>" + ("" if slippage_known else '<p class="warn">No fee rate: slippage cannot be derived.</p>'),
        "<h2>Per year</h2>", year_table_html(years, slippage_known),
        '<p class="muted">Calendar years (UTC); Sharpe annualised with 365 days; each year starts from the '
        "previous year's last close.</p>",
        "<h2>Monthly returns</h2>", monthly_heatmap_figure(run),
        "<h2>Trade distribution</h2>", trade_distribution_figure(run),
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
    parts += [f"<h2>Trades ({res.n_trades})</h2>",
              '<p class="muted">Click a column header to sort.</p>', trade_list_html(run),
              "<h2>Configuration</h2><pre>" + html.escape(_pretty(run.config)) + "</pre>"]
    return _page(f"Backtest: {run.strategy} · {run.symbol} · {run.interval}", "".join(parts), plotly_src=plotly_src)


def _pretty(config: dict) -> str:
    return json.dumps(config, indent=2, sort_keys=True, default=str)


def comparison_report_html(runs: Sequence[BacktestRun], links: dict[str, str] | None = None,
                           extra_html: str = "", plotly_src: str | None = None, lead_html: str = "") -> str:
    groups: dict[tuple[str, str], list[BacktestRun]] = {}
    for r in runs:
        groups.setdefault((r.symbol, r.interval), []).append(r)
    parts = [lead_html, "<h2>Strategies</h2>",
             '<p class="muted">Each deflated Sharpe is deflated by the trials its strategy was selected among '
             "(their number and the variance of their Sharpe ratios beside it); benchmarks show their "
             "probabilistic Sharpe ratio against zero (PSR) only.</p>",
             _comparison_rows(runs, links), extra_html]
    for (symbol, interval), members in groups.items():
        parts += [f"<h2>{html.escape(symbol)} · {html.escape(interval)}</h2>", comparison_chart(members)]
    parts += ["<h2>All metrics</h2>", _metrics_table(runs, links)]
    return _page("Backtest comparison", "".join(parts), plotly_src=plotly_src)


def report_file_name(run_id: str, taken: set[str] = frozenset()) -> str:
    """A file name for a run's report: letters, digits, ``.``, ``_`` and ``-`` only, never hidden, never taken."""
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", run_id).lstrip(".")[:120] or "run"
    name = f"{safe}.html"
    if safe != run_id or name in taken or name == "comparison.html":
        import hashlib

        name = f"{safe}-{hashlib.sha256(run_id.encode()).hexdigest()[:8]}.html"
    return name


def write_reports(runs: Sequence[BacktestRun], out_dir: Path, extra_html: str = "",
                  plotly_folder: Path | None = None) -> Path:
    """One HTML file per run (named from its run id, see :func:`report_file_name`) plus ``comparison.html``.

    Sets ``run.report_path``. Buy and hold of the perpetual on the same market
    is drawn as the benchmark of each run. Every page loads the one plotly.js of ``plotly_folder`` (default
    ``out_dir``; the pipeline passes ``$DATA_DIR/reports``). Returns the path of the comparison report.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    plotly_js = write_plotly_js(plotly_folder or out_dir)
    benchmarks = {(r.symbol, r.interval): r for r in runs if r.strategy == "buy_and_hold"}
    links: dict[str, str] = {}
    taken: set[str] = set()
    for r in runs:
        name = report_file_name(r.run_id, taken)
        taken.add(name)
        path = out_dir / name
        path.write_text(run_report_html(r, benchmarks.get((r.symbol, r.interval)), plotly_src_for(path, plotly_js)),
                        encoding="utf-8")
        r.report_path = str(path)
        links[r.run_id] = name
    comparison = out_dir / "comparison.html"
    comparison.write_text(comparison_report_html(runs, links, extra_html, plotly_src_for(comparison, plotly_js)),
                          encoding="utf-8")
    return comparison
