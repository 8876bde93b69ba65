"""File source: real exports from ../shared/data, both candle layouts, Parquet, and every bad-input case."""

from __future__ import annotations

import csv
import datetime as dt
import gzip
import io
from pathlib import Path

import polars as pl
import pytest

from pipeline.market.base import MarketDataError
from pipeline.core.timegrid import to_ms
from pipeline.market.files import FileSource, read_candle_file, read_funding_file
from pipeline.market.schemas import CANDLE_SCHEMA, FUNDING_SCHEMA, OPEN_INTEREST_SCHEMA, ORDERBOOK_SCHEMA

HOUR = 3_600_000
T0 = to_ms(dt.datetime(2024, 1, 1))


def candle_rows(n: int, step: int = HOUR, t0: int = T0) -> list[list]:
    """n consistent candles on the grid: [ts, open, high, low, close, volume, turnover]."""
    rows = []
    price = 100.0
    for i in range(n):
        o, c = price, price + (1 if i % 2 else -0.5)
        rows.append([t0 + i * step, o, max(o, c) + 0.25, min(o, c) - 0.25, c, 10.0 + i, (10.0 + i) * (o + c) / 2])
        price = c
    return rows


def write_csv(path: Path, header: list[str] | None, rows: list[list], gz: bool = False) -> Path:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    if header is not None:
        writer.writerow(header)
    writer.writerows(rows)
    data = buf.getvalue().encode()
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


SHARED_HEADER = ["ts", "open", "high", "low", "close", "volume", "turnover"]


# -- real data -------------------------------------------------------------------------------------


def test_real_btc_1h_file_row_count_range_and_values(shared_data: Path):
    src = FileSource(shared_data)
    frame = src.candles("BTCUSDT", "60", dt.datetime(2000, 1, 1), dt.datetime(2100, 1, 1))
    assert frame.schema == pl.Schema(CANDLE_SCHEMA)
    assert frame.height == 49_957
    assert frame["ts"][0] == dt.datetime(2020, 3, 25, 10)
    assert frame["ts"][-1] == dt.datetime(2025, 12, 5, 22)
    assert frame["ts"].is_sorted() and frame["ts"].n_unique() == frame.height
    assert set(frame["source"]) == {"files"} and set(frame["symbol"]) == {"BTCUSDT"}

    # A range query is half-open and agrees value for value with a plain csv read of the same file.
    day = src.candles("BTCUSDT", "60", dt.datetime(2024, 1, 1), dt.datetime(2024, 1, 2))
    assert day.height == 24
    assert day["ts"][0] == dt.datetime(2024, 1, 1) and day["ts"][-1] == dt.datetime(2024, 1, 1, 23)
    lo, hi = to_ms(dt.datetime(2024, 1, 1)), to_ms(dt.datetime(2024, 1, 2))
    with gzip.open(shared_data / "bybit_BTCUSDT_60.csv.gz", "rt") as fh:
        expected = [r for r in csv.DictReader(fh) if lo <= int(r["ts"]) < hi]
    assert [float(r["close"]) for r in expected] == day["close"].to_list()
    assert [float(r["turnover"]) for r in expected] == day["turnover"].to_list()


def test_real_sol_file_has_no_turnover(shared_data: Path):
    frame = FileSource(shared_data).candles("SOLUSDT", "60", dt.datetime(2022, 11, 9), dt.datetime(2022, 11, 10))
    assert frame.height == 24
    assert frame["turnover"].null_count() == 24
    assert frame["volume"].null_count() == 0 and (frame["high"] >= frame["low"]).all()


