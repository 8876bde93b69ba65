"""Rows per second into DuckDB: one year of 1m synthetic candles, and the real BTCUSDT 1h file.

Prints one JSON line. ``write_rows_per_s`` times Warehouse.replace_rows alone (one
transaction: delete the range, insert the frame, primary key checked);
``ingest_rows_per_s`` adds the validation gate (ingest_candles). Target: >= 500k rows/s.
"""

from __future__ import annotations

import datetime as dt
import json
import sys
import tempfile
import time
from pathlib import Path

import polars as pl

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipeline.market.ingest import candle_problems, ingest_candles  # noqa: E402
from pipeline.market.synthetic import SyntheticSource  # noqa: E402
from pipeline.warehouse import Warehouse  # noqa: E402

SHARED = ROOT.parent / "shared" / "data"


def timed_write(frame: pl.DataFrame, repeats: int = 3) -> dict:
    best_write, best_replace = float("inf"), float("inf")
    for _ in range(repeats):
        with tempfile.TemporaryDirectory() as tmp:
            wh = Warehouse(Path(tmp) / "w.duckdb")
            wh.ensure_schema(["raw.candles"])
            t0 = time.perf_counter()
            wh.replace_rows("raw.candles", frame, "symbol = ?", [frame["symbol"][0]])
            best_write = min(best_write, time.perf_counter() - t0)
            t0 = time.perf_counter()
            wh.replace_rows("raw.candles", frame, "symbol = ?", [frame["symbol"][0]])
            best_replace = min(best_replace, time.perf_counter() - t0)
    return {
        "rows": frame.height,
        "write_s": round(best_write, 4),
        "write_rows_per_s": round(frame.height / best_write),
        "rewrite_same_rows_per_s": round(frame.height / best_replace),
    }


def main() -> None:
    figures: dict = {"bench": "ingest", "target_rows_per_s": 500_000}
    now = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
    source = SyntheticSource(symbols=("BTCUSDT",), origin="2025-01-01", now=lambda: now)
    t0 = time.perf_counter()
    minute = source.candles("BTCUSDT", "1", dt.datetime(2025, 1, 1), dt.datetime(2026, 1, 1))
    figures["synthetic_1m_generate_s"] = round(time.perf_counter() - t0, 3)
    figures["synthetic_1m"] = timed_write(minute)
    t0 = time.perf_counter()
    assert not candle_problems(minute)
    figures["synthetic_1m"]["validate_s"] = round(time.perf_counter() - t0, 4)
    with tempfile.TemporaryDirectory() as tmp:
        wh = Warehouse(Path(tmp) / "w.duckdb")
        wh.ensure_schema(["raw.candles"])
        t0 = time.perf_counter()
        ingest_candles(source, wh, ["BTCUSDT"], ["1"], dt.datetime(2025, 1, 1), dt.datetime(2026, 1, 1), now=now)
        elapsed = time.perf_counter() - t0
    figures["synthetic_1m"]["ingest_end_to_end_rows_per_s"] = round(minute.height / elapsed)
    real = SHARED / "bybit_BTCUSDT_60.csv.gz"
    if real.exists():
        from pipeline.market.files import FileSource

        t0 = time.perf_counter()
        frame = FileSource(SHARED).candles("BTCUSDT", "60", dt.datetime(2020, 1, 1), dt.datetime(2026, 1, 1))
        figures["real_btc_1h_read_s"] = round(time.perf_counter() - t0, 4)
        figures["real_btc_1h"] = timed_write(frame)
    else:
        figures["real_btc_1h"] = f"skipped: {real} not found"
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
