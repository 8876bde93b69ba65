"""Drift benchmark on the offline default size; prints ONE JSON line.

A warehouse planted at the offline default by ``tests.monitoring.planted``
(the default symbols, 1h bars from ``Settings().start`` to today, every
model-input feature, six architectures with six folds each and their
out-of-sample predictions; the current window, the newest
``drift_recent_bars``, of the first symbol shifted by 0.5) gets (a) one
``compute_drift`` + ``store_drift`` (the ``monitoring/drift`` asset's work) and (b) evaluations of the
``drift_retrain`` sensor through ``dg.build_sensor_context`` on a test
instance (target: under 2 s each). The sensor's first tick requests a run; the
timed ticks after it skip (the report is judged), which reads the same rows.

Usage: python bench/drift.py [--ticks N]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np


def plant(path: Path, settings) -> int:
    """The planted warehouse at the offline default size (see the module docstring); returns the bars per symbol."""
    from tests.monitoring.planted import plant_drift_warehouse
    from pipeline.models.catalogue import sequence_model_names

    start = dt.datetime.combine(settings.start_date, dt.time())
    bars = int((dt.datetime.now() - start).total_seconds() // 3600)
    test_starts = np.linspace(0.4 * bars, bars, 7).astype(int)[:-1]  # six folds over the newest 60 %
    plant_drift_warehouse(path, symbols=settings.symbols, start=start, bars=bars,
                          architectures=sequence_model_names(), test_starts=test_starts.tolist(), embargo=25,
                          drift_symbols=settings.symbols[:1], shift=0.5, warmup_bars=200,
                          current_bars=settings.drift_recent_bars)
    return bars


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ticks", type=int, default=5)
    args = parser.parse_args()
    os.environ.setdefault("DAGSTER_DISABLE_TELEMETRY", "1")
    import dagster as dg

    from assets.automation import drift_retrain_sensor
    from assets.resources import SettingsResource, WarehouseResource
    from pipeline.config import Settings
    from pipeline.monitoring.drift import compute_drift, store_drift
    from pipeline.warehouse import Warehouse

    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(data_dir=Path(tmp))
        bars = plant(settings.warehouse_path, settings)
        wh = Warehouse(settings.warehouse_path)
        t0 = time.perf_counter()
        report = compute_drift(wh, settings)
        store_drift(wh, report)
        compute_s = time.perf_counter() - t0
        res = SettingsResource(data_dir=tmp)
        resources = {"settings": res, "warehouse": WarehouseResource(settings=res)}
        times, cursor, first = [], None, None
        with dg.instance_for_test() as instance:
            for _ in range(args.ticks + 1):
                t0 = time.perf_counter()
                with dg.build_sensor_context(instance=instance, cursor=cursor, resources=resources) as context:
                    result = drift_retrain_sensor(context)
                times.append(time.perf_counter() - t0)
                first = first or result
                cursor = result.cursor
    print(json.dumps({
        "bench": "drift", "symbols": len(settings.symbols), "bars_per_symbol": bars,
        "features": report.drift["feature"].n_unique(), "drift_rows": report.drift.height,
        "accuracy_rows": report.accuracy.height, "compute_and_store_s": round(compute_s, 3),
        "sensor_first_tick_s": round(times[0], 4), "sensor_tick_median_s": round(statistics.median(times[1:]), 4),
        "sensor_tick_max_s": round(max(times), 4), "target_s": 2.0,
        "first_tick_requested": bool(first.run_requests),
        "load_avg_1min": round(os.getloadavg()[0], 2),
    }))


if __name__ == "__main__":
    main()
