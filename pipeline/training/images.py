"""Image datasets: the encodings' memory-mapped images joined to features.labels, shaped like a WindowStore.

``build_image_store(warehouse, settings, name, horizon)`` opens the image file
of every configured series of encoding ``name`` (written by the
``encodings/<name>`` asset, checked against ``encodings.<name>_index``) and
joins each image's ts to the label at ``horizon`` with
:func:`pipeline.features.labels.load_labels` (an order-book heatmap joins the
bar during which its newest snapshot was taken: :func:`bar_images`). A sample is an image whose
label is known and whose label horizon spans no missing bar (bars without an
image, because their window is not complete or crosses a gap, count as
``warmup``; the encodings never draw across a gap).

:class:`ImageStore` offers what :func:`pipeline.training.walk_forward.train_fold`
reads of a :class:`~pipeline.training.datasets.WindowStore`: ``gather(rows)``
(float32 ``[n, C, H, W]``: uint8 charts scaled to [0, 1], then one constant
plane per symbol, as the sequence windows carry one-hot symbol channels),
``sample_rows``, ``sample_ts_ms``, ``sample_symbol``, ``label_class``,
``fwd_return``, ``fwd_volatility``, ``channels``, ``symbols``, ``window``,
``fingerprint`` and ``dropped``; ``row_scaling`` (set per fold from
``fit_row_scaling(training rows)``) applies the CNN-TA per-indicator scaling
of :mod:`pipeline.encodings.indicator_image` in ``gather``; and ``rows`` / ``n_feature_channels`` for
:func:`pipeline.training.datasets.robust_stats`: ``rows[r, :C]`` returns
``PIXELS_PER_IMAGE`` fixed pixels of each image ``r`` (positions drawn once
from a seeded generator), so the per-channel median and IQR are those of the
training images' pixels, and nothing outside ``r`` is read.

:func:`inference_store` wraps images encoded elsewhere (the live signals encode the
newest candles' images themselves) in an unlabelled ImageStore, so a fold's model
reads them through the same ``gather`` (pixel scale, the artifact's saved row
scaling, ``IndicatorScaling.from_config``, and symbol planes) as in training.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

import numpy as np
import polars as pl

from pipeline.encodings.build import SNAPSHOT_INTERVAL, spec
from pipeline.encodings.indicator_image import IndicatorScaling, fit_indicator_scaling
from pipeline.encodings.image_files import open_images
from pipeline.features.labels import load_labels
from pipeline.core.timegrid import interval_ms
from pipeline.core.windows import valid_window_ends

PIXELS_PER_IMAGE = 16
IMAGE_STORE_FORMAT = 1


class PixelSample:
    """``store.rows[rows, :k]`` for robust_stats: (len(rows) * PIXELS_PER_IMAGE, k) pixel values of those images."""

    def __init__(self, store: "ImageStore"):
        self.store = store
        c, h, w = store.image_shape
        rng = np.random.default_rng(12345)
        self.pixels = rng.integers(0, h * w, PIXELS_PER_IMAGE)

    def __getitem__(self, key):
        rows, channels = key if isinstance(key, tuple) else (key, slice(None))
        images = self.store.gather(np.atleast_1d(np.asarray(rows, dtype=np.int64)))  # (n, C + S, H, W)
        flat = images.reshape(images.shape[0], images.shape[1], -1)[:, :, self.pixels]  # (n, C + S, P)
        return np.moveaxis(flat, 1, 2).reshape(-1, images.shape[1])[:, channels]


@dataclasses.dataclass
class ImageStore:
    name: str
    arrays: list[np.ndarray]  # per series: memmap [n_k, C, H, W]
    offsets: np.ndarray  # (len(arrays) + 1,) global row where each series starts
    image_shape: tuple[int, int, int]
    scale: float  # 1/255 for uint8 charts, 1 otherwise
    symbols: list[str]
    window: int  # bars of history one image reads
    horizon: int
    sample_rows: np.ndarray
    sample_ts_ms: np.ndarray
    sample_symbol: np.ndarray
    label_class: np.ndarray
    fwd_return: np.ndarray
    fwd_volatility: np.ndarray
    dropped: dict[str, int]
    fingerprint: str
    # per-image-row scaling (CNN-TA indicator images): set per fold with fit_row_scaling(training rows)
    row_scaling: IndicatorScaling | None = None
    # configured symbols of which the encoding made no image (e.g. no order-book history): left out
    missing_symbols: tuple[str, ...] = ()

    def fit_row_scaling(self, train_rows: np.ndarray) -> IndicatorScaling:
        """Per image row [0, 1] scaling (1st / 99th percentiles) fitted on the images at ``train_rows`` only."""
        rows = np.asarray(train_rows, dtype=np.int64)
        raw = self._images(rows)[:, :1]
        return fit_indicator_scaling(raw, np.arange(rows.shape[0]))

    @property
    def feature_columns(self) -> list[str]:
        """Names of the image channels (what save_artifact records beside the symbol channels)."""
        return [f"{self.name}_{k}" for k in range(self.image_shape[0])]

    @property
    def channels(self) -> list[str]:
        return self.feature_columns + [f"symbol_{s}" for s in self.symbols]

    @property
    def n_feature_channels(self) -> int:
        return self.image_shape[0]

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """(channels incl. symbol planes, H, W): what a 2D model is built for."""
        return (len(self.channels), *self.image_shape[1:])

    @property
    def rows(self) -> PixelSample:
        return PixelSample(self)

    def gather(self, rows: np.ndarray) -> np.ndarray:
        """float32 [n, C + n_symbols, H, W] images at global ``rows`` (in the order given)."""
        out = self._images(rows)
        if self.row_scaling is not None:
            c = self.image_shape[0]
            out[:, :c] = self.row_scaling.apply(out[:, :c])
        return out

    def _images(self, rows: np.ndarray) -> np.ndarray:
        rows = np.asarray(rows, dtype=np.int64)
        c, h, w = self.image_shape
        out = np.zeros((rows.shape[0], c + len(self.symbols), h, w), dtype=np.float32)
        if rows.size and (rows.min() < 0 or rows.max() >= self.offsets[-1]):
            raise IndexError(f"ImageStore {self.name}: rows must lie in [0, {self.offsets[-1]})")
        which = np.searchsorted(self.offsets, rows, side="right") - 1
        for k in np.unique(which):
            pick = np.flatnonzero(which == k)
            local = rows[pick] - self.offsets[k]
            order = np.argsort(local, kind="stable")  # read the memmap in file order
            block = np.asarray(self.arrays[k][local[order]], dtype=np.float32)
            if self.scale != 1.0:
                block *= self.scale
            out[pick[order], :c] = block
            out[pick, c + k] = 1.0
        return out


def pixel_scale(s) -> float:
    """What ``gather`` multiplies the stored pixels of encoding spec ``s`` by: 1/255 for uint8 charts, else 1."""
    return 1.0 / 255.0 if np.dtype(s.dtype) == np.uint8 else 1.0


def inference_store(name: str, images: dict[str, np.ndarray], symbols: list[str],
                    row_scaling: IndicatorScaling | None = None) -> ImageStore:
    """An unlabelled ImageStore over in-memory images of encoding ``name`` (``images[symbol]``: [n, C, H, W] in the
    encoding's storage dtype), its symbol planes in the order of ``symbols`` (the artifact's): what a fold's model
    reads at inference (live signals), so ``gather`` scales the pixels and sets the planes exactly as in training.
    Its samples are every image, series after series in ``symbols`` order."""
    s = spec(name)
    empty = np.zeros((0, *s.shape), dtype=s.dtype)
    arrays = [np.asarray(images.get(sym, empty)) for sym in symbols]
    for sym, a in zip(symbols, arrays):
        if a.shape[1:] != tuple(s.shape):
            raise ValueError(f"inference_store {name}: {sym} images have shape {a.shape[1:]}, "
                             f"the encoding's is {tuple(s.shape)}")
    offsets = np.cumsum([0] + [a.shape[0] for a in arrays]).astype(np.int64)
    n = int(offsets[-1])
    ts = np.zeros(n, dtype=np.int64)
    return ImageStore(
        name=name, arrays=arrays, offsets=offsets, image_shape=tuple(s.shape), scale=pixel_scale(s),
        symbols=list(symbols), window=s.history, horizon=0, sample_rows=np.arange(n, dtype=np.int64),
        sample_ts_ms=ts, sample_symbol=np.repeat(np.arange(len(arrays)), np.diff(offsets)),
        label_class=np.full(n, -1, dtype=np.int64), fwd_return=np.full(n, np.nan),
        fwd_volatility=np.full(n, np.nan), dropped={}, fingerprint="inference", row_scaling=row_scaling)


def bar_images(grid_ts: np.ndarray, image_ts: np.ndarray, step_ms: int, snapshots: bool) -> np.ndarray:
    """Index into ``image_ts`` of the image each bar of ``grid_ts`` sees (-1: none).

    Candle images belong to the bar they end at (same ts). An order-book
    heatmap belongs to the bar during which its newest snapshot was taken, up
    to the bar's close: the latest snapshot in ``(ts, ts + step]``, so a
    bar's sample never sees a snapshot after its close.
    """
    if image_ts.size == 0:
        return np.full(grid_ts.shape[0], -1, dtype=np.int64)
    if snapshots:
        close = grid_ts + step_ms
        j = np.searchsorted(image_ts, close, side="right") - 1
        ok = (j >= 0) & (image_ts[np.maximum(j, 0)] > grid_ts)
    else:
        j = np.searchsorted(image_ts, grid_ts)
        ok = (j < image_ts.size) & (image_ts[np.minimum(j, image_ts.size - 1)] == grid_ts)
    return np.where(ok, j, -1).astype(np.int64)


def has_no_images(warehouse, name: str, symbol: str) -> bool:
    """True when ``encodings.<name>_index`` holds no row of ``symbol`` (the encoding made none, and said why)."""
    from pipeline.encodings.image_files import index_table

    table = index_table(name)
    if not warehouse.table_exists(table):
        return False  # never materialized: a real error
    return warehouse.query(f"select count(*) as n from {table} where symbol = ?", [symbol])["n"][0] == 0


def build_image_store(warehouse, settings, name: str, horizon: int) -> ImageStore:
    """The images of encoding ``name`` for every configured symbol (first interval), with labels at ``horizon``."""
    s = spec(name)
    interval = settings.intervals[0]
    step = interval_ms(interval)
    arrays, offsets, symbols = [], [0], []
    rows_l, ts_l, sym_l, cls_l, ret_l, vol_l = [], [], [], [], [], []
    dropped = {"warmup": 0, "gap": 0, "unknown_label": 0}
    h = hashlib.sha256(json.dumps({"name": name, "horizon": horizon, "format": IMAGE_STORE_FORMAT,
                                   "shape": list(s.shape)}).encode())
    missing: list[str] = []
    for symbol in settings.symbols:
        try:
            index, images = open_images(warehouse, Path(settings.artifacts_dir), name, symbol,
                                        SNAPSHOT_INTERVAL if s.source == "orderbook" else interval)
        except FileNotFoundError:
            if not has_no_images(warehouse, name, symbol):
                raise
            missing.append(symbol)  # the encoding made no image of this symbol (e.g. no order-book history)
            continue
        k = len(symbols)
        labels = load_labels(warehouse, symbol, interval, horizon)
        grid = labels["ts"].cast(pl.Datetime("ms")).cast(pl.Int64).to_numpy()
        cls = labels["label_class"].to_numpy()
        ret = labels["fwd_return"].cast(pl.Float64).fill_null(np.nan).to_numpy()
        vol = labels["fwd_volatility"].cast(pl.Float64).fill_null(np.nan).to_numpy()
        known = (cls >= 0) & np.isfinite(ret) & np.isfinite(vol)
        # label validity on the full candle grid: known, and its horizon crosses no missing bar
        ok, _ = valid_window_ends(grid, np.zeros(grid.shape[0], dtype=bool), known, step, 1, horizon)
        image_of = bar_images(grid, index["ts_ms"].to_numpy().astype(np.int64), step, s.source == "orderbook")
        has = image_of >= 0
        dropped["warmup"] += int((~has).sum())
        dropped["unknown_label"] += int((has & ~known).sum())
        dropped["gap"] += int((has & known & ~ok).sum())
        keep = np.flatnonzero(has & ok)
        rows_l.append(index["row"].to_numpy()[image_of[keep]].astype(np.int64) + offsets[-1])
        ts_l.append(grid[keep])
        sym_l.append(np.full(keep.shape[0], k, dtype=np.int64))
        cls_l.append(cls[keep])
        ret_l.append(ret[keep])
        vol_l.append(vol[keep])
        img_ts = index["ts_ms"].to_numpy()
        arrays.append(images)
        symbols.append(symbol)
        offsets.append(offsets[-1] + images.shape[0])
        n = images.shape[0]
        probe = images[np.unique(np.linspace(0, n - 1, min(n, 8)).astype(np.int64))] if n else images[:0]
        for arr in (img_ts, cls, ret, vol, np.ascontiguousarray(probe)):
            h.update(np.ascontiguousarray(arr).tobytes())
        h.update(symbol.encode())
    scale = pixel_scale(s)
    if not symbols:
        rows_l, ts_l, sym_l, cls_l = ([np.zeros(0, dtype=np.int64)] for _ in range(4))
        ret_l, vol_l = [np.zeros(0)], [np.zeros(0)]
    return ImageStore(
        name=name, arrays=arrays, offsets=np.asarray(offsets, dtype=np.int64), image_shape=tuple(s.shape),
        scale=scale, symbols=symbols, window=s.history, horizon=horizon,
        sample_rows=np.concatenate(rows_l), sample_ts_ms=np.concatenate(ts_l), sample_symbol=np.concatenate(sym_l),
        label_class=np.concatenate(cls_l).astype(np.int64), fwd_return=np.concatenate(ret_l),
        fwd_volatility=np.concatenate(vol_l), dropped=dropped, fingerprint=h.hexdigest()[:16],
        missing_symbols=tuple(missing),
    )
