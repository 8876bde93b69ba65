"""``convtrade``: query the warehouse read-only, or run the whole pipeline on the current settings.

    convtrade query "select symbol, count(*) from raw.candles group by 1"
    convtrade tables
    convtrade demo
    convtrade settings      # every setting in force and where it came from
    convtrade models list [ARCH]            # versions, champion, live training range, OOS metrics, purged
    convtrade models promote ARCH VERSION   # make VERSION the champion (its artifacts verified first)
    convtrade models rollback ARCH          # back to the previous champion
"""

from __future__ import annotations

import argparse
import sys

import polars as pl

from pipeline.config import Settings
from pipeline.warehouse import Warehouse, WarehouseLocked

EXIT_LOCKED = 3
EXAMPLE_SQL = "select symbol, interval, count(*) as candles, min(ts), max(ts) from raw.candles group by all order by 1"


def _print_frame(frame: pl.DataFrame, max_rows: int) -> None:
    with pl.Config(
        tbl_rows=max_rows,
        tbl_cols=-1,
        tbl_width_chars=200,
        fmt_str_lengths=60,
        tbl_hide_dataframe_shape=True,
        tbl_hide_column_data_types=True,
    ):
        print(frame)
    if frame.height > max_rows:
        print(f"({frame.height} rows, first {max_rows} shown; use --max-rows)")


