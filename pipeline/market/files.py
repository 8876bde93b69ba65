"""File source: candle, funding, open-interest and order-book exports on disk.

Candle files are CSV, gzipped CSV or Parquet, in either of two layouts:

* the layout of ``../shared/data``: a header ``ts,open,high,low,close,volume``
  and optionally ``turnover``, ``ts`` the open time in epoch milliseconds (UTC);
* the raw Bybit v5 kline row layout: ``startTime,open,high,low,close,volume,turnover``
  (``timestamp`` or the v5 JSON names ``openPrice`` ... are accepted too), or the
  same 6 or 7 columns with no header, in any row order (Bybit pages are newest first).

Files are found by name in one folder: ``bybit_{SYMBOL}_{interval}.csv.gz``
(also ``.csv``, ``.parquet`` and the same names without ``bybit_``); funding in
``bybit_{SYMBOL}_funding.csv.gz`` (``ts, funding_rate``); open interest in
``bybit_{SYMBOL}_{interval}_oi.csv.gz`` (``ts, open_interest``); order books in
``bybit_linear_orderbook_top5_*.csv.gz`` (``ts, recv_ts, symbol, changed,
bid_px_1.., bid_sz_1.., ask_px_1.., ask_sz_1..``).

Bad files fail with :class:`MarketDataError` naming the file and the line
(1-based, the header is line 1; ``row`` for Parquet) at fault: a bad header, a
non-numeric or missing cell, a wrong number of fields, a truncated gzip stream,
or a broken candle rule (the rules of :mod:`pipeline.market.schemas`: duplicate or
off-grid timestamps, prices <= 0, high < max(open, close), low > min(open, close),
negative volume).
"""

from __future__ import annotations

import csv
import datetime as dt
import gzip
import io
import zlib
from pathlib import Path

import polars as pl

from pipeline.core.choices import symbol_problem
from pipeline.market.base import MarketDataError
from pipeline.core.timegrid import from_ms, grid_offset_ms, interval_ms, utc_naive
from pipeline.market.schemas import (
    CANDLE_SCHEMA,
    FUNDING_SCHEMA,
    OPEN_INTEREST_SCHEMA,
    ON_GRID,
    ORDERBOOK_SCHEMA,
    candle_violations,
    conform,
    empty,
)

SOURCE = "files"
_LINE = "__line"  # 1-based physical line (CSV) or row (Parquet) of each record

# Header aliases (lower-cased) -> canonical column name.
_ALIASES = {
    "ts": "ts",
    "starttime": "ts",
    "start_time": "ts",
    "timestamp": "ts",
    "open_time": "ts",
    "opentime": "ts",
    "openprice": "open",
    "highprice": "high",
    "lowprice": "low",
    "closeprice": "close",
    "fundingrate": "funding_rate",
    "fundingratetimestamp": "ts",
    "openinterest": "open_interest",
}
_CANDLE_ROW_LAYOUT = ("ts", "open", "high", "low", "close", "volume", "turnover")
_CANDLE_SUFFIXES = (".csv.gz", ".csv", ".parquet")


def read_candle_file(path: str | Path, symbol: str, interval: str) -> pl.DataFrame:
    """All candles in one export file as a CANDLE_SCHEMA frame, oldest first.

    Raises MarketDataError naming the file and line for malformed content and for any
    broken candle rule (duplicate or off-grid ts, prices <= 0, high < max(open, close),
    low > min(open, close), negative volume).
    """
    path = Path(path)
    step = _interval_ms(interval)
    table = _read_table(
        path,
        required=("ts", "open", "high", "low", "close", "volume"),
        optional=("turnover",),
        headerless=_CANDLE_ROW_LAYOUT,
        headerless_counts=(6, 7),
        what="candle",
    )
    prices = ("open", "high", "low", "close", "volume")
    frame = _numbers(table, path, ints=("ts",), floats=prices, nullable=("turnover",))
    frame = frame.sort("ts", maintain_order=True)
    _check_unique_ts(frame, path)
    if "turnover" not in frame.columns:
        frame = frame.with_columns(pl.lit(None, dtype=pl.Float64).alias("turnover"))
    frame = frame.with_columns(
        pl.col("ts").alias("ts_ms"),
        _ms_to_ts(pl.col("ts")).alias("ts"),
        pl.lit(symbol).alias("symbol"),
        pl.lit(str(interval)).alias("interval"),
        pl.lit(SOURCE).alias("source"),
    )
    # The candle rules (pipeline.market.schemas), reported with the file and line of the first bad row.
    offset = grid_offset_ms(interval)
    for rule, bad in candle_violations(frame):
        row = bad.sort(_LINE).row(0, named=True)
        more = f" (and {bad.height - 1} more rows)" if bad.height > 1 else ""
        at = f"ts {_fmt_ts(row['ts_ms'])} ({row['ts_ms']} ms)"
        if rule == ON_GRID:
            detail = (
                f"{at} is not on the interval {interval} grid "
                f"(bars open every {step // 60_000} minutes{' from Monday 00:00 UTC' if offset else ''})"
            )
        else:
            values = ", ".join(f"{c} {row[c]!r}" for c in prices)
            detail = f"candle at {at} breaks the rule {rule}: {values}"
        raise MarketDataError(f"{path}, {_where(path)} {row[_LINE]}: {detail}{more}")
    return conform(frame, CANDLE_SCHEMA, f"candles from {path}")


