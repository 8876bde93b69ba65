"""Image arrays on disk: one memory-mappable ``.npy`` per (encoding, symbol, interval, month) plus its index table.

Layout: ``$DATA_DIR/artifacts/encodings/<name>/<symbol>_<interval>/<YYYY-MM>.npy`` holds the
images ``[n, C, H, W]`` (uint8 charts, float16 fields) whose ts lies in that UTC month, in ts
order, and ``encodings.<name>_index`` maps each image to (symbol, interval, ts) and its ``row``
in its month's file (the month is the month of ``ts``). A series is the concatenation of its
month files in month order (:func:`open_images`, :class:`SeriesArray`).

A write covers whole months (the monthly partitions of the encoding assets; ``months=None``: the
whole series) and is crash-safe in this order: every month file is written to a temporary name
and renamed into place, then the index rows of exactly those months are replaced in ONE warehouse
transaction, then month files left without images are removed. Other months' files and rows are
never opened for writing. A crash before the rename leaves the old files and index;
:func:`open_images` checks that every month's index rows and its file agree (rows ``0..n-1``,
``n`` images, no file without index rows) and says which partition to rematerialize when they
do not.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import numpy as np
import polars as pl

from pipeline.warehouse import Replacement, table_ddl

CHUNK = 4096  # images encoded and written per step


def index_table(name: str) -> str:
    """``encodings.<name>_index`` (the encoding's name is checked against the warehouse's table rule)."""
    table = f"encodings.{name}_index"
    table_ddl(table)
    return table


def series_dir(artifacts_dir: Path, name: str, symbol: str, interval: str) -> Path:
    """The folder of one series' month files."""
    return Path(artifacts_dir) / "encodings" / name / f"{symbol}_{interval}"


def month_of_ms(ts_ms: np.ndarray) -> np.ndarray:
    """The UTC month (``datetime64[M]``) of each epoch-ms timestamp."""
    return np.asarray(ts_ms, dtype=np.int64).astype("datetime64[ms]").astype("datetime64[M]")


def month_start_ms(month: np.datetime64) -> int:
    return int(np.datetime64(month, "M").astype("datetime64[ms]").astype(np.int64))


def month_name(month: np.datetime64) -> str:
    return str(np.datetime64(month, "M"))  # YYYY-MM


def months_between(start: dt.datetime, end: dt.datetime) -> list[np.datetime64]:
    """The UTC months that [start, end) touches (naive UTC datetimes), each whole."""
    first = np.datetime64(start, "M")
    last = np.datetime64(end - dt.timedelta(microseconds=1), "M")
    return list(np.arange(first, last + 1, dtype="datetime64[M]")) if last >= first else []


def month_path(artifacts_dir: Path, name: str, symbol: str, interval: str, month: np.datetime64) -> Path:
    return series_dir(artifacts_dir, name, symbol, interval) / f"{month_name(month)}.npy"


def _month_files(folder: Path) -> dict[str, Path]:
    """``YYYY-MM`` -> file of a series folder (temporary files excluded)."""
    if not folder.is_dir():
        return {}
    return {p.stem: p for p in sorted(folder.glob("[0-9][0-9][0-9][0-9]-[0-9][0-9].npy"))}


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
    counts: dict[tuple[str, str], int]  # images written per series (in the months written)
    paths: dict[tuple[str, str], list[Path]]  # month files written per series
    rows_replaced: int
    months: list[str] = dataclasses.field(default_factory=list)  # YYYY-MM written (empty: whole series)
    removed: list[Path] = dataclasses.field(default_factory=list)  # month files left without images

    @property
    def count(self) -> int:
        return sum(self.counts.values())


def _staged_name(path: Path) -> Path:
    return path.with_name(f".{path.stem}.tmp.npy")


