"""One honest verdict: every strategy of a market on the same test bars, the selected model against the best
baseline and spot buy and hold with a paired test, and the smallest difference the span can resolve.

For each market (symbol, interval) of the stored runs (:func:`build_verdict`):

1. **Current runs only.** One run per strategy: the newest stored (``created_at``); older runs of the same
   strategy and market, and runs whose bars differ from the market's (another data version), are listed as
   history and never counted (not scored, not trials of the deflation).
2. **One test span.** From the latest first test bar to the earliest last test bar of the runs that have
   test blocks (the models and the logistic regressions, all cut by the models' folds; see
   :func:`pipeline.core.splits.grid_folds`): every strategy, benchmarks included, is scored on exactly these
   bars. Sharpe, drawdown, turnover, total return, deflated Sharpe and PBO are computed on them only.
3. **Selection on validation tails.** The selected model is the architecture with the lowest validation
   loss on the first fold's validation tail (``selection_val_loss``: the only tail that ends before every
   test bar), ties by name. The best baseline is the baseline (MA momentum, the logistic regressions, buy and
   hold of the perpetual or of spot) with the highest net Sharpe on that same validation tail
   (``val_sharpe``). Neither choice reads a test bar.
4. **Tests.** Every model against the best baseline and against spot buy and hold: the Sharpe difference on
   paired daily net returns (:func:`pipeline.backtest.significance.sharpe_difference_test`); every model's
   per-bar log-loss against the logistic regression's (Diebold-Mariano). Each family of tests (one market,
   one opponent) is Holm-corrected over the models compared.
5. **Pooled.** The equal-weight portfolio of each strategy over the symbols (mean of per-bar returns on the
   common span bars), tested the same way; the pooled best baseline is the one with the highest mean
   validation Sharpe over the symbols.

The headline (:func:`verdict_sentence`) is the pooled result of the selected model (the single market when
there is one symbol).
"""

from __future__ import annotations

import dataclasses
import math
import time
import zlib

import numpy as np

from pipeline.backtest.engine import BacktestResult
from pipeline.backtest.evaluation import BENCHMARK_FAMILY, BacktestRun, add_overfitting_statistics
from pipeline.backtest.metrics import bar_returns, drawdown, sharpe_ratio
from pipeline.backtest.significance import (DieboldMariano, SharpeTest, daily_returns, diebold_mariano, holm,
                                            sharpe_difference_test)
from pipeline.core.timegrid import bars_per_year

MODEL_FAMILY = "models"
REGRESSION = "logistic_regression"
SPOT = "buy_and_hold_spot"
BASELINE_CANDIDATES = ("ma_momentum", "logistic_regression", "logistic_regression_window", "buy_and_hold",
                       "buy_and_hold_spot")


@dataclasses.dataclass
class Score:
    """One strategy of one market on the common test span."""

    strategy: str
    family: str
    kind: str  # "model", "baseline" or "benchmark"
    run_id: str
    first_ts: int
    last_ts: int
    n_bars: int
    returns: np.ndarray  # per-bar net returns on the span
    log_loss: np.ndarray | None  # per-bar log-loss on the span (NaN: not predicted / unlabelled)
    metrics: dict[str, float]  # span figures: sharpe, max_drawdown, turnover, total_return, psr, dsr, ...
    sharpe_ci: tuple[float, float] = (math.nan, math.nan)  # 95 % interval of its own daily Sharpe
    selected: bool = False
    best_baseline: bool = False
    ts_ms: np.ndarray | None = None  # the span bars (ms)


@dataclasses.dataclass
class PairTest:
    model: str
    opponent: str
    role: str  # "best baseline" or "spot buy and hold"
    test: SharpeTest
    p_holm: float = math.nan


@dataclasses.dataclass
class InfoTest:
    model: str
    opponent: str
    test: DieboldMariano
    p_holm: float = math.nan


