"""Model datasets: feature rows in a memory-mapped array, sliding windows as views, labels from features.labels.

``load_series`` reads the model-input columns of ``features.candle_features``
joined to ``features.labels`` at one horizon (one SQL query per series; no
label is computed in Python). ``build_window_store`` writes the rows of every
requested series, one after the other, into one float32 ``.npy`` under
``$DATA_DIR/artifacts/windows/`` (with the index ``symbol, interval, ts`` beside
it, as parquet) and memory-maps it back; ``WindowStore.windows`` is a
``sliding_window_view`` of that memmap, so the window ending at row ``e`` is
``rows[e - W + 1 : e + 1]`` without a copy, and a batch is ONE fancy-index
gather (``store.gather(ends)`` -> ``(B, C, W)``).

A sample (a window end ``e``) is valid only when

- no row of its window is a warm-up row (``is_warmup``) or a filled bar (``is_filled``, fill gap policy),
- its window lies in one series and spans no gap of the candle grid
  (consecutive ``ts`` differ by exactly the interval),
- its label is known (direction, forward return and forward volatility non-NULL)
  and the label's horizon spans no gap either.

Dropped samples are counted per reason (first failing reason in that order:
``warmup``, ``gap``, ``unknown_label``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

import numpy as np
import polars as pl

from pipeline.core.columns import FEATURES_TABLE, MODEL_INPUT_COLUMNS, not_a_model_row_sql
from pipeline.features.labels import LABELS_TABLE, direction_to_class, label_spec
from pipeline.core.timegrid import interval_ms
from pipeline.core.windows import valid_window_ends

STORE_FORMAT = 1


@dataclasses.dataclass
class Series:
    """One (symbol, interval) series: feature rows and their labels, by ts."""

    symbol: str
    interval: str
    ts_ms: np.ndarray  # int64 open times
    features: np.ndarray  # (n, C) float32
    is_warmup: np.ndarray  # bool
    label_class: np.ndarray  # int64, -1 unknown
    fwd_return: np.ndarray  # float64, NaN unknown
    fwd_volatility: np.ndarray  # float64, NaN unknown


def load_series(warehouse, symbol: str, interval: str, horizon: int,
                columns: list[str] | None = None) -> Series:
    """Feature rows of one series joined to its labels at ``horizon`` (one query)."""
    columns = list(columns or MODEL_INPUT_COLUMNS)
    horizon = label_spec().check_horizon(horizon)
    select = ", ".join(f"f.{c}" for c in columns)
    # rows the fill gap policy made up (is_filled) never enter a window: counted as warm-up rows
    warmup = f"{not_a_model_row_sql(warehouse, 'f')} as is_warmup"
    frame = warehouse.query(
        f"select epoch_ms(f.ts) as ts_ms, {warmup}, {select}, "
        f"l.direction, l.fwd_return, l.fwd_volatility "
        f"from {FEATURES_TABLE} f left join {LABELS_TABLE} l "
        f"on l.symbol = f.symbol and l.interval = f.interval and l.ts = f.ts and l.horizon = ? "
        f"where f.symbol = ? and f.interval = ? order by f.ts",
        [horizon, symbol, interval],
    )
    if frame.height == 0:
        raise ValueError(
            f"{FEATURES_TABLE} has no rows for symbol={symbol} interval={interval}: "
            "materialize the market and feature assets first (make demo)"
        )
    feats = frame.select(columns).cast(pl.Float32).fill_null(np.nan).to_numpy().astype(np.float32, copy=False)
    return Series(
        symbol=symbol,
        interval=interval,
        ts_ms=frame["ts_ms"].cast(pl.Int64).to_numpy(),
        features=np.ascontiguousarray(feats),
        is_warmup=frame["is_warmup"].fill_null(True).to_numpy().astype(bool),
        label_class=direction_to_class(frame["direction"].cast(pl.Float64).fill_null(np.nan).to_numpy()),
        fwd_return=frame["fwd_return"].cast(pl.Float64).fill_null(np.nan).to_numpy(),
        fwd_volatility=frame["fwd_volatility"].cast(pl.Float64).fill_null(np.nan).to_numpy(),
    )


def naive_window(features: np.ndarray, end: int, window: int) -> np.ndarray:
    """The (C, W) window ending at row ``end``, built the slow way (reference for tests)."""
    return np.stack([features[end - window + 1 + j] for j in range(window)], axis=1)


@dataclasses.dataclass
class WindowStore:
    """Rows of several series in one memmap; samples are window ends into it."""

    path: Path
    rows: np.ndarray  # (N, C) float32 memmap (features + one-hot symbol channels)
    index: pl.DataFrame  # symbol, interval, ts_ms per row
    feature_columns: list[str]
    symbols: list[str]
    window: int
    horizon: int
    sample_rows: np.ndarray  # int64 row of each valid sample (window end)
    sample_ts_ms: np.ndarray
    sample_symbol: np.ndarray  # int index into symbols
    label_class: np.ndarray  # per sample
    fwd_return: np.ndarray
    fwd_volatility: np.ndarray
    dropped: dict[str, int]
    fingerprint: str

    @property
    def channels(self) -> list[str]:
        return self.feature_columns + [f"symbol_{s}" for s in self.symbols]

    @property
    def n_feature_channels(self) -> int:
        return len(self.feature_columns)

    @property
    def windows(self) -> np.ndarray:
        """(N - W + 1, C, W) view: windows[e - W + 1] is the window ending at row e."""
        return np.lib.stride_tricks.sliding_window_view(self.rows, self.window, axis=0)

    def gather(self, row_ends: np.ndarray) -> np.ndarray:
        """(B, C, W) float32 windows ending at ``row_ends``: one fancy-index gather."""
        return self.windows[np.asarray(row_ends, dtype=np.int64) - (self.window - 1)]


def _fingerprint(series: list[Series], columns: list[str], window: int, horizon: int) -> str:
    h = hashlib.sha256()
    h.update(json.dumps({"columns": columns, "window": window, "horizon": horizon, "format": STORE_FORMAT}).encode())
    for s in series:
        h.update(s.symbol.encode() + b"/" + s.interval.encode())
        for arr in (s.ts_ms, s.features, s.is_warmup, s.label_class, s.fwd_return, s.fwd_volatility):
            h.update(np.ascontiguousarray(arr).tobytes())
    return h.hexdigest()[:16]


def build_window_store(series: list[Series], artifacts_dir: Path, window: int, horizon: int,
                       columns: list[str] | None = None) -> WindowStore:
    """Write (or reuse, when its fingerprint matches) the memmap of ``series`` and index its valid samples."""
    if not series:
        raise ValueError("build_window_store: no series given")
    columns = list(columns or MODEL_INPUT_COLUMNS)
    if window < 1:
        raise ValueError(f"window={window}: must be >= 1 bar")
    fingerprint = _fingerprint(series, columns, window, horizon)
    symbols = [s.symbol for s in series]
    if len(set(symbols)) != len(symbols):
        raise ValueError(f"build_window_store: symbols repeat in {symbols}; give one series per symbol")
    interval = series[0].interval
    out_dir = Path(artifacts_dir) / "windows"
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = f"{'-'.join(symbols)}_{interval}_{hashlib.sha256(','.join(columns).encode()).hexdigest()[:8]}"
    path = out_dir / f"{stem}.npy"
    meta_path = out_dir / f"{stem}.json"
    index_path = out_dir / f"{stem}.index.parquet"
    n_total = sum(s.ts_ms.shape[0] for s in series)
    n_channels = len(columns) + len(symbols)
    meta = {"fingerprint": fingerprint, "rows": n_total, "channels": n_channels}
    fresh = not (path.exists() and meta_path.exists() and index_path.exists()
                 and json.loads(meta_path.read_text()) == meta)
    if fresh:
        tmp = path.with_suffix(".tmp.npy")
        rows = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=(n_total, n_channels))
        offset = 0
        for k, s in enumerate(series):
            n = s.ts_ms.shape[0]
            rows[offset:offset + n, : len(columns)] = s.features
            rows[offset:offset + n, len(columns):] = 0.0
            rows[offset:offset + n, len(columns) + k] = 1.0
            offset += n
        rows.flush()
        del rows
        tmp.replace(path)
        pl.DataFrame({
            "symbol": np.concatenate([[s.symbol] * s.ts_ms.shape[0] for s in series]),
            "interval": [interval] * n_total,
            "ts_ms": np.concatenate([s.ts_ms for s in series]),
        }).write_parquet(index_path)
        meta_path.write_text(json.dumps(meta))
    rows = np.load(path, mmap_mode="r")
    index = pl.read_parquet(index_path)
    sample_rows, sample_sym, dropped = [], [], {"warmup": 0, "gap": 0, "unknown_label": 0}
    offset = 0
    for k, s in enumerate(series):
        step = interval_ms(s.interval)
        known = (s.label_class >= 0) & np.isfinite(s.fwd_return) & np.isfinite(s.fwd_volatility)
        valid, d = valid_window_ends(s.ts_ms, s.is_warmup, known, step, window, horizon, s.features)
        for key in dropped:
            dropped[key] += d[key]
        ends = np.flatnonzero(valid)
        sample_rows.append(ends + offset)
        sample_sym.append(np.full(ends.shape[0], k, dtype=np.int64))
        offset += s.ts_ms.shape[0]
    sample_rows = np.concatenate(sample_rows).astype(np.int64)
    sample_sym = np.concatenate(sample_sym)
    all_ts = np.concatenate([s.ts_ms for s in series])
    all_cls = np.concatenate([s.label_class for s in series])
    all_ret = np.concatenate([s.fwd_return for s in series])
    all_vol = np.concatenate([s.fwd_volatility for s in series])
    return WindowStore(
        path=path, rows=rows, index=index, feature_columns=columns, symbols=symbols, window=window,
        horizon=horizon, sample_rows=sample_rows, sample_ts_ms=all_ts[sample_rows], sample_symbol=sample_sym,
        label_class=all_cls[sample_rows], fwd_return=all_ret[sample_rows], fwd_volatility=all_vol[sample_rows],
        dropped=dropped, fingerprint=fingerprint,
    )


def robust_stats(store: WindowStore, train_rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel median and IQR over the given rows (training window ends); symbol channels stay 0 / 1.

    ``train_rows`` are row numbers of the store; every row of every training
    window lies at or before the last of them, so nothing later is read.
    """
    rows = np.asarray(train_rows, dtype=np.int64)
    if rows.size == 0:
        raise ValueError("robust_stats: no training rows")
    x = np.asarray(store.rows[rows, : store.n_feature_channels], dtype=np.float64)
    q25, med, q75 = np.quantile(x, [0.25, 0.5, 0.75], axis=0)
    iqr = q75 - q25
    iqr = np.where(np.isfinite(iqr) & (iqr > 1e-12), iqr, 1.0)
    n_sym = len(store.symbols)
    center = np.concatenate([med, np.zeros(n_sym)]).astype(np.float32)
    scale = np.concatenate([iqr, np.ones(n_sym)]).astype(np.float32)
    return center, scale
