"""Transfer learning: NT-Xent, chart-preserving augmentations, leakage-free and deterministic SimCLR pre-training
per fold, the fine-tune through the normal walk-forward path, and local torchvision-format weights."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch
from safetensors.torch import save_file

from assets.market import raw_candles
from pipeline.config import Settings
from pipeline.encodings.build import build_encoding
from pipeline.models.zoo import build_model
from pipeline.training.datasets import robust_stats
from pipeline.training.images import ImageStore
from pipeline.training.pretrain import (PRETRAIN_FILE, PRETRAIN_REPORT, ChartAugment, PretrainConfig, augment_charts,
                                        initialise_backbone, load_backbone_weights, nt_xent, pretrain_rows)
from pipeline.models.catalogue import image_model_inputs, pretrained_model_names
from pipeline.training.inference import InferenceModel
from pipeline.training.recipe import TrainingConfig
from pipeline.training.results import store_training
from pipeline.training.walk_forward import train_architecture

IMAGE_MODELS = image_model_inputs()
PRETRAINED_IMAGE_MODELS = pretrained_model_names()

H_MS = 3_600_000


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tests/conftest.py


def test_nt_xent_matches_an_independent_formula():
    rng = np.random.default_rng(0)
    z1, z2 = rng.normal(size=(3, 4)), rng.normal(size=(3, 4))
    t = 0.3
    z = np.concatenate([z1, z2])
    z = z / np.linalg.norm(z, axis=1, keepdims=True)
    n2 = z.shape[0]
    losses = []
    for i in range(n2):
        pos = (i + 3) % n2
        others = [k for k in range(n2) if k != i]
        denom = sum(np.exp(z[i] @ z[k] / t) for k in others)
        losses.append(-np.log(np.exp(z[i] @ z[pos] / t) / denom))
    got = nt_xent(torch.tensor(z1), torch.tensor(z2), t)
    assert float(got) == pytest.approx(float(np.mean(losses)), rel=1e-9)
    # identical views of far-apart charts score better than unrelated views
    assert float(nt_xent(torch.tensor(z1), torch.tensor(z1), t)) < float(got)
    with pytest.raises(ValueError, match="temperature"):
        nt_xent(torch.tensor(z1), torch.tensor(z2), 0.0)


def _reference_view(x: np.ndarray, drop_cols: int, shift: int, rows: int) -> np.ndarray:
    """An independent (loop) time crop + price-area shift of one chart (C, H, W)."""
    y = x.copy()
    y[:, :, :drop_cols] = 0
    moved = np.zeros_like(y[:, :rows])
    for r in range(rows):
        if 0 <= r - shift < rows:
            moved[:, r] = y[:, r - shift]
    y[:, :rows] = moved
    return y


def test_augmentations_keep_the_newest_bar_and_never_flip():
    aug = ChartAugment.for_encoding("candlestick_20")
    assert (aug.bars, aug.bar_width, aug.shift_rows) == (20, 3, 64 - 64 // 5 - 1)
    with pytest.raises(ValueError, match="not a candlestick chart"):
        ChartAugment.for_encoding("gaf")
    rng = np.random.default_rng(1)
    charts = (rng.random((64, 1, 16, 15)) < 0.3).astype(np.float32)  # asymmetric random charts, 5 bars
    symbols = np.zeros((64, 2, 16, 15), np.float32)
    symbols[:, 1] = 1.0
    x = torch.from_numpy(np.concatenate([charts, symbols], axis=1))
    geometric = ChartAugment(bar_width=3, bars=5, shift_rows=12, max_drop_bars=4, max_shift=2, dropout=0.0,
                             noise=0.0)
    crop = dataclasses.replace(geometric, max_shift=0)
    y = augment_charts(x, crop, torch.Generator().manual_seed(0), 1).numpy()
    np.testing.assert_array_equal(y[:, :, :, -3:], x.numpy()[:, :, :, -3:])  # the rightmost bar, as drawn
    y = augment_charts(x, geometric, torch.Generator().manual_seed(0), 1).numpy()
    seen = set()
    for b in range(x.shape[0]):
        np.testing.assert_array_equal(y[b, 1:], x.numpy()[b, 1:])  # symbol planes untouched
        hits = [(d, s) for d in range(5) for s in range(-2, 3)
                if np.array_equal(y[b, :1], _reference_view(charts[b], 3 * d, s, 12))]
        assert hits, f"view {b} is not a time crop + price shift of its chart (a flip or worse)"
        seen.add(hits[0])
    assert len({d for d, _ in seen}) > 2 and len({s for _, s in seen}) > 2  # the draws do vary
    pixels = dataclasses.replace(geometric, max_drop_bars=0, max_shift=0, dropout=0.02, noise=0.02)
    noisy = augment_charts(x, pixels, torch.Generator().manual_seed(0), 1).numpy()
    assert noisy.min() >= 0.0 and noisy.max() <= 1.0 and not np.array_equal(noisy[:, :1], charts)
    np.testing.assert_array_equal(noisy[:, 1:], x.numpy()[:, 1:])
    near, flipped = np.abs(noisy[:, :1] - charts).mean(), np.abs(noisy[:, :1] - charts[..., ::-1]).mean()
    assert near < 0.05 < flipped  # pixel noise only: the chart stays itself, no mirror image


def _fake_store(rng, n=48, symbols=("AAAUSDT", "BBBUSDT")) -> ImageStore:
    """candlestick_5-shaped charts (1 x 32 x 15), ts hourly, every image a sample."""
    arrays = [(rng.random((n, 1, 32, 15)) < 0.2).astype(np.uint8) * 255 for _ in symbols]
    k = len(symbols)
    return ImageStore(
        name="candlestick_5", arrays=arrays, offsets=np.arange(k + 1) * n, image_shape=(1, 32, 15), scale=1 / 255,
        symbols=list(symbols), window=9, horizon=1, sample_rows=np.arange(k * n),
        sample_ts_ms=np.tile(np.arange(n, dtype=np.int64) * H_MS, k), sample_symbol=np.repeat(np.arange(k), n),
        label_class=rng.integers(0, 3, k * n), fwd_return=rng.normal(size=k * n),
        fwd_volatility=np.abs(rng.normal(size=k * n)), dropped={}, fingerprint="fake")


def _module(store, seed=0):
    torch.manual_seed(seed)
    center, scale = robust_stats(store, store.sample_rows[:20])
    model = build_model("resnet2d", "default", input_shape=store.input_shape)
    return InferenceModel(model, center, scale, 1.0, 1.0, spatial_dims=2)


def _pretrain(store, out_dir, seed=0, lines=None, **pretrain):
    config = TrainingConfig(architecture="resnet2d_candlestick_simclr", model="resnet2d", encoding="candlestick_5",
                            seed=seed, pretrain=PretrainConfig(**{"epochs": 1, "max_images": 0, "batch_size": 16,
                                                                  **pretrain}))
    module = _module(store)
    end = 29 * H_MS  # the fold's training end: fit + validation tail
    span = np.flatnonzero(store.sample_ts_ms <= end)
    fit, val = span[store.sample_ts_ms[span] < 24 * H_MS], span[store.sample_ts_ms[span] >= 26 * H_MS]
    report = initialise_backbone(module, store, config, 0, fit, val, Path(out_dir),
                                 (lines if lines is not None else []).append)
    return {k: v.clone() for k, v in module.model.body.state_dict().items()}, report


def _same(a, b) -> bool:
    return all(torch.equal(a[k], b[k]) for k in a)


def test_pretraining_uses_no_image_after_the_training_end_and_is_deterministic(tmp_path):
    store = _fake_store(np.random.default_rng(2))
    lines = []
    base, report = _pretrain(store, tmp_path / "a", lines=lines)
    assert report["train_end_ms"] == 29 * H_MS and report["images"] == 2 * 30  # both symbols, ts <= end
    np.testing.assert_array_equal(pretrain_rows(store, 29 * H_MS),
                                  np.flatnonzero(store.sample_ts_ms <= 29 * H_MS))
    assert any("pretrain epoch 1/1: NT-Xent" in line for line in lines)
    assert not _same(base, _module(store).model.body.state_dict())  # pre-training moved the backbone

    later = dataclasses.replace(store, arrays=[a.copy() for a in store.arrays])
    later.arrays[0][30:] = 255 - later.arrays[0][30:]  # every image after the training end changes
    later.arrays[1][40:] = 0
    assert _same(base, _pretrain(later, tmp_path / "b")[0])
    earlier = dataclasses.replace(store, arrays=[a.copy() for a in store.arrays])
    earlier.arrays[1][29] = 255 - earlier.arrays[1][29]  # the last image at the training end does count
    assert not _same(base, _pretrain(earlier, tmp_path / "c")[0])

    assert _same(base, _pretrain(store, tmp_path / "d")[0])  # deterministic on CPU
    assert not _same(base, _pretrain(store, tmp_path / "e", seed=1)[0])
    lines = []
    assert _same(base, _pretrain(store, tmp_path / "a", lines=lines)[0])  # the fold's cache, same key
    assert any("reused" in line for line in lines)
    assert set(p.name for p in (tmp_path / "a").iterdir()) == {PRETRAIN_FILE, PRETRAIN_REPORT}


def _torchvision_resnet18_state(rng) -> dict[str, torch.Tensor]:
    """Random tensors under torchvision's ResNet-18 names and shapes (written out from its published layout)."""
    def t(*shape):
        return torch.from_numpy(rng.normal(size=shape).astype(np.float32))

    def bn(prefix, c):
        return {f"{prefix}.weight": t(c), f"{prefix}.bias": t(c), f"{prefix}.running_mean": t(c),
                f"{prefix}.running_var": t(c).abs(), f"{prefix}.num_batches_tracked": torch.tensor(7)}

    state = {"conv1.weight": t(64, 3, 7, 7), **bn("bn1", 64)}
    cin = 64
    for stage, width in enumerate((64, 128, 256, 512), start=1):
        for j in range(2):
            p = f"layer{stage}.{j}"
            state.update({f"{p}.conv1.weight": t(width, cin, 3, 3), **bn(f"{p}.bn1", width),
                          f"{p}.conv2.weight": t(width, width, 3, 3), **bn(f"{p}.bn2", width)})
            if j == 0 and cin != width:
                state.update({f"{p}.downsample.0.weight": t(width, cin, 1, 1), **bn(f"{p}.downsample.1", width)})
            cin = width
    state.update({"fc.weight": t(1000, 512), "fc.bias": t(1000)})
    return state


