"""Image models through the walk-forward path: cnn_ta on indicator images, orderbook_net on heatmaps, the
chart-preserving training augmentations of resnet2d_candlestick.

Same folds, loss, edge rule and registry rows as the sequence models; the
artifact (safetensors + config with the input shape and the fold's CNN-TA row
scaling) reloads and reproduces the stored out-of-sample predictions.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch

from assets.market import raw_candles, raw_orderbook
from pipeline.encodings.build import build_encoding
from pipeline.training.images import build_image_store
from pipeline.models.catalogue import image_model_inputs
from pipeline.training.artifacts import load_artifact
from pipeline.training.inference import predict
from pipeline.training.recipe import TrainingConfig
from pipeline.training.results import store_training
from pipeline.training.walk_forward import time_folds, train_architecture, train_fold

IMAGE_MODELS = image_model_inputs()


@pytest.fixture(scope="module")
def image_warehouse(tmp_path_factory, make_synthetic_market, make_labels):
    resources = make_synthetic_market(tmp_path_factory.mktemp("image_training"), 30, [raw_candles, raw_orderbook])
    settings = resources["settings"].settings()
    wh = resources["warehouse"].warehouse()
    make_labels(wh)
    for name in ("indicator_image", "orderbook_heatmap"):
        build_encoding(wh, settings, name, log=lambda _: None)
    return wh, settings


@pytest.mark.parametrize("name", ["cnn_ta", "orderbook_net"])
def test_image_model_trains_walk_forward_and_reloads(image_warehouse, name):
    wh, settings = image_warehouse
    config = TrainingConfig.from_settings(settings, name, n_folds=2, epochs=1, embargo=2, max_train_windows=400,
                                          batch_size=64, train_min_fraction=0.5)
    assert (config.model, config.encoding) == IMAGE_MODELS[name]
    outcome = train_architecture(wh, settings, config, log=lambda _: None, live_refit=False)
    assert outcome.registry.height == 2 and outcome.weights_finite
    counts = store_training(wh, outcome)
    assert counts["predictions.oos"] == outcome.predictions.height
    for mid, metrics in zip(outcome.registry["model_id"], outcome.registry["metrics"]):
        n_test = json.loads(metrics)["n_test"]
        assert n_test > 0 and outcome.predictions.filter(pl.col("model_id") == mid).height == n_test

    # the last fold's artifact reloads (no pickle) and reproduces its stored predictions on the same images
    last = outcome.registry.row(-1, named=True)
    cfg = json.loads((Path(last["artifact_path"]) / "config.json").read_text())
    store = build_image_store(wh, settings, config.encoding, 1)
    assert cfg["input_shape"] == list(store.input_shape) and cfg["model"] == IMAGE_MODELS[name][0]
    if config.encoding == "indicator_image":
        fold, fit, val, test, grid = time_folds(store, config)[-1]
        scaling = store.fit_row_scaling(store.sample_rows[fit])
        assert cfg["row_scaling"]["low"] == pytest.approx(scaling.low.tolist())  # fitted on training rows only
        store.row_scaling = scaling
    else:
        assert cfg["row_scaling"] is None
    module = load_artifact(last["artifact_path"])
    rows = outcome.predictions.filter(pl.col("model_id") == last["model_id"])
    ts = rows["ts"].dt.epoch("ms").to_numpy()
    samples = np.flatnonzero((store.sample_ts_ms >= ts.min()) & (store.sample_ts_ms <= ts.max()))
    assert samples.shape[0] == rows.height
    proba = predict(module, store, samples)[0]
    np.testing.assert_allclose(proba[:, 2], rows["p_up"].to_numpy(), rtol=1e-5, atol=1e-6)
    assert all(bool(torch.isfinite(p).all()) for p in module.state_dict().values())


def test_chart_training_batches_take_the_chart_preserving_augmentations(image_warehouse, tmp_path):
    """CONVTRADE_AUGMENT on a chart model: the SimCLR pre-training's chart-preserving views (one home,
    pipeline.training.pretrain.augment_charts) on its training batches, seeded; on an image that is no
    candlestick chart (cnn_ta's indicator matrix) it is an error, not a silent no-op."""
    wh, settings = image_warehouse
    build_encoding(wh, settings, "candlestick_20", log=lambda _: None)
    store = build_image_store(wh, settings, "candlestick_20", 1)
    base = dict(n_folds=2, epochs=1, embargo=2, max_train_windows=128, batch_size=64, train_min_fraction=0.5)
    plain = TrainingConfig.from_settings(settings, "resnet2d_candlestick", **base)
    augmented = dataclasses.replace(plain, augment=("jitter",))
    _, fit, val, _, _ = time_folds(store, plain)[0]
    weights = {name: train_fold(store, cfg, 0, fit, val, tmp_path / name, log=lambda _: None)[0].state_dict()
               for name, cfg in (("plain", plain), ("augmented", augmented), ("again", augmented))}
    assert all(torch.equal(weights["augmented"][k], v) for k, v in weights["again"].items())  # seeded
    assert any(not torch.equal(weights["plain"][k], v) for k, v in weights["augmented"].items())  # applied
    indicator = build_image_store(wh, settings, "indicator_image", 1)
    cnn_ta = TrainingConfig.from_settings(settings, "cnn_ta", augment=("jitter",), **base)
    _, fit, val, _, _ = time_folds(indicator, cnn_ta)[0]
    with pytest.raises(ValueError, match="not a candlestick chart"):
        train_fold(indicator, cnn_ta, 0, fit, val, tmp_path / "cnn_ta", log=lambda _: None)


def test_symbols_without_images_are_skipped_and_no_images_trains_nothing(image_warehouse):
    import shutil

    from pipeline.encodings.image_files import index_table, series_dir

    wh, settings = image_warehouse
    config = TrainingConfig.from_settings(settings, "orderbook_net", n_folds=2, epochs=1, embargo=2,
                                          max_train_windows=200, batch_size=64, train_min_fraction=0.5)
    with pytest.raises(FileNotFoundError, match="materialize the encodings/gaf asset first"):
        build_image_store(wh, settings, "gaf", 1)  # never built: a real error, not a skip

    def drop(symbol):  # as if the encoding had made no image of ``symbol`` (no order-book history)
        with wh.connect() as con:
            con.execute(f"delete from {index_table('orderbook_heatmap')} where symbol = ?", [symbol])
        shutil.rmtree(series_dir(Path(settings.artifacts_dir), "orderbook_heatmap", symbol, "snapshot"))

    drop("ETHUSDT")
    store = build_image_store(wh, settings, "orderbook_heatmap", 1)
    assert store.symbols == ["BTCUSDT"] and store.missing_symbols == ("ETHUSDT",)
    assert set(store.sample_symbol.tolist()) == {0}
    few = TrainingConfig.from_settings(settings, "orderbook_net", n_folds=2, epochs=1, embargo=400,
                                       train_min_fraction=0.5)
    lines = []
    outcome = train_architecture(wh, settings, few, log=lines.append)  # the embargo leaves no test rows
    assert outcome.skipped and "too few for the folds" in outcome.skipped and outcome.registry.height == 0
    drop("BTCUSDT")
    lines = []
    outcome = train_architecture(wh, settings, config, log=lines.append)
    assert outcome.skipped and outcome.registry.height == 0 and outcome.predictions.height == 0
    assert any("no usable sample in encoding orderbook_heatmap" in line for line in lines)
    wh.ensure_schema(["models.registry"])
    before = wh.query("select model_id from models.registry where architecture = 'orderbook_net' order by 1")
    written = store_training(wh, outcome)  # a training of nothing stores nothing: the stored versions stay
    assert written["models.registry"] == 0 and written["promotion"] is None
    left = wh.query("select model_id from models.registry where architecture = 'orderbook_net' order by 1")
    assert left.equals(before)
