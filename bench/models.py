"""Benchmark of the model zoo at default sizes on 2 CPU threads.

For every architecture (default variant): training samples/s (forward +
backward + AdamW step, batch 64), single-window inference latency (batch 1,
eval, inference_mode), parameters, FLOPs per sample, achieved GFLOP/s in
training (3 × forward FLOPs per sample, the usual forward+backward
estimate), and the same network run as plain eager PyTorch — the model's
own body modules, a plain pooling op and the head's nn.Linear in an
nn.Sequential with the loss written inline, no registry, HeadOutput or
MultiTaskHead.

ours / plain is measured to survive a shared, noisy machine: after warm-up,
each round times ours, plain, plain, ours (the next round plain first), so
both sides see the same load and neither always runs first; the ratio is
the median of the per-round ratios (each side's faster call of the
round), with its quartiles as the spread
("train_ratio_iqr"). The throughput headline is each side's fastest step
(timeit's "best of": other processes only ever slow a step down), with the
median step next to it. ``head_loss_overhead_us`` isolates what the
wrappers add: head + loss forward and backward on the same feature map,
ours minus plain, interleaved (the body is the same modules in both).

Inputs: sequence models (64, 15, 256); cnn_ta (64, 1, 15, 15) indicator
matrices; resnet2d (64, 3, 64, 64) charts; orderbook_net (64, 2, 64, 20)
heatmaps (time × levels).

Prints ONE JSON line. ``--quick`` runs few steps (smoke test).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import statistics
import time

import torch
import torch.nn.functional as F
from torch import nn

from pipeline.training.losses import LossConfig, multitask_loss
from pipeline.models.geometry import count_parameters, flops
from pipeline.models.zoo import architecture, build_model, list_models

BATCH = 64


class LastStep(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, :, -1]


class GlobalAverage(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(2).mean(-1)


class AverageAndLast(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x.mean(-1), x[:, :, -1]], dim=1)


def plain_network(model) -> nn.Sequential:
    """The model's layers as a bare nn.Sequential returning the 6 raw head numbers."""
    pool = {"last": LastStep(), "avg": GlobalAverage(), "avg_last": AverageAndLast(),
            "none": nn.Identity()}[model.head.pooling]
    drop = [nn.Dropout(model.head.dropout.p)] if model.head.dropout.p > 0 else []
    return nn.Sequential(copy.deepcopy(model.body), pool, *drop, copy.deepcopy(model.head.linear))


# the training loss with the plain loss's terms: unweighted, unsmoothed cross-entropy plus return and volatility
LOSS = LossConfig(class_weighting="none", label_smoothing=0.0, return_weight=1.0, volatility_weight=1.0)


def plain_loss(raw, d, r, v):
    return (F.cross_entropy(raw[:, :3], d) + F.mse_loss(raw[:, 3], r)
            + F.mse_loss(F.softplus(raw[:, 4]), v))


def step_seconds(step) -> float:
    t = time.perf_counter()
    step()
    return time.perf_counter() - t


def quartiles(values: list[float]) -> list[float]:
    q = statistics.quantiles(values, n=4) if len(values) > 1 else [values[0]] * 3
    return [round(q[0], 3), round(q[2], 3)]


def paired_rounds(fn_ours, fn_plain, rounds: int) -> tuple[list[float], list[float], list[float]]:
    """Per-round ABBA timing: every call's seconds for each side and each round's plain/ours ratio."""
    ours, base, ratios = [], [], []
    for i in range(rounds):
        order = (fn_ours, fn_plain, fn_plain, fn_ours) if i % 2 == 0 else (fn_plain, fn_ours, fn_ours, fn_plain)
        times = [step_seconds(fn) for fn in order]
        mine = [t for fn, t in zip(order, times) if fn is fn_ours]
        theirs = [t for fn, t in zip(order, times) if fn is fn_plain]
        ours += mine
        base += theirs
        # Faster of each side's two calls: a burst of other work must slow both to skew the round.
        ratios.append(min(theirs) / min(mine))  # > 1: ours faster
    return ours, base, ratios


def head_loss_overhead_us(model, plain, features, d, r, v, rounds: int) -> float:
    """Median extra µs of ours' head + loss (forward and backward) over the plain ops."""
    f = features.detach().requires_grad_()
    tail = nn.Sequential(*list(plain)[1:])

    def ours():
        multitask_loss(model.head(f), d, r, v, LOSS).backward()

    def base():
        plain_loss(tail(f), d, r, v).backward()

    for _ in range(5):
        ours()
        base()
    a, b, _ = paired_rounds(ours, base, rounds)
    return 1e6 * (statistics.median(a) - statistics.median(b))


