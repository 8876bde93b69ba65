"""From the warehouse to image files: one function call per encoding (what the Dagster assets run).

``build_encoding(warehouse, settings, name, window)`` reads the raw candles (or
order-book snapshots) of every configured symbol and interval, one query per
series, cuts the windows that end at each bar (skipping every window that
spans a missing step of the candle grid: no image is drawn across a gap),
encodes them in chunks and writes them with
:func:`pipeline.encodings.image_files.write_encoding`. With a ``window`` (a monthly
partition run, or a range of them) only the images whose ts lies in the UTC
months the window touches are built and written, one file per month; the
look-back they need (``history - 1`` bars or snapshots before the first month)
is read from the warehouse, so the images equal those of a whole-range build.

The image at ``ts`` reads the ``history`` bars ending at ``ts`` (the candle
opened at ``ts``, closed) and nothing later: :func:`series_images` builds
every window from ``rows[e - history + 1 : e + 1]``.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Callable
from pathlib import Path

import numpy as np

from pipeline.encodings.candlestick import CandlestickChart
from pipeline.encodings.gramian import GramianAngularField
from pipeline.encodings.indicator_image import IndicatorImage
from pipeline.encodings.markov import MarkovTransitionField
from pipeline.encodings.orderbook_heatmap import OrderBookHeatmap, snapshot_windows
from pipeline.encodings.image_files import (SeriesImages, WrittenEncoding, month_name, month_start_ms, months_between,
                                      write_encoding)
from pipeline.core.timegrid import interval_ms
from pipeline.core.windows import contiguous_window_ends
from pipeline.market.stored import candle_arrays, load_candles
from pipeline.warehouse import table_ddl

SNAPSHOT_INTERVAL = "snapshot"  # the interval column of order-book images (snapshots have no candle interval)


def _ohlcv(w: np.ndarray) -> np.ndarray:
    return w


def _log_close(w: np.ndarray) -> np.ndarray:
    return np.log(w[:, 3:4])


def _log_returns(w: np.ndarray) -> np.ndarray:
    return np.diff(np.log(w[:, 3:4]), axis=2)


@dataclasses.dataclass(frozen=True)
class EncodingSpec:
    """One encoding: its encoder, what it reads, and how an OHLCV window becomes the encoder's input."""

    name: str
    encoder: object
    source: str  # "candles" or "orderbook"
    history: int  # bars (snapshots) one image reads, ending at its ts
    prepare: Callable[[np.ndarray], np.ndarray]  # OHLCV windows [N, 5, history] -> encoder input
    in_channels: int
    description: str

    @property
    def shape(self) -> tuple[int, int, int]:
        return self.encoder.output_shape(self.in_channels)

    @property
    def dtype(self):
        return self.encoder.dtype

    def encode_windows(self, windows: np.ndarray) -> np.ndarray:
        return self.encoder.encode(self.prepare(windows))


def _chart(bars: int) -> EncodingSpec:
    enc = CandlestickChart(bars)
    return EncodingSpec(f"candlestick_{bars}", enc, "candles", enc.input_length, _ohlcv, 5,
                        f"Jiang-Kelly-Xiu OHLC chart of the last {bars} bars ({enc.image_height} x {3 * bars} px, "
                        f"uint8), {bars}-bar moving average, volume in the bottom fifth")


ENCODINGS: dict[str, EncodingSpec] = {
    "indicator_image": EncodingSpec(
        "indicator_image", IndicatorImage(), "candles", IndicatorImage().input_length, _ohlcv, 5,
        "CNN-TA indicator matrix: 15 indicators (RSI, Williams %R, CMO, ROC at 7/14/21, MACD histogram, CCI, "
        "EMA distance) x the last 15 bars, raw values (scaled per fold on its training rows)"),
    "gaf": EncodingSpec(
        "gaf", GramianAngularField(64, input_length=128), "candles", 128, _log_close, 1,
        "GASF and GADF of the log close over the last 128 bars, PAA to 64 x 64"),
    "mtf": EncodingSpec(
        "mtf", MarkovTransitionField(64, n_bins=8, input_length=128), "candles", 129, _log_returns, 1,
        "Markov transition field (8 quantile states) of the last 128 log returns, aggregated to 64 x 64"),
    "candlestick_5": _chart(5),
    "candlestick_20": _chart(20),
    "candlestick_60": _chart(60),
    "orderbook_heatmap": EncodingSpec(
        "orderbook_heatmap", OrderBookHeatmap(), "orderbook", OrderBookHeatmap().steps, _ohlcv, 4,
        "order-book heatmap: the last 32 snapshots x 20 price bins within +-2% of the newest mid, "
        "log1p of resting bid and ask size"),
}