def test_torchvision_resnet18_weights_map_onto_the_backbone(tmp_path):
    rng = np.random.default_rng(3)
    state = _torchvision_resnet18_state(rng)
    path = tmp_path / "resnet18.pth"
    torch.save(state, path)
    model = build_model("resnet2d", "resnet18", input_shape=(3, 32, 15))  # 1 chart channel + 2 symbol planes
    before = {k: v.clone() for k, v in model.state_dict().items()}
    report = load_backbone_weights(model, path, image_channels=1)
    assert sorted(report.skipped) == [("fc.bias", "not a backbone tensor"), ("fc.weight", "not a backbone tensor")]
    assert len(report.loaded) == len(state) - 2 and report.adapted == ["body.0.weight"]
    own = model.state_dict()
    assert torch.equal(own["body.4.main.0.weight"], state["layer1.0.conv1.weight"])
    assert torch.equal(own["body.6.shortcut.1.running_var"], state["layer2.0.downsample.1.running_var"])
    assert torch.equal(own["body.11.main.4.bias"], state["layer4.1.bn2.bias"])
    stem = own["body.0.weight"]
    torch.testing.assert_close(stem[:, 0], state["conv1.weight"].sum(1))  # RGB summed onto the chart channel
    assert torch.equal(stem[:, 1:], before["body.0.weight"][:, 1:])  # symbol planes keep their init
    body = {k for k in own if k.startswith("body.")}
    assert set(report.loaded) == body  # every backbone tensor came from the file
    assert all(torch.equal(own[k], before[k]) for k in own if k.startswith("head."))

    with pytest.raises(ValueError, match=r"resnet18\.pth: no tensor matches .*CONVTRADE_MODEL_VARIANT=resnet18"):
        load_backbone_weights(build_model("resnet2d", "default", input_shape=(3, 32, 15)), path, 1)


