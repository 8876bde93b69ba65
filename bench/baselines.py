"""Baseline suite speed on years of real history: prints ONE JSON line.

The suite (:func:`pipeline.backtest.baselines.run_baseline_suite`, what the
``backtest/baselines`` asset runs: buy and hold, spot buy and hold, flat, MA
momentum and the walk-forward logistic regression, then reports and
``backtest.*`` rows) on the three real 1h files of ``../shared/data``
(BTCUSDT, ETHUSDT, SOLUSDT from their first day, ~126k candles), outside
Dagster. The warehouse it reads is built once: raw.candles and raw.funding
from the files, then ``dbt run`` of the feature and label models (``--warehouse
PATH`` keeps it there and reuses it on the next run; the dbt build is not
part of the figures).

Figures:
* suite_s: wall time of the whole suite with the logistic regression's
  default solver (Newton, :func:`pipeline.backtest.strategies.fit_logistic`);
* lr_s: the part of it spent in ``logistic_regression_strategy`` (all markets);
* before_suite_s / before_lr_s (unless ``--no-before``): the same suite with
  the previous solver, sklearn's L-BFGS (``LR_SOLVER = "lbfgs"``), in the same
  process; speedup = before_suite_s / suite_s;
* max_abs_proba_diff, targets_differ: between the two runs' out-of-sample LR
  probabilities and target positions (all markets). They are L-BFGS's error:
  at sklearn's default tol it stops short of the optimum on these correlated
  inputs (BTCUSDT's last fold: objective 7e-5 above it, probabilities up to
  0.07 off), where the Newton fit matches sklearn's newton-cholesky to 1e-13;
* load_1m at the start and the end (2 shared cores: noisy).
With no 1h file of one of the symbols in the folder, prints a ``skipped`` line.

    .venv/bin/python bench/baselines.py [--warehouse /tmp/baselines.duckdb] [--no-before] [--profile out.prof]
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import io
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from pipeline.backtest import strategies  # noqa: E402
from pipeline.backtest.baselines import run_baseline_suite
from pipeline.core.columns import FEATURES_TABLE  # noqa: E402
from pipeline.config import Settings  # noqa: E402
from pipeline.features.labels import LABELS_TABLE  # noqa: E402
from pipeline.warehouse import Warehouse  # noqa: E402

SHARED = Path(os.environ.get("CONVTRADE_SHARED_DATA", ROOT.parent / "shared" / "data"))
SYMBOLS = ("BTCUSDT", "ETHUSDT", "SOLUSDT")
FIRST_DAY = "2020-03-25"


def build_warehouse(path: Path) -> Warehouse:
    """raw.candles / raw.funding from the shared files and the dbt feature and label models (once per path)."""
    wh = Warehouse(path)
    if wh.table_exists(FEATURES_TABLE) and wh.table_exists(LABELS_TABLE):
        return wh
    import polars as pl

    from pipeline.dbt_runner.invoke import run_dbt
    from pipeline.market.files import read_candle_file, read_funding_file

    wh.ensure_schema()
    candles = pl.concat([read_candle_file(SHARED / f"bybit_{s}_60.csv.gz", s, "60") for s in SYMBOLS])
    wh.replace_rows("raw.candles", candles, "true")
    funding = [read_funding_file(SHARED / f"bybit_{s}_funding.csv.gz", s)
               for s in SYMBOLS if (SHARED / f"bybit_{s}_funding.csv.gz").exists()]
    if funding:
        wh.replace_rows("raw.funding", pl.concat(funding), "true")
    with tempfile.TemporaryDirectory() as target:  # dbt's artifacts away from the project's target/
        run_dbt(["run"], wh.path, extra_env={"DBT_TARGET_PATH": target})
    return wh


@contextlib.contextmanager
def timed_lr(seconds: list[float], outputs: list):
    """Accumulate the time spent in logistic_regression_strategy (and keep its outputs) while inside."""
    original = strategies.logistic_regression_strategy

    def wrapper(*args, **kwargs):
        t0 = time.perf_counter()
        out = original(*args, **kwargs)
        seconds.append(time.perf_counter() - t0)
        outputs.append(out)
        return out

    strategies.logistic_regression_strategy = wrapper
    try:
        yield
    finally:
        strategies.logistic_regression_strategy = original


def timed_suite(wh: Warehouse, settings: Settings, solver: str, profile: str | None = None):
    lr_seconds: list[float] = []
    outputs: list = []
    previous = strategies.LR_SOLVER
    strategies.LR_SOLVER = solver
    profiler = None
    if profile:
        import cProfile

        profiler = cProfile.Profile()
    try:
        with timed_lr(lr_seconds, outputs), contextlib.redirect_stdout(io.StringIO()):
            t0 = time.perf_counter()
            if profiler:
                profiler.enable()
            result = run_baseline_suite(wh, settings, log=lambda msg: None)
            if profiler:
                profiler.disable()
            wall = time.perf_counter() - t0
    finally:
        strategies.LR_SOLVER = previous
    if profiler:
        profiler.dump_stats(profile)
    return wall, sum(lr_seconds), outputs, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--warehouse", help="build the warehouse here (kept, and reused when it exists)")
    parser.add_argument("--no-before", action="store_true", help="skip the sklearn L-BFGS run")
    parser.add_argument("--profile", help="write a cProfile of the (new) suite run to this file")
    args = parser.parse_args()
    missing = [s for s in SYMBOLS if not (SHARED / f"bybit_{s}_60.csv.gz").exists()]
    if missing:
        print(json.dumps({"bench": "baselines", "skipped": f"no 1h file of {', '.join(missing)} in {SHARED}"}))
        return
    load_start = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(args.warehouse) if args.warehouse else Path(tmp) / "baselines.duckdb"
        t0 = time.perf_counter()
        wh = build_warehouse(path)
        build_s = time.perf_counter() - t0
        settings = Settings(data_dir=Path(tmp) / "data", source="files", files_dir=SHARED, symbols=SYMBOLS,
                            intervals=("60",), start=FIRST_DAY)
        candles = wh.query("select count(*) as n from raw.candles where ts >= cast(? as timestamp)",
                           [FIRST_DAY])["n"][0]
        # warm-up: numba's compile (or cache load) of the engine on a small slice is not part of the figures
        small = dataclasses.replace(settings, start="2025-11-01", data_dir=Path(tmp) / "warm")
        timed_suite(wh, small, strategies.LR_SOLVER)
        suite_s, lr_s, outs, result = timed_suite(wh, settings, strategies.LR_SOLVER, args.profile)
        out = {"bench": "baselines", "candles": int(candles), "markets": len(SYMBOLS), "runs": len(result.runs),
               "warehouse_build_s": round(build_s, 1), "solver": strategies.LR_SOLVER,
               "suite_s": round(suite_s, 2), "lr_s": round(lr_s, 2), "target_under_30s": suite_s < 30}
        if not args.no_before:
            before_s, before_lr_s, before_outs, _ = timed_suite(wh, settings, "lbfgs")
            diff = max(float(np.nanmax(np.abs(a.proba - b.proba))) for a, b in zip(outs, before_outs))
            differ = sum(int(np.count_nonzero(a.targets != b.targets)) for a, b in zip(outs, before_outs))
            out.update({"before_solver": "lbfgs", "before_suite_s": round(before_s, 2),
                        "before_lr_s": round(before_lr_s, 2), "speedup": round(before_s / suite_s, 1),
                        "max_abs_proba_diff": diff, "targets_differ": differ,
                        "tested_bars": sum(int(a.tested.sum()) for a in outs)})
    out["load_1m"] = [round(load_start, 2), round(os.getloadavg()[0], 2)]
    print(json.dumps(out))


if __name__ == "__main__":
    main()
