"""What the verdict's statistics cost: prints ONE JSON line.

Reads a warehouse that holds stored backtest runs (default: ``make evaluate``'s,
``data/evaluate/warehouse.duckdb``; read-only) and times, on the settings of the environment (``make
evaluate``'s when run as below):

* load_s: :func:`pipeline.backtest.comparison.load_stored_runs` (equity, positions, per-bar log-loss);
* verdict_s: :func:`pipeline.backtest.verdict.build_verdict`: the common span of every market, the span
  metrics, deflated Sharpe and PBO on it, every strategy's own Sharpe interval, the Ledoit-Wolf bootstraps
  (models against the best baseline and spot buy and hold), Diebold-Mariano and Holm, per market and pooled;
* regressions_s (unless ``--no-regressions``): the two logistic regressions of the baseline suite on the
  models' folds (``logistic_regression`` by Newton, ``logistic_regression_window`` on the flattened window
  by L-BFGS), per market, from the stored features and labels;
* tests, bootstrap_samples, n_days of the headline, load_1m at the start and the end (2 shared cores: noisy).

    CONVTRADE_SOURCE=files CONVTRADE_SYMBOLS=BTCUSDT,ETHUSDT,SOLUSDT CONVTRADE_START=2020-03-25 \\
        .venv/bin/python bench/verdict.py [--warehouse data/evaluate/warehouse.duckdb] [--no-regressions]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipeline.backtest.comparison import STORED_AT, load_stored_runs  # noqa: E402
from pipeline.backtest.verdict import build_verdict  # noqa: E402
from pipeline.config import Settings  # noqa: E402
from pipeline.warehouse import Warehouse  # noqa: E402


def regressions(warehouse: Warehouse, settings: Settings) -> dict[str, float]:
    from pipeline.backtest import strategies
    from pipeline.backtest.baselines import load_labelled_features, market_grid_folds
    from pipeline.core.costs import CostModel
    from pipeline.core.positions import round_trip_cost_of
    from pipeline.core.timegrid import interval_ms
    from pipeline.market.stored import load_candles

    out = {"logistic_regression_s": 0.0, "logistic_regression_window_s": 0.0}
    for interval in settings.intervals:
        markets = []
        for symbol in settings.symbols:
            candles = load_candles(warehouse, symbol, interval, settings.start)
            lab = load_labelled_features(warehouse, symbol, interval, candles, settings.horizon, lambda m: None)
            if lab is not None:
                markets.append((candles["ts"].dt.epoch("ms").to_numpy(), lab, symbol))
        folds = market_grid_folds([(t, lab) for t, lab, _ in markets], settings, interval, settings.horizon)
        for ts, lab, symbol in markets:
            rtc = round_trip_cost_of(CostModel.from_settings(settings, symbol))
            t0 = time.perf_counter()
            strategies.logistic_regression_strategy(lab.features, lab.usable, lab.fwd_return, lab.label_class, rtc,
                                                    horizon=settings.horizon, grid=(ts, folds))
            out["logistic_regression_s"] += time.perf_counter() - t0
            t0 = time.perf_counter()
            strategies.window_regression_strategy(lab.features, lab.usable, lab.fwd_return, lab.label_class, rtc, ts,
                                                  interval_ms(interval), settings.window, folds,
                                                  horizon=settings.horizon)
            out["logistic_regression_window_s"] += time.perf_counter() - t0
    return {k: round(v, 3) for k, v in out.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--warehouse", type=Path, default=ROOT / "data" / "evaluate" / "warehouse.duckdb")
    parser.add_argument("--no-regressions", action="store_true")
    args = parser.parse_args()
    if not args.warehouse.exists():
        print(json.dumps({"bench": "verdict", "skipped": f"no warehouse at {args.warehouse} (run make evaluate)"}))
        return 0
    settings = Settings.from_env()
    warehouse = Warehouse(args.warehouse)
    load0 = os.getloadavg()[0]
    t0 = time.perf_counter()
    runs = load_stored_runs(warehouse, settings.symbols, settings.intervals)
    load_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    verdict = build_verdict(runs, settings, dict(STORED_AT))
    verdict_s = time.perf_counter() - t0
    head = verdict.headline
    out = {"bench": "verdict", "runs": len(runs), "markets": len(verdict.markets), "pooled": len(verdict.pooled),
           "tests": sum(len(m.sharpe_tests) + len(m.info_tests) + len(m.scores) for m in verdict.markets + verdict.pooled),
           "bootstrap_samples": settings.bootstrap_samples, "n_days": head.n_days if head else 0,
           "load_s": round(load_s, 3), "verdict_s": round(verdict_s, 3)}
    if not args.no_regressions:
        out.update(regressions(warehouse, settings))
    out["load_1m"] = [round(load0, 2), round(os.getloadavg()[0], 2)]
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
