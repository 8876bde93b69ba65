"""Order-book heatmaps: a hand-made book lands in the expected cells; the real Bybit sample keeps its size."""

from __future__ import annotations

import gzip

import numpy as np
import polars as pl
import pytest

from pipeline.encodings.build import book_array, encode_snapshots
from pipeline.encodings.orderbook_heatmap import OrderBookHeatmap, snapshot_windows


def _book(mid, bid_rel, bid_sz, ask_rel, ask_sz):
    return book_array([list(mid * (1 + np.array(bid_rel)))], [bid_sz], [list(mid * (1 + np.array(ask_rel)))], [ask_sz])


def test_hand_made_book_puts_its_size_in_the_expected_cells():
    enc = OrderBookHeatmap(steps=2, bins=4, half_range=0.02, transform="none")  # bins of 1%: [-2,-1) [-1,0) ...
    old = _book(100.0, [-0.005, -0.015, -0.05], [1.0, 2.0, 9.0], [0.005, 0.012, np.nan], [3.0, 4.0, np.nan])
    new = _book(100.0, [-0.0001, -0.0101, np.nan], [5.0, 6.0, np.nan], [0.0001, 0.0199, np.nan], [7.0, 8.0, np.nan])
    window = np.concatenate([old, new])[None].transpose(0, 2, 1, 3)  # [1, 4, T=2, L=3]; NaN: missing level
    img = enc.encode(window)
    assert img.shape == (1, *enc.output_shape()) == (1, 2, 2, 4)
    expected_bid = [[0, 0, 0, 0], [0, 0, 0, 0]]
    expected_bid[0][1] = 1.0     # -0.5% -> bin 1
    expected_bid[0][0] = 2.0     # -1.5% -> bin 0 (the -5% level is outside +-2%: dropped)
    expected_bid[1][1] = 5.0     # -0.01% -> bin 1
    expected_bid[1][0] = 6.0     # -1.01% -> bin 0
    expected_ask = [[0, 0, 3.0, 4.0], [0, 0, 7.0, 8.0]]
    np.testing.assert_allclose(img[0, 0], expected_bid)
    np.testing.assert_allclose(img[0, 1], expected_ask)
    np.testing.assert_allclose(OrderBookHeatmap(steps=2, bins=4).encode(window), np.log1p(img))
    # prices are relative to the NEWEST mid: a 1% higher newest mid shifts the older snapshot down one bin
    newer = _book(101.0, [-0.0001, np.nan, np.nan], [5.0, np.nan, np.nan], [0.0001, np.nan, np.nan], [7.0, np.nan, np.nan])
    shifted = enc.encode(np.concatenate([old, newer])[None].transpose(0, 2, 1, 3))
    # asks 100.5 (-0.495% of 101 -> bin 1) and 101.2 (+0.198% -> bin 2); bids 99.5 (-1.49% -> bin 0),
    # 98.5 (-2.48%) and 95 outside
    np.testing.assert_allclose(shifted[0, 1, 0], [0, 3.0, 4.0, 0])
    np.testing.assert_allclose(shifted[0, 0, 0], [1.0, 0, 0, 0])


def test_windows_read_only_past_snapshots():
    rng = np.random.default_rng(0)
    mid = 100 * np.exp(np.cumsum(rng.normal(0, 0.002, 50)))
    book = np.stack([mid[:, None] * (1 - 0.001 * np.arange(1, 6)), rng.uniform(1, 2, (50, 5)),
                     mid[:, None] * (1 + 0.001 * np.arange(1, 6)), rng.uniform(1, 2, (50, 5))], axis=1)
    ts = np.arange(50) * 60_000
    t_img, img = encode_snapshots("orderbook_heatmap", ts, book)
    steps = OrderBookHeatmap().steps
    assert img.shape == (50 - steps + 1, 2, steps, 20) and (t_img == ts[steps - 1:]).all()
    changed = book.copy()
    changed[40:] *= 1.5
    _, img2 = encode_snapshots("orderbook_heatmap", ts, changed)
    cut = 40 - (steps - 1)  # images ending before snapshot 40
    np.testing.assert_array_equal(img[:cut], img2[:cut])
    assert not np.array_equal(img[cut:], img2[cut:])
    np.testing.assert_array_equal(snapshot_windows(book, [steps - 1], steps)[0], book[:steps].transpose(1, 0, 2))


def test_real_bybit_sample_keeps_every_level_inside_the_range(shared_data):
    path = shared_data / "bybit_linear_orderbook_top5_20240701.csv.gz"
    if not path.exists():
        pytest.skip(f"{path} not found")
    with gzip.open(path) as fh:
        frame = pl.read_csv(fh.read()).filter(pl.col("symbol") == "BTCUSDT").sort("ts")
    assert frame.height >= 8
    fields = [[frame[f"{side}_{kind}_{k}"].to_numpy() for k in range(1, 6)]
              for side, kind in (("bid", "px"), ("bid", "sz"), ("ask", "px"), ("ask", "sz"))]
    book = book_array(*[np.stack(f, axis=1).tolist() for f in fields])
    enc = OrderBookHeatmap(steps=8, bins=40, transform="none")
    ends = np.arange(7, frame.height)
    img = enc.encode(snapshot_windows(book, ends, 8))
    # top-5 levels of BTCUSDT lie within a few ticks of mid: every level is inside +-2%, so each cell row
    # sums to the snapshot's total size on its side; in the newest row (mid = its own) bids sit left of the
    # centre and asks right of it
    for k, e in enumerate(ends):
        np.testing.assert_allclose(img[k, 0].sum(axis=1), book[e - 7:e + 1, 1].sum(axis=1), rtol=1e-6)
        np.testing.assert_allclose(img[k, 1].sum(axis=1), book[e - 7:e + 1, 3].sum(axis=1), rtol=1e-6)
    assert img[:, 0, -1, 20:].sum() == 0 and img[:, 1, -1, :20].sum() == 0
    assert img[:, 0, -1, :20].sum() > 0 and img[:, 1, -1, 20:].sum() > 0
