"""Candlestick rasters: the pixels of a hand-made chart, the paper's sizes, flat and gapped windows."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.encodings.candlestick import CandlestickChart


def _window(rows):
    """[1, 5, T] from rows of (open, high, low, close, volume)."""
    return np.array(rows, dtype=float).T[None]


# One history bar (close 104) feeds the 2-bar moving average of the first drawn bar.
HAND = _window([
    (104, 104, 104, 104, 1),
    (105, 108, 102, 106, 10),   # MA (104 + 106) / 2 = 105
    (106, 114, 104, 112, 20),   # MA 109
    (111, 112, 100, 101, 5),    # MA 106.5
])


def _lit(img):
    return {(int(r), int(c)) for r, c in zip(*np.nonzero(img))}


def test_hand_made_three_bar_chart_pixel_by_pixel():
    chart = CandlestickChart(bars=3, height=20, ma_window=2)
    # 20 px: volume = bottom 4 rows (16..19), row 15 blank, price rows 0..14; lo 100, hi 114 -> y = p - 100
    assert (chart.volume_rows, chart.price_rows, chart.input_length) == (4, 15, 4)
    img = chart.encode(HAND)
    assert img.shape == (1, 1, 20, 9) and img.dtype == np.uint8
    assert set(np.unique(img)) == {0, 255}
    row = lambda price: 14 - (price - 100)  # noqa: E731
    expected = set()
    # bar 1 (columns 0, 1, 2): open tick, high-low bar, close tick
    expected |= {(row(105), 0), *((r, 1) for r in range(row(108), row(102) + 1)), (row(106), 2)}
    # bar 2 (columns 3, 4, 5)
    expected |= {(row(106), 3), *((r, 4) for r in range(row(114), row(104) + 1)), (row(112), 5)}
    # bar 3 (columns 6, 7, 8)
    expected |= {(row(111), 6), *((r, 7) for r in range(row(112), row(100) + 1)), (row(101), 8)}
    # volume on the middle columns: round(v / 20 * 4) rows from the bottom -> 2, 4, 1
    expected |= {(18, 1), (19, 1), (16, 4), (17, 4), (18, 4), (19, 4), (19, 7)}
    # moving average points at 105, 109, 106.5 (rounds half up to y = 7) on the middle columns ...
    expected |= {(row(105), 1), (row(109), 4), (14 - 7, 7)}
    # ... joined: heights 5 -> 9 over columns 1..4 pass 6.33, 7.67 (columns 2, 3 light 5..6 and 6..8),
    # column 4 lights 8..9; heights 9 -> 6.5 over columns 4..7 pass 8.17, 7.33 (columns 5, 6 light 8..9, 7..8)
    expected |= {(14 - y, 2) for y in (5, 6)} | {(14 - y, 3) for y in (6, 7, 8)} | {(14 - y, 4) for y in (8, 9)}
    expected |= {(14 - y, 5) for y in (8, 9)} | {(14 - y, 6) for y in (7, 8)}
    assert _lit(img[0, 0]) == expected
    assert not img[0, 0, 15].any()  # the gap row between price and volume


def test_paper_sizes_and_high_low_rows():
    rng = np.random.default_rng(0)
    for bars, height in ((5, 32), (20, 64), (60, 96)):
        chart = CandlestickChart(bars)
        assert chart.output_shape() == (1, height, 3 * bars)
        assert chart.volume_rows == height // 5 and chart.input_length == 2 * bars - 1
        p = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, chart.input_length)))
        w = np.stack([p, p * 1.02, p * 0.98, p * 1.001, rng.uniform(1, 2, p.size)])[None]
        img = chart.encode(w)[0, 0]
        assert img.shape == (height, 3 * bars)
        price = img[: chart.price_rows]
        highest = int(np.argmax(w[0, 1, -bars:]))
        lowest = int(np.argmin(w[0, 2, -bars:]))
        assert price[0, 3 * highest + 1] == 255  # the highest high touches the top row
        assert price[-1, 3 * lowest + 1] == 255  # the lowest low the bottom row of the price area
        assert img[-1, 1::3].all()  # every bar has volume > 0: at least the bottom row lit
        assert not img[-1, 0::3].any() and not img[-1, 2::3].any()


def test_flat_and_gapped_windows_have_defined_pictures():
    chart = CandlestickChart(bars=3, height=20, ma_window=2)
    flat = chart.encode(_window([(50, 50, 50, 50, 0)] * 4))[0, 0]
    mid = 14 - 14 // 2
    assert _lit(flat) == {(mid, c) for c in range(9)}  # everything on the middle row, no volume
    gapped = HAND.copy()
    gapped[0, :, 2] = np.nan  # the second drawn bar is missing
    img = chart.encode(gapped)[0, 0]
    assert not img[:, 3:6].any()  # its columns stay black, and no average crosses it
    # bar 3 alone on the new scale (lo 100, hi 112): y = floor((p - 100) / 12 * 14 + 0.5); its average needs
    # the missing close, so only its OHLC and its volume (5 of max 10 -> 2 rows) are drawn
    assert _lit(img[:, 6:9]) == {(14 - 13, 0), *((r, 1) for r in range(0, 15)), (18, 1), (19, 1), (14 - 1, 2)}
    assert img[:, 0].any()
    assert not chart.encode(np.full((1, 5, 4), np.nan)).any()


def test_only_the_last_bars_are_read_and_bad_shapes_fail():
    chart = CandlestickChart(bars=3, height=20, ma_window=2)
    longer = np.concatenate([np.full((1, 5, 6), 1e6), HAND], axis=2)  # older bars beyond the history
    np.testing.assert_array_equal(chart.encode(longer), chart.encode(HAND))
    with pytest.raises(ValueError, match=r"\[N, 5"):
        chart.encode(np.zeros((1, 4, 4)))
    with pytest.raises(ValueError, match="default height"):
        CandlestickChart(bars=7)