@dataclasses.dataclass
class MarketVerdict:
    symbol: str  # "pooled" for the equal-weight portfolio over the symbols
    interval: str
    span: tuple[int, int]  # first and last scored bar (ms)
    n_bars: int
    n_days: int
    scores: list[Score]
    selected: str | None
    best_baseline: str | None
    sharpe_tests: list[PairTest]
    info_tests: list[InfoTest]
    history: list[tuple[str, str, str]]  # (run_id, strategy, why it is not counted)
    symbols: tuple[str, ...] = ()

    def score(self, strategy: str | None) -> Score | None:
        return next((s for s in self.scores if s.strategy == strategy), None)

    def test_of(self, model: str | None, role: str) -> PairTest | None:
        return next((t for t in self.sharpe_tests if t.model == model and t.role == role), None)

    def info_of(self, model: str | None) -> InfoTest | None:
        return next((t for t in self.info_tests if t.model == model), None)


@dataclasses.dataclass
class Verdict:
    markets: list[MarketVerdict]
    pooled: list[MarketVerdict]
    seconds: float
    alpha: float
    power: float
    holm_family: str = "the models compared on one market against one opponent"

    @property
    def headline(self) -> MarketVerdict | None:
        if self.pooled:
            return self.pooled[0]
        return self.markets[0] if self.markets else None


def _kind(run: BacktestRun) -> str:
    if run.family == MODEL_FAMILY:
        return "model"
    return "benchmark" if run.family == BENCHMARK_FAMILY else "baseline"


def current_runs(runs: list[BacktestRun], stored_at: dict[str, float] | None = None
                 ) -> tuple[list[BacktestRun], list[tuple[str, str, str]]]:
    """One run per (symbol, interval, strategy): the newest stored; the others as (run_id, strategy, reason)."""
    stored_at = stored_at or {}
    groups: dict[tuple[str, str, str], list[BacktestRun]] = {}
    for r in runs:
        groups.setdefault((r.symbol, r.interval, r.strategy), []).append(r)
    keep, history = [], []
    for members in groups.values():
        members = sorted(members, key=lambda r: (stored_at.get(r.run_id, 0.0), int(r.result.ts_ms[-1])),
                         reverse=True)
        keep.append(members[0])
        history += [(r.run_id, r.strategy, f"older run of {r.strategy} (replaced by {members[0].run_id})")
                    for r in members[1:]]
    return keep, history


MIN_SPAN_OVERLAP = 0.9  # a tested run must cover this share of the reference span to be compared on it


def _own_span(r: BacktestRun) -> tuple[int, int] | None:
    lo, hi = r.metrics.get("test_start_ms", math.nan), r.metrics.get("test_end_ms", math.nan)
    return (int(lo), int(hi)) if math.isfinite(lo) and math.isfinite(hi) and lo <= hi else None


def common_span(runs: list[BacktestRun]) -> tuple[tuple[int, int] | None, list[tuple[BacktestRun, str]]]:
    """The bars every strategy of a market is scored on, and the tested runs left out (with the reason).

    The reference is the span of the models' folds as the baselines carry it (the logistic regression's
    ``test_start_ms`` / ``test_end_ms``: the first fold's first test bar to the last test bar), else the
    first tested run's. A tested run (a model, a regression) whose own span covers less than
    :data:`MIN_SPAN_OVERLAP` of it (e.g. a model trained on another data range) is left out rather than
    scored flat on bars it never predicted; the span is then cut to what every remaining tested run covers
    (the latest first test bar, the earliest last test bar), so every strategy shares the same bars.
    """
    tested = [(r, _own_span(r)) for r in runs if _own_span(r) is not None]
    ref = next((sp for r, sp in tested if r.strategy == REGRESSION), None) or next((sp for _, sp in tested), None)
    if ref is None:
        return None, []
    left_out, lo, hi = [], ref[0], ref[1]
    for r, (a, b) in tested:
        overlap = max(0, min(b, ref[1]) - max(a, ref[0])) / max(1, ref[1] - ref[0])
        if r.family != BENCHMARK_FAMILY and overlap < MIN_SPAN_OVERLAP:
            left_out.append((r, f"its test span {_day(a)} to {_day(b)} covers {100 * overlap:.0f}% of the "
                                f"market's {_day(ref[0])} to {_day(ref[1])}"))
            continue
        if r.family != BENCHMARK_FAMILY:
            lo, hi = max(lo, a), min(hi, b)
    return ((lo, hi) if lo <= hi else None), left_out


