"""Live signals of the image models on tiny trained cnn_ta (float16 indicator images, row scaling),
resnet2d_candlestick (uint8 charts) and orderbook_net (order-book heatmaps): the newest candle's signal equals
the stored artifact run by hand on the stored image of that candle, the image is encoded afresh (no wait for
the encodings asset) and must equal a stored one, symbols without images are skipped with the reason, and the
paper ledger books the image models' signals."""

from __future__ import annotations

import json
from pathlib import Path

import dagster as dg
import numpy as np
import polars as pl
import pytest
import torch

from assets.resources import SettingsResource, WarehouseResource
from assets.signals import signals_latest, signals_paper_ledger
from pipeline.config import Settings
from pipeline.encodings.build import SNAPSHOT_INTERVAL, build_encoding
from pipeline.encodings.image_files import open_images
from pipeline.live import INITIAL_EQUITY, latest_signals
from pipeline.models.catalogue import image_model_inputs
from pipeline.training.artifacts import load_artifact
from tests.live.conftest import SYMBOLS, add_snapshots, add_symbol, build, edge_rule, extend, train_image_model

IMAGE_MODELS = image_model_inputs()

SHORT = "CCCUSDT"  # 15 candles (fewer than any image reads), no snapshot: no image of it
BARS, NEW = 700, 5
IMAGE_ARCHS = ("cnn_ta", "orderbook_net", "resnet2d_candlestick")


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    wh, settings = build(tmp_path_factory.mktemp("live_images") / "warehouse.duckdb", bars=BARS)
    add_symbol(wh, SHORT, 15)
    add_snapshots(wh, SYMBOLS, 0, BARS)
    settings = Settings(data_dir=settings.data_dir, symbols=(*SYMBOLS, SHORT))
    for arch in IMAGE_ARCHS:
        train_image_model(wh, settings, arch)
    extend(wh, NEW)  # five candles (and their snapshots) the encodings and the models never saw
    add_snapshots(wh, SYMBOLS, BARS, NEW, seed=4)
    return wh, settings


def _newest_fold(wh, arch):
    row = wh.query("select model_id, artifact_path from models.live where architecture = ?",
                   [arch]).row(0, named=True)
    return row["model_id"], Path(row["artifact_path"])


def _by_hand(wh, settings, arch, symbol, bar_ms):
    """(proba, confidence) of the stored artifact on the stored image of the bar at ``bar_ms``, read straight from
    the encoding's file and index, scaled from the artifact's config, one plane per trained symbol."""
    _, path = _newest_fold(wh, arch)
    cfg = json.loads((path / "config.json").read_text())
    name = cfg["encoding"]
    assert name == IMAGE_MODELS[arch][1]
    orderbook = name == "orderbook_heatmap"
    index, images = open_images(wh, Path(settings.artifacts_dir), name, symbol,
                                SNAPSHOT_INTERVAL if orderbook else "60")
    ts = index["ts_ms"].to_numpy()
    # a candle image carries its bar's ts; a heatmap the ts of its newest snapshot, taken during the bar
    pick = np.flatnonzero((ts > bar_ms) & (ts <= bar_ms + 3_600_000))[-1:] if orderbook else np.flatnonzero(
        ts == bar_ms)
    assert pick.size == 1, f"no stored {name} image of {symbol} at {bar_ms}"
    raw = np.asarray(images[int(index["row"][int(pick[0])])])
    image = raw.astype(np.float32) / 255.0 if raw.dtype == np.uint8 else raw.astype(np.float32)
    if cfg["row_scaling"] is not None:
        lo = np.asarray(cfg["row_scaling"]["low"], np.float32)[None, :, None]
        hi = np.asarray(cfg["row_scaling"]["high"], np.float32)[None, :, None]
        image = np.clip((image - lo) / (hi - lo), 0, 1)
    planes = np.zeros((len(cfg["symbols"]), *image.shape[1:]), np.float32)
    planes[cfg["symbols"].index(symbol)] = 1
    x = torch.from_numpy(np.concatenate([image, planes])[None].astype(np.float32))
    with torch.no_grad():
        logits, _, _, conf = load_artifact(path)(x)
    return logits.softmax(1).numpy()[0], float(conf[0])


def test_image_signal_equals_the_stored_artifact_on_the_stored_image(live):
    wh, settings = live
    result = latest_signals(wh, settings)  # before the encodings saw the newest candles: encoded now
    sig = result.signals
    newest = wh.query("select symbol, max(ts) as ts from raw.candles group by symbol")
    assert set(sig["architecture"]) == {"tcn", *IMAGE_ARCHS}
    for arch in IMAGE_ARCHS:
        mine = sig.filter(pl.col("architecture") == arch).sort("symbol")
        assert mine["symbol"].to_list() == list(SYMBOLS)
        assert set(mine["model_id"]) == {_newest_fold(wh, arch)[0]}
        assert mine.join(newest, on="symbol").filter(pl.col("ts") != pl.col("ts_right")).height == 0
    assert not [s for s in result.skipped if SHORT not in s]
    for arch in IMAGE_ARCHS:  # now the encodings asset catches up: the same images, stored
        build_encoding(wh, settings, IMAGE_MODELS[arch][1], log=lambda _: None)
    for row in sig.filter(pl.col("architecture").is_in(IMAGE_ARCHS)).iter_rows(named=True):
        bar_ms = int(np.datetime64(row["ts"], "ms").astype(np.int64))
        proba, conf = _by_hand(wh, settings, row["architecture"], row["symbol"], bar_ms)
        np.testing.assert_allclose([row["p_down"], row["p_flat"], row["p_up"]], proba, rtol=1e-5, atol=1e-6)
        assert row["confidence"] == pytest.approx(conf, rel=1e-5, abs=1e-6)
    again = latest_signals(wh, settings)  # every fresh image is now also stored: they agree, the same signals
    assert again.skipped == result.skipped
    cols = ["architecture", "symbol", "ts", "signal", "size", "p_up"]
    assert again.signals.select(cols).sort("architecture", "symbol").equals(sig.select(cols).sort("architecture",
                                                                                                   "symbol"))


