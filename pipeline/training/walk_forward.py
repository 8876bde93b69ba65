"""Walk-forward training of one zoo architecture: folds in time, pooled symbols, artifacts, registry rows.

Folds are cut on the sorted distinct timestamps of the valid samples of all
symbols (:func:`pipeline.training.splits.walk_forward_splits` over that time
grid, purge = horizon, plus the embargo), so fold boundaries are timestamps
shared by every symbol. Each fold's training time ends in a validation tail
(after another purge) used for early stopping and for fitting the edge rule;
the test block chooses nothing.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import subprocess
import time
from pathlib import Path
from typing import Callable

import numpy as np
import polars as pl
import torch
from safetensors.torch import load_file, save_file

from pipeline.backtest.costs import CostModel
from pipeline.backtest.signals import fit_edge_rule, round_trip_cost_of
from pipeline.config import Settings
from pipeline.models.registry import build_model
from pipeline.training.augment import augment_batch, parse_augmentations
from pipeline.training.datasets import WindowStore, build_window_store, load_series, robust_stats
from pipeline.training.losses import LossConfig, balanced_class_weights, multitask_loss
from pipeline.training.pretrain import ChartAugment, PretrainConfig, augment_charts, initialise_backbone
from pipeline.training.splits import validation_tail, walk_forward_splits

SEQUENCE_ARCHITECTURES: tuple[str, ...] = ("wavenet", "tcn", "resnet1d", "densenet1d", "convnext1d", "inception")
# Image models: asset / registry name -> (zoo architecture, encoding it is trained on). They go through the same
# folds, loss, edge rule and backtest as the sequence models, on an ImageStore instead of a WindowStore.
IMAGE_MODELS: dict[str, tuple[str, str]] = {
    "cnn_ta": ("cnn_ta", "indicator_image"),
    "resnet2d_gaf": ("resnet2d", "gaf"),
    "resnet2d_candlestick": ("resnet2d", "candlestick_20"),
    "orderbook_net": ("orderbook_net", "orderbook_heatmap"),
    "resnet2d_candlestick_simclr": ("resnet2d", "candlestick_20"),
}
# Transfer models: their backbone starts from a per-fold SimCLR pre-training (pipeline.training.pretrain) on the
# fold's training-span images, then fine-tunes as any model; the scratch twin (resnet2d_candlestick) is compared.
PRETRAINED_IMAGE_MODELS: tuple[str, ...] = ("resnet2d_candlestick_simclr",)
ARTIFACT_FORMAT = 1


@dataclasses.dataclass(frozen=True)
class TrainingConfig:
    """One architecture's training recipe. Defaults are :class:`pipeline.config.Settings`' (one home for them);
    :meth:`from_settings` takes every value from the settings in force."""

    architecture: str
    variant: str = Settings.model_variant
    window: int = Settings.window
    horizon: int = Settings.horizon
    n_folds: int = Settings.n_folds
    epochs: int = Settings.epochs
    batch_size: int = Settings.batch_size
    learning_rate: float = Settings.learning_rate
    weight_decay: float = Settings.weight_decay
    patience: int = Settings.patience
    seed: int = Settings.training_seed
    pooled: bool = Settings.pooled
    train_min_fraction: float = Settings.train_min_fraction
    embargo: int = Settings.embargo_bars
    validation_fraction: float = Settings.validation_fraction
    rolling: bool = Settings.rolling_train
    warmup_epochs: float = Settings.warmup_epochs
    grad_clip: float = Settings.grad_clip
    max_train_windows: int = Settings.max_train_windows
    class_weighting: str = Settings.class_weighting
    label_smoothing: float = Settings.label_smoothing
    return_weight: float = Settings.return_loss_weight
    volatility_weight: float = Settings.volatility_loss_weight
    sharpe_weight: float = Settings.sharpe_loss_weight
    augment: tuple[str, ...] = ()
    model: str = ""  # zoo architecture when it differs from the registry name (image models)
    encoding: str = ""  # the image encoding an image model trains on ("": sequence windows)
    threads: int = Settings.training_threads  # torch threads while training; 0: default_threads()
    pretrain: PretrainConfig | None = None  # transfer models: the backbone's pre-training (None: from scratch)

    @classmethod
    def from_settings(cls, settings, architecture: str, **overrides) -> "TrainingConfig":
        values = dict(
            architecture=architecture, variant=settings.model_variant, window=settings.window,
            horizon=settings.horizon, n_folds=settings.n_folds, epochs=settings.epochs,
            batch_size=settings.batch_size, learning_rate=settings.learning_rate,
            weight_decay=settings.weight_decay, patience=settings.patience, seed=settings.training_seed,
            pooled=settings.pooled, train_min_fraction=settings.train_min_fraction, embargo=settings.embargo_bars,
            validation_fraction=settings.validation_fraction, rolling=settings.rolling_train,
            warmup_epochs=settings.warmup_epochs, grad_clip=settings.grad_clip,
            max_train_windows=settings.max_train_windows, class_weighting=settings.class_weighting,
            label_smoothing=settings.label_smoothing, return_weight=settings.return_loss_weight,
            volatility_weight=settings.volatility_loss_weight, sharpe_weight=settings.sharpe_loss_weight,
            augment=parse_augmentations(settings.augment), threads=settings.training_threads,
        )
        if architecture in IMAGE_MODELS:
            values["model"], values["encoding"] = IMAGE_MODELS[architecture]
        if architecture in PRETRAINED_IMAGE_MODELS:
            values["pretrain"] = PretrainConfig.from_settings(settings)
        values.update(overrides)
        return cls(**values)

    @property
    def zoo_name(self) -> str:
        return self.model or self.architecture

    @property
    def loss(self) -> LossConfig:
        return LossConfig(self.class_weighting, self.label_smoothing, 2.0, self.return_weight,
                          self.volatility_weight, self.sharpe_weight)


@dataclasses.dataclass
class TrainingOutcome:
    architecture: str
    registry: pl.DataFrame
    predictions: pl.DataFrame
    fold_table: list[dict]
    loss_curves: dict[int, list[dict]]
    dropped: dict[str, int]
    weights_finite: bool
    train_seconds: float
    skipped: str | None = None  # why nothing was trained (no sample at all), else None


class InferenceModel(torch.nn.Module):
    """Raw (unnormalised) windows in; logits, expected return, volatility and confidence out (real units)."""

    def __init__(self, model: torch.nn.Module, center: np.ndarray, scale: np.ndarray, ret_scale: float,
                 vol_scale: float, spatial_dims: int = 1):
        super().__init__()
        self.model = model
        shape = (1, -1) + (1,) * spatial_dims  # per channel over (time) or (height, width)
        self.register_buffer("center", torch.as_tensor(center, dtype=torch.float32).view(*shape))
        self.register_buffer("scale", torch.as_tensor(scale, dtype=torch.float32).view(*shape))
        self.register_buffer("target_scale", torch.tensor([ret_scale, vol_scale], dtype=torch.float32))

    def normalise(self, x: torch.Tensor) -> torch.Tensor:
        # contiguous: a gathered window batch has the time axis strided by the channel count, and
        # the convolutions run up to ~1.5x slower on that layout (bench/training.py)
        return ((x - self.center) / self.scale).contiguous()

    def forward(self, x: torch.Tensor):
        out = self.model(self.normalise(x))
        return (out.direction_logits, out.expected_return * self.target_scale[0],
                out.expected_volatility * self.target_scale[1], out.confidence)


def code_version() -> str:
    try:
        return subprocess.run(["git", "describe", "--always", "--dirty"], capture_output=True, text=True,
                              cwd=Path(__file__).parent, timeout=10).stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def time_folds(store: WindowStore, config: TrainingConfig):
    """Folds over the distinct sample timestamps: (fold, fit ts, val ts, test ts) as index arrays of samples."""
    grid = np.unique(store.sample_ts_ms)
    n = grid.shape[0]
    train_min = max(1, int(n * config.train_min_fraction))
    folds = walk_forward_splits(n, config.n_folds, train_min, purge=config.horizon, embargo=config.embargo,
                                rolling=config.rolling)
    pos = np.searchsorted(grid, store.sample_ts_ms)
    out = []
    for fold in folds:
        fit_t, val_t = validation_tail(fold.train, config.validation_fraction, purge=config.horizon)
        pick = lambda t: np.flatnonzero((pos >= t[0]) & (pos <= t[-1]))  # noqa: E731
        out.append((fold, pick(fit_t), pick(val_t), pick(fold.test), grid))
    return out


def default_threads() -> int:
    """Half the logical CPUs (the physical cores of an SMT machine), at least 1.

    Measured on the 2-core development machine with other work running: a
    small convolution step at 2 threads ran at 57 windows/s against 690 at 1
    thread (OpenMP threads spin at every barrier while a sibling is
    descheduled). One thread per physical core avoids that cliff.
    """
    return max(1, (os.cpu_count() or 2) // 2)


def _lr_lambda(total_steps: int, warmup_steps: int):
    def f(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / max(1, warmup_steps)
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    return f


def _tensors(store: WindowStore, samples: np.ndarray, ret_scale: float, vol_scale: float):
    return (torch.as_tensor(store.label_class[samples]),
            torch.as_tensor(store.fwd_return[samples] / ret_scale, dtype=torch.float32),
            torch.as_tensor(store.fwd_volatility[samples] / vol_scale, dtype=torch.float32))


@torch.no_grad()
def predict(module: InferenceModel, store: WindowStore, samples: np.ndarray, batch_size: int = 1024):
    """(proba (n, 3), expected return, volatility, confidence) for the given samples, in eval mode."""
    module.eval()
    outs = [[], [], [], []]
    for i in range(0, samples.shape[0], batch_size):
        x = torch.from_numpy(store.gather(store.sample_rows[samples[i:i + batch_size]]))
        logits, ret, vol, conf = module(x)
        for acc, v in zip(outs, (logits.softmax(1), ret, vol, conf)):
            acc.append(v.numpy().astype(np.float64))
    if not samples.shape[0]:
        return np.zeros((0, 3)), np.zeros(0), np.zeros(0), np.zeros(0)
    return tuple(np.concatenate(o) for o in outs)


def _evaluate_loss(module, store, samples, targets, config, class_weights, batch_size) -> tuple[float, float]:
    module.eval()
    total, correct, n = 0.0, 0, samples.shape[0]
    with torch.no_grad():
        for i in range(0, n, batch_size):
            sl = slice(i, i + batch_size)
            x = module.normalise(torch.from_numpy(store.gather(store.sample_rows[samples[sl]])))
            out = module.model(x)
            cls, ret, vol = (t[sl] for t in targets)
            total += float(multitask_loss(out, cls, ret, vol, config.loss, class_weights)) * cls.shape[0]
            correct += int((out.direction_logits.argmax(1) == cls).sum())
    return total / max(1, n), correct / max(1, n)


def train_fold(store: WindowStore, config: TrainingConfig, fold_index: int, fit: np.ndarray, val: np.ndarray,
               out_dir: Path, log: Callable[[str], None] = print) -> tuple[InferenceModel, list[dict], dict]:
    """Train one fold (resuming from ``out_dir/checkpoint.pt`` when present); returns the best model."""
    torch.set_num_threads(config.threads or default_threads())
    try:
        torch.use_deterministic_algorithms(True)
    except RuntimeError:
        pass
    out_dir.mkdir(parents=True, exist_ok=True)
    # An epoch is at most max_train_windows windows, drawn afresh each epoch from the whole training span
    # (not the newest ones only), so a long history costs no more per epoch and is all seen.
    per_epoch = min(fit.shape[0], config.max_train_windows) if config.max_train_windows else fit.shape[0]
    fit_rows = store.sample_rows[fit]
    if hasattr(store, "fit_row_scaling") and config.encoding == "indicator_image":
        store.row_scaling = store.fit_row_scaling(fit_rows)  # CNN-TA: per indicator, on this fold's training rows
    center, scale = robust_stats(store, fit_rows)
    ret_scale = float(np.std(store.fwd_return[fit])) or 1.0
    vol_scale = float(np.mean(store.fwd_volatility[fit])) or 1.0
    torch.manual_seed(config.seed)
    shape = input_shape_of(store)
    model = build_model(config.zoo_name, config.variant, input_shape=shape)
    module = InferenceModel(model, center, scale, ret_scale, vol_scale, spatial_dims=len(shape) - 1)
    if config.pretrain is not None:  # transfer model: the backbone starts pre-trained (this fold's past only)
        initialise_backbone(module, store, config, fold_index, fit, val, out_dir, log)
    class_weights = balanced_class_weights(store.label_class[fit])
    fit_t = _tensors(store, fit, ret_scale, vol_scale)
    val_t = _tensors(store, val, ret_scale, vol_scale)
    opt = torch.optim.AdamW(module.model.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)
    steps_per_epoch = max(1, math.ceil(per_epoch / config.batch_size))
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, _lr_lambda(steps_per_epoch * config.epochs, int(config.warmup_epochs * steps_per_epoch)))
    curve: list[dict] = []
    best = {"val_loss": math.inf, "epoch": -1, "state": None}
    start_epoch, bad_epochs = 0, 0
    ckpt_path = out_dir / "checkpoint.pt"
    # A checkpoint resumes only the same fold: same config, data and samples (else it is stale: retrain).
    key = hashlib.sha256(json.dumps([dataclasses.asdict(config), store.fingerprint, fold_index], default=list)
                         .encode() + fit.tobytes() + val.tobytes()).hexdigest()
    ckpt = torch.load(ckpt_path, weights_only=True) if ckpt_path.exists() else None
    if ckpt is not None and ckpt.get("key") != key:
        log(f"{config.architecture} fold {fold_index}: {ckpt_path} is from other data or settings; training afresh")
        ckpt = None
    shapes = {name: tuple(t.shape) for name, t in module.model.state_dict().items()}
    if ckpt is not None and {name: tuple(t.shape) for name, t in ckpt["model"].items()} != shapes:
        # same settings and data, other model code (e.g. a changed head): the checkpoint cannot resume it
        log(f"{config.architecture} fold {fold_index}: {ckpt_path} holds another network (its tensors differ from "
            "this code's model); training afresh")
        ckpt = None
    if ckpt is not None:
        module.model.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["optimizer"])
        sched.load_state_dict(ckpt["scheduler"])
        start_epoch, bad_epochs = int(ckpt["epoch"]) + 1, int(ckpt["bad_epochs"])
        curve = json.loads(ckpt["curve"])
        best = {"val_loss": float(ckpt["best_val_loss"]), "epoch": int(ckpt["best_epoch"]), "state": ckpt["best_state"]}
        log(f"{config.architecture} fold {fold_index}: resumed from {ckpt_path} after epoch {start_epoch - 1}")
    n_fixed = len(store.symbols)
    # Image models: CONVTRADE_AUGMENT (any name) turns on the chart-preserving views of the SimCLR pre-training
    # (pipeline.training.pretrain: leftmost bars blanked, never the newest; price area shifted; pixel dropout;
    # noise) on the raw pixels of training batches; defined for candlestick charts only (else an error here).
    chart_aug = ChartAugment.for_encoding(config.encoding) if config.encoding and config.augment else None
    for epoch in range(start_epoch, config.epochs):
        if bad_epochs >= config.patience:
            break
        rng = np.random.default_rng([config.seed, fold_index, epoch])
        gen = torch.Generator().manual_seed(config.seed * 100003 + fold_index * 1009 + epoch)
        torch.manual_seed(config.seed * 7919 + fold_index * 101 + epoch)
        order = rng.permutation(fit.shape[0])[:per_epoch]
        module.train()
        t0, total, seen = time.perf_counter(), 0.0, 0
        for i in range(0, order.shape[0], config.batch_size):
            idx = order[i:i + config.batch_size]
            x = torch.from_numpy(store.gather(fit_rows[idx]))
            if chart_aug is not None:  # chart views act on raw pixels, before the scaling
                x = module.normalise(augment_charts(x, chart_aug, gen, store.n_feature_channels))
            else:
                x = augment_batch(module.normalise(x), config.augment, gen, n_fixed)
            cls, ret, vol = (t[idx] for t in fit_t)
            out = module.model(x)
            loss = multitask_loss(out, cls, ret, vol, config.loss, class_weights)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if config.grad_clip:
                torch.nn.utils.clip_grad_norm_(module.model.parameters(), config.grad_clip)
            opt.step()
            sched.step()
            total += float(loss.detach()) * idx.shape[0]
            seen += idx.shape[0]
        elapsed = time.perf_counter() - t0
        val_loss, val_acc = _evaluate_loss(module, store, val, val_t, config, class_weights, 1024)
        row = {"epoch": epoch, "train_loss": total / max(1, seen), "val_loss": val_loss, "val_accuracy": val_acc,
               "windows_per_s": seen / max(elapsed, 1e-9)}
        curve.append(row)
        if val_loss < best["val_loss"] - 1e-6:
            best = {"val_loss": val_loss, "epoch": epoch,
                    "state": {k: v.detach().clone() for k, v in module.model.state_dict().items()}}
            bad_epochs = 0
        else:
            bad_epochs += 1
        torch.save({"key": key, "model": module.model.state_dict(), "optimizer": opt.state_dict(),
                    "scheduler": sched.state_dict(), "epoch": epoch, "bad_epochs": bad_epochs,
                    "curve": json.dumps(curve), "best_val_loss": best["val_loss"], "best_epoch": best["epoch"],
                    "best_state": best["state"]}, ckpt_path)
        log(f"{config.architecture} fold {fold_index} epoch {epoch + 1}/{config.epochs}: loss {row['train_loss']:.4f} "
            f"val loss {val_loss:.4f} val acc {val_acc:.3f} {row['windows_per_s']:.0f} windows/s")
    if best["state"] is not None:
        module.model.load_state_dict(best["state"])
    module.eval()
    info = {"epochs_run": len(curve), "best_epoch": best["epoch"] + 1, "best_val_loss": best["val_loss"],
            "ret_scale": ret_scale, "vol_scale": vol_scale,
            "center": center.tolist(), "scale": scale.tolist()}
    return module, curve, info


def input_shape_of(store) -> tuple[int, ...]:
    """(channels, length) of a WindowStore, (channels, height, width) of an ImageStore."""
    return tuple(int(v) for v in store.input_shape) if hasattr(store, "input_shape") else (
        len(store.channels), int(store.window))


def save_artifact(module: InferenceModel, config: TrainingConfig, store: WindowStore, info: dict, out_dir: Path,
                  extra: dict) -> Path:
    """weights.safetensors + config.json + program.pt2 (torch.export; a failure is recorded in the config)."""
    save_file({k: v.contiguous() for k, v in module.state_dict().items()}, out_dir / "weights.safetensors")
    export_error = None
    try:
        example = torch.from_numpy(np.ascontiguousarray(store.gather(store.sample_rows[:4])))
        program = torch.export.export(module.eval(), (example,),
                                      dynamic_shapes={"x": {0: torch.export.Dim("batch", min=1, max=65536)}})
        torch.export.save(program, out_dir / "program.pt2")
    except Exception as exc:  # noqa: BLE001 - recorded: which architectures do not export, and why
        export_error = f"{type(exc).__name__}: {exc}"[:2000]
    cfg = {
        "format": ARTIFACT_FORMAT, "architecture": config.architecture, "variant": config.variant,
        "window": int(store.window), "horizon": config.horizon, "channels": store.channels,
        "feature_columns": store.feature_columns, "symbols": store.symbols,
        "in_channels": len(store.channels), "input_shape": list(input_shape_of(store)),
        "model": config.zoo_name, "encoding": config.encoding or None,
        "row_scaling": (store.row_scaling.as_config() if getattr(store, "row_scaling", None) is not None else None),
        "normalisation": {"kind": "robust_zscore", "center": info["center"], "scale": info["scale"]},
        "target_scale": {"return": info["ret_scale"], "volatility": info["vol_scale"]},
        "data_fingerprint": store.fingerprint, "code_version": code_version(),
        "training": {k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(config).items()},
        "export": {"program": None if export_error else "program.pt2", "error": export_error},
        **extra,
    }
    (out_dir / "config.json").write_text(json.dumps(cfg, indent=1))
    return out_dir


def load_artifact(path: Path) -> InferenceModel:
    """Rebuild a fold's model from config.json and weights.safetensors (no pickle)."""
    path = Path(path)
    cfg = json.loads((path / "config.json").read_text())
    shape = tuple(cfg.get("input_shape") or (cfg["in_channels"], cfg["window"]))
    model = build_model(cfg.get("model") or cfg["architecture"], cfg["variant"], input_shape=shape)
    norm = cfg["normalisation"]
    module = InferenceModel(model, np.array(norm["center"]), np.array(norm["scale"]),
                            cfg["target_scale"]["return"], cfg["target_scale"]["volatility"],
                            spatial_dims=len(shape) - 1)
    module.load_state_dict(load_file(path / "weights.safetensors"))
    return module.eval()