def test_own_artifact_weights_load_and_bad_files_fail_naming_the_file(tmp_path):
    store = _fake_store(np.random.default_rng(4))
    source = _module(store, seed=5)
    path = tmp_path / "weights.safetensors"
    state = {k: v.contiguous() for k, v in source.state_dict().items()}
    state["model.body.4.main.0.weight"] = torch.zeros(3, 3)  # one tensor of another shape
    save_file(state, path)
    target = _module(store, seed=6)
    report = load_backbone_weights(target.model, path, 1)
    assert ("model.body.4.main.0.weight", "shape differs") in report.skipped
    assert any(k.startswith("model.head.") and why == "not a backbone tensor" for k, why in report.skipped)
    assert ("center", "not a backbone tensor") in report.skipped
    got = target.model.state_dict()
    for k in report.loaded:
        assert torch.equal(got[k], source.model.state_dict()[k])
    assert "body.4.main.0.weight" not in report.loaded and len(report.loaded) > 10
    assert "loaded" in report.summary() and "skipped" in report.summary()

    missing = tmp_path / "nowhere.pth"
    with pytest.raises(FileNotFoundError, match="nowhere.pth: no such file"):
        load_backbone_weights(target.model, missing)
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a state dict")
    with pytest.raises(ValueError, match="garbage.pth: unreadable"):
        load_backbone_weights(target.model, garbage)
    unrelated = tmp_path / "unrelated.safetensors"
    save_file({"encoder.weight": torch.zeros(2, 2)}, unrelated)
    with pytest.raises(ValueError, match="unrelated.safetensors: no tensor matches"):
        load_backbone_weights(target.model, unrelated)

    # through the fold hook: no pre-training epoch, the backbone is the file's (the report says so)
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, path)
    body, report = _pretrain(store, tmp_path / "fold", epochs=0, weights=str(path))
    assert report["curve"] == [] and report["weights"]["path"] == str(path)
    src = source.model.body.state_dict()
    assert _same(body, {k: src[k] for k in body})


