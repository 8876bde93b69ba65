"""The read-only query command."""

import datetime as dt
import subprocess
import sys
import textwrap


from pipeline.cli import EXIT_LOCKED, main
from pipeline.market.ingest import ingest_candles
from pipeline.market.synthetic import SyntheticSource


def test_query_prints_a_table(warehouse, capsys):
    src = SyntheticSource(origin="2025-01-01", now=lambda: dt.datetime(2025, 2, 1, tzinfo=dt.timezone.utc))
    ingest_candles(src, warehouse, src.symbols, ["60"], dt.datetime(2025, 1, 1), dt.datetime(2025, 1, 2))
    rc = main(["query", "select symbol, count(*) as n from raw.candles group by 1 order by 1", "--db", str(warehouse.path)])
    out = capsys.readouterr().out
    assert rc == 0
    for symbol in src.symbols:
        assert f"{symbol} ┆ 24" in out


def test_query_is_read_only(warehouse, capsys):
    rc = main(["query", "create table raw.x (a int)", "--db", str(warehouse.path)])
    assert rc == 1 and "read-only" in capsys.readouterr().err.lower()


def test_sql_error_is_reported_without_traceback(warehouse, capsys):
    assert main(["query", "select nope from raw.candles", "--db", str(warehouse.path)]) == 1
    err = capsys.readouterr().err
    assert "nope" in err and "Traceback" not in err


def test_locked_warehouse_is_explained(warehouse):
    holder = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(f"""
            import duckdb, sys
            con = duckdb.connect({str(warehouse.path)!r})
            print("locked", flush=True)
            sys.stdin.readline()
        """)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        done = subprocess.run(
            [sys.executable, "-m", "pipeline.cli", "query", "select 1", "--db", str(warehouse.path)],
            capture_output=True, text=True, timeout=60,
        )
    finally:
        holder.communicate("\n", timeout=30)
    assert done.returncode == EXIT_LOCKED
    assert "locked by a running writer" in done.stderr