def _log_loss(proba: np.ndarray, cls: np.ndarray) -> float:
    p = np.clip(proba[np.arange(cls.shape[0]), cls], 1e-12, 1.0)
    return float(-np.log(p).mean()) if cls.shape[0] else float("nan")


def _ts(ms) -> "np.datetime64":
    return np.datetime64(int(ms), "ms").astype("datetime64[us]").item()


def train_architecture(warehouse, settings, config: TrainingConfig, trigger: str = "manual",
                       log: Callable[[str], None] = print) -> TrainingOutcome:
    """Every fold of one architecture (pooled, or one model per symbol); see the module docstring."""
    t_start = time.perf_counter()
    interval = settings.intervals[0]
    if config.encoding:  # image models: the encoding's images of every symbol, pooled
        from pipeline.training.images import build_image_store

        if not config.pooled:
            raise ValueError(f"{config.architecture}: image models train pooled over the symbols "
                             "(CONVTRADE_POOLED=false is for sequence models)")
        groups = [None]
    else:
        series = [load_series(warehouse, s, interval, config.horizon) for s in settings.symbols]  # then no connection
        groups = [series] if config.pooled else [[s] for s in series]
    rt_cost = round_trip_cost_of(CostModel.from_settings(settings))
    registry, preds, table, curves = [], [], [], {}
    dropped = {"warmup": 0, "gap": 0, "unknown_label": 0}
    finite = True
    skipped_reasons: list[str] = []
    for group in groups:
        store = (build_image_store(warehouse, settings, config.encoding, config.horizon) if group is None
                 else build_window_store(group, settings.artifacts_dir, config.window, config.horizon))
        for k in dropped:
            dropped[k] += store.dropped[k]
        scope = "pooled" if config.pooled else group[0].symbol
        what = f"encoding {config.encoding}" if config.encoding else "features.candle_features"
        if store.sample_rows.shape[0] == 0:
            log(f"{config.architecture}: no usable sample in {what} for {scope} (dropped {store.dropped}); "
                "nothing trained")
            continue
        try:
            folds = time_folds(store, config)
        except ValueError as exc:  # too little history for the folds (e.g. a short order-book sample)
            log(f"{config.architecture}: {store.sample_rows.shape[0]} samples in {what} for {scope} are too few "
                f"for {config.n_folds} walk-forward folds ({exc}); nothing trained")
            skipped_reasons.append(f"{scope}: {store.sample_rows.shape[0]} samples, too few for the folds: {exc}")
            continue
        for fold, fit, val, test, grid in folds:
            k = fold.index
            model_id = f"{config.architecture}-{config.variant}-{interval}-h{config.horizon}-{scope}-fold{k}"
            out_dir = Path(settings.artifacts_dir) / "models" / config.architecture / (
                f"fold_{k}" if config.pooled else f"{scope}_fold_{k}")
            t0 = time.perf_counter()
            module, curve, info = train_fold(store, config, k, fit, val, out_dir, log)
            seconds = time.perf_counter() - t0
            finite &= all(bool(torch.isfinite(p).all()) for p in module.state_dict().values())
            pv = predict(module, store, val)
            rule = fit_edge_rule(pv[0], store.fwd_return[val], store.label_class[val], rt_cost,
                                 horizon=config.horizon)
            pt = predict(module, store, test)
            y = store.label_class[test]
            prior = np.bincount(store.label_class[fit], minlength=3) / max(1, fit.shape[0])
            prior = np.clip(prior, 1e-12, 1)
            metrics = {
                "edge_rule": rule.as_config(), "oos_log_loss": _log_loss(pt[0], y),
                "prior_log_loss": _log_loss(np.tile(prior, (y.shape[0], 1)), y),
                "oos_accuracy": float((pt[0].argmax(1) == y).mean()) if y.size else float("nan"),
                "majority_accuracy": float((y == int(prior.argmax())).mean()) if y.size else float("nan"),
                "n_test": int(y.shape[0]), "n_fit": int(fit.shape[0]), "n_val": int(val.shape[0]),
                "train_seconds": seconds, "epochs_run": info["epochs_run"], "best_val_loss": info["best_val_loss"],
                "dropped": store.dropped,
            }
            train_range = (grid[fold.train[0]], grid[fold.train[-1]])
            test_range = (grid[fold.test[0]], grid[fold.test[-1]])
            save_artifact(module, config, store, info, out_dir, {"model_id": model_id, "fold": k,
                                                                 "train_range_ms": [int(v) for v in train_range],
                                                                 "test_range_ms": [int(v) for v in test_range]})
            registry.append({
                "model_id": model_id, "architecture": config.architecture, "variant": config.variant,
                "symbol": ",".join(store.symbols), "interval": interval, "fold": k,
                "train_start": _ts(train_range[0]), "train_end": _ts(train_range[1]),
                "test_start": _ts(test_range[0]), "test_end": _ts(test_range[1]),
                "data_fingerprint": store.fingerprint, "metrics": json.dumps(metrics),
                "artifact_path": str(out_dir), "trigger": trigger,
            })
            preds.append(pl.DataFrame({
                "model_id": [model_id] * test.shape[0],
                "symbol": np.array(store.symbols)[store.sample_symbol[test]],
                "interval": [interval] * test.shape[0],
                "ts": pl.Series(store.sample_ts_ms[test]).cast(pl.Datetime("ms")).cast(pl.Datetime("us")),
                "p_down": pt[0][:, 0], "p_flat": pt[0][:, 1], "p_up": pt[0][:, 2],
                "expected_return": pt[1], "expected_volatility": pt[2], "confidence": pt[3],
            }))
            table.append({"fold": k, "scope": scope, "train_start": str(_ts(train_range[0])),
                          "train_end": str(_ts(train_range[1])), "test_start": str(_ts(test_range[0])),
                          "test_end": str(_ts(test_range[1])), "epochs_run": info["epochs_run"],
                          "best_val_loss": info["best_val_loss"], "oos_accuracy": metrics["oos_accuracy"],
                          "majority_accuracy": metrics["majority_accuracy"], "oos_log_loss": metrics["oos_log_loss"],
                          "prior_log_loss": metrics["prior_log_loss"], "n_test": metrics["n_test"],
                          "train_seconds": seconds})
            curves[k if config.pooled else len(curves)] = curve
    if not registry:
        return TrainingOutcome(
            architecture=config.architecture, registry=pl.DataFrame(schema=REGISTRY_SCHEMA),
            predictions=pl.DataFrame(schema=PREDICTION_SCHEMA), fold_table=[], loss_curves={}, dropped=dropped,
            weights_finite=True, train_seconds=time.perf_counter() - t_start,
            skipped="; ".join(skipped_reasons) or f"no usable sample (dropped {dropped})")
    return TrainingOutcome(
        architecture=config.architecture,
        registry=pl.DataFrame(registry).with_columns(pl.col("fold").cast(pl.Int32)),
        predictions=pl.concat(preds), fold_table=table, loss_curves=curves, dropped=dropped,
        weights_finite=finite, train_seconds=time.perf_counter() - t_start,
    )