def _span_run(run: BacktestRun, mask: np.ndarray) -> BacktestRun:
    """The run cut to the span bars, its equity starting from the equity just before the span."""
    res = run.result
    first = int(np.argmax(mask))
    initial = float(res.equity[first - 1]) if first > 0 else float(res.initial_equity)
    before = float(res.position[first - 1]) if first > 0 else 0.0
    cut = BacktestResult(ts_ms=res.ts_ms[mask], equity=res.equity[mask], position=res.position[mask],
                         trades=np.zeros((0, 0)), initial_equity=initial, fees_paid=math.nan,
                         funding_paid=math.nan, turnover=math.nan, close=np.full(int(mask.sum()), np.nan),
                         n_liquidations=0)
    return dataclasses.replace(run, result=cut, metrics={**run.metrics, "position_before_span": before},
                               trial_sharpes=None,
                               bar_log_loss=None if run.bar_log_loss is None else run.bar_log_loss[mask])


def _seed(settings_seed: int, *key: str) -> np.random.SeedSequence:
    return np.random.SeedSequence([int(settings_seed), zlib.crc32("|".join(key).encode())])


def _span_metrics(run: BacktestRun, interval: str) -> dict[str, float]:
    res = run.result
    r = bar_returns(res.equity, res.initial_equity)
    pos = np.r_[run.metrics.get("position_before_span", 0.0), res.position]
    eq = np.r_[res.initial_equity, res.equity]
    return {"sharpe": sharpe_ratio(r, bars_per_year(interval)) if r.std() > 0 else 0.0,
            "total_return": float(res.equity[-1] / res.initial_equity - 1.0),
            "max_drawdown": float(drawdown(eq).min()),
            "turnover": float(np.abs(np.diff(pos)).sum()),  # equity fractions traded over the span
            "exposure": float(np.mean(res.position != 0))}


def _select_model(scores: list[Score]) -> str | None:
    cands = [(s.metrics.get("selection_val_loss", math.nan), s.strategy) for s in scores if s.kind == "model"]
    cands = [c for c in cands if math.isfinite(c[0])]
    return min(cands)[1] if cands else None


def _best_baseline(val_sharpes: dict[str, float]) -> str | None:
    cands = [(-v, s) for s, v in val_sharpes.items() if math.isfinite(v) and s in BASELINE_CANDIDATES]
    return min(cands)[1] if cands else None


def _tests(mv: MarketVerdict, settings, horizon: int) -> None:
    """Sharpe-difference tests of every model against the best baseline and spot buy and hold, DM against the
    regression, Holm within each (market, opponent) family."""
    days_of = {s.strategy: daily_returns(s.ts_ms, s.returns) for s in mv.scores}
    any_days = next(iter(days_of.values()))[0] if days_of else np.zeros(0)
    mv.n_days = int(any_days.shape[0])
    opts = dict(block=settings.bootstrap_block_days, samples=settings.bootstrap_samples,
                alpha=settings.significance_level, power=settings.power)
    for s in mv.scores:  # each strategy's own Sharpe interval: its difference from never trading
        d = days_of[s.strategy][1]
        t = sharpe_difference_test(d, np.zeros_like(d), seed=_seed(settings.bootstrap_seed, mv.symbol,
                                                                     mv.interval, s.strategy, "zero"), **opts)
        s.sharpe_ci = (t.ci_low, t.ci_high)
        s.metrics["daily_sharpe"] = t.sharpe_x if math.isfinite(t.sharpe_x) else 0.0
    models = [s for s in mv.scores if s.kind == "model"]
    for role, opponent in (("best baseline", mv.best_baseline), ("spot buy and hold", SPOT)):
        if opponent is None or opponent not in days_of:
            continue
        family = []
        for m in models:
            t = sharpe_difference_test(days_of[m.strategy][1], days_of[opponent][1],
                                       seed=_seed(settings.bootstrap_seed, mv.symbol, mv.interval, m.strategy,
                                                  opponent), **opts)
            family.append(PairTest(m.strategy, opponent, role, t))
        for pt, p in zip(family, holm([pt.test.p_value for pt in family])):
            pt.p_holm = float(p)
        mv.sharpe_tests += family
    lr = mv.score(REGRESSION)
    if lr is not None and lr.log_loss is not None:
        family = [InfoTest(m.strategy, REGRESSION, diebold_mariano(m.log_loss, lr.log_loss, horizon))
                  for m in models if m.log_loss is not None]
        for it, p in zip(family, holm([it.test.p_value for it in family])):
            it.p_holm = float(p)
        mv.info_tests = family


