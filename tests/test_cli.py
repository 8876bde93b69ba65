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


def test_demo_rejects_a_negative_fee_before_any_work(tmp_path):
    """Bad settings stop `convtrade demo` at once: no Dagster import, no warehouse, no run, no traceback."""
    import os

    env = {**os.environ, "CONVTRADE_TAKER_FEE": "-1", "DATA_DIR": str(tmp_path / "data"),
           "DAGSTER_HOME": str(tmp_path / "home")}
    probe = ("import sys; from pipeline.cli import main; rc = main(['demo']); "
             "print('dagster imported' if 'dagster' in sys.modules else 'no dagster'); sys.exit(rc)")
    done = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    assert "CONVTRADE_TAKER_FEE=-1.0" in done.stderr and "must be a finite number >= 0" in done.stderr
    assert "Traceback" not in done.stderr
    assert done.stdout.strip() == "no dagster"
    assert not (tmp_path / "data").exists() and not (tmp_path / "home").exists()
