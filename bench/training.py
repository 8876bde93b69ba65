"""Training benchmark on the offline default (synthetic market, default settings); prints ONE JSON line.

(a) ``data_windows_per_s``: windows per second through the data pipeline alone, as the
    train loop feeds a model: a shuffled batch of window ends, ``WindowStore.gather``
    (one fancy-index gather from the memmap) and the robust z-score normalisation.
    It must be >= 20x the fastest architecture's training rate (``data_over_fastest_model``).
(b) per architecture, training windows per second of our train loop
    (:func:`pipeline.training.walk_forward.train_fold`, one epoch per call, its own
    ``windows_per_s``: gather, normalise, forward, multi-task loss, backward, clipping,
    AdamW, LR schedule) against a plain PyTorch loop over the same model (same seed)
    and the same windows, pre-gathered and normalised into one in-memory tensor, with
    the same loss, optimiser and clipping. Measured ABBA (ours, plain, plain, ours; the
    next round plain first) so both sides see the same load; the ratio is the median
    of the per-round ratios, each side's faster epoch of the round (target >= 0.95).
(c) ``walk_forward_s``: wall time of ``train_architecture`` for every sequence
    architecture on the offline default; ``--reduced`` trains fewer epochs / windows
    per fold (stated in ``walk_forward_profile``), everything else as configured.

The offline default warehouse is built in a temporary folder (synthetic candles from
Settings.start until now, dbt build) unless ``--data-dir`` names one that has
``features.candle_features``. The machine may be shared: the 1-minute load average
before and after is in the output.

Usage: python bench/training.py [--reduced] [--threads N] [--rounds N] [--no-walk-forward] [--data-dir DIR]
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipeline.config import Settings  # noqa: E402
from pipeline.dbt_runner.invoke import run_dbt  # noqa: E402
from pipeline.market.ingest import build_source, ingest_candles  # noqa: E402
from pipeline.models.zoo import build_model  # noqa: E402
from pipeline.training.datasets import build_window_store, load_series, robust_stats  # noqa: E402
from pipeline.training.losses import balanced_class_weights, multitask_loss  # noqa: E402
from pipeline.models.catalogue import sequence_model_names  # noqa: E402
from pipeline.training.inference import InferenceModel  # noqa: E402
from pipeline.training.recipe import TrainingConfig  # noqa: E402
from pipeline.training.walk_forward import _lr_lambda, _tensors, default_threads, time_folds, train_architecture, train_fold  # noqa: E402
from pipeline.warehouse import Warehouse  # noqa: E402

SEQUENCE_ARCHITECTURES = sequence_model_names()


def offline_default(data_dir: Path | None, tmp: Path) -> tuple[Settings, Warehouse, float]:
    """Settings and warehouse of the offline default (built when ``data_dir`` has none); seconds spent building."""
    if data_dir is not None:
        settings = Settings.from_env(data_dir=data_dir)
        return settings, Warehouse(settings.warehouse_path), 0.0
    settings = Settings.from_env(data_dir=tmp, source="synthetic")
    t0 = time.perf_counter()
    now = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None, minute=0, second=0, microsecond=0)
    wh = Warehouse(settings.warehouse_path)
    wh.ensure_schema()
    source = build_source(settings, now=lambda: now)
    start = dt.datetime.combine(settings.start_date, dt.time())
    ingest_candles(source, wh, settings.symbols, settings.intervals, start, now, now=now)
    run_dbt(["build"], wh.path)
    return settings, wh, time.perf_counter() - t0


def data_pipeline_rate(store, fit: np.ndarray, center, scale, batch: int, seconds: float = 2.0) -> float:
    """Windows/s of shuffled gather + normalise (what one training step reads), best of 3 passes."""
    c = torch.as_tensor(center).view(1, -1, 1)
    s = torch.as_tensor(scale).view(1, -1, 1)
    rows = store.sample_rows[fit]
    best = 0.0
    for rep in range(3):
        order = np.random.default_rng(rep).permutation(rows.shape[0])
        n, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds / 3:
            for i in range(0, order.shape[0], batch):
                x = (torch.from_numpy(store.gather(rows[order[i:i + batch]])) - c) / s
                n += x.shape[0]
        best = max(best, n / (time.perf_counter() - t0))
    return best


def plain_epoch(config: TrainingConfig, store, fit: np.ndarray, x_all: torch.Tensor, targets, class_weights,
                seed: int) -> float:
    """One epoch of a plain PyTorch loop over in-memory normalised windows; windows/s of the loop."""
    torch.manual_seed(config.seed)
    model = build_model(config.architecture, config.variant, in_channels=len(store.channels),
                        input_length=store.window)
    opt = torch.optim.AdamW(model.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)
    steps = max(1, -(-fit.shape[0] // config.batch_size))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _lr_lambda(steps, int(config.warmup_epochs * steps)))
    order = torch.from_numpy(np.random.default_rng(seed).permutation(fit.shape[0]))
    model.train()
    cls, ret, vol = targets
    t0 = time.perf_counter()
    for i in range(0, order.shape[0], config.batch_size):
        idx = order[i:i + config.batch_size]
        loss = multitask_loss(model(x_all[idx]), cls[idx], ret[idx], vol[idx], config.loss, class_weights)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        opt.step()
        sched.step()
    return fit.shape[0] / (time.perf_counter() - t0)


def ours_epoch(config: TrainingConfig, store, fit, val, tmp: Path) -> float:
    """One epoch of train_fold (fresh folder: no checkpoint to resume); its own windows/s of the epoch loop."""
    out = Path(tempfile.mkdtemp(dir=tmp))
    _, curve, _ = train_fold(store, config, 0, fit, val, out, log=lambda _: None)
    return float(curve[0]["windows_per_s"])


def bench_architecture(arch: str, settings: Settings, store, fit, val, rounds: int, threads: int, windows: int,
                       tmp: Path) -> dict:
    config = TrainingConfig.from_settings(settings, arch, epochs=1, patience=1, threads=threads,
                                          max_train_windows=windows)
    fit = fit[-windows:]
    center, scale = robust_stats(store, store.sample_rows[fit])
    module = InferenceModel(build_model(arch, config.variant, in_channels=len(store.channels),
                                        input_length=store.window), center, scale, 1.0, 1.0)
    with torch.no_grad():
        x_all = module.normalise(torch.from_numpy(store.gather(store.sample_rows[fit]))).contiguous()
    ret_scale = float(np.std(store.fwd_return[fit])) or 1.0
    vol_scale = float(np.mean(store.fwd_volatility[fit])) or 1.0
    targets = _tensors(store, fit, ret_scale, vol_scale)
    weights = balanced_class_weights(store.label_class[fit])
    val = val[:256]  # train_fold scores the validation tail after the epoch: kept small, it is not timed
    ours_epoch(config, store, fit, val, tmp)  # warm-up both sides
    torch.set_num_threads(threads or default_threads())
    plain_epoch(config, store, fit, x_all, targets, weights, 0)
    ours, plain, ratios = [], [], []
    for r in range(rounds):
        sides = ("ours", "plain", "plain", "ours") if r % 2 == 0 else ("plain", "ours", "ours", "plain")
        got = {"ours": [], "plain": []}
        for side in sides:
            if side == "ours":
                got["ours"].append(ours_epoch(config, store, fit, val, tmp))
            else:
                torch.set_num_threads(threads or default_threads())
                got["plain"].append(plain_epoch(config, store, fit, x_all, targets, weights, r))
        ours += got["ours"]
        plain += got["plain"]
        ratios.append(max(got["ours"]) / max(got["plain"]))
    q = statistics.quantiles(ratios, n=4) if len(ratios) > 1 else [ratios[0]] * 3
    return {
        "architecture": arch, "variant": config.variant, "window": store.window, "batch": config.batch_size,
        "epoch_windows": int(fit.shape[0]),
        "train_windows_per_s": round(max(ours), 1),
        "train_windows_per_s_median": round(statistics.median(ours), 1),
        "plain_windows_per_s": round(max(plain), 1),
        "plain_windows_per_s_median": round(statistics.median(plain), 1),
        "ratio_ours_over_plain": round(statistics.median(ratios), 3),
        "ratio_iqr": [round(q[0], 3), round(q[2], 3)],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reduced", action="store_true",
                        help="walk-forward with 1 epoch and at most 2,000 training windows per fold")
    parser.add_argument("--no-walk-forward", action="store_true", help="skip (c)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: the training default)")
    parser.add_argument("--rounds", type=int, default=3, help="ABBA rounds per architecture (4 epochs each)")
    parser.add_argument("--epoch-windows", type=int, default=2048, help="windows per timed epoch in (b)")
    parser.add_argument("--only", nargs="*", help="architectures (default: every sequence architecture)")
    parser.add_argument("--data-dir", type=Path, help="an existing DATA_DIR with the offline default built")
    args = parser.parse_args()
    load_before = os.getloadavg()[0]
    torch.set_num_threads(args.threads or default_threads())  # (a) too: torch's default can oversubscribe
    archs = args.only or list(SEQUENCE_ARCHITECTURES)
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        settings, wh, build_s = offline_default(args.data_dir, tmp / "data")
        settings = dataclasses.replace(settings, data_dir=tmp / "data") if args.data_dir else settings
        interval = settings.intervals[0]
        config = TrainingConfig.from_settings(settings, archs[0])
        series = [load_series(wh, s, interval, config.horizon) for s in settings.symbols]
        store = build_window_store(series, tmp / "bench_artifacts", config.window, config.horizon)
        _, fit, val, _, _ = time_folds(store, config)[-1]
        center, scale = robust_stats(store, store.sample_rows[fit[-config.max_train_windows:]])
        data_rate = data_pipeline_rate(store, fit, center, scale, config.batch_size)
        models = [bench_architecture(a, settings, store, fit, val, args.rounds, args.threads, args.epoch_windows,
                                     tmp) for a in archs]
        fastest = max(m["train_windows_per_s"] for m in models)
        walk = {}
        if not args.no_walk_forward:
            overrides = {"threads": args.threads}
            if args.reduced:
                overrides.update(epochs=1, max_train_windows=2000)
            per_arch, t0 = {}, time.perf_counter()
            for arch in archs:
                t1 = time.perf_counter()
                cfg = TrainingConfig.from_settings(settings, arch, **overrides)
                outcome = train_architecture(wh, settings, cfg, log=lambda _: None)
                per_arch[arch] = {"s": round(time.perf_counter() - t1, 1), "folds": outcome.registry.height,
                                  "epochs_run": sum(r["epochs_run"] for r in outcome.fold_table)}
            walk = {
                "walk_forward_s": round(time.perf_counter() - t0, 1),
                "walk_forward_profile": "reduced: epochs=1, max_train_windows=2000" if args.reduced
                else "configured (Settings defaults / CONVTRADE_*)",
                "walk_forward_config": {k: v for k, v in dataclasses.asdict(
                    TrainingConfig.from_settings(settings, "tcn", **overrides)).items()
                    if k in ("window", "n_folds", "epochs", "batch_size", "max_train_windows", "threads")},
                "walk_forward_per_architecture": per_arch,
            }
    print(json.dumps({
        "bench": "training",
        "cpu_count": os.cpu_count(),
        "threads": args.threads or default_threads(),
        "torch": torch.__version__,
        "symbols": list(settings.symbols),
        "interval": interval,
        "samples": int(store.sample_rows.shape[0]),
        "warehouse_build_s": round(build_s, 1),
        "data_windows_per_s": round(data_rate, 1),
        "fastest_train_windows_per_s": fastest,
        "data_over_fastest_model": round(data_rate / fastest, 1),
        "data_ge_20x_fastest_model": data_rate >= 20 * fastest,
        "min_ratio_ours_over_plain": min(m["ratio_ours_over_plain"] for m in models),
        "all_ratio_ge_0_95": all(m["ratio_ours_over_plain"] >= 0.95 for m in models),
        "models": models,
        **walk,
        # Other work on the machine slows every figure; the 1-minute load before / after says how much.
        "load_average_1m": [round(load_before, 2), round(os.getloadavg()[0], 2)],
    }))


if __name__ == "__main__":
    main()