def _market(symbol: str, interval: str, runs: list[BacktestRun], history: list, settings, horizon: int
            ) -> MarketVerdict | None:
    span, left_out = common_span(runs)
    if span is None:  # no tested run: nothing is out of sample
        return None
    out = {r.run_id for r, _ in left_out}
    history += [(r.run_id, r.strategy, why) for r, why in left_out]
    runs = [r for r in runs if r.run_id not in out]
    ref = next((r for r in runs if r.strategy == "buy_and_hold"), runs[0])
    ref_ts = ref.result.ts_ms[(ref.result.ts_ms >= span[0]) & (ref.result.ts_ms <= span[1])]
    kept = []
    for r in runs:
        mask = (r.result.ts_ms >= span[0]) & (r.result.ts_ms <= span[1])
        if not np.array_equal(r.result.ts_ms[mask], ref_ts):
            history.append((r.run_id, r.strategy, "its bars differ from the market's on the test span "
                                                  "(another data version): rerun it"))
            continue
        kept.append(_span_run(r, mask))
    add_overfitting_statistics(kept)  # on the span bars, over the current runs only
    scores = []
    for r in kept:
        m = {**{k: r.metrics[k] for k in ("psr", "deflated_sharpe", "dsr_trials", "dsr_sharpe_variance", "pbo")
                if k in r.metrics},
             **_span_metrics(r, interval)}
        for k in ("val_sharpe", "selection_val_loss", "clf_accuracy", "clf_macro_f1", "clf_log_loss",
                  "train_seconds"):
            if k in r.metrics:
                m[k] = r.metrics[k]
        ll = r.bar_log_loss
        if ll is not None and np.isfinite(ll).any():  # the span's own classification figures
            m["log_loss"] = float(np.nanmean(ll))
        s = Score(r.strategy, r.family, _kind(r), r.run_id, int(ref_ts[0]), int(ref_ts[-1]), int(ref_ts.shape[0]),
                  bar_returns(r.result.equity, r.result.initial_equity), ll, m, ts_ms=r.result.ts_ms)
        scores.append(s)
    order = {"model": 0, "baseline": 1, "benchmark": 2}
    scores.sort(key=lambda s: (order[s.kind], s.strategy))
    mv = MarketVerdict(symbol, interval, (int(ref_ts[0]), int(ref_ts[-1])), int(ref_ts.shape[0]), 0, scores,
                       None, None, [], [], history, (symbol,))
    mv.selected = _select_model(scores)
    mv.best_baseline = _best_baseline({s.strategy: s.metrics.get("val_sharpe", math.nan) for s in scores})
    _flag(mv)
    _tests(mv, settings, horizon)
    return mv


def _flag(mv: MarketVerdict) -> None:
    for s in mv.scores:
        s.selected = s.strategy == mv.selected
        s.best_baseline = s.strategy == mv.best_baseline


