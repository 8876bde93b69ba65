"""The comparison of every architecture and baseline, per symbol and pooled over symbols.

Columns: accuracy, macro F1, log-loss (direction head, scored bars only),
Sharpe after costs, max drawdown, turnover, deflated Sharpe with its number of
trials (the strategies actually tried in the run's family on its market),
PBO across the family's runs and training time. "Pooled" is the
equal-weight portfolio of a strategy over the symbols (mean of its per-bar
returns on their common bars); its deflated Sharpe counts the pooled Sharpes
of the family's strategies, and its PBO is CSCV across them.

:func:`run_comparison` reads what the baseline and model assets stored
(``backtest.runs`` / ``equity`` / ``metrics``: nothing is re-run), builds the
table and writes ``$DATA_DIR/reports/comparison.html`` with links to every
run's own report.
"""

from __future__ import annotations

import dataclasses
import html
import json
import math
import os
from pathlib import Path

import numpy as np
import polars as pl

from pipeline.backtest.metrics import bar_returns, drawdown, sharpe_ratio
from pipeline.backtest.overfitting import (deflated_sharpe_of_returns, probability_of_backtest_overfitting,
                                           sharpe_moments)
from pipeline.backtest.engine import BacktestResult
from pipeline.backtest.evaluation import BENCHMARK_FAMILY, BacktestRun
from pipeline.core.timegrid import bars_per_year


def sig(value) -> str:
    from pipeline.backtest.verdict_report import sig as _sig

    return _sig(value)

COLUMNS = ("strategy", "family", "symbol", "interval", "accuracy", "macro_f1", "log_loss", "sharpe",
           "max_drawdown", "turnover", "deflated_sharpe", "dsr_trials", "pbo", "train_seconds")


STORED_AT: dict[str, float] = {}  # run_id -> backtest.runs.created_at (s), filled by load_stored_runs


def load_stored_runs(warehouse, symbols, intervals) -> list[BacktestRun]:
    """Every stored run on these markets as a :class:`BacktestRun` (equity, position, metrics; no trade rows).

    The family and initial equity come from the run's stored config. Ordered
    benchmarks first, then by family and strategy.
    """
    if not warehouse.table_exists("backtest.runs"):
        return []
    meta = warehouse.query(
        "select run_id, strategy, family, symbol, interval, config, model_ids, data_fingerprint, report_path, "
        "epoch_ms(created_at) / 1000.0 as stored_at "
        "from backtest.runs where list_contains(?, symbol) and list_contains(?, interval)",
        [list(symbols), list(intervals)])
    if meta.height == 0:
        return []
    ids = meta["run_id"].to_list()
    has_ll = "log_loss" in warehouse.query(
        "select column_name from information_schema.columns where table_schema = 'backtest' "
        "and table_name = 'equity'")["column_name"].to_list()
    equity = warehouse.query("select run_id, epoch_ms(ts) as ts_ms, equity, position, "
                             f"{'log_loss' if has_ll else 'null::double as log_loss'} from backtest.equity "
                             "where list_contains(?, run_id) order by run_id, ts", [ids])
    metrics = warehouse.query("select run_id, metric, value from backtest.metrics where list_contains(?, run_id)",
                              [ids])
    eq = {k[0]: g for k, g in equity.group_by("run_id")}
    ms: dict[str, dict[str, float]] = {}
    for rid, name, value in metrics.iter_rows():
        ms.setdefault(rid, {})[name] = math.nan if value is None else float(value)
    runs = []
    for row in meta.iter_rows(named=True):
        config = json.loads(row["config"])
        e = eq.get(row["run_id"])
        if e is None or e.height == 0:
            continue
        m = ms.get(row["run_id"], {})
        result = BacktestResult(
            ts_ms=e["ts_ms"].to_numpy().astype(np.int64), equity=e["equity"].to_numpy(),
            position=e["position"].to_numpy(), trades=np.zeros((0, 0)),
            initial_equity=float(config.get("initial_equity", 10_000.0)), fees_paid=m.get("fees_paid", math.nan),
            funding_paid=m.get("funding_paid", math.nan), turnover=m.get("turnover", math.nan),
            close=np.full(e.height, np.nan), n_liquidations=int(m.get("n_liquidations", 0) or 0))
        ll = e["log_loss"].cast(pl.Float64).fill_null(float("nan")).to_numpy()
        STORED_AT[row["run_id"]] = float(row["stored_at"] or 0.0)
        runs.append(BacktestRun(
            run_id=row["run_id"], strategy=row["strategy"],
            family=row["family"] or config.get("family", row["strategy"]),
            symbol=row["symbol"], interval=row["interval"], config=config, result=result, metrics=m,
            model_ids=list(row["model_ids"] or []), data_fingerprint=row["data_fingerprint"] or "",
            report_path=row["report_path"], bar_log_loss=ll if np.isfinite(ll).any() else None))
    order = {BENCHMARK_FAMILY: 0}
    runs.sort(key=lambda r: (order.get(r.family, 1), r.family, r.strategy, r.symbol, r.interval))
    return runs