def test_real_funding_and_orderbook(shared_data: Path):
    src = FileSource(shared_data)
    funding = src.funding("BTCUSDT", dt.datetime(2022, 1, 1), dt.datetime(2022, 1, 3))
    assert funding.schema == pl.Schema(FUNDING_SCHEMA)
    assert funding["ts"].to_list() == [dt.datetime(2022, 1, d, h) for d in (1, 2) for h in (0, 8, 16)]
    assert src.funding("SOLUSDT", dt.datetime(2022, 1, 1), dt.datetime(2022, 1, 3)).height == 0  # no file

    book = src.orderbook("BTCUSDT", dt.datetime(2024, 7, 1), dt.datetime(2024, 7, 2))
    assert book.schema == pl.Schema(ORDERBOOK_SCHEMA)
    assert book.height == 14 and set(book["symbol"]) == {"BTCUSDT"} and book["ts"].is_sorted()
    for bids, asks in zip(book["bid_px"].to_list(), book["ask_px"].to_list()):
        assert len(bids) == 5 and bids == sorted(bids, reverse=True)
        assert asks == sorted(asks) and bids[0] < asks[0]
    top3 = src.orderbook("ETHUSDT", dt.datetime(2024, 7, 1), dt.datetime(2024, 7, 2), levels=3)
    assert top3.height == 14 and all(len(x) == 3 for x in top3["ask_sz"].to_list())
    # the range filter is half-open on the snapshot time
    cut = book["ts"][5]
    assert src.orderbook("BTCUSDT", dt.datetime(2024, 7, 1), cut).height == 5
    assert src.orderbook("BTCUSDT", dt.datetime(2024, 1, 1), dt.datetime(2024, 1, 2)).height == 0
    with pytest.raises(MarketDataError, match="ask_px_6"):
        src.orderbook("BTCUSDT", dt.datetime(2024, 7, 1), dt.datetime(2024, 7, 2), levels=6)


# -- layouts ---------------------------------------------------------------------------------------


def test_bybit_row_layout_newest_first_equals_shared_layout(tmp_path: Path):
    rows = candle_rows(30)
    shared = read_candle_file(write_csv(tmp_path / "a.csv", SHARED_HEADER, rows), "BTCUSDT", "60")
    newest_first = [[str(x) for x in r] for r in reversed(rows)]
    with_header = write_csv(
        tmp_path / "b.csv.gz", ["startTime", "open", "high", "low", "close", "volume", "turnover"], newest_first, gz=True
    )
    headerless = write_csv(tmp_path / "c.csv", None, newest_first)
    quoted = tmp_path / "d.csv"
    quoted.write_text("".join(",".join(f'"{x}"' for x in r) + "\n" for r in newest_first))
    for path in (with_header, headerless, quoted):
        frame = read_candle_file(path, "BTCUSDT", "60")
        assert frame["ts"].is_sorted()
        assert frame.equals(shared), path.name
    # six headerless columns: no turnover
    six = read_candle_file(write_csv(tmp_path / "e.csv", None, [r[:6] for r in rows]), "BTCUSDT", "60")
    assert six["turnover"].null_count() == 30 and six.drop("turnover").equals(shared.drop("turnover"))


def test_parquet_round_trip_and_file_names(tmp_path: Path):
    rows = candle_rows(48)
    csv_frame = read_candle_file(write_csv(tmp_path / "x.csv", SHARED_HEADER, rows), "ETHUSDT", "60")
    folder = tmp_path / "exports"
    folder.mkdir()
    # Parquet with ts in epoch ms ...
    pl.DataFrame(rows, schema=SHARED_HEADER, orient="row").write_parquet(folder / "bybit_ETHUSDT_60.parquet")
    # ... and with ts as a datetime column, under the short name
    csv_frame.select("ts", "open", "high", "low", "close", "volume", "turnover").write_parquet(folder / "ETHUSDT_60.parquet")
    write_csv(folder / "SOLUSDT_60.csv", SHARED_HEADER, rows)
    src = FileSource(folder)
    span = (dt.datetime(2024, 1, 1), dt.datetime(2024, 1, 3))
    assert src.candles("ETHUSDT", "60", *span).equals(csv_frame)
    assert read_candle_file(folder / "ETHUSDT_60.parquet", "ETHUSDT", "60").equals(csv_frame)
    assert src.candles("SOLUSDT", "60", *span)["close"].to_list() == csv_frame["close"].to_list()
    with pytest.raises(MarketDataError, match=r"no file with candles of BTCUSDT interval 60 .*bybit_BTCUSDT_60\.csv\.gz"):
        src.candles("BTCUSDT", "60", *span)
    with pytest.raises(MarketDataError, match="unknown interval '7'"):
        src.candles("ETHUSDT", "7", *span)