def register_encoding(encoding: EncodingSpec) -> EncodingSpec:
    """Add an encoding: its ``encodings/<name>`` asset, index table and image files follow from the spec.

    The encodings above are registered by this module; a new encoding is its encoder's file plus one
    ``register_encoding(EncodingSpec(...))`` here (or in the encoder's file, imported by this module)."""
    try:  # the name names its index table: the warehouse's one rule for it (pipeline.warehouse.ENCODING_INDEX)
        table_ddl(f"encodings.{encoding.name}_index")
    except KeyError:
        raise ValueError(f"encoding name {encoding.name!r}: use lower-case letters, digits and _, starting with a "
                         "letter (it names the table encodings.<name>_index)") from None
    if encoding.source not in ("candles", "orderbook"):
        raise ValueError(f"encoding {encoding.name!r}: source {encoding.source!r} is not 'candles' or 'orderbook'")
    ENCODINGS[encoding.name] = encoding
    return encoding


def spec(name: str) -> EncodingSpec:
    if name not in ENCODINGS:
        raise KeyError(f"unknown encoding {name!r}; known: {', '.join(ENCODINGS)}")
    return ENCODINGS[name]


def series_images(s: EncodingSpec, symbol: str, interval: str, ts_ms: np.ndarray, rows: np.ndarray,
                  ends: np.ndarray) -> SeriesImages:
    """The images of one series ending at rows ``ends``; each reads ``rows[e - history + 1 : e + 1]`` only."""
    rows = np.ascontiguousarray(rows, dtype=np.float64)
    view = np.lib.stride_tricks.sliding_window_view(rows, s.history, axis=0)  # (n - h + 1, fields, [L,] h)

    def encode(part: slice) -> np.ndarray:
        e = ends[part]
        if s.source == "orderbook":
            return s.encoder.encode(snapshot_windows(rows, e, s.history))
        return s.encode_windows(view[e - (s.history - 1)])

    return SeriesImages(symbol, interval, np.asarray(ts_ms)[ends], encode)


def encode_candles(name: str, ts_ms: np.ndarray, ohlcv: np.ndarray, interval: str) -> tuple[np.ndarray, np.ndarray]:
    """(ts of each image, images) of one candle series in memory: the same windows the assets write."""
    s = spec(name)
    ends = contiguous_window_ends(np.asarray(ts_ms, dtype=np.int64), interval_ms(interval), s.history)
    si = series_images(s, "", interval, ts_ms, ohlcv, ends)
    return si.ts_ms, si.encode(slice(None))


