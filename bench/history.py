"""Years of real history through Dagster: the three shared 1h files from their first day.

Prints one JSON line:
* wall_s: the whole pipeline as `convtrade demo` runs it, minus the model training assets: one
  run of the partitioned assets (raw/*, the candle check, the dbt staging/feature/label models with
  their checks) over every monthly partition from CONVTRADE_START (2020-03-25, BTCUSDT's first day) to
  today, then one run of backtest/baselines; a fresh sqlite Dagster instance and warehouse in a
  temporary folder, the files source on ../shared/data (BTCUSDT, ETHUSDT, SOLUSDT, interval 60);
* data_s: the part of it spent in the project's own work (ingest functions, the candle and feature
  suites, the dbt process until its last event, the baseline suite), timed by wrapping those calls;
  data_parts splits it up;
* dagster_s = wall_s - data_s: Dagster's run set-up, events and storage;
* candles: rows in raw.candles afterwards; partitions: monthly partitions in the run;
* first_event_s, first_log_s: seconds from the start to the partitioned run's first event, and to its
  first message from an asset (context.log): progress must show within seconds;
* load_1m: the machine's 1-minute load average at the start and the end (2 cores shared: noisy).
Goal: wall_s < 180 on 2 cores.

    .venv/bin/python bench/history.py [--profile out.prof] [--planned-per-asset] [--start YYYY-MM-DD]
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("CONVTRADE_SHARED_DATA", ROOT.parent / "shared" / "data"))
SYMBOLS = ("BTCUSDT", "ETHUSDT", "SOLUSDT")
FIRST_DAY = "2020-03-25"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", help="write a cProfile of the whole run to this file")
    parser.add_argument("--start", default=FIRST_DAY, help="first day (a later one gives a quick trial run)")
    parser.add_argument("--planned-per-asset", action="store_true",
                        help="set DAGSTER_EMIT_PARTITION_SUBSET_IN_PLANNED_EVENTS for the run")
    args = parser.parse_args()
    missing = [s for s in SYMBOLS if not (SHARED / f"bybit_{s}_60.csv.gz").exists()]
    if missing:
        print(json.dumps({"bench": "history", "skipped": f"no 1h file of {', '.join(missing)} in {SHARED}"}))
        return
    with tempfile.TemporaryDirectory() as tmp:
        # The partition set is fixed when the assets import: the environment comes first.
        os.environ.update(
            {
                "CONVTRADE_SOURCE": "files",
                "CONVTRADE_FILES_DIR": str(SHARED),
                "CONVTRADE_SYMBOLS": ",".join(SYMBOLS),
                "CONVTRADE_INTERVALS": "60",
                "CONVTRADE_START": args.start,
                "DATA_DIR": str(Path(tmp) / "data"),
                "DAGSTER_HOME": str(Path(tmp) / "dagster_home"),
                "GX_ANALYTICS_ENABLED": "false",
                "DAGSTER_DISABLE_TELEMETRY": "1",
            }
        )
        # --planned-per-asset: one "materialization planned" event per asset for the whole range
        # instead of Dagster's default of one per asset and day (~24k sqlite commits before the first
        # step on 2,440 days). `convtrade demo` does not set it (a failed run's days are then not
        # marked failed in the UI), so the default measures what the demo does.
        if args.planned_per_asset:
            os.environ["DAGSTER_EMIT_PARTITION_SUBSET_IN_PLANNED_EVENTS"] = "true"
        os.environ.pop("CONVTRADE_DATA_DIR", None)
        Path(os.environ["DAGSTER_HOME"]).mkdir()
        shutil.copy(ROOT / "dagster_instance.yaml", Path(os.environ["DAGSTER_HOME"]) / "dagster.yaml")
        sys.path.insert(0, str(ROOT))
        load_start = os.getloadavg()[0]
        profiler = None
        if args.profile:
            import cProfile

            profiler = cProfile.Profile()
            profiler.enable()
        t0 = time.perf_counter()
        # Everything the run prints (dbt's console output included) goes to stderr: stdout holds the one
        # JSON line.
        sys.stdout.flush()
        stdout = os.dup(1)
        os.dup2(2, 1)
        try:
            figures = run(t0)
        finally:
            sys.stdout.flush()
            os.dup2(stdout, 1)
            os.close(stdout)
        figures["wall_s"] = round(time.perf_counter() - t0, 1)
        if profiler is not None:
            profiler.disable()
            profiler.dump_stats(args.profile)
        figures["dagster_s"] = round(figures["wall_s"] - figures["data_s"], 1)
        figures["load_1m"] = [round(load_start, 2), round(os.getloadavg()[0], 2)]
        figures["goal_wall_s"] = 180
        figures["planned_events"] = (
            "per asset" if os.environ.get("DAGSTER_EMIT_PARTITION_SUBSET_IN_PLANNED_EVENTS") else "per partition"
        )
    print(json.dumps({"bench": "history", **figures}))


class _Timers:
    """Seconds spent inside the wrapped data functions, by name (outermost call only)."""

    def __init__(self):
        self.seconds: dict[str, float] = {}
        self.depth = 0

    @contextlib.contextmanager
    def timing(self, name: str):
        self.depth += 1
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.depth -= 1
            if self.depth == 0:
                self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - t0

    def wrap(self, module, attribute: str, name: str | None = None) -> None:
        original = getattr(module, attribute)

        @functools.wraps(original)
        def timed(*a, **kw):
            with self.timing(name or attribute):
                return original(*a, **kw)

        setattr(module, attribute, timed)


def run(t0: float) -> dict:
    import dagster as dg
    from dagster_dbt import DbtCliResource

    import assets.backtests
    import assets.checks
    import assets.features
    import assets.market
    from assets.definitions import ASSETS, CHECKS, all_resources, partition_range_tags
    from pipeline.warehouse import Warehouse
    from pipeline.config import Settings

    timers = _Timers()
    for name in ("ingest_candles", "ingest_funding", "ingest_open_interest", "ingest_orderbook"):
        timers.wrap(assets.market, name, "ingest")
    timers.wrap(assets.checks, "validate_candles", "checks")
    timers.wrap(assets.checks, "series_summary", "checks")
    timers.wrap(assets.features, "model_input_frames", "checks")
    timers.wrap(assets.features, "validate_model_inputs", "checks")
    timers.wrap(assets.backtests, "run_baseline_suite", "baselines")
    cli = DbtCliResource.cli

    def timed_cli(self, *a, **kw):  # dbt's process, from its start to its last streamed event
        invocation = cli(self, *a, **kw)
        stream = invocation.stream

        def timed_stream(*sa, **skw):  # only while dbt produces the next event, not while Dagster stores it
            events = iter(stream(*sa, **skw))
            while True:
                with timers.timing("dbt"):
                    event = next(events, None)
                if event is None:
                    return
                yield event

        invocation.stream = timed_stream
        return invocation

    DbtCliResource.cli = timed_cli

    partitioned = [a for a in ASSETS if a.partitions_def is not None]
    # The pipeline without the model zoo: backtest/baselines is the only unpartitioned asset it needs.
    baselines = [a for a in ASSETS if a.partitions_def is None and dg.AssetKey(["backtest", "baselines"]) in a.keys]
    keys = partitioned[0].partitions_def.get_partition_keys()
    resources = all_resources()
    results = []
    with dg.DagsterInstance.get() as instance:
        results.append(
            dg.materialize(
                partitioned + CHECKS,
                instance=instance,
                resources=resources,
                tags=partition_range_tags(keys[0], keys[-1]),
                selection=dg.AssetSelection.assets(*partitioned),
            )
        )
        results.append(
            dg.materialize(
                partitioned + baselines + CHECKS,
                instance=instance,
                resources=resources,
                selection=dg.AssetSelection.assets(*baselines),
            )
        )
    if not all(r.success for r in results):
        raise SystemExit("bench/history: a run failed")
    # The run log as the UI shows it: the first event of the partitioned run, and its first message
    # from the assets (context.log), in seconds from the start of the bench.
    started = time.time() - (time.perf_counter() - t0)
    with dg.DagsterInstance.get() as instance:
        records = instance.all_logs(results[0].run_id)
    first_event = min(r.timestamp for r in records)
    messages = [r.timestamp for r in records if r.dagster_event is None and r.step_key]
    candles = Warehouse(Settings.from_env().warehouse_path).query("select count(*) as n from raw.candles")["n"][0]
    return {
        "candles": int(candles),
        "partitions": len(keys),
        "data_s": round(sum(timers.seconds.values()), 1),
        "data_parts": {k: round(v, 1) for k, v in sorted(timers.seconds.items())},
        "first_event_s": round(first_event - started, 1),
        "first_log_s": round(min(messages) - started, 1) if messages else None,
    }


if __name__ == "__main__":
    main()