def write_encoding(warehouse, artifacts_dir: Path, name: str, shape: tuple[int, int, int], dtype,
                   series: Iterable[SeriesImages], chunk: int = CHUNK,
                   months: Sequence[np.datetime64] | None = None) -> WrittenEncoding:
    """Encode every series in chunks into temporary month memmaps, rename them into place, then replace the index.

    ``months`` (consecutive UTC months, ``datetime64[M]``): only these months are written, their index rows
    replaced and their files without images removed; every ts of ``series`` must lie in them. ``None``: the
    whole series (every other month file of the series is removed, every index row of it replaced)."""
    table = index_table(name)
    dtype = np.dtype(dtype)
    span = None
    if months is not None:
        months = np.asarray(months, dtype="datetime64[M]")
        if months.size == 0:
            raise ValueError(f"encoding {name}: no month to write")
        if months.size > 1 and not (np.diff(months).astype(np.int64) == 1).all():
            raise ValueError(f"encoding {name}: the months written must be consecutive, got "
                             f"{', '.join(month_name(m) for m in months)}")
        span = (months[0], months[-1] + 1)
    staged: list[tuple[Path, Path]] = []
    replacements, counts, paths = [], {}, {}
    removed_candidates: list[Path] = []
    try:
        for s in series:
            folder = series_dir(artifacts_dir, name, s.symbol, s.interval)
            ts = np.asarray(s.ts_ms, dtype=np.int64)
            n = int(ts.shape[0])
            if n > 1 and not (np.diff(ts) > 0).all():
                raise ValueError(f"encoding {name}: {s.symbol} {s.interval} image ts must be strictly ascending")
            month = month_of_ms(ts)
            if span is not None and n and (month[0] < span[0] or month[-1] >= span[1]):
                raise ValueError(f"encoding {name}: {s.symbol} {s.interval} has images from {month_name(month[0])} "
                                 f"to {month_name(month[-1])}, outside the months written "
                                 f"{month_name(span[0])}..{month_name(span[1] - 1)}")
            present = np.unique(month)
            bounds = np.searchsorted(month, present), np.searchsorted(month, present, side="right")
            frames, series_paths = [], []
            for m, a, b in zip(present, *bounds):
                path = month_path(artifacts_dir, name, s.symbol, s.interval, m)
                path.parent.mkdir(parents=True, exist_ok=True)
                tmp = _staged_name(path)
                staged.append((tmp, path))
                out = np.lib.format.open_memmap(tmp, mode="w+", dtype=dtype, shape=(int(b - a), *shape))
                for i in range(int(a), int(b), chunk):
                    part = slice(i, min(int(b), i + chunk))
                    images = s.encode(part)
                    if images.shape[1:] != tuple(shape):
                        raise ValueError(f"encoding {name}: {s.symbol} {s.interval} images have shape "
                                         f"{images.shape[1:]}, the encoder declared {tuple(shape)}")
                    out[part.start - a: part.stop - a] = images.astype(dtype, copy=False)
                out.flush()
                del out
                series_paths.append(path)
                frames.append(pl.DataFrame({
                    "symbol": [s.symbol] * int(b - a), "interval": [s.interval] * int(b - a),
                    "ts": pl.Series(ts[a:b]).cast(pl.Datetime("ms")).cast(pl.Datetime("us")),
                    "row": np.arange(b - a, dtype=np.int64),
                }))
            frame = pl.concat(frames) if frames else pl.DataFrame(
                schema={"symbol": pl.String, "interval": pl.String, "ts": pl.Datetime("us"), "row": pl.Int64})
            kept = {month_name(m) for m in present}
            if span is None:
                replacements.append(Replacement(table, frame, "symbol = ? and interval = ?", [s.symbol, s.interval]))
                removed_candidates += [p for stem, p in _month_files(folder).items() if stem not in kept]
                legacy = folder.with_suffix(".npy")  # the one-file-per-series layout before monthly partitions
                if legacy.exists():
                    removed_candidates.append(legacy)
            else:
                lo, hi = (np.datetime64(span[0], "ms").item(), np.datetime64(span[1], "ms").item())
                replacements.append(Replacement(table, frame, "symbol = ? and interval = ? and ts >= ? and ts < ?",
                                                [s.symbol, s.interval, lo, hi]))
                removed_candidates += [p for stem, p in _month_files(folder).items()
                                       if stem not in kept and span[0] <= np.datetime64(stem, "M") < span[1]]
            counts[(s.symbol, s.interval)] = n
            paths[(s.symbol, s.interval)] = series_paths
    except BaseException:
        for tmp, _ in staged:
            tmp.unlink(missing_ok=True)
        raise
    for tmp, path in staged:
        tmp.replace(path)
    deleted = warehouse.replace_tables(replacements) if replacements else {}
    for path in removed_candidates:  # after the commit: a crash before it leaves the old file beside its old rows
        path.unlink(missing_ok=True)
    return WrittenEncoding(name=name, shape=tuple(shape), dtype=dtype.name, counts=counts, paths=paths,
                           rows_replaced=int(deleted.get(table, 0)),
                           months=[] if span is None else [month_name(m) for m in months],
                           removed=removed_candidates)


