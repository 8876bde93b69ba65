"""Leakage (changing candles after t changes no image at or before t), gaps, and the image files + index."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.encodings.build import ENCODINGS, encode_candles
from pipeline.encodings.store import SeriesImages, open_images, write_encoding
from pipeline.market.timegrid import interval_ms

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


def _series(symbol, n, value, fail_at=None):
    ts = np.arange(n, dtype=np.int64) * HOUR

    def encode(part):
        if fail_at is not None and part.start >= fail_at:
            raise RuntimeError("encoder crashed")
        k = part.stop - part.start
        return np.full((k, 1, 2, 3), value, dtype=np.float32) + np.arange(part.start, part.stop).reshape(-1, 1, 1, 1)

    return SeriesImages(symbol, "60", ts, encode)


def test_write_replaces_file_and_index_together_and_a_crash_keeps_the_old(warehouse, tmp_path):
    art = tmp_path / "artifacts"
    written = write_encoding(warehouse, art, "gaf", (1, 2, 3), np.float16,
                             [_series("BTCUSDT", 10, 0.0), _series("ETHUSDT", 7, 100.0)], chunk=4)
    assert written.count == 17 and written.counts[("ETHUSDT", "60")] == 7
    index, images = open_images(warehouse, art, "gaf", "ETHUSDT", "60")
    assert isinstance(images, np.memmap) and images.dtype == np.float16 and images.shape == (7, 1, 2, 3)
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
    assert not list((art / "encodings" / "gaf").glob(".*tmp*"))
    # a wrong declared shape fails clearly
    with pytest.raises(ValueError, match="declared"):
        write_encoding(warehouse, art, "gaf", (1, 2, 4), np.float16, [_series("BTCUSDT", 3, 0.0)])
    # a file that disagrees with its index is refused with what to do
    np.save(art / "encodings" / "gaf" / "BTCUSDT_60.npy", np.zeros((3, 1, 2, 3), np.float16))
    with pytest.raises(ValueError, match="rematerialize"):
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