def test_image_signal_follows_the_folds_edge_rule(live):
    wh, settings = live
    # no cost, no margin, returns (-1, 0, +1): the side of p_up - p_down
    with edge_rule(wh, class_returns=[-1.0, 0.0, 1.0], round_trip_cost=0.0, margin=0.0, fraction=0.25):
        sig = latest_signals(wh, settings).signals.filter(pl.col("architecture").is_in(IMAGE_ARCHS))
        assert sig.height == len(IMAGE_ARCHS) * len(SYMBOLS)
        want = np.sign(sig["p_up"].to_numpy() - sig["p_down"].to_numpy()).astype(int)
        assert sig["signal"].to_list() == want.tolist() and sig["size"].to_list() == [0.25] * sig.height


def test_symbols_without_images_are_skipped_with_the_reason(live):
    wh, settings = live
    result = latest_signals(wh, settings)
    assert SHORT not in result.signals["symbol"].to_list()
    for arch in (*IMAGE_ARCHS, "tcn"):
        mid = _newest_fold(wh, arch)[0]
        assert any(s.startswith(f"{mid} / {SHORT}: not among the symbols this fold trained on") for s in result.skipped)
    # the order-book model signals only when a snapshot window ends in the newest candle
    newest = wh.query("select max(ts) as ts from raw.candles where symbol = 'BBBUSDT'")["ts"][0]
    gone = wh.query("select * from raw.orderbook where symbol = 'BBBUSDT' and ts > ?", [newest])
    assert gone.height == 1
    wh.replace_rows("raw.orderbook", gone.clear(), "symbol = 'BBBUSDT' and ts > ?", [newest])
    try:
        result = latest_signals(wh, settings)
        ob = result.signals.filter(pl.col("architecture") == "orderbook_net")
        assert ob["symbol"].to_list() == ["AAAUSDT"]
        mid = _newest_fold(wh, "orderbook_net")[0]
        assert any(s.startswith(f"{mid} / BBBUSDT: no order-book snapshot window for the newest candle")
                   for s in result.skipped)
        assert result.signals.filter(pl.col("symbol") == "BBBUSDT")["architecture"].sort().to_list() == [
            "cnn_ta", "resnet2d_candlestick", "tcn"]
    finally:
        wh.replace_rows("raw.orderbook", gone, "symbol = 'BBBUSDT' and ts > ?", [newest])


def test_a_fresh_image_that_differs_from_the_stored_one_is_not_traded(live):
    wh, settings = live
    build_encoding(wh, settings, "indicator_image", log=lambda _: None)  # stored up to the newest candle
    newest = wh.query("select * from raw.candles where symbol = 'AAAUSDT' order by ts desc limit 1")
    ts = newest["ts"][0]
    changed = newest.with_columns(close=pl.col("close") * 1.01, high=pl.col("high") * 1.01)
    wh.replace_rows("raw.candles", changed, "symbol = 'AAAUSDT' and ts = ?", [ts])  # revised after the encoding
    try:
        result = latest_signals(wh, settings)
        mid = _newest_fold(wh, "cnn_ta")[0]
        assert any(s.startswith(f"{mid} / AAAUSDT: the indicator_image image encoded now at") and "differs" in s
                   for s in result.skipped)
        assert result.signals.filter(pl.col("architecture") == "cnn_ta")["symbol"].to_list() == ["BBBUSDT"]
        assert "AAAUSDT" in result.signals.filter(pl.col("architecture") == "tcn")["symbol"].to_list()
    finally:
        wh.replace_rows("raw.candles", newest, "symbol = 'AAAUSDT' and ts = ?", [ts])
    assert "AAAUSDT" in latest_signals(wh, settings).signals.filter(
        pl.col("architecture") == "cnn_ta")["symbol"].to_list()


def test_the_ledger_books_image_model_signals(live):
    wh, settings = live
    res = SettingsResource(data_dir=str(settings.data_dir), symbols=",".join(settings.symbols))
    resources = {"settings": res, "warehouse": WarehouseResource(settings=res)}
    assert dg.materialize([signals_latest, signals_paper_ledger], resources=resources).success
    latest = wh.query("select * from signals.latest").filter(pl.col("architecture").is_in(IMAGE_ARCHS))
    assert latest.height == len(IMAGE_ARCHS) * len(SYMBOLS)
    ledger = wh.query("select * from signals.paper_ledger").filter(pl.col("architecture").is_in(IMAGE_ARCHS))
    booked = latest.join(ledger, on=["architecture", "symbol", "ts"], suffix="_ledger")
    assert booked.height == latest.height
    assert (booked["signal"] == booked["signal_ledger"]).all()
    np.testing.assert_allclose(booked["target"], booked["signal"] * booked["size"])
    # the first booking trades from INITIAL_EQUITY to the target: that fraction of it, long or short (flat: none)
    np.testing.assert_allclose(booked["position"] * booked["price_ledger"], booked["target"] * INITIAL_EQUITY,
                               rtol=1e-9, atol=1e-9)