def read_funding_file(path: str | Path, symbol: str) -> pl.DataFrame:
    """Funding settlements (``ts, funding_rate``) as a FUNDING_SCHEMA frame, oldest first."""
    path = Path(path)
    table = _read_table(
        path,
        required=("ts", "funding_rate"),
        optional=(),
        headerless=("ts", "funding_rate"),
        headerless_counts=(2,),
        what="funding",
    )
    frame = _numbers(table, path, ints=("ts",), floats=("funding_rate",), nullable=())
    frame = frame.sort("ts", maintain_order=True)
    _check_unique_ts(frame, path)
    frame = frame.with_columns(
        _ms_to_ts(pl.col("ts")).alias("ts"), pl.lit(symbol).alias("symbol"), pl.lit(SOURCE).alias("source")
    )
    return conform(frame, FUNDING_SCHEMA, f"funding from {path}")


def read_open_interest_file(path: str | Path, symbol: str, interval: str) -> pl.DataFrame:
    """Open interest (``ts, open_interest``) on the interval grid as an OPEN_INTEREST_SCHEMA frame."""
    path = Path(path)
    step = _interval_ms(interval)
    table = _read_table(
        path,
        required=("ts", "open_interest"),
        optional=(),
        headerless=("ts", "open_interest"),
        headerless_counts=(2,),
        what="open interest",
    )
    frame = _numbers(table, path, ints=("ts",), floats=("open_interest",), nullable=())
    frame = frame.sort("ts", maintain_order=True)
    _check_unique_ts(frame, path)
    offset = grid_offset_ms(interval)
    _fail_on(
        frame,
        (pl.col("ts") - offset) % step != 0,
        path,
        lambda row: f"ts {_fmt_ts(row['ts'])} ({row['ts']} ms) is not on the interval {interval} grid",
    )
    frame = frame.with_columns(
        _ms_to_ts(pl.col("ts")).alias("ts"),
        pl.lit(symbol).alias("symbol"),
        pl.lit(str(interval)).alias("interval"),
        pl.lit(SOURCE).alias("source"),
    )
    return conform(frame, OPEN_INTEREST_SCHEMA, f"open interest from {path}")


def read_orderbook_file(path: str | Path, levels: int = 5) -> pl.DataFrame:
    """Top-``levels`` order-book snapshots of every symbol in one file, ORDERBOOK_SCHEMA, oldest first."""
    path = Path(path)
    if levels < 1:
        raise MarketDataError(f"levels={levels}: ask for at least 1 order-book level")
    sides = ("bid_px", "bid_sz", "ask_px", "ask_sz")
    level_cols = tuple(f"{side}_{k}" for k in range(1, levels + 1) for side in sides)
    table = _read_table(
        path,
        required=("ts", "symbol", *level_cols),
        optional=("recv_ts", "changed"),
        headerless=None,
        headerless_counts=(),
        what=f"order book (top {levels} levels)",
    )
    frame = _numbers(
        table,
        path,
        ints=("ts", "recv_ts"),
        floats=level_cols,
        nullable=("recv_ts", "changed"),
        strings=("symbol", "changed"),
    )
    frame = frame.sort(["ts", "symbol"], maintain_order=True)
    dup = frame.select(pl.struct("symbol", "ts").is_duplicated()).to_series()
    if dup.any():
        first = frame.filter(dup).row(0, named=True)
        lines = frame.filter((pl.col("symbol") == first["symbol"]) & (pl.col("ts") == first["ts"]))[_LINE].to_list()
        raise MarketDataError(
            f"{path}, {_where(path)} {lines[0]}: duplicate snapshot for {first['symbol']} at ts "
            f"{_fmt_ts(first['ts'])} ({first['ts']} ms), also at {_where(path)} {', '.join(map(str, lines[1:]))}"
        )
    frame = frame.with_columns(
        _ms_to_ts(pl.col("ts")).alias("ts"),
        *(pl.concat_list([f"{side}_{k}" for k in range(1, levels + 1)]).alias(side) for side in sides),
        pl.lit(SOURCE).alias("source"),
    )
    return conform(frame, ORDERBOOK_SCHEMA, f"order book from {path}")