REGISTRY_SCHEMA = {"model_id": pl.String, "architecture": pl.String, "variant": pl.String, "symbol": pl.String,
                   "interval": pl.String, "fold": pl.Int32, "train_start": pl.Datetime("us"),
                   "train_end": pl.Datetime("us"), "test_start": pl.Datetime("us"), "test_end": pl.Datetime("us"),
                   "data_fingerprint": pl.String, "metrics": pl.String, "artifact_path": pl.String,
                   "trigger": pl.String}
PREDICTION_SCHEMA = {"model_id": pl.String, "symbol": pl.String, "interval": pl.String, "ts": pl.Datetime("us"),
                     "p_down": pl.Float64, "p_flat": pl.Float64, "p_up": pl.Float64, "expected_return": pl.Float64,
                     "expected_volatility": pl.Float64, "confidence": pl.Float64}


def store_training(warehouse, outcome: TrainingOutcome) -> dict[str, int]:
    """Replace this architecture's registry rows and predictions in one transaction."""
    from pipeline.warehouse import Replacement

    arch = outcome.architecture
    ids = outcome.registry["model_id"].to_list()
    warehouse.replace_tables([
        Replacement("predictions.oos", outcome.predictions,
                    "model_id in (select model_id from models.registry where architecture = ?) "
                    "or list_contains(?::varchar[], model_id)", [arch, ids]),
        Replacement("models.registry", outcome.registry, "architecture = ?", [arch]),
    ])
    return {"models.registry": outcome.registry.height, "predictions.oos": outcome.predictions.height}