def test_rewritten_file_is_read_again(tmp_path: Path):
    path = write_csv(tmp_path / "BTCUSDT_60.csv", SHARED_HEADER, candle_rows(5))
    src = FileSource(tmp_path)
    span = (dt.datetime(2024, 1, 1), dt.datetime(2024, 1, 2))
    assert src.candles("BTCUSDT", "60", *span).height == 5
    write_csv(path, SHARED_HEADER, candle_rows(7))
    assert src.candles("BTCUSDT", "60", *span).height == 7


def test_weekly_grid_opens_on_monday(tmp_path: Path):
    monday = to_ms(dt.datetime(2024, 1, 1))  # 2024-01-01 was a Monday
    week = 7 * 86_400_000
    frame = read_candle_file(write_csv(tmp_path / "w.csv", SHARED_HEADER, candle_rows(4, week, monday)), "BTCUSDT", "W")
    assert [ts.weekday() for ts in frame["ts"]] == [0, 0, 0, 0]
    thursday = to_ms(dt.datetime(2024, 1, 4))
    with pytest.raises(MarketDataError, match="line 2: .*2024-01-04.*not on the interval W grid"):
        read_candle_file(write_csv(tmp_path / "t.csv", SHARED_HEADER, candle_rows(4, week, thursday)), "BTCUSDT", "W")


def test_open_interest_file_and_blank_lines(tmp_path: Path):
    src = FileSource(tmp_path)
    span = (dt.datetime(2024, 1, 1), dt.datetime(2024, 1, 2))
    assert src.open_interest("BTCUSDT", "60", *span).schema == pl.Schema(OPEN_INTEREST_SCHEMA)
    assert src.open_interest("BTCUSDT", "60", *span).height == 0
    (tmp_path / "bybit_BTCUSDT_60_oi.csv").write_text(f"ts,open_interest\n{T0},5.5\n\n{T0 + HOUR},6.5\n")
    oi = src.open_interest("BTCUSDT", "60", *span)
    assert oi["open_interest"].to_list() == [5.5, 6.5] and oi["interval"].to_list() == ["60", "60"]
    # a blank line does not shift the line numbers of later errors
    (tmp_path / "f.csv").write_text(f"ts,funding_rate\n{T0},0.0001\n\n{T0 + HOUR},x\n")
    with pytest.raises(MarketDataError, match=r"f\.csv, line 4: column 'funding_rate' value 'x'"):
        read_funding_file(tmp_path / "f.csv", "BTCUSDT")


# -- bad input -------------------------------------------------------------------------------------


def text_rows(rows: list[list]) -> list[str]:
    return [",".join(str(x) for x in r) for r in rows]


def write_lines(path: Path, lines: list[str], gz: bool = False) -> Path:
    data = ("\n".join(lines) + "\n").encode()
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


@pytest.mark.parametrize(
    "header, pattern",
    [
        ("ts,open,high,low,close", r"line 1: bad header .*missing column\(s\) volume"),
        ("time,open,high,low,close,volume", r"line 1: bad header .*missing column\(s\) ts"),
        ("ts,open,high,low,close,volume,timestamp", r"line 1: bad header .*repeated column\(s\) ts"),
    ],
)
def test_bad_header(tmp_path: Path, header: str, pattern: str):
    path = write_lines(tmp_path / "bad.csv", [header, *text_rows(candle_rows(3))])
    with pytest.raises(MarketDataError, match=pattern) as err:
        read_candle_file(path, "BTCUSDT", "60")
    assert str(path) in str(err.value)


