"""Leakage (changing candles after t changes no image at or before t), gaps, and the image files + index."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.encodings.build import ENCODINGS, encode_candles
from pipeline.encodings.image_files import (SeriesImages, check_encoding, month_path, open_images, series_dir,
                                      write_encoding)
from pipeline.core.timegrid import interval_ms

HOUR = interval_ms("60")
CANDLE_ENCODINGS = [name for name, s in ENCODINGS.items() if s.source == "candles"]


def _candles(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    c = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, n)))
    o = np.r_[c[0], c[:-1]]
    return np.stack([o, np.maximum(o, c) * 1.004, np.minimum(o, c) * 0.996, c, rng.uniform(1, 3, n)], axis=1)


@pytest.mark.parametrize("name", CANDLE_ENCODINGS)
def test_changing_candles_after_t_changes_no_image_at_or_before_t(name):
    n, cut = 330, 260
    ts = np.arange(n, dtype=np.int64) * HOUR
    ohlcv = _candles(n)
    t_img, img = encode_candles(name, ts, ohlcv, "60")
    history = ENCODINGS[name].history
    assert t_img[0] == ts[history - 1] and img.shape == (n - history + 1, *ENCODINGS[name].shape)
    changed = ohlcv.copy()
    changed[cut + 1:] *= np.random.default_rng(1).uniform(0.9, 1.1, changed[cut + 1:].shape)
    t2, img2 = encode_candles(name, ts, changed, "60")
    assert (t2 == t_img).all()
    past = t_img <= ts[cut]
    np.testing.assert_array_equal(img[past], img2[past])
    assert not np.array_equal(img[~past], img2[~past])
    # the image at ts[e] is the encoder's picture of the `history` bars ending at e, and of nothing else
    e = cut
    alone = ENCODINGS[name].encode_windows(ohlcv[e - history + 1:e + 1].T[None])
    np.testing.assert_array_equal(img[np.searchsorted(t_img, ts[e])], alone[0])


def test_no_image_spans_a_missing_bar():
    n = 260
    ts = np.arange(n, dtype=np.int64) * HOUR
    ts[150:] += HOUR  # one bar missing before row 150
    t_img, img = encode_candles("candlestick_20", ts, _candles(n), "60")
    history = ENCODINGS["candlestick_20"].history
    rows = np.searchsorted(ts, t_img)
    assert ((rows < 150) | (rows - history + 1 >= 150)).all()
    assert img.shape[0] == (150 - history + 1) + (n - 150 - history + 1)


DAY = 24 * HOUR


def _series(symbol, n, value, fail_at=None, step=HOUR, first=0):
    """``n`` images from ts ``first`` every ``step``; pixel = value + position (``fail_at``: the encoder
    raises once asked for a position from there on)."""
    ts = first + np.arange(n, dtype=np.int64) * step

    def encode(part):
        if fail_at is not None and part.stop > fail_at:
            raise RuntimeError("encoder crashed")
        k = part.stop - part.start
        return np.full((k, 1, 2, 3), value, dtype=np.float32) + np.arange(part.start, part.stop).reshape(-1, 1, 1, 1)

    return SeriesImages(symbol, "60", ts, encode)


def _month(text):
    return np.datetime64(text, "M")


def test_write_replaces_file_and_index_together_and_a_crash_keeps_the_old(warehouse, tmp_path):
    art = tmp_path / "artifacts"
    written = write_encoding(warehouse, art, "gaf", (1, 2, 3), np.float16,
                             [_series("BTCUSDT", 10, 0.0), _series("ETHUSDT", 7, 100.0)], chunk=4)
    assert written.count == 17 and written.counts[("ETHUSDT", "60")] == 7
    index, images = open_images(warehouse, art, "gaf", "ETHUSDT", "60")
    assert images.dtype == np.float16 and images.shape == (7, 1, 2, 3)
    assert all(isinstance(p, np.memmap) for p in images.parts)  # memory-mapped month files, nothing copied
    assert index["row"].to_list() == list(range(7)) and (index["ts_ms"].to_numpy() == np.arange(7) * HOUR).all()
    np.testing.assert_array_equal(images[:, 0, 0, 0], 100.0 + np.arange(7))
    # a rerun replaces exactly its series: same rows, no duplicates
    again = write_encoding(warehouse, art, "gaf", (1, 2, 3), np.float16, [_series("ETHUSDT", 5, 100.0)])
    assert again.rows_replaced == 7
    assert warehouse.query("select count(*) as n from encodings.gaf_index")["n"][0] == 15
    # a crash while encoding leaves the old file and the old index, and no temporary file behind
    before = np.array(open_images(warehouse, art, "gaf", "BTCUSDT", "60")[1])
    with pytest.raises(RuntimeError, match="crashed"):
        write_encoding(warehouse, art, "gaf", (1, 2, 3), np.float16, [_series("BTCUSDT", 12, 50.0, fail_at=4)],
                       chunk=4)
    index, images = open_images(warehouse, art, "gaf", "BTCUSDT", "60")
    assert index.height == 10
    np.testing.assert_array_equal(images, before)
    assert not list((art / "encodings" / "gaf").rglob(".*tmp*"))
    # a wrong declared shape fails clearly
    with pytest.raises(ValueError, match="declared"):
        write_encoding(warehouse, art, "gaf", (1, 2, 4), np.float16, [_series("BTCUSDT", 3, 0.0)])
    # a file that disagrees with its index is refused with what to do
    np.save(month_path(art, "gaf", "BTCUSDT", "60", _month("1970-01")), np.zeros((3, 1, 2, 3), np.float16))
    with pytest.raises(ValueError, match="rematerialize encodings/gaf for the partition 1970-01-01"):
        open_images(warehouse, art, "gaf", "BTCUSDT", "60")


def _month_state(warehouse, art, months):
    """(file bytes, index rows) of each month of BTCUSDT 60 in ``months``."""
    folder = series_dir(art, "gaf", "BTCUSDT", "60")
    rows = warehouse.query("select strftime(ts, '%Y-%m') as m, ts, \"row\" from encodings.gaf_index "
                           "where symbol = 'BTCUSDT' order by ts")
    return {m: ((folder / f"{m}.npy").read_bytes(), rows.filter(rows["m"] == m)) for m in months}


def test_a_month_write_rewrites_only_its_month(warehouse, tmp_path):
    art = tmp_path / "artifacts"
    whole = _series("BTCUSDT", 18, 0.0, step=5 * DAY)  # 1970-01-01 .. 1970-03-27: three months
    month = np.asarray(whole.ts_ms).astype("datetime64[ms]").astype("datetime64[M]")
    one_run = write_encoding(warehouse, art, "gaf", (1, 2, 3), np.float16, [whole], chunk=4)
    assert one_run.months == [] and len(one_run.paths[("BTCUSDT", "60")]) == 3
    _, all_at_once = open_images(warehouse, art, "gaf", "BTCUSDT", "60")
    all_at_once = np.array(all_at_once)
    # month by month (the images of each month only) gives the same images and rows
    for m in ("1970-01", "1970-02", "1970-03"):
        keep = np.flatnonzero(month == _month(m))

        def encode(part, keep=keep):
            return whole.encode(slice(int(keep[part][0]), int(keep[part][-1]) + 1))

        w = write_encoding(warehouse, art, "gaf", (1, 2, 3), np.float16,
                           [SeriesImages("BTCUSDT", "60", whole.ts_ms[keep], encode)], months=[_month(m)], chunk=2)
        assert w.rows_replaced == keep.size and w.months == [m]
    index, images = open_images(warehouse, art, "gaf", "BTCUSDT", "60")
    assert [p.name for p in images.paths] == ["1970-01.npy", "1970-02.npy", "1970-03.npy"]
    assert index["row"].to_list() == list(range(18)) and (index["ts_ms"].to_numpy() == whole.ts_ms).all()
    assert np.array(images).tobytes() == all_at_once.tobytes()
    assert images[[0, 17, 7]].tobytes() == all_at_once[[0, 17, 7]].tobytes()  # a gather across months

    # February again, with other pixels: January's and March's bytes and rows stay as they were
    before = _month_state(warehouse, art, ("1970-01", "1970-02", "1970-03"))
    feb = np.flatnonzero(month == _month("1970-02"))
    w = write_encoding(warehouse, art, "gaf", (1, 2, 3), np.float16,
                       [_series("BTCUSDT", feb.size, 500.0, step=5 * DAY, first=int(whole.ts_ms[feb[0]]))],
                       months=[_month("1970-02")])
    assert w.rows_replaced == feb.size
    after = _month_state(warehouse, art, ("1970-01", "1970-02", "1970-03"))
    for m in ("1970-01", "1970-03"):
        assert after[m][0] == before[m][0] and after[m][1].equals(before[m][1])
    assert after["1970-02"][0] != before["1970-02"][0] and after["1970-02"][1].equals(before["1970-02"][1])
    _, images = open_images(warehouse, art, "gaf", "BTCUSDT", "60")
    np.testing.assert_array_equal(images[feb, 0, 0, 0], 500.0 + np.arange(feb.size))
    np.testing.assert_array_equal(np.array(images)[month != _month("1970-02")], all_at_once[month != _month("1970-02")])

    # a crash in March while writing February and March leaves both months as they were, no temporary file
    with pytest.raises(RuntimeError, match="crashed"):
        write_encoding(warehouse, art, "gaf", (1, 2, 3), np.float16,
                       [_series("BTCUSDT", 18 - feb[0], 9.0, step=5 * DAY, first=int(whole.ts_ms[feb[0]]), fail_at=8)],
                       months=[_month("1970-02"), _month("1970-03")], chunk=2)
    assert _month_state(warehouse, art, ("1970-01", "1970-02", "1970-03")).keys() == after.keys()
    for m, (data, rows) in _month_state(warehouse, art, ("1970-01", "1970-02", "1970-03")).items():
        assert data == after[m][0] and rows.equals(after[m][1])
    assert not list(art.rglob(".*tmp*"))
    # images outside the months written are refused before anything is written
    with pytest.raises(ValueError, match="outside the months written"):
        write_encoding(warehouse, art, "gaf", (1, 2, 3), np.float16, [whole], months=[_month("1970-02")])
    # a month left without images loses its file and its rows; the others stay
    w = write_encoding(warehouse, art, "gaf", (1, 2, 3), np.float16,
                       [SeriesImages("BTCUSDT", "60", np.zeros(0, np.int64), whole.encode)],
                       months=[_month("1970-02")])
    assert w.rows_replaced == feb.size and [p.name for p in w.removed] == ["1970-02.npy"]
    index, images = open_images(warehouse, art, "gaf", "BTCUSDT", "60")
    assert [p.name for p in images.paths] == ["1970-01.npy", "1970-03.npy"]
    np.testing.assert_array_equal(np.array(images), all_at_once[month != _month("1970-02")])
    assert index["row"].to_list() == list(range(images.shape[0]))
    # a month file without index rows (renamed in before a crash) is refused, naming the partition
    np.save(month_path(art, "gaf", "BTCUSDT", "60", _month("1970-02")), np.zeros((2, 1, 2, 3), np.float16))
    with pytest.raises(ValueError, match="has no row of.*partition 1970-02-01"):
        open_images(warehouse, art, "gaf", "BTCUSDT", "60")
    passed, found = check_encoding(warehouse, art, "gaf")
    assert not passed and "1970-02" in found["problems"][0]
    # ... and so is a month whose file is gone
    month_path(art, "gaf", "BTCUSDT", "60", _month("1970-02")).unlink()
    month_path(art, "gaf", "BTCUSDT", "60", _month("1970-03")).unlink()
    with pytest.raises(ValueError, match="no image file .*1970-03.npy"):
        open_images(warehouse, art, "gaf", "BTCUSDT", "60")


def test_an_encoding_without_input_writes_nothing_and_says_why(tmp_path):
    from pipeline.config import Settings
    from pipeline.encodings.build import build_encoding
    from pipeline.warehouse import Warehouse

    wh = Warehouse(tmp_path / "empty.duckdb")  # no raw.orderbook at all (a files source never writes it)
    build = build_encoding(wh, Settings(data_dir=tmp_path, symbols=("BTCUSDT",)), "orderbook_heatmap",
                           log=lambda _: None)
    assert build.written.count == 0 and build.history[0]["snapshots"] == 0
    assert "0 snapshots" in build.skipped[0]