class FileSource:
    """Market data read from export files in one folder (see the module docstring for names and layouts)."""

    name = SOURCE

    def __init__(self, directory: str | Path, cache_size: int = 16):
        self.directory = Path(directory)
        self._cache: dict[tuple, pl.DataFrame] = {}
        self._cache_size = cache_size

    def __repr__(self) -> str:
        return f"FileSource({str(self.directory)!r})"

    # -- finding files -------------------------------------------------------------------------

    def candle_path(self, symbol: str, interval: str) -> Path:
        """The candle file for ``symbol``/``interval``; MarketDataError listing what was tried if none."""
        _interval_ms(interval)
        return self._first_existing(
            self._names(symbol, f"_{interval}"), f"candles of {symbol} interval {interval}", required=True
        )

    @staticmethod
    def _names(symbol: str, suffix: str) -> list[str]:
        """The file names tried, in order, for ``{SYMBOL}{suffix}`` (with and without ``bybit_``)."""
        _check_symbol(symbol)
        return [f"{prefix}{symbol}{suffix}{ext}" for prefix in ("bybit_", "") for ext in _CANDLE_SUFFIXES]

    def _orderbook_paths(self) -> list[Path]:
        return sorted(
            p
            for p in self.directory.glob("bybit_*orderbook_top*_*")
            if p.is_file() and p.name.endswith(_CANDLE_SUFFIXES)
        )

    def _check_directory(self) -> None:
        if not self.directory.is_dir():
            raise MarketDataError(
                f"file source: folder {self.directory} does not exist; set CONVTRADE_FILES_DIR to the folder "
                "of exports, or use CONVTRADE_SOURCE=synthetic"
            )

    def _first_existing(self, names: list[str], what: str, required: bool) -> Path | None:
        self._check_directory()
        for name in names:
            path = self.directory / name
            if path.is_file():
                return path
        if not required:
            return None
        have = sorted(p.name for p in self.directory.iterdir() if p.is_file())
        raise MarketDataError(
            f"file source: no file with {what} in {self.directory}; looked for {', '.join(names)}; "
            f"the folder has {', '.join(have) or 'no files'}"
        )

    def _cached(self, path: Path, kind: tuple, read) -> pl.DataFrame:
        """``read()`` once per file version (path, mtime, size) and ``kind`` (what and how it was read)."""
        stat = path.stat()
        key = (str(path.resolve()), stat.st_mtime_ns, stat.st_size, kind)
        frame = self._cache.get(key)
        if frame is None:
            frame = read()
            if len(self._cache) >= self._cache_size:
                self._cache.pop(next(iter(self._cache)))
            self._cache[key] = frame
        return frame

    # -- MarketSource ----------------------------------------------------------------------------

    def unavailable(self, dataset: str, symbol: str, interval: str | None = None) -> str | None:
        """Why there is no file with ``dataset`` of ``symbol`` in the folder (None when there is one)."""
        if dataset == "orderbook":
            self._check_directory()
            if any(self._orderbook_paths()):
                return None
            return f"no bybit_*orderbook_top*_* file in {self.directory}"
        if interval is not None:
            _interval_ms(interval)
        if dataset == "candles":
            names = self._names(symbol, f"_{interval}")
        elif dataset == "funding":
            names = self._names(symbol, "_funding")
        elif dataset == "open_interest":
            names = self._names(symbol, f"_{interval}_oi")
        else:
            raise ValueError(f"unknown dataset {dataset!r}")
        if self._first_existing(names, f"{dataset} of {symbol}", required=False) is not None:
            return None
        return f"no {dataset} file in {self.directory} (looked for {', '.join(names[:2])}, ...)"


    def candles(self, symbol: str, interval: str, start: dt.datetime, end: dt.datetime) -> pl.DataFrame:
        path = self.candle_path(symbol, interval)
        frame = self._cached(path, ("candles", symbol, interval), lambda: read_candle_file(path, symbol, interval))
        return _in_range(frame, start, end)

    def funding(self, symbol: str, start: dt.datetime, end: dt.datetime) -> pl.DataFrame:
        path = self._first_existing(self._names(symbol, "_funding"), f"funding of {symbol}", required=False)
        if path is None:
            return empty(FUNDING_SCHEMA)
        frame = self._cached(path, ("funding", symbol), lambda: read_funding_file(path, symbol))
        return _in_range(frame, start, end)

    def open_interest(self, symbol: str, interval: str, start: dt.datetime, end: dt.datetime) -> pl.DataFrame:
        """Open interest from ``bybit_{SYMBOL}_{interval}_oi.csv(.gz)``; an empty frame when there is no such file."""
        _interval_ms(interval)
        path = self._first_existing(
            self._names(symbol, f"_{interval}_oi"), f"open interest of {symbol} interval {interval}", required=False
        )
        if path is None:
            return empty(OPEN_INTEREST_SCHEMA)
        frame = self._cached(path, ("oi", symbol, interval), lambda: read_open_interest_file(path, symbol, interval))
        return _in_range(frame, start, end)

    def orderbook(self, symbol: str, start: dt.datetime, end: dt.datetime, levels: int = 5) -> pl.DataFrame:
        """Snapshots of ``symbol`` from every ``bybit_*_orderbook_top*_*`` file; empty when there are none."""
        _check_symbol(symbol)
        self._check_directory()
        paths = self._orderbook_paths()
        frames = []
        for path in paths:
            book = self._cached(path, ("orderbook", levels), lambda path=path: read_orderbook_file(path, levels))
            frames.append(book.filter(pl.col("symbol") == symbol))
        if not frames:
            return empty(ORDERBOOK_SCHEMA)
        frame = pl.concat(frames).sort("ts", maintain_order=True)
        if frame["ts"].is_duplicated().any():
            ts = frame.filter(frame["ts"].is_duplicated())["ts"][0]
            raise MarketDataError(
                f"file source: order-book snapshot of {symbol} at {ts} appears in more than one of "
                f"{', '.join(p.name for p in paths)}"
            )
        return _in_range(frame, start, end)


