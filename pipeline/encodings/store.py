"""Image arrays on disk: one memory-mappable ``.npy`` per (encoding, symbol, interval) plus its index table.

Layout: ``$DATA_DIR/artifacts/encodings/<name>/<symbol>_<interval>.npy`` holds the
images ``[n, C, H, W]`` (uint8 charts, float16 fields), and
``encodings.<name>_index`` maps each row to (symbol, interval, ts).

A write is crash-safe in this order: every array is written to a temporary
name and renamed into place, then every index row is replaced in ONE
warehouse transaction. A crash before the rename leaves the old files and
index; :func:`open_images` checks that an index and its file agree (same row
count) and says what to rebuild when they do not.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
import polars as pl

from pipeline.warehouse import ENCODING_NAMES, Replacement

CHUNK = 4096  # images encoded and written per step


def index_table(name: str) -> str:
    if name not in ENCODING_NAMES:
        raise KeyError(f"unknown encoding {name!r}; known: {', '.join(ENCODING_NAMES)}")
    return f"encodings.{name}_index"


def array_path(artifacts_dir: Path, name: str, symbol: str, interval: str) -> Path:
    return Path(artifacts_dir) / "encodings" / name / f"{symbol}_{interval}.npy"


@dataclasses.dataclass
class SeriesImages:
    """What to write for one series: the ts of each image and a function encoding a slice of them."""

    symbol: str
    interval: str
    ts_ms: np.ndarray  # (n,) int64, ascending
    encode: Callable[[slice], np.ndarray]  # images of ts_ms[slice] -> [k, C, H, W]


@dataclasses.dataclass
class WrittenEncoding:
    name: str
    shape: tuple[int, int, int]  # (C, H, W) of one image
    dtype: str
    counts: dict[tuple[str, str], int]
    paths: dict[tuple[str, str], Path]
    rows_replaced: int

    @property
    def count(self) -> int:
        return sum(self.counts.values())


def write_encoding(warehouse, artifacts_dir: Path, name: str, shape: tuple[int, int, int], dtype,
                   series: Iterable[SeriesImages], chunk: int = CHUNK) -> WrittenEncoding:
    """Encode every series in chunks into temporary memmaps, rename them into place, then replace the index."""
    table = index_table(name)
    dtype = np.dtype(dtype)
    staged: list[tuple[Path, Path]] = []
    frames, counts, paths = [], {}, {}
    try:
        for s in series:
            path = array_path(artifacts_dir, name, s.symbol, s.interval)
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.stem}.tmp.npy")
            n = int(s.ts_ms.shape[0])
            staged.append((tmp, path))
            out = np.lib.format.open_memmap(tmp, mode="w+", dtype=dtype, shape=(n, *shape))
            for i in range(0, n, chunk):
                part = slice(i, min(n, i + chunk))
                images = s.encode(part)
                if images.shape[1:] != tuple(shape):
                    raise ValueError(f"encoding {name}: {s.symbol} {s.interval} images have shape "
                                     f"{images.shape[1:]}, the encoder declared {tuple(shape)}")
                out[part] = images.astype(dtype, copy=False)
            out.flush()
            del out
            counts[(s.symbol, s.interval)] = n
            paths[(s.symbol, s.interval)] = path
            frames.append(pl.DataFrame({
                "symbol": [s.symbol] * n, "interval": [s.interval] * n,
                "ts": pl.Series(np.asarray(s.ts_ms, dtype=np.int64)).cast(pl.Datetime("ms")).cast(pl.Datetime("us")),
                "row": np.arange(n, dtype=np.int64),
            }))
    except BaseException:
        for tmp, _ in staged:
            tmp.unlink(missing_ok=True)
        raise
    for tmp, path in staged:
        tmp.replace(path)
    replacements = [Replacement(table, frame, "symbol = ? and interval = ?", [sym, iv])
                    for frame, (sym, iv) in zip(frames, counts)]
    deleted = warehouse.replace_tables(replacements) if replacements else {}
    return WrittenEncoding(name=name, shape=tuple(shape), dtype=dtype.name, counts=counts, paths=paths,
                           rows_replaced=int(deleted.get(table, 0)))


def open_images(warehouse, artifacts_dir: Path, name: str, symbol: str, interval: str
                ) -> tuple[pl.DataFrame, np.ndarray]:
    """(index rows ``ts_ms, row`` in ts order, the memory-mapped images) of one series, checked to agree."""
    table = index_table(name)
    if not warehouse.table_exists(table):
        raise FileNotFoundError(f"encoding {name}: {table} is not in the warehouse {warehouse.path}: "
                                f"materialize the encodings/{name} asset first")
    index = warehouse.query(f'select epoch_ms(ts) as ts_ms, "row" from {table} '
                            f"where symbol = ? and interval = ? order by ts", [symbol, interval])
    path = array_path(artifacts_dir, name, symbol, interval)
    if not path.exists():
        raise FileNotFoundError(f"encoding {name}: no image file {path} for {symbol} {interval}: "
                                f"materialize the encodings/{name} asset first")
    images = np.load(path, mmap_mode="r")
    if index.height != images.shape[0] or (index.height and int(index["row"].max()) >= images.shape[0]):
        raise ValueError(f"encoding {name}: {table} has {index.height} rows for {symbol} {interval} but {path} "
                         f"holds {images.shape[0]} images (an interrupted write?): rematerialize encodings/{name}")
    return index, images


def check_encoding(warehouse, artifacts_dir: Path, name: str, probe: int = 256) -> tuple[bool, dict]:
    """Every series of ``encodings.<name>_index`` agrees with its file, its ts are unique and ascending, and the
    first and last ``probe`` images are finite. Returns (passed, per-series findings)."""
    table = index_table(name)
    if not warehouse.table_exists(table):
        return True, {"series": 0, "problems": []}
    series = warehouse.query(f"select distinct symbol, interval from {table} order by all")
    problems: list[str] = []
    for symbol, interval in series.iter_rows():
        try:
            index, images = open_images(warehouse, artifacts_dir, name, symbol, interval)
        except (FileNotFoundError, ValueError) as exc:
            problems.append(str(exc))
            continue
        ts = index["ts_ms"].to_numpy()
        if ts.size > 1 and not (np.diff(ts) > 0).all():
            problems.append(f"{symbol} {interval}: index ts not strictly ascending")
        if sorted(index["row"].to_list()) != list(range(index.height)):
            problems.append(f"{symbol} {interval}: index rows are not 0..{index.height - 1}")
        n = images.shape[0]
        picks = np.unique(np.r_[np.arange(min(n, probe)), np.arange(max(0, n - probe), n)])
        if picks.size and not np.isfinite(np.asarray(images[picks], dtype=np.float32)).all():
            problems.append(f"{symbol} {interval}: non-finite pixels among the first/last {probe} images")
    return not problems, {"series": series.height, "problems": problems}
