"""Benchmark of the model zoo at default sizes on 2 CPU threads.

For every architecture (default variant): training samples/s (forward +
backward + AdamW step, batch 64), single-window inference latency (batch 1,
eval, inference_mode), parameters, FLOPs per sample, achieved GFLOP/s in
training (3 × forward FLOPs per sample, the usual forward+backward
estimate), and the same network run as plain eager PyTorch — the model's
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


def train_rate(step, steps: int) -> float:
    t = time.perf_counter()
    for _ in range(steps):
        step()
    return BATCH * steps / (time.perf_counter() - t)


def latency_ms(fn, x, calls: int) -> float:
    times = []
    with torch.inference_mode():
        for _ in range(3):
            fn(x)
        for _ in range(calls):
            t = time.perf_counter()
            fn(x)
            times.append(time.perf_counter() - t)
    return 1000 * statistics.median(times)


def bench_one(name: str, steps: int, rounds: int, calls: int) -> dict:
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
    ours, base = [], []
    for _ in range(rounds):  # interleaved, best of rounds: robust to other load on the machine
        ours.append(train_rate(step_ours, steps))
        base.append(train_rate(step_plain, steps))
    sps, sps_plain = max(ours), max(base)

    model.eval()
    plain.eval()
    x1 = x[:1].clone()
    lat_ours = min(latency_ms(model, x1, calls) for _ in range(rounds))
    lat_plain = min(latency_ms(plain, x1, calls) for _ in range(rounds))
    f = flops(model)
    return {
        "architecture": name,
        "variant": model.variant,
        "input": list((BATCH,) + model.input_shape),
        "causal": architecture(name).causal,
        "params": count_parameters(model),
        "flops_per_sample": f,
        "train_samples_per_s": round(sps, 1),
        "train_gflops_per_s": round(3 * f * sps / 1e9, 2),
        "latency_ms": round(lat_ours, 3),
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
    steps, rounds, calls = (2, 1, 5) if args.quick else (5, 6, 50)
    names = args.only or list(list_models())
    results = [bench_one(n, steps, rounds, calls) for n in names]
    print(json.dumps({
        "bench": "models",
        "quick": args.quick,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "machine": platform.machine(),
        "batch": BATCH,
        "all_train_ge_500": all(r["meets_500_windows_per_s"] for r in results),
        "all_latency_lt_10ms": all(r["meets_10ms_latency"] for r in results),
        "min_train_ratio": min(r["train_ratio_ours_over_plain"] for r in results),
        "models": results,
    }))


if __name__ == "__main__":
    main()