def _row(r: BacktestRun, pbo: dict) -> dict:
    m = r.metrics
    return {"strategy": r.strategy, "family": r.family, "symbol": r.symbol, "interval": r.interval,
            "accuracy": m.get("clf_accuracy"), "macro_f1": m.get("clf_macro_f1"), "log_loss": m.get("clf_log_loss"),
            "sharpe": m.get("sharpe"), "max_drawdown": m.get("max_drawdown"), "turnover": m.get("turnover"),
            "deflated_sharpe": m.get("deflated_sharpe"), "dsr_trials": m.get("dsr_trials"),
            "pbo": pbo.get((r.symbol, r.interval, r.family)), "train_seconds": m.get("train_seconds")}


def pooled_returns(runs: list[BacktestRun]) -> tuple[np.ndarray, np.ndarray]:
    """Equal-weight per-bar returns of one strategy's runs over their common bars, and those bars (ms)."""
    common = runs[0].result.ts_ms
    for r in runs[1:]:
        common = np.intersect1d(common, r.result.ts_ms)
    rets = []
    for r in runs:
        x = bar_returns(r.result.equity, r.result.initial_equity)
        rets.append(x[np.searchsorted(r.result.ts_ms, common)])
    return np.mean(rets, axis=0), common


def comparison_table(runs: list[BacktestRun], pbo: dict, n_splits: int = 8) -> pl.DataFrame:
    """One row per run, then one pooled row (symbol ``pooled``) per (strategy, interval) over several symbols."""
    rows = [_row(r, pbo) for r in runs]
    by: dict[tuple[str, str, str], list[BacktestRun]] = {}
    for r in runs:
        by.setdefault((r.family, r.interval, r.strategy), []).append(r)
    pooled: dict[tuple[str, str], dict[str, np.ndarray]] = {}
    for (family, interval, strategy), members in by.items():
        if len({r.symbol for r in members}) < 2:
            continue
        rets, _ = pooled_returns(members)
        pooled.setdefault((family, interval), {})[strategy] = rets
    for (family, interval), strategies in pooled.items():
        # every strategy of the family was tried: one that never traded is a trial with Sharpe 0 (as per market)
        sharpes = [sharpe_moments(x)[0] if x.std() > 0 else 0.0 for x in strategies.values()]
        pbo_value = None
        lengths = {x.shape[0] for x in strategies.values()}
        if family != BENCHMARK_FAMILY and len(strategies) >= 2 and len(lengths) == 1 and lengths.pop() >= 2 * n_splits:
            pbo_value = probability_of_backtest_overfitting(np.column_stack(list(strategies.values())), n_splits)["pbo"]
        for strategy, rets in strategies.items():
            members = by[(family, interval, strategy)]
            equity = np.cumprod(1.0 + rets)
            dsr = None
            if family != BENCHMARK_FAMILY and rets.std() > 0:
                dsr = deflated_sharpe_of_returns(rets, np.asarray(sharpes))
            rows.append({"strategy": strategy, "family": family, "symbol": "pooled", "interval": interval,
                         "accuracy": None, "macro_f1": None, "log_loss": None,
                         "sharpe": sharpe_ratio(rets, bars_per_year(interval)),
                         "max_drawdown": float(drawdown(np.r_[1.0, equity]).min()),
                         "turnover": float(np.mean([r.metrics.get("turnover", math.nan) for r in members])),
                         "deflated_sharpe": dsr, "dsr_trials": float(len(sharpes)) if dsr is not None else None,
                         "pbo": pbo_value, "train_seconds": members[0].metrics.get("train_seconds")})
    return pl.DataFrame(rows, schema={c: (pl.String if i < 4 else pl.Float64) for i, c in enumerate(COLUMNS)})


def comparison_markdown(table: pl.DataFrame) -> str:
    def cell(v) -> str:
        if v is None or (isinstance(v, float) and not math.isfinite(v)):
            return "–"
        return v if isinstance(v, str) else sig(v)

    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(cell(row[c]) for c in COLUMNS) + " |" for row in table.iter_rows(named=True)]
    return "\n".join(lines)


@dataclasses.dataclass
class ComparisonResult:
    table: pl.DataFrame
    markdown: str
    report_path: Path | None
    runs: int
    verdict: object = None  # pipeline.backtest.verdict.Verdict
    verdict_markdown: str = ""


