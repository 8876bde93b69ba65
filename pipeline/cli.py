"""``convtrade``: query the warehouse read-only, or run the whole pipeline on the current settings.

    convtrade query "select symbol, count(*) from raw.candles group by 1"
    convtrade tables
    convtrade demo
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


def demo() -> int:
    import warnings

    warnings.filterwarnings("ignore", message=".*currently in beta.*")
    import dagster as dg

    from assets.definitions import materialize_all

    settings = Settings.from_env()
    print(f"materializing every asset on source={settings.source}, symbols={','.join(settings.symbols)}, "
          f"intervals={','.join(settings.intervals)}, from {settings.start} ...", flush=True)
    with dg.DagsterInstance.get() as instance:
        results = materialize_all(instance=instance)
    ok = all(r.success for r in results)
    print()
    print(f"warehouse: {settings.warehouse_path.resolve()}")
    print(f"reports:   {settings.reports_dir.resolve()}")
    print("try:")
    print(f'  make query SQL="{EXAMPLE_SQL}"')
    print(f"  .venv/bin/convtrade query \"{EXAMPLE_SQL}\"")
    return 0 if ok else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="convtrade", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    q = sub.add_parser("query", help="run one SQL query on the warehouse, read-only")
    q.add_argument("sql")
    q.add_argument("--db", help="warehouse file (default: $DATA_DIR/warehouse.duckdb)")
    q.add_argument("--max-rows", type=int, default=50)
    t = sub.add_parser("tables", help="list the warehouse tables and their row counts")
    t.add_argument("--db")
    sub.add_parser("demo", help="materialize every asset on the current settings (offline default: synthetic)")
    args = parser.parse_args(argv)
    if args.command == "query":
        return query(args.sql, args.db, args.max_rows)
    if args.command == "tables":
        return query(
            "select schema_name || '.' || table_name as \"table\", estimated_size as rows "
            "from duckdb_tables() order by 1",
            args.db,
            max_rows=200,
        )
    return demo()


if __name__ == "__main__":
    sys.exit(main())
