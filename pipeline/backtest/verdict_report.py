"""The verdict as HTML (sentence, a chart per market, the tables) and as Markdown (docs/results.md)."""

from __future__ import annotations

import html
import math

from pipeline.backtest.verdict import MarketVerdict, Score, Verdict, _day, verdict_sentence


def sig(value, digits: int = 3) -> str:
    """A number with ``digits`` significant digits (no 0.000 for a small value); '–' when missing."""
    if value is None:
        return "–"
    v = float(value)
    if not math.isfinite(v):
        return "–" if math.isnan(v) else ("∞" if v > 0 else "−∞")
    if abs(v) < 1e-12:  # zero, or rounding noise of a sum of zeros
        return "0"
    if abs(v) >= 1000:
        return f"{v:,.0f}"
    return f"{v:.{digits}g}"


def _two(v) -> str:
    return "–" if v is None or not math.isfinite(v) else f"{v:.2f}"


def _p(p) -> str:
    if p is None or not math.isfinite(p):
        return "–"
    return f"{p:.2g}" if p >= 0.001 else "<0.001"


def _label(s: Score) -> str:
    if s.selected:
        return f"{s.strategy} (selected)"
    if s.best_baseline:
        return f"{s.strategy} (best baseline)"
    return f"{s.strategy} (not selected)" if s.kind == "model" else s.strategy


def _market_title(mv: MarketVerdict) -> str:
    who = f"pooled: {', '.join(mv.symbols)}" if mv.symbol == "pooled" else mv.symbol
    return (f"{who} · {mv.interval}: {mv.n_days:,} test days, {mv.n_bars:,} bars, "
            f"{_day(mv.span[0])} to {_day(mv.span[1])}")


def sharpe_chart_svg(mv: MarketVerdict, width: int = 720) -> str:
    """Each strategy's net Sharpe (daily returns, annualised) with its 95 % interval; selected model and best
    baseline marked. Inline SVG: readable without scripts or network."""
    rows = [s for s in mv.scores if math.isfinite(s.metrics.get("daily_sharpe", math.nan))]
    if not rows:
        return "<p class='muted'>no strategy with a Sharpe ratio on the span</p>"
    lo = min([0.0] + [s.sharpe_ci[0] for s in rows if math.isfinite(s.sharpe_ci[0])] + [s.metrics["daily_sharpe"] for s in rows])
    hi = max([0.0] + [s.sharpe_ci[1] for s in rows if math.isfinite(s.sharpe_ci[1])] + [s.metrics["daily_sharpe"] for s in rows])
    pad = 0.05 * (hi - lo or 1.0)
    lo, hi = lo - pad, hi + pad
    left, right, row_h, top = 260, 20, 20, 24
    h = top + row_h * len(rows) + 30
    x = lambda v: left + (v - lo) / (hi - lo) * (width - left - right)  # noqa: E731
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{h}" font-family="sans-serif" '
           f'font-size="12" role="img" aria-label="net Sharpe with 95% intervals">']
    out.append(f'<line x1="{x(0):.1f}" y1="{top - 6}" x2="{x(0):.1f}" y2="{h - 24}" stroke="#999" stroke-dasharray="3,3"/>')
    for k, s in enumerate(rows):
        y = top + k * row_h + row_h / 2
        colour = "#c0392b" if s.selected else "#2471a3" if s.best_baseline else "#555" if s.kind != "model" else "#999"
        weight = "bold" if (s.selected or s.best_baseline) else "normal"
        out.append(f'<text x="{left - 8}" y="{y + 4:.1f}" text-anchor="end" font-weight="{weight}" fill="{colour}">'
                   f"{html.escape(_label(s))}</text>")
        a, b = s.sharpe_ci
        if math.isfinite(a) and math.isfinite(b):
            out.append(f'<line x1="{x(a):.1f}" y1="{y:.1f}" x2="{x(b):.1f}" y2="{y:.1f}" stroke="{colour}" stroke-width="2"/>')
        v = s.metrics["daily_sharpe"]
        out.append(f'<circle cx="{x(v):.1f}" cy="{y:.1f}" r="4" fill="{colour}"><title>{html.escape(s.strategy)}: '
                   f'{_two(v)} [{_two(a)}, {_two(b)}]</title></circle>')
    ticks = [lo + (hi - lo) * i / 5 for i in range(6)]
    for t in ticks:
        out.append(f'<text x="{x(t):.1f}" y="{h - 8}" text-anchor="middle" fill="#555">{t:.2f}</text>')
    out.append(f'<text x="{left}" y="14" fill="#555">net Sharpe (annualised, daily returns) with its 95% interval</text>')
    out.append("</svg>")
    return "".join(out)


TABLE = ("strategy", "kind", "Sharpe", "95% CI", "Δ vs best baseline [95% CI]", "p (Holm)",
         "Δ vs spot buy & hold [95% CI]", "p (Holm)", "resolvable Δ", "log-loss", "DM p vs LR (Holm)", "accuracy",
         "macro F1", "max DD", "turnover", "deflated Sharpe", "trials", "PBO", "validation")