class SeriesArray:
    """The month files of one series read as one array ``[n, C, H, W]`` (their concatenation, in ts order).

    Nothing is copied until indexed: ``a[rows]`` (ints, a slice, an int or bool array) reads those rows from
    the memory-mapped month files; ``np.asarray(a)`` reads them all."""

    def __init__(self, parts: Sequence[np.ndarray], image_shape: tuple[int, ...], dtype, paths: Sequence[Path] = ()):
        self.parts = list(parts)
        self.paths = list(paths)
        self.offsets = np.r_[0, np.cumsum([p.shape[0] for p in self.parts], dtype=np.int64)].astype(np.int64)
        self.shape = (int(self.offsets[-1]), *image_shape)
        self.dtype = np.dtype(dtype)

    ndim = property(lambda self: len(self.shape))
    size = property(lambda self: int(np.prod(self.shape)))

    def __len__(self) -> int:
        return self.shape[0]

    def __array__(self, dtype=None, copy=None):
        out = self[:]
        return out if dtype is None else out.astype(dtype, copy=False)

    def __getitem__(self, key):
        first, rest = (key[0], key[1:]) if isinstance(key, tuple) else (key, ())
        n = self.shape[0]
        if isinstance(first, (int, np.integer)):
            i = int(first) + n if first < 0 else int(first)
            if not 0 <= i < n:
                raise IndexError(f"index {int(first)} is out of bounds for a series of {n} images")
            k = int(np.searchsorted(self.offsets, i, side="right") - 1)
            return self.parts[k][(i - int(self.offsets[k]), *rest)]
        if isinstance(first, slice):
            rows = np.arange(n)[first]
        else:
            rows = np.asarray(first)
            if rows.dtype == bool:
                if rows.shape != (n,):
                    raise IndexError(f"a boolean index must have shape ({n},), got {rows.shape}")
                rows = np.flatnonzero(rows)
            rows = rows.astype(np.int64).reshape(-1)
            rows = np.where(rows < 0, rows + n, rows)
            if rows.size and (rows.min() < 0 or rows.max() >= n):
                raise IndexError(f"rows must lie in [0, {n}) for a series of {n} images")
        out = np.empty((rows.shape[0], *self.shape[1:]), dtype=self.dtype)
        which = np.searchsorted(self.offsets, rows, side="right") - 1
        for k in np.unique(which):
            pick = np.flatnonzero(which == k)
            local = rows[pick] - self.offsets[k]
            if local.size and (np.diff(local) == 1).all():  # one contiguous read
                out[pick] = self.parts[k][int(local[0]): int(local[-1]) + 1]
            else:
                out[pick] = self.parts[k][local]
        return out[(slice(None), *rest)] if rest else out