def query(sql: str, path: str | None = None, max_rows: int = 50, lock_timeout_s: float = 5.0) -> int:
    warehouse = Warehouse(path or Settings.from_env().warehouse_path, lock_timeout_s=lock_timeout_s)
    try:
        frame = warehouse.query(sql)
    except FileNotFoundError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except WarehouseLocked:
        print(
            f"error: {warehouse.path} is locked by a running writer (a Dagster run or `make demo`). "
            "DuckDB allows one writing process per file; query again when it finishes.",
            file=sys.stderr,
        )
        return EXIT_LOCKED
    except Exception as exc:  # a SQL error: show DuckDB's message, not a traceback
        print(f"error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    _print_frame(frame, max_rows)
    return 0


EXIT_INTERRUPTED = 130
EXIT_BAD_SETTINGS = 2


def _stop_on_sigterm() -> None:
    """SIGTERM stops the demo as Ctrl-C does (``timeout``, ``docker stop``, ``kill``): Dagster's run loop
    then treats both alike, and a signal outside a run raises ``KeyboardInterrupt`` here."""
    import signal

    signal.signal(signal.SIGTERM, signal.getsignal(signal.SIGINT))


def demo(groups: list[str] | None = None) -> int:
    import logging
    import warnings

    try:
        settings = Settings.from_env()  # bad settings fail here, before any import or work
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_SETTINGS
    _stop_on_sigterm()
    try:
        warnings.filterwarnings("ignore", message=".*currently in beta.*")
        # waits for a pool slot, dead runs failed: one line each on stderr
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s convtrade %(levelname)s %(message)s"))
        ours = logging.getLogger("convtrade")
        ours.addHandler(handler)
        ours.setLevel(logging.INFO)
        ours.propagate = False
        import dagster as dg

        from assets.definitions import asset_groups, materialize_all
    except KeyboardInterrupt:
        return _interrupted()
    if groups and (unknown := set(groups) - asset_groups()):
        print(f"error: --only: unknown asset group(s) {', '.join(sorted(unknown))}; "
              f"use {', '.join(sorted(asset_groups()))}", file=sys.stderr)
        return EXIT_BAD_SETTINGS
    what = f"the assets of group(s) {','.join(groups)}" if groups else "every asset"
    print(f"materializing {what} on source={settings.source}, symbols={','.join(settings.symbols)}, "
          f"intervals={','.join(settings.intervals)}, from {settings.start} ...", flush=True)
    try:
        with dg.DagsterInstance.get() as instance:
            results = materialize_all(instance=instance, groups=groups)
    except (KeyboardInterrupt, dg.DagsterExecutionInterruptedError):
        return _interrupted()
    ok = all(r.success for r in results)
    print()
    print(f"warehouse: {settings.warehouse_path.resolve()}")
    print(f"reports:   {settings.reports_dir.resolve()}")
    print("try:")
    print(f'  make query SQL="{EXAMPLE_SQL}"')
    print(f"  .venv/bin/convtrade query \"{EXAMPLE_SQL}\"")
    return 0 if ok else 1


def show_settings() -> int:
    """Print every setting in force with its origin (default, the settings file and line, or the variable)."""
    import dataclasses

    try:
        settings, origin = Settings.resolve()
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_SETTINGS
    rows = [("setting", "value", "from")]
    for field in dataclasses.fields(settings):
        value = getattr(settings, field.name)
        rows.append((field.name, ",".join(value) if isinstance(value, tuple) else str(value), origin[field.name]))
    widths = [max(len(r[i]) for r in rows) for i in range(2)]
    for name, value, source in rows:
        print(f"{name:<{widths[0]}}  {value:<{widths[1]}}  {source}")
    return 0


def models_command(action: str, architecture: str | None, version: str | None, interval: str | None,
                   path: str | None = None, lock_timeout_s: float = 60.0) -> int:
    """``convtrade models list|promote|rollback``: each change writes models.champions and models.promotions in
    one transaction; the next ``signals/latest`` trades the new champion."""
    from pipeline.training import lifecycle

    try:
        settings = Settings.from_env()
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_SETTINGS
    warehouse = Warehouse(path or settings.warehouse_path, lock_timeout_s=lock_timeout_s)
    interval = interval or settings.intervals[0]
    try:
        if action == "list":
            frame = lifecycle.list_versions(warehouse, architecture)
            if frame.height == 0:
                print("no model version stored yet: materialize the models/* assets (make demo)")
                return 0
            _print_frame(frame, 500)
            return 0
        if not warehouse.path.exists():
            raise FileNotFoundError(f"warehouse {warehouse.path} does not exist yet: run `make demo` first")
        if action == "promote":
            print(lifecycle.promote(warehouse, architecture, version, interval))
        else:
            print(lifecycle.rollback(warehouse, architecture, interval))
        return 0
    except lifecycle.LifecycleError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except FileNotFoundError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except WarehouseLocked:
        print(f"error: {warehouse.path} is locked by a running writer (a Dagster run or `make demo`); retry when it "
              "finishes", file=sys.stderr)
        return EXIT_LOCKED


def _interrupted() -> int:
    print("interrupted: stopped; a run it had started is marked canceled or failed and its pool slots are freed; "
          "stored tables keep their last committed version", file=sys.stderr, flush=True)
    return EXIT_INTERRUPTED


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="convtrade", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    q = sub.add_parser("query", help="run one SQL query on the warehouse, read-only")
    q.add_argument("sql")
    q.add_argument("--db", help="warehouse file (default: $DATA_DIR/warehouse.duckdb)")
    q.add_argument("--max-rows", type=int, default=50)
    t = sub.add_parser("tables", help="list the warehouse tables and their row counts")
    t.add_argument("--db")
    d = sub.add_parser("demo", help="materialize every asset on the current settings (offline default: synthetic)")
    d.add_argument("--only", metavar="GROUPS", default="",
                   help="comma list of asset groups to materialize, e.g. market or market,staging,features,labels "
                        "(default: every asset)")
    sub.add_parser("settings", help="print the settings in force and where each came from "
                                    "(default, convtrade.yaml / CONVTRADE_CONFIG and its line, or CONVTRADE_*)")
    m = sub.add_parser("models", help="model versions: list, promote a version, roll back to the previous champion")
    msub = m.add_subparsers(dest="action", required=True)
    ml = msub.add_parser("list", help="every version: champion, trigger, live training range, OOS metrics, purged")
    ml.add_argument("architecture", nargs="?")
    mp = msub.add_parser("promote", help="make VERSION the champion of ARCH (artifacts verified first)")
    mp.add_argument("architecture")
    mp.add_argument("version")
    mr = msub.add_parser("rollback", help="make the previous champion of ARCH the champion again")
    mr.add_argument("architecture")
    for p in (ml, mp, mr):
        p.add_argument("--db", help="warehouse file (default: $DATA_DIR/warehouse.duckdb)")
        p.add_argument("--interval", help="the interval (default: the first of CONVTRADE_INTERVALS)")
    args = parser.parse_args(argv)
    if args.command == "settings":
        return show_settings()
    if args.command == "models":
        return models_command(args.action, args.architecture, getattr(args, "version", None), args.interval,
                              args.db)
    if args.command == "query":
        return query(args.sql, args.db, args.max_rows)
    if args.command == "tables":
        return query(
            "select schema_name || '.' || table_name as \"table\", estimated_size as rows "
            "from duckdb_tables() order by 1",
            args.db,
            max_rows=200,
        )
    groups = [g.strip() for g in args.only.split(",") if g.strip()]
    rc = demo(groups or None)
    if argv is None:  # the `convtrade` process itself (not a caller in Python): leave at once
        _exit_now(rc)
    return rc


def _exit_now(rc: int) -> None:
    """Flush and leave without the interpreter's teardown.

    Tearing down the modules the definitions load (torch, numba, dbt, great-expectations, Dagster)
    takes seconds, 10 s and more on a busy machine, after the work is done; that delay made SIGTERM
    look ignored. The runs' state is already stored (SQLite commits, DuckDB closes its connection
    after each write), so nothing is lost by skipping it.
    """
    import logging
    import os

    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(rc)


if __name__ == "__main__":
    sys.exit(main())