def test_non_numeric_and_missing_cells(tmp_path: Path):
    lines = ["ts,open,high,low,close,volume,turnover", *text_rows(candle_rows(6))]
    bad = lines.copy()
    bad[4] = bad[4].replace(bad[4].split(",")[2], "12o.5", 1)
    with pytest.raises(MarketDataError, match=r"bad\.csv, line 5: column 'high' value '12o\.5' is not a finite number"):
        read_candle_file(write_lines(tmp_path / "bad.csv", bad), "BTCUSDT", "60")
    bad = lines.copy()
    bad[3] = "2024-01-01 02:00:00," + bad[3].split(",", 1)[1]
    with pytest.raises(MarketDataError, match=r"line 4: column 'ts' value '2024-01-01 02:00:00' is not an integer"):
        read_candle_file(write_lines(tmp_path / "ts.csv", bad), "BTCUSDT", "60")
    bad = lines.copy()
    cells = bad[6].split(",")
    cells[4] = ""
    bad[6] = ",".join(cells)
    with pytest.raises(MarketDataError, match=r"empty\.csv, line 7: missing value in column 'close'"):
        read_candle_file(write_lines(tmp_path / "empty.csv", bad), "BTCUSDT", "60")
    bad = lines.copy()
    bad[2] = bad[2].replace(bad[2].split(",")[5], "nan", 1)
    with pytest.raises(MarketDataError, match=r"line 3: column 'volume' value 'nan'"):
        read_candle_file(write_lines(tmp_path / "nan.csv", bad), "BTCUSDT", "60")
    # turnover may be empty
    ok = lines.copy()
    ok[2] = ok[2].rsplit(",", 1)[0] + ","
    assert read_candle_file(write_lines(tmp_path / "ok.csv", ok), "BTCUSDT", "60")["turnover"].null_count() == 1


def test_wrong_column_count(tmp_path: Path):
    lines = ["ts,open,high,low,close,volume,turnover", *text_rows(candle_rows(6))]
    too_many = lines.copy()
    too_many[5] += ",7"
    with pytest.raises(MarketDataError, match=r"many\.csv, line 6: 8 fields, expected 7"):
        read_candle_file(write_lines(tmp_path / "many.csv", too_many), "BTCUSDT", "60")
    too_few = lines.copy()
    too_few[3] = ",".join(too_few[3].split(",")[:4])
    with pytest.raises(MarketDataError, match=r"few\.csv, line 4: 4 fields, expected 7"):
        read_candle_file(write_lines(tmp_path / "few.csv", too_few), "BTCUSDT", "60")
    # a plain CSV cut off in its last line
    data = ("\n".join(lines)).encode()
    (tmp_path / "cut.csv").write_bytes(data[: len(data) - 25])
    with pytest.raises(MarketDataError, match=r"cut\.csv, line 7: .*fields, expected 7"):
        read_candle_file(tmp_path / "cut.csv", "BTCUSDT", "60")
    with pytest.raises(MarketDataError, match=r"line 1: no header and 3 fields"):
        read_candle_file(write_lines(tmp_path / "three.csv", ["1,2,3"]), "BTCUSDT", "60")