def _pooled(markets: list[MarketVerdict], interval: str, settings, horizon: int) -> MarketVerdict | None:
    """The equal-weight portfolio of each strategy over the markets' symbols, on their common span bars."""
    if len(markets) < 2:
        return None
    common = None
    for mv in markets:
        ts = mv.scores[0].ts_ms
        common = ts if common is None else np.intersect1d(common, ts)
    if common is None or common.shape[0] < 2:
        return None
    names = set.intersection(*[{s.strategy for s in mv.scores} for mv in markets])
    scores = []
    for name in sorted(names):
        parts = [mv.score(name) for mv in markets]
        rets = np.mean([p.returns[np.searchsorted(p.ts_ms, common)] for p in parts], axis=0)
        lls = [p.log_loss[np.searchsorted(p.ts_ms, common)] for p in parts if p.log_loss is not None]
        ll = np.mean(lls, axis=0) if len(lls) == len(parts) else None
        eq = np.cumprod(1.0 + rets)
        m = {"sharpe": sharpe_ratio(rets, bars_per_year(interval)) if rets.std() > 0 else 0.0,
             "total_return": float(eq[-1] - 1.0), "max_drawdown": float(drawdown(np.r_[1.0, eq]).min()),
             "turnover": float(np.mean([p.metrics["turnover"] for p in parts])),
             "val_sharpe": float(np.mean([p.metrics.get("val_sharpe", math.nan) for p in parts])),
             "selection_val_loss": parts[0].metrics.get("selection_val_loss", math.nan)}
        if ll is not None and np.isfinite(ll).any():
            m["log_loss"] = float(np.nanmean(ll))
        s = Score(name, parts[0].family, parts[0].kind, "", int(common[0]), int(common[-1]), int(common.shape[0]),
                  rets, ll, m, ts_ms=common)
        scores.append(s)
    _pooled_deflation(scores)
    order = {"model": 0, "baseline": 1, "benchmark": 2}
    scores.sort(key=lambda s: (order[s.kind], s.strategy))
    symbols = tuple(mv.symbol for mv in markets)
    mv = MarketVerdict("pooled", interval, (int(common[0]), int(common[-1])), int(common.shape[0]), 0, scores,
                       None, None, [], [], [], symbols)
    mv.selected = _select_model(scores)
    mv.best_baseline = _best_baseline({s.strategy: s.metrics["val_sharpe"] for s in scores})
    _flag(mv)
    _tests(mv, settings, horizon)
    return mv


def _pooled_deflation(scores: list[Score], n_splits: int = 8) -> None:
    from pipeline.backtest.overfitting import deflated_sharpe_of_returns, probability_of_backtest_overfitting

    models = [s for s in scores if s.kind == "model"]
    if not models:
        return
    sharpes = np.array([(s.returns.mean() / s.returns.std(ddof=1)) if s.returns.std() > 0 else 0.0 for s in models])
    pbo = math.nan
    if len(models) >= 2 and models[0].returns.shape[0] >= 2 * n_splits:
        pbo = probability_of_backtest_overfitting(np.column_stack([s.returns for s in models]), n_splits)["pbo"]
    for s in models:
        s.metrics["deflated_sharpe"] = (deflated_sharpe_of_returns(s.returns, sharpes) if s.returns.std() > 0
                                        else math.nan)
        s.metrics["dsr_trials"] = float(len(models))
        s.metrics["dsr_sharpe_variance"] = float(np.var(sharpes, ddof=1)) if len(models) > 1 else 0.0
        s.metrics["pbo"] = pbo


def build_verdict(runs: list[BacktestRun], settings, stored_at: dict[str, float] | None = None,
                  horizon: int | None = None) -> Verdict:
    """The verdict over stored runs (see the module docstring); ``stored_at``: run_id -> created_at (s)."""
    t0 = time.perf_counter()
    horizon = settings.horizon if horizon is None else horizon
    current, history = current_runs(runs, stored_at)
    markets, pooled = [], []
    for interval in dict.fromkeys(r.interval for r in current):
        per = []
        for symbol in dict.fromkeys(r.symbol for r in current if r.interval == interval):
            members = [r for r in current if r.symbol == symbol and r.interval == interval]
            hist = [h for h in history if any(r.run_id == h[0] for r in runs
                                              if r.symbol == symbol and r.interval == interval)]
            mv = _market(symbol, interval, members, hist, settings, horizon)
            if mv is not None:
                per.append(mv)
        markets += per
        p = _pooled(per, interval, settings, horizon)
        if p is not None:
            pooled.append(p)
    return Verdict(markets, pooled, time.perf_counter() - t0, settings.significance_level, settings.power)