# -- reading ------------------------------------------------------------------------------------


def _interval_ms(interval: str) -> int:
    try:
        return interval_ms(interval)
    except ValueError as exc:
        raise MarketDataError(str(exc)) from None


def _check_symbol(symbol: str) -> None:
    """Only exchange symbols reach a file name (the rule Settings apply, for direct callers too)."""
    if problem := symbol_problem(symbol):
        raise MarketDataError(f"file source: {problem}")


def _where(path: Path) -> str:
    return "row" if path.name.endswith(".parquet") else "line"


def _read_bytes(path: Path) -> bytes:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise MarketDataError(f"{path}: cannot read the file ({exc.strerror or exc})") from None
    if not path.name.endswith(".gz"):
        return raw
    try:
        return gzip.decompress(raw)
    except (EOFError, zlib.error, gzip.BadGzipFile, OSError) as exc:
        partial = _partial_gunzip(raw)
        if partial is None:
            raise MarketDataError(f"{path}, line 1: not a gzip file ({exc}); rename it if it is plain CSV") from None
        line = partial.count(b"\n") + 1
        raise MarketDataError(
            f"{path}, line {line}: gzip stream is truncated or corrupt ({exc}); the readable data ends in "
            f"line {line}. Re-export or re-download the file."
        ) from None


def _partial_gunzip(raw: bytes) -> bytes | None:
    """What can be decompressed from a damaged gzip stream, or None if it is no gzip at all."""
    if not raw.startswith(b"\x1f\x8b"):
        return None
    out = io.BytesIO()
    decomp = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        for i in range(0, len(raw), 1 << 16):
            out.write(decomp.decompress(raw[i : i + (1 << 16)]))
    except zlib.error:
        pass
    return out.getvalue()


def _canonical(name: str) -> str:
    key = name.strip().strip('"').strip().lower()
    return _ALIASES.get(key, key)