def run_comparison(warehouse, settings) -> ComparisonResult:
    """The comparison of every stored baseline and model run on the settings' markets, and its HTML report.

    It opens on the verdict (:mod:`pipeline.backtest.verdict`: every strategy on the same test bars, the
    paired tests, the resolvable difference), a chart per market and the verdict tables; the per-run table of
    every current run follows (history runs, older runs of a strategy and market, are not in it).
    """
    from pipeline.backtest.reports import comparison_report_html, plotly_src_for, write_plotly_js
    from pipeline.backtest.verdict import build_verdict, current_runs
    from pipeline.backtest.verdict_report import verdict_html, verdict_markdown

    runs = load_stored_runs(warehouse, settings.symbols, settings.intervals)
    if not runs:
        return ComparisonResult(pl.DataFrame(schema={c: pl.String for c in COLUMNS}), "no stored runs", None, 0)
    verdict = build_verdict(runs, settings, dict(STORED_AT))
    runs, _ = current_runs(runs, dict(STORED_AT))
    order = {BENCHMARK_FAMILY: 0}
    runs.sort(key=lambda r: (order.get(r.family, 1), r.family, r.strategy, r.symbol, r.interval))
    pbo = {(r.symbol, r.interval, r.family): r.metrics["pbo"] for r in runs
           if math.isfinite(r.metrics.get("pbo", math.nan))}
    table = comparison_table(runs, pbo)
    markdown = comparison_markdown(table)
    out = Path(settings.reports_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "comparison.html"
    links = {}
    for r in runs:
        if r.report_path:
            target = Path(r.report_path)
            if not target.is_absolute():
                target = Path(settings.data_dir) / target
            links[r.run_id] = os.path.relpath(target, out)
    table_html = ("<h2>Architectures and baselines: every run, whole run</h2><p class='muted'>Each current run over all its bars, as stored "
                  "(the verdict above scores the common test span only). Pooled: the equal-weight portfolio of a "
                  "strategy over the symbols. Deflated Sharpe counts the strategies tried in the family on the "
                  "market (dsr_trials); PBO is CSCV across them.</p>" + _html_table(table))
    tmp = path.with_suffix(".html.tmp")
    plotly_src = plotly_src_for(path, write_plotly_js(out))
    lead = verdict_html(verdict) + champions_html(warehouse)
    tmp.write_text(comparison_report_html(runs, links, table_html, plotly_src, lead_html=lead), encoding="utf-8")
    tmp.replace(path)
    return ComparisonResult(table, markdown, path, len(runs), verdict, verdict_markdown(verdict))


def _html_table(table: pl.DataFrame) -> str:
    def cell(v) -> str:
        if v is None or (isinstance(v, float) and not math.isfinite(v)):
            return "<td>–</td>"
        return f"<td class='l'>{html.escape(v)}</td>" if isinstance(v, str) else f"<td>{sig(v)}</td>"

    head = "".join(f"<th>{html.escape(c)}</th>" for c in COLUMNS)
    rows = "".join("<tr>" + "".join(cell(row[c]) for c in COLUMNS) + "</tr>" for row in table.iter_rows(named=True))
    return f"<table class='sortable'><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>"


def champions_html(warehouse) -> str:
    """Which version of each architecture the model rows are: its champion (``models.current``), with since when."""
    if not warehouse.table_exists("models.champions"):
        return ""
    rows = warehouse.query("select architecture, interval, version, previous_version, since "
                           "from models.champions order by 1, 2")
    if rows.height == 0:
        return ""
    items = "".join(f"<tr><td class='l'>{html.escape(str(r['architecture']))}</td><td class='l'>"
                    f"{html.escape(str(r['interval']))}</td><td class='l'><b>{html.escape(str(r['version']))}</b></td>"
                    f"<td class='l'>{html.escape(str(r['previous_version'] or '–'))}</td>"
                    f"<td class='l'>{html.escape(str(r['since'])[:19])}</td></tr>" for r in rows.iter_rows(named=True))
    return ("<h2>Champions</h2><p class='muted'>Every model row is its architecture's champion version "
            "(models.champions: the version whose live refit trades); challengers are not compared.</p>"
            "<table><thead><tr><th>architecture</th><th>interval</th><th>champion</th><th>before</th><th>since</th>"
            f"</tr></thead><tbody>{items}</tbody></table>")


def training_recipes(warehouse) -> list[str]:
    """One line per trained architecture: the recipe its artifacts recorded (not today's settings)."""
    if not warehouse.table_exists("models.current"):
        return []
    rows = warehouse.query("select architecture, any_value(artifact_path) as path, count(*) as folds, "
                           "sum(cast(metrics->>'train_seconds' as double)) as seconds "
                           "from models.current group by 1 order by 1")
    lines = []
    for arch, path, folds, seconds in rows.iter_rows():
        try:
            cfg = json.loads((Path(path) / "config.json").read_text())
        except (OSError, ValueError):
            lines.append(f"- {arch}: {folds} folds (artifact config unreadable at {path})")
            continue
        t = cfg.get("training", {})
        inputs = f"encoding {cfg['encoding']}" if cfg.get("encoding") else f"window {cfg.get('window')}"
        lines.append(f"- {arch} ({cfg.get('model') or arch}/{cfg.get('variant')}): {folds} folds, {inputs}, "
                     f"{t.get('epochs')} epochs of at most {t.get('max_train_windows')} windows, batch "
                     f"{t.get('batch_size')}, lr {t.get('learning_rate')}, patience {t.get('patience')}, "
                     f"{seconds:.0f} s of training")
    return lines


def funding_settlements(warehouse, settings) -> dict[str, int]:
    """Funding settlements stored per symbol of ``settings`` from its start (0: none, or no raw.funding table)."""
    rows = {}
    if warehouse.table_exists("raw.funding"):
        rows = dict(warehouse.query("select symbol, count(*) as n from raw.funding where ts >= cast(? as timestamp) "
                                    "group by 1", [settings.start]).iter_rows())
    return {s: int(rows.get(s, 0)) for s in settings.symbols}


def funding_coverage(settlements: dict[str, int]) -> str:
    """One line: how many funding settlements the span has per symbol (a perpetual without them pays none)."""
    parts = [f"{s} {n:,}" for s, n in settlements.items()]
    note = "" if all(settlements.values()) else (
        " A symbol with 0 has no funding data for the span, so its perpetual paid none and equals spot.")
    return f"Funding settlements stored for the span: {', '.join(parts)}.{note}"


def _funding_clause(settlements: dict[str, int]) -> str:
    """The costs sentence's funding part, as the stored settlements have it."""
    funded = [s for s, n in settlements.items() if n]
    if not funded:
        return "; no funding: the span has no funding settlements, so the perpetual paid none"
    if len(funded) == len(settlements):
        return ", funding on the perpetual"
    return (f", funding on the perpetual of {', '.join(funded)} (the other symbols have no funding settlements "
            "in the span and paid none)")


def results_markdown(result: ComparisonResult, settings, command: str, wall_s: float | None,
                     recipes: list[str] | None = None, funding: dict[str, int] | None = None, note: str = "") -> str:
    """docs/results.md: what was run, on what, how long it took, and the comparison table as measured.

    ``funding``: the span's funding settlements per symbol (:func:`funding_settlements`); the page states
    them and says funding was paid only where there were any (None: funding is not mentioned).
    """
    import datetime as dt
    import platform

    wall = "not measured" if wall_s is None else f"{wall_s / 60:.1f} min ({wall_s:.0f} s)"
    return "\n".join([
        "# Results on real markets",
        "",
        *([result.verdict_markdown, ""] if result.verdict_markdown else []),
        f"Measured {dt.date.today().isoformat()} on {platform.machine()} with {os.cpu_count()} cores, no GPU.",
        f"Markets: {', '.join(settings.symbols)} at interval {', '.join(settings.intervals)} from {settings.start} "
        f"({settings.source} source, `{settings.files_dir}`). Every number is out of sample and after costs "
        f"(taker fee {settings.taker_fee}, slippage {settings.slippage_bps} bps"
        f"{_funding_clause(funding) if funding is not None else ''}).",
        "",
        *([funding_coverage(funding), ""] if funding is not None else []),
        "Command:",
        "",
        "```bash",
        command,
        "```",
        "",
        f"Wall time of the whole run (ingest, features, every architecture's walk-forward, backtests): {wall}.",
        "",
        *([note, ""] if note else []),
        "Hyper-parameters were fixed before the run (the defaults in `pipeline/config.py` at the time); early "
        "stopping and the edge rule's margin use each fold's validation tail only. A model that loses to the "
        "baselines is reported as it is. What each model was trained with, from its artifacts:",
        "",
        *(recipes or ["- (no trained models)"]),
        "",
        result.markdown,
        "",
    ])


def main(argv: list[str] | None = None) -> int:
    """``python -m pipeline.backtest.comparison --out docs/results.md``: write the results page from the warehouse."""
    import argparse

    from pipeline.config import Settings
    from pipeline.warehouse import Warehouse

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--command", default="make evaluate")
    parser.add_argument("--wall-s", type=float, default=None)
    parser.add_argument("--note", default="", help="a paragraph added after the wall time (e.g. what was re-run)")
    args = parser.parse_args(argv)
    settings = Settings.from_env()
    warehouse = Warehouse(settings.warehouse_path)
    result = run_comparison(warehouse, settings)
    if result.runs == 0:
        raise SystemExit(f"no backtest runs in {settings.warehouse_path}: run the pipeline first")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(results_markdown(result, settings, args.command, args.wall_s, training_recipes(warehouse),
                                         funding_settlements(warehouse, settings), note=args.note), encoding="utf-8")
    print(f"wrote {args.out} ({result.runs} runs; report {result.report_path})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