def _names(symbols) -> str:
    symbols = list(symbols)
    return symbols[0] if len(symbols) == 1 else ", ".join(symbols[:-1]) + " and " + symbols[-1]


def _f(v: float, digits: int = 2) -> str:
    return "–" if v is None or not math.isfinite(v) else f"{v:.{digits}f}".replace("-", "−")


def _p(p: float) -> str:
    """``= 0.042`` or ``< 0.001``: what follows a "p"."""
    if p is None or not math.isfinite(p):
        return "= –"
    return f"= {p:.2g}" if p >= 0.001 else "< 0.001"


def verdict_sentence(verdict: Verdict) -> str:
    """The verdict in words, every number from the run."""
    mv = verdict.headline
    if mv is None:
        return "No verdict: no stored run has out-of-sample test bars (run the baselines and the models first)."
    where = (f"{mv.n_days:,} test days of {_names(mv.symbols)}" + (" (equal-weight portfolio)" if mv.symbol == "pooled"
                                                                  else "")
             + f", {_day(mv.span[0])} to {_day(mv.span[1])}")
    level = f"{100 * (1 - verdict.alpha):.0f}%"
    if mv.selected is None:
        return (f"On {where}, no trained model was selected (none recorded a validation loss); "
                f"the baselines are shown on the same bars.")
    sel = mv.score(mv.selected)
    base = mv.score(mv.best_baseline)
    t = mv.test_of(mv.selected, "best baseline")
    n_models = sum(1 for s in mv.scores if s.kind == "model")
    parts = [f"On {where}, {mv.selected} (selected on validation) has a Sharpe after costs of "
             f"{_f(t.test.sharpe_x if t else sel.metrics['sharpe'])}"]
    if t is not None and base is not None:
        signif = (t.p_holm < verdict.alpha)
        parts.append(
            f" against {mv.best_baseline}'s {_f(t.test.sharpe_y)} (the best baseline on validation): difference "
            f"{_f(t.test.difference)}, {level} CI [{_f(t.test.ci_low)}, {_f(t.test.ci_high)}], p {_p(t.test.p_value)}"
            f" (Holm over {n_models} model{'s' if n_models != 1 else ''}: p {_p(t.p_holm)}), "
            f"{'significant' if signif else 'not significant'} at {100 * verdict.alpha:.0f}%.")
        parts.append(f" The test span resolves differences of {_f(t.test.resolvable)} or more "
                     f"({100 * verdict.power:.0f}% power).")
    else:
        parts.append(".")
    spot = mv.test_of(mv.selected, "spot buy and hold")
    if spot is not None:
        parts.append(f" Against spot buy and hold ({_f(spot.test.sharpe_y)}): difference {_f(spot.test.difference)}, "
                     f"{level} CI [{_f(spot.test.ci_low)}, {_f(spot.test.ci_high)}], p {_p(spot.test.p_value)}"
                     f" (Holm: p {_p(spot.p_holm)}).")
    info = mv.info_of(mv.selected)
    lr = mv.score(REGRESSION)
    if info is not None and lr is not None and math.isfinite(info.test.p_value):
        better = "lower" if info.test.mean_difference < 0 else "higher"
        parts.append(f" Before costs, its per-bar log-loss is {_f(sel.metrics.get('log_loss', math.nan), 4)} against "
                     f"the logistic regression's {_f(lr.metrics.get('log_loss', math.nan), 4)} ({better}; "
                     f"Diebold-Mariano p {_p(info.test.p_value)}, Holm: p {_p(info.p_holm)}, "
                     f"{info.test.lags} Newey-West lags).")
    return "".join(parts)


def _day(ms: int) -> str:
    return str(np.datetime64(int(ms), "ms").astype("datetime64[D]"))