def _read_table(
    path: Path,
    required: tuple[str, ...],
    optional: tuple[str, ...],
    headerless: tuple[str, ...] | None,
    headerless_counts: tuple[int, ...],
    what: str,
) -> pl.DataFrame:
    """String (CSV) or typed (Parquet) columns with canonical names, plus the line of each record."""
    if path.name.endswith(".parquet"):
        return _read_parquet(path, required, optional, what)
    data = _read_bytes(path)
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    first_line = data.split(b"\n", 1)[0].rstrip(b"\r")
    try:
        first = next(csv.reader([first_line.decode("utf-8")]), [])
    except UnicodeDecodeError:
        raise MarketDataError(f"{path}, line 1: not UTF-8 text; expected a CSV {what} file") from None
    if not first or not "".join(first).strip():
        raise MarketDataError(f"{path}, line 1: empty; expected a header like {', '.join(required)} or data rows")
    has_header = not _is_number(first[0])
    if has_header:
        names = [_canonical(name) for name in first]
        dupes = sorted({n for n in names if names.count(n) > 1})
        missing = [name for name in required if name not in names]
        if dupes or missing:
            problem = f"missing column(s) {', '.join(missing)}" if missing else f"repeated column(s) {', '.join(dupes)}"
            raise MarketDataError(
                f"{path}, line 1: bad header {','.join(first)!r}: {problem}; expected "
                f"{', '.join(required)}{' and optionally ' + ', '.join(optional) if optional else ''}"
            )
    else:
        if headerless is None or len(first) not in headerless_counts:
            expected = (
                f"{' or '.join(map(str, headerless_counts))} columns ({', '.join(headerless or ())})"
                if headerless
                else f"a header with {', '.join(required)}"
            )
            raise MarketDataError(
                f"{path}, line 1: no header and {len(first)} fields; a {what} file needs {expected}"
            )
        names = list(headerless[: len(first)])
    try:
        frame = pl.read_csv(
            io.BytesIO(data),
            has_header=has_header,
            new_columns=names,
            infer_schema=False,
            quote_char='"',
        )
    except pl.exceptions.PolarsError as exc:
        found = _diagnose_csv(path, data, len(names), has_header)
        raise MarketDataError(found or f"{path}: cannot parse ({exc})") from None
    frame = frame.with_columns(pl.int_range(1, pl.len() + 1, dtype=pl.Int64).alias(_LINE) + int(has_header))
    keep = [name for name in names if name in required or name in optional]
    frame = frame.select(*keep, _LINE)
    # Blank lines come through as all-null records: drop them, their line numbers stay right.
    return frame.filter(~pl.all_horizontal(pl.exclude(_LINE).is_null()))


def _read_parquet(path: Path, required: tuple[str, ...], optional: tuple[str, ...], what: str) -> pl.DataFrame:
    try:
        frame = pl.read_parquet(path)
    except (pl.exceptions.PolarsError, OSError) as exc:
        raise MarketDataError(f"{path}: not a readable Parquet file ({exc}); re-export it") from None
    frame = frame.rename({name: _canonical(name) for name in frame.columns})
    missing = [name for name in required if name not in frame.columns]
    if missing:
        raise MarketDataError(
            f"{path}: bad Parquet {what} columns {', '.join(frame.columns)}: missing {', '.join(missing)}"
        )
    if isinstance(frame.schema["ts"], pl.Datetime):
        ts_type = frame.schema["ts"]
        ts = pl.col("ts").dt.replace_time_zone(None) if ts_type.time_zone else pl.col("ts")
        frame = frame.with_columns(ts.dt.epoch("ms").alias("ts"))
    keep = [name for name in frame.columns if name in required or name in optional]
    return frame.select(keep).with_row_index(_LINE, offset=1).with_columns(pl.col(_LINE).cast(pl.Int64))


def _numbers(
    table: pl.DataFrame,
    path: Path,
    ints: tuple[str, ...],
    floats: tuple[str, ...],
    nullable: tuple[str, ...],
    strings: tuple[str, ...] = (),
) -> pl.DataFrame:
    """Cast columns to numbers; the first missing or non-numeric required cell is an error naming its line."""
    casts, bads = [], []
    for name in table.columns:
        if name == _LINE:
            continue
        col = pl.col(name)
        if name in strings:
            casts.append(col.cast(pl.String))
            bads.append((col.is_null() if name not in nullable else pl.lit(False)).alias(f"__bad_{name}"))
            continue
        dtype = pl.Int64 if name in ints else pl.Float64
        source = col.str.strip_chars() if table.schema[name] == pl.String else col
        cast = source.cast(dtype, strict=False)
        bad = (col.is_not_null() & cast.is_null()) | (cast.is_null() if name not in nullable else pl.lit(False))
        if dtype == pl.Float64:
            bad = bad | ~cast.is_finite().fill_null(True)
        casts.append(cast.alias(name))
        bads.append(bad.alias(f"__bad_{name}"))
    checked = table.with_columns(*bads).with_columns(*casts)
    bad_cols = [c for c in checked.columns if c.startswith("__bad_")]
    any_bad = checked.select(pl.any_horizontal(bad_cols).alias("b"))["b"] if bad_cols else None
    if any_bad is not None and any_bad.any():
        row = table.filter(any_bad).row(0, named=True)
        flags = checked.filter(any_bad).select(bad_cols).row(0, named=True)
        column = next(c[len("__bad_") :] for c, flag in flags.items() if flag)
        raise MarketDataError(_bad_cell_message(path, row, column, table.columns))
    return checked.select(*(c for c in table.columns))