def _rows(mv: MarketVerdict) -> list[list[str]]:
    out = []
    for s in mv.scores:
        m = s.metrics
        tb = mv.test_of(s.strategy, "best baseline")
        ts = mv.test_of(s.strategy, "spot buy and hold")
        info = mv.info_of(s.strategy)
        val = (f"loss {sig(m.get('selection_val_loss'))}" if s.kind == "model"
               else f"Sharpe {_two(m.get('val_sharpe', math.nan))}" if math.isfinite(m.get("val_sharpe", math.nan))
               else "–")
        out.append([
            _label(s), s.kind, _two(m.get("daily_sharpe")), f"[{_two(s.sharpe_ci[0])}, {_two(s.sharpe_ci[1])}]",
            f"{_two(tb.test.difference)} [{_two(tb.test.ci_low)}, {_two(tb.test.ci_high)}]" if tb else "–",
            f"{_p(tb.test.p_value)} ({_p(tb.p_holm)})" if tb else "–",
            f"{_two(ts.test.difference)} [{_two(ts.test.ci_low)}, {_two(ts.test.ci_high)}]" if ts else "–",
            f"{_p(ts.test.p_value)} ({_p(ts.p_holm)})" if ts else "–",
            _two(tb.test.resolvable) if tb else "–",
            sig(m.get("log_loss"), 4), f"{_p(info.test.p_value)} ({_p(info.p_holm)})" if info else "–",
            sig(m.get("clf_accuracy")), sig(m.get("clf_macro_f1")),
            f"{100 * m['max_drawdown']:.1f}%" if math.isfinite(m.get("max_drawdown", math.nan)) else "–",
            sig(m.get("turnover")), sig(m.get("deflated_sharpe")), sig(m.get("dsr_trials")), sig(m.get("pbo")), val])
    return out


def _notes(verdict: Verdict, mv: MarketVerdict) -> str:
    t = next((t for t in mv.sharpe_tests), None)
    block = f"blocks of {t.test.block_days} days, {t.test.samples:,} resamples" if t else ""
    return (f"Sharpe: net of costs, from daily returns on the span, annualised (365 days). Intervals and p-values: "
            f"studentized circular block bootstrap of the paired daily returns (Ledoit and Wolf 2008; {block}); "
            f"Holm's correction over the {sum(1 for s in mv.scores if s.kind == 'model')} models against each "
            f"opponent. Resolvable Δ: the smallest Sharpe difference against the best baseline that the span detects "
            f"with {100 * verdict.power:.0f}% power at {100 * verdict.alpha:.0f}%. DM: Diebold-Mariano on the per-bar "
            f"log-loss against the logistic regression (Newey-West). Deflated Sharpe and PBO: on the span bars, over "
            f"the current runs of the family. Validation: the selected model has the lowest validation loss of the "
            f"first fold; the best baseline the highest net Sharpe on that validation tail.")


def verdict_html(verdict: Verdict) -> str:
    parts = [f"<h2>Verdict</h2><p class='verdict'>{html.escape(verdict_sentence(verdict))}</p>"]
    for mv in verdict.pooled + verdict.markets:
        parts.append(f"<h3>{html.escape(_market_title(mv))}</h3>")
        parts.append(sharpe_chart_svg(mv))
    for mv in verdict.pooled + verdict.markets:
        head = "".join(f"<th>{html.escape(c)}</th>" for c in TABLE)
        body = "".join("<tr>" + "".join(f"<td class='l'>{html.escape(c)}</td>" if j < 2 else f"<td>{html.escape(c)}</td>"
                                        for j, c in enumerate(row)) + "</tr>" for row in _rows(mv))
        parts.append(f"<h3>Table: {html.escape(_market_title(mv))}</h3><div class='scroll'><table>"
                     f"<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>"
                     f"<p class='muted'>{html.escape(_notes(verdict, mv))}</p>")
        if mv.history:
            items = "".join(f"<li>{html.escape(rid)} ({html.escape(why)})</li>" for rid, _, why in mv.history)
            parts.append(f"<p class='muted'>History, not counted:</p><ul class='muted'>{items}</ul>")
    parts.append(f"<p class='muted'>The statistics took {verdict.seconds:.1f} s.</p>")
    return "".join(parts)


def verdict_markdown(verdict: Verdict) -> str:
    lines = ["## Verdict", "", verdict_sentence(verdict), ""]
    for mv in verdict.pooled + verdict.markets:
        lines += [f"### {_market_title(mv)}", "", "| " + " | ".join(TABLE) + " |", "|" + "---|" * len(TABLE)]
        lines += ["| " + " | ".join(c.replace("|", "/") for c in row) + " |" for row in _rows(mv)]
        lines += ["", _notes(verdict, mv), ""]
        if mv.history:
            lines += ["History, not counted: " + "; ".join(f"`{rid}` ({why})" for rid, _, why in mv.history), ""]
    lines += [f"The verdict's statistics (bootstraps, tests, deflation on the span) took {verdict.seconds:.1f} s.", ""]
    return "\n".join(lines)