def test_truncated_and_corrupt_gzip(tmp_path: Path):
    lines = ["ts,open,high,low,close,volume,turnover", *text_rows(candle_rows(2000))]
    blob = gzip.compress(("\n".join(lines) + "\n").encode())
    path = tmp_path / "bybit_BTCUSDT_60.csv.gz"
    path.write_bytes(blob[: len(blob) // 2])
    with pytest.raises(MarketDataError, match=r"bybit_BTCUSDT_60\.csv\.gz, line (\d+): gzip stream is truncated") as err:
        FileSource(tmp_path).candles("BTCUSDT", "60", dt.datetime(2024, 1, 1), dt.datetime(2025, 1, 1))
    line = int(err.value.args[0].split("line ")[1].split(":")[0])
    assert 100 < line < 2000  # about half the file was readable
    (tmp_path / "plain.csv.gz").write_bytes(b"ts,open\n")
    with pytest.raises(MarketDataError, match=r"plain\.csv\.gz, line 1: not a gzip file"):
        read_candle_file(tmp_path / "plain.csv.gz", "BTCUSDT", "60")
    (tmp_path / "bad.parquet").write_bytes(b"PAR1 not really")
    with pytest.raises(MarketDataError, match=r"bad\.parquet: not a readable Parquet file"):
        read_candle_file(tmp_path / "bad.parquet", "BTCUSDT", "60")


def test_duplicate_timestamps(tmp_path: Path):
    rows = candle_rows(8)
    rows.insert(6, list(rows[2]))  # a repeat of line 4, written at line 8
    with pytest.raises(MarketDataError, match=r"dup\.csv, line 8: duplicate ts 2024-01-01 02:00:00 UTC \(1704074400000 ms\), first at line 4"):
        read_candle_file(write_csv(tmp_path / "dup.csv", SHARED_HEADER, rows), "BTCUSDT", "60")
    funding = f"ts,funding_rate\n{T0},0.0001\n{T0 + 8 * HOUR},0.0002\n{T0},0.0003\n"
    (tmp_path / "fund.csv").write_text(funding)
    with pytest.raises(MarketDataError, match=r"fund\.csv, line 4: duplicate ts 2024-01-01 00:00:00 UTC"):
        read_funding_file(tmp_path / "fund.csv", "BTCUSDT")
    # in a Parquet file the row is named
    pl.DataFrame(rows, schema=SHARED_HEADER, orient="row").write_parquet(tmp_path / "dup.parquet")
    with pytest.raises(MarketDataError, match=r"dup\.parquet, row 7: duplicate ts"):
        read_candle_file(tmp_path / "dup.parquet", "BTCUSDT", "60")


def test_out_of_grid_timestamp(tmp_path: Path):
    rows = candle_rows(8)
    rows[5][0] += 60_000  # 05:01
    with pytest.raises(
        MarketDataError, match=r"grid\.csv, line 7: ts 2024-01-01 05:01:00 UTC \(1704085260000 ms\) is not on the interval 60 grid"
    ):
        read_candle_file(write_csv(tmp_path / "grid.csv", SHARED_HEADER, rows), "BTCUSDT", "60")
    # the same file is fine on the 1-minute grid
    assert read_candle_file(tmp_path / "grid.csv", "BTCUSDT", "1").height == 8


def test_high_below_low(tmp_path: Path):
    rows = candle_rows(8)
    rows[3][2], rows[3][3] = rows[3][3], rows[3][2]  # swap high and low at 03:00, line 5
    rows[6][2], rows[6][3] = rows[6][3], rows[6][2]
    with pytest.raises(MarketDataError, match=r"hl\.csv, line 5: candle at ts 2024-01-01 03:00:00 UTC .* breaks the rule "
                       r"high >= max\(open, close\): .*\(and 1 more rows\)"):
        read_candle_file(write_csv(tmp_path / "hl.csv", SHARED_HEADER, rows), "BTCUSDT", "60")
    # newest-first Bybit rows: the line is the line in the file, not after sorting
    newest_first = list(reversed(rows[:5]))
    with pytest.raises(MarketDataError, match=r"hl2\.csv, line 2: candle at ts 2024-01-01 03:00:00 UTC"):
        read_candle_file(write_csv(tmp_path / "hl2.csv", None, newest_first), "BTCUSDT", "60")


def test_orderbook_duplicate_snapshot(tmp_path: Path):
    header = "ts,recv_ts,symbol,changed," + ",".join(
        f"{side}_{k}" for k in (1, 2) for side in ("bid_px", "bid_sz", "ask_px", "ask_sz")
    )
    row = "{ts},{ts},BTCUSDT,both,10,1,11,1,9,1,12,1"
    path = write_lines(
        tmp_path / "bybit_linear_orderbook_top2_x.csv.gz", [header, row.format(ts=T0), row.format(ts=T0)], gz=True
    )
    with pytest.raises(MarketDataError, match=r"top2_x\.csv\.gz, line 2: duplicate snapshot for BTCUSDT .* also at line 3"):
        FileSource(tmp_path).orderbook("BTCUSDT", dt.datetime(2024, 1, 1), dt.datetime(2024, 1, 2), levels=2)
    assert path.exists()


def test_missing_folder_is_a_clear_error(tmp_path: Path):
    src = FileSource(tmp_path / "nowhere")
    span = (dt.datetime(2024, 1, 1), dt.datetime(2024, 1, 2))
    for call in (lambda: src.candles("BTCUSDT", "60", *span), lambda: src.funding("BTCUSDT", *span),
                 lambda: src.orderbook("BTCUSDT", *span)):
        with pytest.raises(MarketDataError, match=r"nowhere does not exist; set CONVTRADE_FILES_DIR"):
            call()
