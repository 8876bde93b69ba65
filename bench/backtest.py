"""Backtest engine benchmark; prints ONE JSON line.

(a) one backtest of 1,000,000 bars with fees, slippage, stops (fixed %,
    trailing ATR, take profit) and funding every 8 bars;
(b) 2,000 configurations (8 thresholds × 25 stop settings × 10 sizings) over 50,000 bars.

vectorbt runs the same positions with the same fees and slippage where its
features allow: ``Portfolio.from_orders`` has no funding and no stops, so its
(a) is the same target positions without stops/funding, and its grid is the
threshold × sizing target arrays without stops, timed on the first
``--vbt-grid-columns`` columns (memory and time) and scaled linearly to 2,000. Ours is timed on that exact work too (``*_same_work``) so the
ratios compare like with like. ``b_cpu_s`` is the CPU time of one grid run (all threads) and
``b_configs_per_s_if_cores_idle`` the rate it implies with the cores to itself: on a shared
machine the wall-clock headline ``b_configs_per_s`` also counts time other processes hold the
cores (``load_avg_1min``). Numba compile time is excluded: every function
is warmed up on a small input first.

Usage: python bench/backtest.py [--no-vectorbt] [--bars N] [--grid-bars N]
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import time

import numba as nb
import numpy as np

from pipeline.core.costs import CostModel
from pipeline.backtest.engine import N_GRID_COLS, prepare_inputs, run_backtest, run_grid
from pipeline.backtest.risk import RiskRules
from pipeline.core.positions import SIZING_CODES, SignalRule, target_positions

H = 3_600_000


@nb.njit(cache=True)
def _ar1(noise, phi):
    out = np.empty_like(noise)
    scale = np.sqrt(1 - phi * phi)
    for k in range(noise.shape[0]):
        acc = 0.0
        for i in range(noise.shape[1]):
            acc = phi * acc + scale * noise[k, i]
            out[k, i] = 3.0 * acc
    return out


def market(n: int, seed: int):
    rng = np.random.default_rng(seed)
    c = 30_000 * np.exp(np.cumsum(rng.normal(0, 0.006, n)))
    o = np.r_[30_000.0, c[:-1]] * np.exp(rng.normal(0, 0.0005, n))
    h = np.maximum(o, c) * (1 + rng.exponential(0.002, n))
    lo = np.minimum(o, c) * (1 - rng.exponential(0.002, n))
    v = rng.uniform(100, 1000, n)
    f = np.where(np.arange(n) % 8 == 0, rng.normal(0.0001, 0.0001, n), 0.0)
    # model-like probabilities: persistent (AR(1), like a model's outputs on overlapping windows)
    z = _ar1(rng.normal(0, 1, (2, n)), 0.98)
    p_up = 0.15 + 0.7 / (1 + np.exp(-z[0]))
    p_down = (1 - p_up) / (1 + np.exp(-z[1]))
    return np.arange(n, dtype=np.int64) * H, o, h, lo, c, v, f, p_down, p_up


def grid_configs() -> tuple[np.ndarray, list[tuple[float, int, float]]]:
    thresholds = np.linspace(0.35, 0.70, 8)
    stops = list(itertools.product([0.0, 0.01, 0.02, 0.03, 0.05], [0.0, 2.0, 3.0, 4.0, 6.0]))  # sl %, trailing ATR k
    sizings = [(0, f) for f in (0.25, 0.5, 0.75, 1.0)] + [(1, f) for f in (0.5, 1.0, 1.25, 1.5, 2.0)] + [(2, 1.0)]
    rows, signal_rows = [], []
    for thr, (sl, trail), (code, frac) in itertools.product(thresholds, stops, sizings):
        row = np.zeros(N_GRID_COLS)
        row[[0, 1, 2, 3, 5]] = thr, code, frac, sl, trail
        rows.append(row)
        signal_rows.append((float(thr), code, frac))
    return np.array(rows), signal_rows


def best_of(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def vectorbt_orders(vbt, pd, o, c, targets: np.ndarray, costs: CostModel):
    """vectorbt from_orders with our next-open convention (see tests/backtest/test_parity_vectorbt.py)."""
    shifted = np.vstack([np.zeros((1, targets.shape[1])), targets[:-1]])
    changed = np.vstack([shifted[:1] != 0, shifted[1:] != shifted[:-1]])
    size = np.where(changed, shifted, np.nan)
    idx = pd.date_range("2020-01-01", periods=o.size, freq="h")
    return vbt.Portfolio.from_orders(
        close=pd.Series(c, idx), size=pd.DataFrame(size, idx), size_type="targetpercent",
        price=pd.Series(o, idx), val_price=pd.Series(o, idx), fees=costs.fee_rate, slippage=costs.slippage,
        direction="both", init_cash=10_000.0, freq="1h",
    ).value()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--no-vectorbt", action="store_true")
    ap.add_argument("--bars", type=int, default=1_000_000)
    ap.add_argument("--grid-bars", type=int, default=50_000)
    ap.add_argument("--vbt-grid-columns", type=int, default=200)
    args = ap.parse_args()
    costs = CostModel(impact_coef=0.0)
    risk = RiskRules(stop_loss_pct=0.02, trailing_atr=3.0, take_profit_pct=0.05)
    rule = SignalRule(0.45, "confidence", 1.0)

    # warm-up: compile (or load from the numba cache) every jitted function
    small = market(2000, 0)
    inp_small = prepare_inputs(*small[:7])
    run_backtest(inp_small, target_positions(small[7], small[8], rule), costs, risk)
    cfg_all, signal_rows = grid_configs()
    run_grid(inp_small, small[7], small[8], cfg_all[:4], 8760.0, costs)

    # (a) one long backtest
    ts, o, h, lo, c, v, f, p_down, p_up = market(args.bars, 1)
    t0 = time.perf_counter()
    inp = prepare_inputs(ts, o, h, lo, c, v, f)
    prepare_s = time.perf_counter() - t0
    target = target_positions(p_down, p_up, rule)
    a_s = best_of(lambda: run_backtest(inp, target, costs, risk), 3)
    res = run_backtest(inp, target, costs, risk)
    a_same_s = best_of(lambda: run_backtest(prepare_inputs(ts, o, h, lo, c), target, costs), 3)

    # (b) grid
    g = market(args.grid_bars, 2)
    ginp = prepare_inputs(*g[:7])
    b_s = best_of(lambda: run_grid(ginp, g[7], g[8], cfg_all, 8760.0, costs), 2)
    # CPU time of one grid run (all threads): on a busy machine the wall time above also counts the
    # time other processes hold the cores; 2,000 / (cpu_s / cores) is the rate with the cores to itself
    cpu0 = time.process_time()
    run_grid(ginp, g[7], g[8], cfg_all, 8760.0, costs)
    b_cpu_s = time.process_time() - cpu0
    no_stops = cfg_all.copy()
    no_stops[:, 3:] = 0.0
    b_same_s = best_of(lambda: run_grid(ginp, g[7], g[8], no_stops, 8760.0, costs), 2)

    out = {
        "bench": "backtest",
        "cpu_count": os.cpu_count(),
        "numba_compile_excluded": True,
        "a_bars": args.bars,
        "a_engine_s": round(a_s, 4),
        "a_prepare_inputs_s": round(prepare_s, 4),
        "a_trades": res.n_trades,
        "a_features": "taker fee 0.055%, slippage 2 bps, stop 2%, trailing 3xATR, take profit 5%, funding every 8 bars",
        "a_target_under_1s": a_s < 1.0,
        "b_configs": int(cfg_all.shape[0]),
        "b_bars": args.grid_bars,
        "b_s": round(b_s, 4),
        "b_configs_per_s": round(cfg_all.shape[0] / b_s, 1),
        "b_target_2000_per_s": cfg_all.shape[0] / b_s >= 2000,
        "b_cpu_s": round(b_cpu_s, 4),
        "b_configs_per_s_if_cores_idle": round(cfg_all.shape[0] / (b_cpu_s / nb.get_num_threads()), 1),
        "load_avg_1min": round(os.getloadavg()[0], 2),
    }
    if not args.no_vectorbt:
        import pandas as pd
        import vectorbt as vbt

        vectorbt_orders(vbt, pd, small[1], small[4], target_positions(small[7], small[8], rule)[:, None], costs)
        va_s = best_of(lambda: vectorbt_orders(vbt, pd, o, c, target[:, None], costs), 2)
        # grid: the 80 distinct (threshold, sizing) target arrays, tiled to 2,000 columns
        uniq = sorted(set(signal_rows))
        sizing_names = {code: name for name, code in SIZING_CODES.items()}
        cols = {
            key: target_positions(g[7], g[8], SignalRule(key[0], sizing_names[key[1]], key[2]))
            for key in uniq
        }
        grid_targets = np.column_stack([cols[key] for key in signal_rows[: args.vbt_grid_columns]])
        vb_part_s = best_of(lambda: vectorbt_orders(vbt, pd, g[1], g[4], grid_targets, costs), 1)
        vb_s = vb_part_s * cfg_all.shape[0] / grid_targets.shape[1]  # linear in columns
        out.update({
            "vbt_a_s": round(va_s, 4),
            "vbt_a_work": "same targets, fees, slippage; no stops, no funding (from_orders)",
            "a_same_work_s": round(a_same_s, 4),
            "ratio_a_ours_full_over_vbt": round(a_s / va_s, 4),
            "ratio_a_same_work_ours_over_vbt": round(a_same_s / va_s, 4),
            "vbt_b_s": round(vb_s, 4),
            "vbt_b_work": "target columns (threshold x sizing), fees, slippage; no stops (from_orders); "
                          "timed on vbt_b_columns_measured columns and scaled linearly to 2,000",
            "vbt_b_columns_measured": int(grid_targets.shape[1]),
            "vbt_b_measured_s": round(vb_part_s, 4),
            "b_same_work_s": round(b_same_s, 4),
            "vbt_b_configs_per_s": round(cfg_all.shape[0] / vb_s, 1),
            "ratio_b_ours_full_over_vbt": round(b_s / vb_s, 4),
            "ratio_b_same_work_ours_over_vbt": round(b_same_s / vb_s, 4),
        })
    print(json.dumps(out))


if __name__ == "__main__":
    main()