def bench_one(name: str, rounds: int, calls: int) -> dict:
    """``rounds`` ABBA training rounds (2 steps per side each); latency: ``calls`` alternated calls per side."""
    torch.manual_seed(0)
    model = build_model(name)
    plain = plain_network(model)
    x = torch.randn((BATCH,) + model.input_shape)
    d = torch.randint(0, 3, (BATCH,))
    r, v = torch.randn(BATCH) * 0.01, torch.rand(BATCH) * 0.02

    opt_ours = torch.optim.AdamW(model.parameters(), lr=1e-4)
    opt_plain = torch.optim.AdamW(plain.parameters(), lr=1e-4)

    def step_ours():
        opt_ours.zero_grad(set_to_none=True)
        multitask_loss(model(x), d, r, v, LOSS).backward()
        opt_ours.step()

    def step_plain():
        opt_plain.zero_grad(set_to_none=True)
        plain_loss(plain(x), d, r, v).backward()
        opt_plain.step()

    model.train()
    plain.train()
    for _ in range(3):
        step_ours()
        step_plain()
    ours, base, ratios = paired_rounds(step_ours, step_plain, rounds)
    sps, sps_plain = BATCH / min(ours), BATCH / min(base)
    sps_median = BATCH / statistics.median(ours)
    with torch.no_grad():
        features = model.body(x)
    overhead = head_loss_overhead_us(model, plain, features, d, r, v, max(rounds * 4, 20))

    model.eval()
    plain.eval()
    x1 = x[:1].clone()
    with torch.inference_mode():
        for _ in range(5):
            model(x1)
            plain(x1)
        lat, lat_plain, lat_ratios = paired_rounds(lambda: model(x1), lambda: plain(x1), calls)
    lat_ours = 1000 * statistics.median(lat)
    f = flops(model)
    return {
        "architecture": name,
        "variant": model.variant,
        "input": list((BATCH,) + model.input_shape),
        "causal": architecture(name).causal,
        "params": count_parameters(model),
        "flops_per_sample": f,
        "train_samples_per_s": round(sps, 1),
        "train_samples_per_s_median": round(sps_median, 1),
        "train_gflops_per_s": round(3 * f * sps / 1e9, 2),
        "latency_ms": round(lat_ours, 3),
        "latency_ms_best": round(1000 * min(lat), 3),
        "plain_train_samples_per_s": round(sps_plain, 1),
        "plain_train_samples_per_s_median": round(BATCH / statistics.median(base), 1),
        "plain_latency_ms": round(1000 * statistics.median(lat_plain), 3),
        "train_ratio_ours_over_plain": round(statistics.median(ratios), 3),
        "train_ratio_iqr": quartiles(ratios),
        "train_ratio_best_step": round(sps / sps_plain, 3),
        "head_loss_overhead_us": round(overhead, 1),
        "head_loss_overhead_fraction": round(overhead * 1e-6 / statistics.median(ours), 5),
        "latency_ratio_plain_over_ours": round(statistics.median(lat_ratios), 3),
        "latency_ratio_iqr": quartiles(lat_ratios),
        "meets_500_windows_per_s": sps >= 500,
        "meets_10ms_latency": lat_ours < 10,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="few steps: a smoke run, not a measurement")
    parser.add_argument("--only", nargs="*", help="architecture names to run (default: all)")
    parser.add_argument("--rounds", type=int, default=25, help="ABBA training rounds per model (4 steps each)")
    args = parser.parse_args()
    torch.set_num_threads(2)
    load_before = os.getloadavg()[0]
    rounds, calls = (2, 5) if args.quick else (args.rounds, 100)
    names = args.only or list(list_models())
    results = [bench_one(n, rounds, calls) for n in names]
    print(json.dumps({
        "bench": "models",
        "quick": args.quick,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "machine": platform.machine(),
        "batch": BATCH,
        "rounds": rounds,
        # Other work on the machine slows every figure; the 1-minute load before / after says how much.
        "load_average_1m": [round(load_before, 2), round(os.getloadavg()[0], 2)],
        "all_train_ge_500": all(r["meets_500_windows_per_s"] for r in results),
        "all_latency_lt_10ms": all(r["meets_10ms_latency"] for r in results),
        "min_train_ratio": min(r["train_ratio_ours_over_plain"] for r in results),
        "all_train_ratio_ge_0_95": all(r["train_ratio_ours_over_plain"] >= 0.95 for r in results),
        "models": results,
    }))


if __name__ == "__main__":
    main()