def test_pretrain_settings_are_checked():
    assert Settings().pretrain_epochs >= 1 and Settings().pretrained_weights == ""
    for bad, match in [({"pretrain_temperature": 0.0}, "CONVTRADE_PRETRAIN_TEMPERATURE"),
                       ({"pretrain_batch_size": 1}, "CONVTRADE_PRETRAIN_BATCH_SIZE"),
                       ({"pretrain_max_images": 1}, "CONVTRADE_PRETRAIN_MAX_IMAGES"),
                       ({"pretrain_epochs": -1}, "CONVTRADE_PRETRAIN_EPOCHS"),
                       ({"pretrained_weights": "weights.txt"}, "CONVTRADE_PRETRAINED_WEIGHTS")]:
        with pytest.raises(ValueError, match=match):
            Settings(**bad)
    s = Settings.from_env({"CONVTRADE_PRETRAINED_WEIGHTS": "/x/r18.pth", "CONVTRADE_PRETRAIN_EPOCHS": "0"})
    config = TrainingConfig.from_settings(s, "resnet2d_candlestick_simclr")
    assert config.pretrain == PretrainConfig(epochs=0, weights="/x/r18.pth")
    assert TrainingConfig.from_settings(s, "resnet2d_candlestick").pretrain is None  # the scratch twin stays scratch


@pytest.fixture(scope="module")
def chart_warehouse(tmp_path_factory, make_synthetic_market, make_labels):
    resources = make_synthetic_market(tmp_path_factory.mktemp("pretrain"), 20, [raw_candles])
    settings = resources["settings"].settings()
    wh = resources["warehouse"].warehouse()
    make_labels(wh)
    build_encoding(wh, settings, "candlestick_20", log=lambda _: None)
    return wh, settings


def test_transfer_model_fine_tunes_through_the_walk_forward(chart_warehouse):
    wh, settings = chart_warehouse
    name = "resnet2d_candlestick_simclr"
    assert name in PRETRAINED_IMAGE_MODELS and IMAGE_MODELS[name] == IMAGE_MODELS["resnet2d_candlestick"]
    config = TrainingConfig.from_settings(settings, name, n_folds=2, epochs=1, embargo=2, max_train_windows=128,
                                          batch_size=64, train_min_fraction=0.5, threads=1,
                                          pretrain=PretrainConfig(epochs=1, max_images=128, batch_size=64))
    lines = []
    outcome = train_architecture(wh, settings, config, log=lines.append, live_refit=False)
    assert outcome.registry.height == 2 and outcome.weights_finite
    assert sum("pretrain epoch 1/1: NT-Xent" in line for line in lines) == 2  # once per fold
    counts = store_training(wh, outcome)
    assert counts["predictions.oos"] == outcome.predictions.height
    images = []
    for row in outcome.registry.iter_rows(named=True):
        metrics = json.loads(row["metrics"])
        assert outcome.predictions.filter(pl.col("model_id") == row["model_id"]).height == metrics["n_test"] > 0
        folder = Path(row["artifact_path"])
        report = json.loads((folder / PRETRAIN_REPORT).read_text())
        end = int(np.datetime64(row["train_end"], "ms").astype(np.int64))
        assert report["train_end_ms"] == end  # pre-trained on the fold's training span, nothing later
        images.append(report["images"])
        cfg = json.loads((folder / "config.json").read_text())
        assert cfg["training"]["pretrain"]["epochs"] == 1 and cfg["model"] == "resnet2d"
        assert (folder / PRETRAIN_FILE).exists() and (folder / "weights.safetensors").exists()
    assert images[1] > images[0]  # the expanding span: the later fold pre-trains on more history