def open_images(warehouse, artifacts_dir: Path, name: str, symbol: str, interval: str
                ) -> tuple[pl.DataFrame, SeriesArray]:
    """(index rows ``ts_ms, row`` in ts order, the images) of one series, every month checked to agree.

    ``row`` is the image's row in the returned :class:`SeriesArray` (its month's offset plus its row in the
    month file). Raises FileNotFoundError when the series has neither index rows nor files, ValueError when a
    month file and its index rows disagree."""
    table = index_table(name)
    if not warehouse.table_exists(table):
        raise FileNotFoundError(f"encoding {name}: {table} is not in the warehouse {warehouse.path}: "
                                f"materialize the encodings/{name} asset first")
    index = warehouse.query(f'select epoch_ms(ts) as ts_ms, "row" from {table} '
                            f"where symbol = ? and interval = ? order by ts", [symbol, interval])
    folder = series_dir(artifacts_dir, name, symbol, interval)
    files = _month_files(folder)
    if index.height == 0 and not files:
        raise FileNotFoundError(f"encoding {name}: no images of {symbol} {interval} (no index rows in {table}, "
                                f"no file in {folder}): materialize the encodings/{name} asset first")
    ts = index["ts_ms"].to_numpy().astype(np.int64)
    local = index["row"].to_numpy().astype(np.int64)
    month = month_of_ms(ts)
    present = np.unique(month)
    starts, stops = np.searchsorted(month, present), np.searchsorted(month, present, side="right")

    def refuse(what: str, m: str) -> ValueError:
        return ValueError(f"encoding {name}: {symbol} {interval} {m}: {what} (an interrupted write?): "
                          f"rematerialize encodings/{name} for the partition {m}-01")

    parts, paths, shape, dtype = [], [], None, None
    for m, a, b in zip(present, starts, stops):
        key = month_name(m)
        path = files.pop(key, None)
        if path is None:
            raise refuse(f"{table} has {b - a} rows but there is no image file {folder / (key + '.npy')}", key)
        images = np.load(path, mmap_mode="r")
        if images.shape[0] != b - a or not (local[a:b] == np.arange(b - a)).all():
            raise refuse(f"{table} has {b - a} rows (rows {local[a:b].min()}..{local[a:b].max()} in ts order) but "
                         f"{path} holds {images.shape[0]} images", key)
        if shape is not None and (images.shape[1:] != shape or images.dtype != dtype):
            raise refuse(f"{path} holds {images.shape[1:]} {images.dtype} images, the months before "
                         f"{shape} {dtype}", key)
        shape, dtype = images.shape[1:], images.dtype
        parts.append(images)
        paths.append(path)
    if files:
        key = next(iter(files))
        raise refuse(f"{files[key]} holds images that {table} has no row of", key)
    offsets = np.r_[0, np.cumsum([p.shape[0] for p in parts])].astype(np.int64)
    index = index.with_columns(pl.Series("row", local + np.repeat(offsets[:-1], stops - starts)))
    return index, SeriesArray(parts, tuple(shape), dtype, paths)


def check_encoding(warehouse, artifacts_dir: Path, name: str, probe: int = 256) -> tuple[bool, dict]:
    """Every series of ``encodings.<name>_index`` (and every series folder on disk) agrees with its month
    files, its ts are unique and ascending, and the first and last ``probe`` images are finite.
    Returns (passed, per-series findings)."""
    table = index_table(name)
    if not warehouse.table_exists(table):
        return True, {"series": 0, "problems": []}
    listed = {tuple(r) for r in warehouse.query(f"select distinct symbol, interval from {table}").iter_rows()}
    root = Path(artifacts_dir) / "encodings" / name
    on_disk = {p.name for p in root.iterdir() if p.is_dir() and _month_files(p)} if root.is_dir() else set()
    problems: list[str] = [f"{root / d}: month files of a series that {table} has no row of"
                           for d in sorted(on_disk - {f"{s}_{i}" for s, i in listed})]
    for symbol, interval in sorted(listed):
        try:
            index, images = open_images(warehouse, artifacts_dir, name, symbol, interval)
        except (FileNotFoundError, ValueError) as exc:
            problems.append(str(exc))
            continue
        ts = index["ts_ms"].to_numpy()
        if ts.size > 1 and not (np.diff(ts) > 0).all():
            problems.append(f"{symbol} {interval}: index ts not strictly ascending")
        n = images.shape[0]
        picks = np.unique(np.r_[np.arange(min(n, probe)), np.arange(max(0, n - probe), n)])
        if picks.size and not np.isfinite(np.asarray(images[picks], dtype=np.float32)).all():
            problems.append(f"{symbol} {interval}: non-finite pixels among the first/last {probe} images")
    return not problems, {"series": len(listed), "problems": problems}