def _bad_cell_message(path: Path, row: dict, column: str, columns: list[str]) -> str:
    where = _where(path)
    line = row[_LINE]
    value = row[column]
    expected = len([c for c in columns if c != _LINE])
    if not path.name.endswith(".parquet"):
        raw_line = _raw_line(path, line)
        if raw_line is not None:
            fields = next(csv.reader([raw_line]), [])
            if len(fields) != expected and _file_columns(path) not in (None, len(fields)):
                return (
                    f"{path}, line {line}: {len(fields)} fields, expected {_file_columns(path)} "
                    f"(wrong column count or a truncated line): {raw_line[:120]!r}"
                )
    if value is None or (isinstance(value, str) and not value.strip()):
        return f"{path}, {where} {line}: missing value in column {column!r}"
    kind = "an integer (epoch milliseconds)" if column == "ts" else "a finite number"
    return f"{path}, {where} {line}: column {column!r} value {value!r} is not {kind}"


def _raw_line(path: Path, line: int) -> str | None:
    try:
        data = _read_bytes(path)
    except MarketDataError:
        return None
    lines = data.split(b"\n")
    if line - 1 >= len(lines):
        return None
    return lines[line - 1].rstrip(b"\r").decode("utf-8", errors="replace")


def _file_columns(path: Path) -> int | None:
    first = _raw_line(path, 1)
    return None if first is None else len(next(csv.reader([first]), []))


def _diagnose_csv(path: Path, data: bytes, expected: int, has_header: bool) -> str | None:
    """Find the first line whose field count is wrong (polars does not say which)."""
    text = data.decode("utf-8", errors="replace")
    for number, fields in enumerate(csv.reader(io.StringIO(text)), start=1):
        if number == 1 and has_header:
            continue
        if fields and len(fields) != expected:
            return f"{path}, line {number}: {len(fields)} fields, expected {expected} (wrong column count)"
    return None


def _is_number(text: str) -> bool:
    try:
        float(text.strip().strip('"'))
    except ValueError:
        return False
    return True


# -- checks ---------------------------------------------------------------------------------------


def _fail_on(frame: pl.DataFrame, condition: pl.Expr, path: Path, describe) -> None:
    mask = frame.select(condition.alias("bad"))["bad"]
    count = int(mask.sum())
    if count:
        row = frame.filter(mask).sort(_LINE).row(0, named=True)
        more = f" (and {count - 1} more rows)" if count > 1 else ""
        raise MarketDataError(f"{path}, {_where(path)} {row[_LINE]}: {describe(row)}{more}")


def _check_unique_ts(frame: pl.DataFrame, path: Path) -> None:
    dup = frame["ts"].is_duplicated()
    if dup.any():
        rows = frame.filter(dup).sort(_LINE)
        first = rows.row(0, named=True)
        lines = rows.filter(pl.col("ts") == first["ts"])[_LINE].to_list()
        where = _where(path)
        raise MarketDataError(
            f"{path}, {where} {lines[1]}: duplicate ts {_fmt_ts(first['ts'])} ({first['ts']} ms), first at "
            f"{where} {lines[0]} ({rows.height} rows share a timestamp)"
        )


def _fmt_ts(ms: int) -> str:
    return from_ms(ms).strftime("%Y-%m-%d %H:%M:%S UTC")


def _ms_to_ts(expr: pl.Expr) -> pl.Expr:
    return pl.from_epoch(expr, time_unit="ms").cast(pl.Datetime("us"))


def _in_range(frame: pl.DataFrame, start: dt.datetime, end: dt.datetime) -> pl.DataFrame:
    lo, hi = utc_naive(start), utc_naive(end)
    return frame.filter((pl.col("ts") >= lo) & (pl.col("ts") < hi))


__all__ = [
    "FileSource",
    "read_candle_file",
    "read_funding_file",
    "read_open_interest_file",
    "read_orderbook_file",
]