def encode_snapshots(name: str, ts_ms: np.ndarray, book: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(ts of each image, heatmaps) of one symbol's snapshots ``book`` [S, 4, L] (time order)."""
    s = spec(name)
    ends = np.arange(s.history - 1, np.asarray(ts_ms).shape[0])
    si = series_images(s, "", SNAPSHOT_INTERVAL, ts_ms, book, ends)
    return si.ts_ms, si.encode(slice(None))


def load_candle_arrays(warehouse, symbol: str, interval: str, since: dt.datetime | None = None,
                       until: dt.datetime | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(ts ms, OHLCV) of one series in ts order (:func:`pipeline.market.stored.load_candles`); only bars in
    [since, until) when given."""
    return candle_arrays(load_candles(warehouse, symbol, interval, since, until))


def _span(where: str, params: list, since, until) -> tuple[str, list]:
    if since is not None:
        where, params = where + " and ts >= ?", [*params, since]
    if until is not None:
        where, params = where + " and ts < ?", [*params, until]
    return where, params


def book_array(bid_px, bid_sz, ask_px, ask_sz) -> np.ndarray:
    """Snapshot lists (one list of levels per snapshot and field) as [S, 4, L], missing levels NaN."""
    fields = (bid_px, bid_sz, ask_px, ask_sz)
    n = len(bid_px)
    levels = max((len(v) for f in fields for v in f), default=0)
    out = np.full((n, 4, levels), np.nan)
    for k, f in enumerate(fields):
        for i, v in enumerate(f):
            out[i, k, : len(v)] = v
    return out


def load_snapshots(warehouse, symbol: str, since: dt.datetime | None = None, until: dt.datetime | None = None,
                   before: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(ts ms, book [S, 4, L]) of one symbol's snapshots in ts order: those in [since, until), plus the
    ``before`` snapshots just before ``since`` (the look-back of the first images)."""
    if not warehouse.table_exists("raw.orderbook"):  # a source without order books (files) never wrote it
        return np.zeros(0, dtype=np.int64), np.zeros((0, 4, 0))
    cols = "epoch_ms(ts) as ts_ms, bid_px, bid_sz, ask_px, ask_sz"
    where, params = _span("symbol = ?", [symbol], since, until)
    sql = f"select {cols} from raw.orderbook where {where}"
    if since is not None and before > 0:
        sql = (f"select * from (select {cols} from raw.orderbook where symbol = ? and ts < ? order by ts desc "
               f"limit {int(before)}) union all ({sql})")
        params = [symbol, since, *params]
    frame = warehouse.query(f"select * from ({sql}) order by ts_ms", params)
    book = book_array(*(frame[c].to_list() for c in ("bid_px", "bid_sz", "ask_px", "ask_sz")))
    return frame["ts_ms"].to_numpy().astype(np.int64), book


@dataclasses.dataclass
class EncodingBuild:
    spec: EncodingSpec
    written: WrittenEncoding
    history: list[dict]  # per series: what it was built from
    skipped: list[str]


def build_encoding(warehouse, settings, name: str, log: Callable[[str], None] = print,
                   window: tuple[dt.datetime, dt.datetime] | None = None) -> EncodingBuild:
    """Every configured series of encoding ``name`` written under ``settings.artifacts_dir`` with its index.

    ``window`` ([start, end), naive UTC: a partition run's): only the UTC months it touches, whole, are
    rebuilt (their files and index rows; other months' are untouched). ``None``: the whole history."""
    s = spec(name)
    months = months_between(*window) if window is not None else None
    if months is not None and not months:
        raise ValueError(f"encoding {name}: the window {window[0]} .. {window[1]} holds no time")
    # [first, last): the whole months written (naive UTC)
    first, last = (np.datetime64(months[0], "us").item(), np.datetime64(months[-1] + 1, "us").item()) \
        if months else (None, None)
    series, history, skipped = [], [], []
    if s.source == "orderbook":
        inputs = [(symbol, SNAPSHOT_INTERVAL, *load_snapshots(warehouse, symbol, first, last, s.history - 1))
                  for symbol in settings.symbols]
    else:
        lookback = [dt.timedelta(milliseconds=(s.history - 1) * interval_ms(iv)) for iv in settings.intervals]
        inputs = [(symbol, interval, *load_candle_arrays(warehouse, symbol, interval,
                                                   None if first is None else first - back, last))
                  for symbol in settings.symbols for interval, back in zip(settings.intervals, lookback)]
    unit = "snapshots" if s.source == "orderbook" else "candles"
    for symbol, interval, ts, rows in inputs:
        if s.source == "orderbook":  # consecutive stored snapshots (the schedule that collected them decides)
            ends = np.arange(s.history - 1, ts.shape[0])
        else:
            ends = contiguous_window_ends(ts, interval_ms(interval), s.history)
        if first is not None:  # the look-back rows only feed the first images of the window
            ends = ends[ts[ends] >= month_start_ms(months[0])]
        history.append({"symbol": symbol, "interval": interval, unit: int(ts.shape[0]),
                        "first": _iso(ts[0]) if ts.size else "", "last": _iso(ts[-1]) if ts.size else "",
                        "images": int(ends.shape[0])})
        if ends.size == 0:
            skipped.append(f"{symbol} {interval}: {ts.shape[0]} {unit}, no gap-free run of the {s.history} "
                           "an image needs" + (f" in {month_name(months[0])}..{month_name(months[-1])}" if months else ""))
            # written too, empty: its months' old files and index rows go
            series.append(SeriesImages(symbol, interval, np.zeros(0, dtype=np.int64), _no_images))
            continue
        series.append(series_images(s, symbol, interval, ts, rows, ends))
    written = write_encoding(warehouse, Path(settings.artifacts_dir), name, s.shape, s.dtype, series, months=months)
    span = f" in {', '.join(written.months)}" if written.months else ""
    log(f"encodings/{name}: {written.count} images of shape {written.shape} ({written.dtype}){span}")
    return EncodingBuild(s, written, history, skipped)


def _no_images(part: slice) -> np.ndarray:
    raise AssertionError("a series without images is never encoded")


def _iso(ms) -> str:
    return str(np.datetime64(int(ms), "ms"))
