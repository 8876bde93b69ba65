"""Benchmark of the model zoo at default sizes on 2 CPU threads.

For every architecture (default variant): training samples/s (forward +
backward + AdamW step, batch 64), single-window inference latency (batch 1,
eval, inference_mode), parameters, FLOPs per sample, achieved GFLOP/s in
training (3 × forward FLOPs per sample, the usual forward+backward
estimate). Training steps of ours and plain alternate and each side reports
its fastest step (and ours also the median), and the same network run as plain eager PyTorch — the model's
own body modules, a plain pooling op and the head's nn.Linear in an
nn.Sequential with the loss written inline, no registry, HeadOutput or
MultiTaskHead — timed in the same run, interleaved, as ours / plain.

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

from pipeline.models.heads import multitask_loss
from pipeline.models.inspect import count_parameters, flops
from pipeline.models.registry import architecture, build_model, list_models

BATCH = 64


class LastStep(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, :, -1]


class GlobalAverage(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(2).mean(-1)


def plain_network(model) -> nn.Sequential:
    """The model's layers as a bare nn.Sequential returning the 6 raw head numbers."""
    pool = {"last": LastStep(), "avg": GlobalAverage(), "none": nn.Identity()}[model.head.pooling]
    return nn.Sequential(copy.deepcopy(model.body), pool, copy.deepcopy(model.head.linear))


def plain_loss(raw, d, r, v):
    return (F.cross_entropy(raw[:, :3], d) + F.mse_loss(raw[:, 3], r)
            + F.mse_loss(F.softplus(raw[:, 4]), v))


def step_seconds(step) -> float:
    t = time.perf_counter()
    step()
    return time.perf_counter() - t


def latencies_ms(fn_a, fn_b, x, calls: int) -> tuple[float, float, float]:
    """Median single-call latency of two callables (calls alternated), and the best call of the first."""
    a, b = [], []
    with torch.inference_mode():
        for _ in range(3):
            fn_a(x)
            fn_b(x)
        for _ in range(calls):
            for fn, times in ((fn_a, a), (fn_b, b)):
                t = time.perf_counter()
                fn(x)
                times.append(time.perf_counter() - t)
    return 1000 * statistics.median(a), 1000 * statistics.median(b), 1000 * min(a)


def bench_one(name: str, steps: int, calls: int) -> dict:
    """``steps`` alternated training steps per side; latency: median of ``calls`` alternated calls."""
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
        multitask_loss(model(x), d, r, v).backward()
        opt_ours.step()

    def step_plain():
        opt_plain.zero_grad(set_to_none=True)
        plain_loss(plain(x), d, r, v).backward()
        opt_plain.step()

    model.train()
    plain.train()
    for _ in range(2):
        step_ours()
        step_plain()
    # Alternate single steps of ours and plain and keep each side's fastest step (timeit's
    # "best of"): other processes on a shared 2-core machine only ever make steps slower.
    ours, base = [], []
    for _ in range(steps):
        ours.append(step_seconds(step_ours))
        base.append(step_seconds(step_plain))
    sps, sps_plain = BATCH / min(ours), BATCH / min(base)
    sps_median = BATCH / statistics.median(ours)

    model.eval()
    plain.eval()
    x1 = x[:1].clone()
    lat_ours, lat_plain, lat_best = latencies_ms(model, plain, x1, calls)
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
        "latency_ms_best": round(lat_best, 3),
        "plain_train_samples_per_s": round(sps_plain, 1),
        "plain_latency_ms": round(lat_plain, 3),
        "train_ratio_ours_over_plain": round(sps / sps_plain, 3),
        "latency_ratio_plain_over_ours": round(lat_plain / lat_ours, 3),
        "meets_500_windows_per_s": sps >= 500,
        "meets_10ms_latency": lat_ours < 10,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="few steps: a smoke run, not a measurement")
    parser.add_argument("--only", nargs="*", help="architecture names to run (default: all)")
    args = parser.parse_args()
    torch.set_num_threads(2)
    load_before = os.getloadavg()[0]
    steps, calls = (2, 5) if args.quick else (30, 100)
    names = args.only or list(list_models())
    results = [bench_one(n, steps, calls) for n in names]
    print(json.dumps({
        "bench": "models",
        "quick": args.quick,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "machine": platform.machine(),
        "batch": BATCH,
        # Other work on the machine slows every figure; the 1-minute load before / after says how much.
        "load_average_1m": [round(load_before, 2), round(os.getloadavg()[0], 2)],
        "all_train_ge_500": all(r["meets_500_windows_per_s"] for r in results),
        "all_latency_lt_10ms": all(r["meets_10ms_latency"] for r in results),
        "min_train_ratio": min(r["train_ratio_ours_over_plain"] for r in results),
        "models": results,
    }))


if __name__ == "__main__":
    main()
