"""ImageStore: encoding images joined to features.labels with the WindowStore interface train_fold reads."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from assets.market import raw_candles, raw_orderbook
from pipeline.encodings.build import build_encoding
from pipeline.models.zoo import build_model
from pipeline.training.datasets import robust_stats
from pipeline.encodings.image_files import open_images
from pipeline.training.images import PIXELS_PER_IMAGE, bar_images, build_image_store


@pytest.fixture(scope="module")
def warehouse_with_labels(tmp_path_factory, make_synthetic_market, make_labels):
    resources = make_synthetic_market(tmp_path_factory.mktemp("image_store"), 5, [raw_candles, raw_orderbook])
    settings = resources["settings"].settings()
    wh = resources["warehouse"].warehouse()
    labels = make_labels(wh)
    for name in ("candlestick_5", "indicator_image", "orderbook_heatmap"):
        build_encoding(wh, settings, name, log=lambda _: None)
    return wh, settings, labels


def test_image_store_joins_images_to_labels(warehouse_with_labels):
    wh, settings, labels = warehouse_with_labels
    store = build_image_store(wh, settings, "candlestick_5", horizon=1)
    n_bars = wh.query("select count(*) as n from raw.candles where symbol = 'BTCUSDT' and interval = '60'")["n"][0]
    history = store.window
    assert store.symbols == ["BTCUSDT", "ETHUSDT"] and store.channels[-2:] == ["symbol_BTCUSDT", "symbol_ETHUSDT"]
    # per symbol: bars without an image (the first history - 1), the last bar's unknown label
    assert store.dropped == {"warmup": 2 * (history - 1), "gap": 0, "unknown_label": 2}
    assert store.sample_rows.shape[0] == 2 * (n_bars - history + 1 - 1)
    x = store.gather(store.sample_rows[:7])
    assert x.dtype == np.float32 and x.shape == (7, *store.input_shape) == (7, 3, 32, 15)
    assert set(np.unique(x[:, 0])) <= {0.0, 1.0}  # uint8 charts scaled to [0, 1]
    assert (x[:, 1] == 1).all() and (x[:, 2] == 0).all()  # the first samples are BTCUSDT's
    eth = np.flatnonzero(store.sample_symbol == 1)[:3]
    assert (store.gather(store.sample_rows[eth])[:, 2] == 1).all()
    # labels are those of each image's own ts
    lab = labels.filter(pl.col("symbol") == "ETHUSDT").with_columns(ts_ms=pl.col("ts").dt.epoch("ms"))
    ref = dict(zip(lab["ts_ms"].to_list(), lab["fwd_return"].to_list()))
    for i in eth:
        assert store.fwd_return[i] == pytest.approx(ref[int(store.sample_ts_ms[i])])
    # robust_stats works on it, over the given images' pixels only
    center, scale = robust_stats(store, store.sample_rows[:50])
    assert center.shape == scale.shape == (3,) and center[1:].tolist() == [0, 0] and scale[1:].tolist() == [1, 1]
    pix = store.rows[store.sample_rows[:50], :1]
    assert pix.shape == (50 * PIXELS_PER_IMAGE, 1)
    assert set(np.unique(pix)) <= set(np.unique(store.gather(store.sample_rows[:50])[:, 0]))


def test_a_2d_zoo_model_runs_on_the_store(warehouse_with_labels):
    torch = pytest.importorskip("torch")
    wh, settings, _ = warehouse_with_labels
    store = build_image_store(wh, settings, "indicator_image", horizon=1)
    assert store.input_shape == (3, 15, 15)
    model = build_model("cnn_ta", input_shape=store.input_shape).eval()
    with torch.no_grad():
        out = model(torch.from_numpy(store.gather(store.sample_rows[:4])))
    assert out.direction_logits.shape == (4, 3)
    # CNN-TA scaling fitted on a fold's training rows only, applied in gather
    train = store.sample_rows[:40]
    scaling = store.fit_row_scaling(train)
    raw = store.gather(store.sample_rows)
    store.row_scaling = scaling
    scaled = store.gather(store.sample_rows)
    np.testing.assert_allclose(scaled[:, :1], scaling.apply(raw[:, :1]))
    np.testing.assert_array_equal(scaled[:, 1:], raw[:, 1:])
    assert scaled[:40, 0].min() >= 0 and scaled[:40, 0].max() <= 1
    ref = np.percentile(raw[:40, 0, 0], 99)
    assert scaling.high[0] == pytest.approx(ref, rel=1e-5)  # RSI 7 row: from the 40 training images only


def test_heatmaps_join_the_bar_their_newest_snapshot_closes(warehouse_with_labels):
    wh, settings, _ = warehouse_with_labels
    store = build_image_store(wh, settings, "orderbook_heatmap", horizon=1)
    hour = 3_600_000
    assert store.input_shape == (4, 32, 20) and store.sample_rows.shape[0] > 0
    for k, symbol in enumerate(store.symbols):
        index, _ = open_images(wh, settings.artifacts_dir, "orderbook_heatmap", symbol, "snapshot")
        mine = np.flatnonzero(store.sample_symbol == k)
        snap_ts = index["ts_ms"].to_numpy()[store.sample_rows[mine] - store.offsets[k]]
        bar_ts = store.sample_ts_ms[mine]
        assert ((snap_ts > bar_ts) & (snap_ts <= bar_ts + hour)).all()  # taken during the bar, by its close
        assert np.unique(store.sample_rows[mine]).shape[0] == mine.shape[0]
    x = store.gather(store.sample_rows[:3])
    assert x.shape == (3, 4, 32, 20) and np.isfinite(x).all() and x[:, :2].max() > 0
    grid = np.array([0, 10, 20, 30]) * 1000
    np.testing.assert_array_equal(bar_images(grid, np.array([5_000, 10_000, 31_000]), 10_000, True), [1, -1, -1, 2])
    np.testing.assert_array_equal(bar_images(grid, np.array([10_000, 30_000]), 10_000, False), [-1, 0, -1, 1])
