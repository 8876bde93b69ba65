"""Walk-forward training of one trained model: folds in time, pooled symbols, the fold loop (artifacts:
:mod:`pipeline.training.artifacts`, the recipe: :mod:`pipeline.training.recipe`, rows: :mod:`pipeline.training.results`).

Folds are cut on the sorted distinct timestamps of the valid samples of all
symbols (:func:`pipeline.core.splits.walk_forward_splits` over that time
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
import time
from pathlib import Path
from typing import Callable

import numpy as np
import polars as pl
import torch

from pipeline.core.columns import FEATURES_TABLE
from pipeline.core.costs import CostModel
from pipeline.core.positions import fit_edge_rule, round_trip_cost_of
from pipeline.core.splits import validation_tail, walk_forward_splits
from pipeline.models.zoo import build_model
from pipeline.training.artifacts import (artifact_hashes, atomic_write, code_version, input_shape_of, save_artifact,
                                         source_digest)
from pipeline.training.augment import augment_batch
from pipeline.training.datasets import WindowStore, build_window_store, load_series, robust_stats
from pipeline.training.inference import InferenceModel, predict
from pipeline.training.losses import balanced_class_weights, multitask_loss
from pipeline.training.pretrain import ChartAugment, augment_charts, initialise_backbone
from pipeline.training.recipe import TrainingConfig
from pipeline.training.results import TrainingOutcome


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
    ckpt = None
    if ckpt_path.exists():
        try:
            ckpt = torch.load(ckpt_path, weights_only=True)
        except Exception as exc:  # noqa: BLE001 - truncated or damaged (a kill during an older, in-place save)
            log(f"WARNING {config.architecture} fold {fold_index}: checkpoint {ckpt_path} does not load "
                f"({type(exc).__name__}: {str(exc)[:200]}); discarded, the fold trains afresh")
            ckpt_path.unlink(missing_ok=True)
            ckpt = None
        if ckpt is not None and not isinstance(ckpt, dict):
            log(f"WARNING {config.architecture} fold {fold_index}: checkpoint {ckpt_path} is not a checkpoint; "
                "discarded, the fold trains afresh")
            ckpt = None
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
        state = {"key": key, "model": module.model.state_dict(), "optimizer": opt.state_dict(),
                 "scheduler": sched.state_dict(), "epoch": epoch, "bad_epochs": bad_epochs,
                 "curve": json.dumps(curve), "best_val_loss": best["val_loss"], "best_epoch": best["epoch"],
                 "best_state": best["state"]}
        atomic_write(ckpt_path, lambda tmp: torch.save(state, tmp))  # a kill leaves the previous epoch's
        log(f"{config.architecture} fold {fold_index} epoch {epoch + 1}/{config.epochs}: loss {row['train_loss']:.4f} "
            f"val loss {val_loss:.4f} val acc {val_acc:.3f} {row['windows_per_s']:.0f} windows/s")
    if best["state"] is not None:
        module.model.load_state_dict(best["state"])
    module.eval()
    info = {"epochs_run": len(curve), "best_epoch": best["epoch"] + 1, "best_val_loss": best["val_loss"],
            "ret_scale": ret_scale, "vol_scale": vol_scale,
            "center": center.tolist(), "scale": scale.tolist()}
    return module, curve, info


def _log_loss(proba: np.ndarray, cls: np.ndarray) -> float:
    p = np.clip(proba[np.arange(cls.shape[0]), cls], 1e-12, 1.0)
    return float(-np.log(p).mean()) if cls.shape[0] else float("nan")


def _ts(ms) -> "np.datetime64":
    return np.datetime64(int(ms), "ms").astype("datetime64[us]").item()


def train_architecture(warehouse, settings, config: TrainingConfig, trigger: str = "manual",
                       log: Callable[[str], None] = print, live_refit: bool | None = None,
                       reuse_stored: bool = False) -> TrainingOutcome:
    """Every fold of one architecture (pooled, or one model per symbol), then its live refit on every labelled bar
    (``live_refit``, default ``settings.live_refit``); see the module docstring. One training is one model version: its artifacts go under
    ``artifacts/models/<architecture>/<version>/``. ``reuse_stored``: a version already stored (same code, data and
    settings) is not retrained (the outcome says so: ``skipped`` None, ``version`` set, no rows)."""
    t_start = time.perf_counter()
    interval = settings.intervals[0]
    live_refit = getattr(settings, "live_refit", True) if live_refit is None else live_refit
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
    registry, preds, table, curves, live_rows, test_labels = [], [], [], {}, [], []
    dropped = {"warmup": 0, "gap": 0, "unknown_label": 0}
    finite = True
    skipped_reasons: list[str] = []
    stores = []
    for group in groups:  # every store first: the version is a hash of all their data
        store = (build_image_store(warehouse, settings, config.encoding, config.horizon) if group is None
                 else build_window_store(group, settings.artifacts_dir, config.window, config.horizon))
        for k in dropped:
            dropped[k] += store.dropped[k]
        scope = "pooled" if config.pooled else group[0].symbol
        what = f"encoding {config.encoding}" if config.encoding else FEATURES_TABLE
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
        stores.append((store, scope, folds))
    if not stores:
        return TrainingOutcome.nothing_trained(config.architecture, dropped, time.perf_counter() - t_start,
                                               "; ".join(skipped_reasons) or f"no usable sample (dropped {dropped})")
    code = f"{code_version()}+{source_digest()[:10]}"
    data_fingerprint = ",".join(store.fingerprint for store, _, _ in stores)
    version = model_version(config, code, data_fingerprint, interval, [scope for _, scope, _ in stores])
    version_dir = Path(settings.artifacts_dir) / "models" / config.architecture / version
    if reuse_stored and version_stored(warehouse, config.architecture, interval, version):
        damaged = stored_artifact_problem(warehouse, config.architecture, interval, version)
        if damaged is None:
            log(f"{config.architecture}: version {version} (same code, data and settings) is trained and stored "
                "already; nothing retrained")
            return TrainingOutcome.nothing_trained(config.architecture, dropped, time.perf_counter() - t_start,
                                                   None, version=version)
        log(f"WARNING {config.architecture}: version {version} is stored but {damaged}; training it again")
    log(f"{config.architecture}: version {version} (code {code}, data {data_fingerprint}), artifacts under "
        f"{version_dir}")
    for store, scope, folds in stores:
        for fold, fit, val, test, grid in folds:
            k = fold.index
            model_id = f"{config.architecture}-{config.variant}-{interval}-h{config.horizon}-{scope}-fold{k}-{version}"
            out_dir = version_dir / (f"fold_{k}" if config.pooled else f"{scope}_fold_{k}")
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
            save_artifact(module, config, store, info, out_dir, {"model_id": model_id, "fold": k, "version": version,
                                                                 "train_range_ms": [int(v) for v in train_range],
                                                                 "test_range_ms": [int(v) for v in test_range]})
            registry.append({
                "model_id": model_id, "architecture": config.architecture, "variant": config.variant,
                "symbol": ",".join(store.symbols), "interval": interval, "fold": k,
                "train_start": _ts(train_range[0]), "train_end": _ts(train_range[1]),
                "test_start": _ts(test_range[0]), "test_end": _ts(test_range[1]),
                "data_fingerprint": store.fingerprint, "metrics": json.dumps(metrics),
                "artifact_path": str(out_dir), "trigger": trigger, "version": version, "role": "fold",
                "artifact_sha256": json.dumps(artifact_hashes(out_dir)),
            })
            symbols_of = np.array(store.symbols)[store.sample_symbol[test]]
            ts_of = pl.Series(store.sample_ts_ms[test]).cast(pl.Datetime("ms")).cast(pl.Datetime("us"))
            preds.append(pl.DataFrame({
                "model_id": [model_id] * test.shape[0],
                "symbol": symbols_of,
                "interval": [interval] * test.shape[0],
                "ts": ts_of,
                "p_down": pt[0][:, 0], "p_flat": pt[0][:, 1], "p_up": pt[0][:, 2],
                "expected_return": pt[1], "expected_volatility": pt[2], "confidence": pt[3],
            }))
            test_labels.append(pl.DataFrame({"symbol": symbols_of, "ts": ts_of,
                                             "label_class": store.label_class[test].astype(np.int64),
                                             "fwd_return": store.fwd_return[test].astype(np.float64)}))
            table.append({"fold": k, "scope": scope, "train_start": str(_ts(train_range[0])),
                          "train_end": str(_ts(train_range[1])), "test_start": str(_ts(test_range[0])),
                          "test_end": str(_ts(test_range[1])), "epochs_run": info["epochs_run"],
                          "best_val_loss": info["best_val_loss"], "oos_accuracy": metrics["oos_accuracy"],
                          "majority_accuracy": metrics["majority_accuracy"], "oos_log_loss": metrics["oos_log_loss"],
                          "prior_log_loss": metrics["prior_log_loss"], "n_test": metrics["n_test"],
                          "train_seconds": seconds})
            curves[k if config.pooled else len(curves)] = curve
        if live_refit:
            live_rows.append(_live_refit(store, config, scope, interval, version, version_dir, rt_cost, trigger, log))
        return TrainingOutcome(
        architecture=config.architecture,
        registry=pl.DataFrame(registry).with_columns(pl.col("fold").cast(pl.Int32)),
        predictions=pl.concat(preds), fold_table=table, loss_curves=curves, dropped=dropped,
        weights_finite=finite, train_seconds=time.perf_counter() - t_start,
        version=version, interval=interval, code_version=code, data_fingerprint=data_fingerprint,
        settings=json.dumps(_recipe_json(config)), trigger=trigger,
        live=(pl.DataFrame(live_rows).with_columns(pl.col("fold").cast(pl.Int32)) if live_rows else None),
        test_labels=pl.concat(test_labels), horizon=config.horizon,
    )


def _recipe_json(config: TrainingConfig) -> dict:
    """The recipe as JSON (threads left out: they change the speed, not the model)."""
    values = {k: v for k, v in dataclasses.asdict(config).items() if k != "threads"}
    return json.loads(json.dumps(values, default=list, sort_keys=True))


def model_version(config: TrainingConfig, code: str, data_fingerprint: str, interval: str, scopes) -> str:
    """The version id of a training: a hash of the code version, the data fingerprint and the settings (the same
    training, resumed or repeated, is the same version)."""
    payload = json.dumps({"code": code, "data": data_fingerprint, "settings": _recipe_json(config),
                          "interval": interval, "scopes": list(scopes)}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:12]


def version_stored(warehouse, architecture: str, interval: str, version: str) -> bool:
    """Whether ``version`` is in models.versions with its artifacts (not purged)."""
    if not warehouse.table_exists("models.versions"):
        return False
    rows = warehouse.query("select count(*) as n from models.versions where architecture = ? and interval = ? "
                           "and version = ? and not coalesce(purged, false)", [architecture, interval, version])
    return bool(rows["n"][0])


def stored_artifact_problem(warehouse, architecture: str, interval: str, version: str) -> str | None:
    """Why the stored artifacts of ``version`` cannot be trusted (a file missing or changed: named), else None."""
    from pipeline.training.artifacts import ArtifactError, verify_artifact

    rows = warehouse.query("select artifact_path, cast(artifact_sha256 as varchar) as sha from models.registry "
                           "where architecture = ? and interval = ? and version = ?", [architecture, interval, version])
    for path, sha in rows.iter_rows():
        try:
            verify_artifact(path, sha)
        except ArtifactError as exc:
            return str(exc)
    return None


def _live_refit(store, config: TrainingConfig, scope: str, interval: str, version: str, version_dir: Path,
                rt_cost: float, trigger: str, log: Callable[[str], None]) -> dict:
    """One more model on every labelled sample of ``store``: the newest ``validation_fraction`` of the time grid
    (after a purge of ``horizon`` bars) is its validation tail, for early stopping and the edge rule, as in a fold;
    there is no test block. Its registry row (role ``live``) is what signals use."""
    grid = np.unique(store.sample_ts_ms)
    fit_t, val_t = validation_tail(np.arange(grid.shape[0]), config.validation_fraction, purge=config.horizon)
    pos = np.searchsorted(grid, store.sample_ts_ms)
    fit = np.flatnonzero((pos >= fit_t[0]) & (pos <= fit_t[-1]))
    val = np.flatnonzero((pos >= val_t[0]) & (pos <= val_t[-1]))
    k = config.n_folds  # its own seeds and checkpoint key, apart from the walk-forward folds
    out_dir = version_dir / ("live" if config.pooled else f"{scope}_live")
    model_id = f"{config.architecture}-{config.variant}-{interval}-h{config.horizon}-{scope}-live-{version}"
    t0 = time.perf_counter()
    module, curve, info = train_fold(store, config, k, fit, val, out_dir, log)
    seconds = time.perf_counter() - t0
    pv = predict(module, store, val)
    rule = fit_edge_rule(pv[0], store.fwd_return[val], store.label_class[val], rt_cost, horizon=config.horizon)
    train_range = (int(grid[0]), int(grid[-1]))
    metrics = {"edge_rule": rule.as_config(), "val_log_loss": _log_loss(pv[0], store.label_class[val]),
               "n_fit": int(fit.shape[0]), "n_val": int(val.shape[0]), "train_seconds": seconds,
               "epochs_run": info["epochs_run"], "best_val_loss": info["best_val_loss"],
               "validation_start": str(_ts(grid[val_t[0]])), "dropped": store.dropped}
    save_artifact(module, config, store, info, out_dir, {"model_id": model_id, "fold": None, "role": "live",
                                                         "version": version,
                                                         "train_range_ms": list(train_range), "test_range_ms": None})
    log(f"{config.architecture} live refit ({scope}): trained on {_ts(grid[0])} .. {_ts(grid[-1])} (the newest "
        f"labelled bar; validation tail from {_ts(grid[val_t[0]])}), {info['epochs_run']} epochs")
    return {"model_id": model_id, "architecture": config.architecture, "variant": config.variant,
            "symbol": ",".join(store.symbols), "interval": interval, "fold": None,
            "train_start": _ts(train_range[0]), "train_end": _ts(train_range[1]), "test_start": None, "test_end": None,
            "data_fingerprint": store.fingerprint, "metrics": json.dumps(metrics), "artifact_path": str(out_dir),
            "trigger": trigger, "version": version, "role": "live",
            "artifact_sha256": json.dumps(artifact_hashes(out_dir))}


