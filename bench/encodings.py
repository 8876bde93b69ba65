"""Encoding speed: images/s of every encoding at its default size, and GASF / MTF against pyts.

Prints one JSON line. Inputs are one year of hourly bars of one symbol (8,760
windows of a seeded random walk; the offline default has three such series),
cut into the windows each encoding reads; order-book heatmaps use 8,760 hourly
top-5 snapshots. Each figure is the best of 3 timed runs after one warm-up
run (numba compilation excluded). ``*_vs_pyts`` = our images/s / pyts's on
the same windows in the same run (pyts GASF alone for the GASF ratio; our
GAF asset computes GASF and GADF together, ``gaf_images_per_s``). Targets
(issue 11): GASF 64 x 64 >= 3x pyts, 20-bar candlestick charts >= 20,000 images/s.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipeline.encodings.build import ENCODINGS  # noqa: E402
from pipeline.encodings.gramian import GramianAngularField  # noqa: E402
from pipeline.encodings.orderbook_heatmap import snapshot_windows  # noqa: E402

N = 8760


def best_rate(fn, n: int, repeats: int = 3) -> float:
    fn()
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return n / best


def candles(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    c = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, n)))
    o = np.r_[c[0], c[:-1]]
    return np.stack([o, np.maximum(o, c) * 1.004, np.minimum(o, c) * 0.996, c, rng.uniform(1, 3, n)])  # (5, n)


def main() -> None:
    out: dict = {"bench": "encodings", "windows": N, "cores": os.cpu_count()}
    series = candles(N + 200)
    windows = {}
    for name, s in ENCODINGS.items():
        if s.source == "candles":
            view = np.lib.stride_tricks.sliding_window_view(series, s.history, axis=1)  # (5, n - h + 1, h)
            w = np.ascontiguousarray(view[:, -N:].transpose(1, 0, 2))
            windows[name] = w
            out[f"{name}_images_per_s"] = round(best_rate(lambda s=s, w=w: s.encode_windows(w), N))
    rng = np.random.default_rng(1)
    mid = 100 * np.exp(np.cumsum(rng.normal(0, 0.005, N + 40)))
    k = np.arange(1, 6)
    book = np.stack([mid[:, None] * (1 - 4e-4 * k), rng.lognormal(0, 0.5, (mid.size, 5)),
                     mid[:, None] * (1 + 4e-4 * k), rng.lognormal(0, 0.5, (mid.size, 5))], axis=1)
    hm = ENCODINGS["orderbook_heatmap"]
    ends = np.arange(book.shape[0] - N, book.shape[0])
    out["orderbook_heatmap_images_per_s"] = round(best_rate(
        lambda: hm.encoder.encode(snapshot_windows(book, ends, hm.history)), N))
    # pyts on the same windows (log close for GASF, log returns for MTF)
    x_gaf = ENCODINGS["gaf"].prepare(windows["gaf"])
    x_mtf = ENCODINGS["mtf"].prepare(windows["mtf"])
    gasf = GramianAngularField(64, methods=("gasf",), input_length=x_gaf.shape[2])
    ours_gasf = best_rate(lambda: gasf.encode(x_gaf), N)
    ours_mtf = best_rate(lambda: ENCODINGS["mtf"].encoder.encode(x_mtf), N)
    out["gasf_only_images_per_s"] = round(ours_gasf)
    try:
        t0 = time.perf_counter()
        from pyts.image import GramianAngularField as PytsGAF, MarkovTransitionField as PytsMTF
        out["pyts_import_s"] = round(time.perf_counter() - t0, 1)
        pyts_gasf = best_rate(lambda: PytsGAF(image_size=64).fit_transform(x_gaf[:, 0]), N)
        pyts_mtf = best_rate(lambda: PytsMTF(image_size=64, n_bins=8).fit_transform(x_mtf[:, 0]), N)
        out.update(pyts_gasf_images_per_s=round(pyts_gasf), pyts_mtf_images_per_s=round(pyts_mtf),
                   gasf_vs_pyts=round(ours_gasf / pyts_gasf, 2), mtf_vs_pyts=round(ours_mtf / pyts_mtf, 2))
    except ImportError:
        out["pyts"] = "not installed"
    out["targets_met"] = {"candlestick_20_ge_20000": out["candlestick_20_images_per_s"] >= 20000,
                          "gasf_ge_3x_pyts": out.get("gasf_vs_pyts", 0) >= 3}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
