"""GASF / GADF and MTF: closed forms, invariants, a loop reference, and pyts on the same windows."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.encodings.gramian import GramianAngularField, paa, segment_bounds
from pipeline.encodings.markov import MarkovTransitionField


def _walks(n: int, length: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, length)).cumsum(axis=1)


def _loop_paa(x: np.ndarray, size: int) -> np.ndarray:
    length = x.shape[-1]
    if size == length:
        return x.astype(float)
    out = np.empty((x.shape[0], size))
    for j in range(size):
        a, b = int(j * length / size), int((j + 1) * length / size)  # linspace(0, T, S+1) floored
        out[:, j] = [np.mean(row[a:b]) for row in x]
    return out


def test_gasf_gadf_closed_forms_on_a_known_series():
    x = np.array([[[0.0, 1.0, 2.0, 3.0, 4.0]]])  # scales to -1, -0.5, 0, 0.5, 1
    img = GramianAngularField(image_size=5, input_length=5).encode(x)
    phi = np.arccos(np.array([-1.0, -0.5, 0.0, 0.5, 1.0]))
    np.testing.assert_allclose(img[0, 0], np.cos(phi[:, None] + phi[None, :]), atol=1e-6)
    np.testing.assert_allclose(img[0, 1], np.sin(phi[:, None] - phi[None, :]), atol=1e-6)
    # hand values: phi = pi, 2pi/3, pi/2, pi/3, 0
    assert img[0, 0, 0, 0] == pytest.approx(1.0)  # cos(2 pi)
    assert img[0, 0, 2, 2] == pytest.approx(-1.0)  # cos(pi)
    assert img[0, 0, 1, 3] == pytest.approx(-1.0)  # cos(2pi/3 + pi/3)
    assert img[0, 1, 0, 4] == pytest.approx(0.0, abs=1e-6)  # sin(pi - 0)
    assert img[0, 1, 2, 4] == pytest.approx(1.0)  # sin(pi/2)


def test_gasf_symmetric_with_cos_2phi_diagonal_and_gadf_antisymmetric():
    x = _walks(16, 128, seed=1)[:, None]
    enc = GramianAngularField(64, input_length=128)
    img = enc.encode(x)
    assert img.shape == (16, *enc.output_shape(1)) == (16, 2, 64, 64)
    gasf, gadf = img[:, 0], img[:, 1]
    np.testing.assert_allclose(gasf, gasf.transpose(0, 2, 1), atol=1e-6)
    np.testing.assert_allclose(gadf, -gadf.transpose(0, 2, 1), atol=1e-6)
    p = paa(x[:, 0], 64)
    scaled = -1 + 2 * (p - p.min(1, keepdims=True)) / np.ptp(p, axis=1, keepdims=True)
    diag = np.cos(2 * np.arccos(np.clip(scaled, -1, 1)))
    np.testing.assert_allclose(np.diagonal(gasf, axis1=1, axis2=2), diag, atol=1e-6)
    np.testing.assert_allclose(np.diagonal(gadf, axis1=1, axis2=2), 0.0, atol=1e-6)
    assert np.abs(img).max() <= 1.0 + 1e-6


@pytest.mark.parametrize("length,size", [(128, 64), (100, 64), (77, 20), (64, 64)])
def test_paa_matches_a_loop(length, size):
    x = _walks(5, length, seed=length)
    np.testing.assert_allclose(paa(x, size), _loop_paa(x, size), rtol=1e-12)
    start, end = segment_bounds(length, size)
    assert start[0] == 0 and end[-1] == length and (end > start).all() and (start[1:] == end[:-1]).all()


def test_multichannel_order_and_flat_window():
    x = np.stack([_walks(3, 64, 2), _walks(3, 64, 3)], axis=1)
    img = GramianAngularField(32, input_length=64).encode(x)
    alone = GramianAngularField(32, input_length=64).encode(x[:, 1:2])
    np.testing.assert_array_equal(img[:, 2:4], alone)  # channel 1 -> gasf, gadf at 2, 3
    flat = GramianAngularField(8, input_length=16).encode(np.full((1, 1, 16), 5.0))
    np.testing.assert_allclose(flat[0, 0], 1.0)  # flat scales to -1: phi = pi everywhere
    np.testing.assert_allclose(flat[0, 1], 0.0, atol=1e-7)
    with pytest.raises(ValueError, match="not finite"):
        GramianAngularField(8, input_length=16).encode(np.array([[[1.0] * 15 + [np.nan]]]))


def _loop_mtf(x: np.ndarray, size: int, n_bins: int):
    """Straightforward MTF of one series: quantile bins, counts, full field, block means."""
    length = x.shape[0]
    edges = np.percentile(x, np.linspace(0, 100, n_bins + 1)[1:-1])
    keep = [edges[i] for i in range(len(edges)) if i == len(edges) - 1 or abs(edges[i + 1] - edges[i]) > 1e-8]
    q = [int(np.searchsorted(keep, v, side="left")) for v in x]
    w = np.zeros((n_bins, n_bins))
    for t in range(length - 1):
        w[q[t], q[t + 1]] += 1
    for a in range(n_bins):
        if w[a].sum() > 0:
            w[a] /= w[a].sum()
    field = np.array([[w[q[i], q[j]] for j in range(length)] for i in range(length)])
    bounds = np.linspace(0, length, size + 1).astype(int)
    out = np.empty((size, size))
    for j in range(size):
        for k in range(size):
            out[j, k] = field[bounds[j]:bounds[j + 1], bounds[k]:bounds[k + 1]].mean()
    return w, field, out


@pytest.mark.parametrize("length,size", [(128, 64), (100, 32), (40, 40)])
def test_mtf_matches_a_loop_and_rows_sum_to_one(length, size):
    x = np.diff(_walks(4, length + 1, seed=length), axis=1)
    x[1, :10] = 0.0  # ties: equal quantiles merge into fewer bins
    enc = MarkovTransitionField(size, n_bins=8, input_length=length)
    img = enc.encode(x[:, None])
    mats = enc.transition_matrices(x[:, None])
    full = MarkovTransitionField(length, n_bins=8, input_length=length).encode(x[:, None])
    assert img.shape == (4, *enc.output_shape(1))
    for i in range(4):
        w, field, agg = _loop_mtf(x[i], size, 8)
        np.testing.assert_allclose(mats[i, 0], w, atol=1e-12)
        np.testing.assert_allclose(full[i, 0], field, atol=1e-6)
        np.testing.assert_allclose(img[i, 0], agg, atol=1e-6)
        visited = w.sum(axis=1) > 0
        np.testing.assert_allclose(mats[i, 0].sum(axis=1)[visited], 1.0, atol=1e-12)
        np.testing.assert_allclose(mats[i, 0].sum(axis=1)[~visited], 0.0)
    assert (img >= 0).all() and (img <= 1 + 1e-6).all()
    flat = MarkovTransitionField(4, input_length=8).encode(np.zeros((1, 1, 8)))
    np.testing.assert_allclose(flat, 1.0)  # one state that always follows itself


PYTS_SCRIPT = """
import sys
import numpy as np
from pyts.image import GramianAngularField, MarkovTransitionField
data = np.load(sys.argv[1])
out = {}
for key in data.files:
    x = data[key]
    out[key + "_gasf"] = GramianAngularField(image_size=64).fit_transform(x)
    out[key + "_gadf"] = GramianAngularField(image_size=64, method="difference").fit_transform(x)
    out[key + "_mtf"] = MarkovTransitionField(image_size=32, n_bins=8).fit_transform(np.diff(x, axis=1))
np.savez(sys.argv[2], **out)
"""
LENGTHS = (128, 100, 65)


@pytest.fixture(scope="module")
def pyts_images(tmp_path_factory):
    """pyts's images of the same windows, computed in a subprocess with numba's JIT off.

    pyts compiles every numba signature eagerly at import (about 40 s of CPU);
    with ``NUMBA_DISABLE_JIT=1`` the same pyts code runs as plain Python in a
    few seconds. The algorithm, and so every value, is pyts's own.
    """
    import importlib.util
    import os
    import subprocess
    import sys

    if importlib.util.find_spec("pyts") is None:
        pytest.skip("pyts is not installed (a dev dependency)")
    folder = tmp_path_factory.mktemp("pyts")
    inputs = {f"x{n}": _walks(24, n, seed=7 + n) for n in LENGTHS}
    np.savez(folder / "in.npz", **inputs)
    env = {**os.environ, "NUMBA_DISABLE_JIT": "1"}
    subprocess.run([sys.executable, "-c", PYTS_SCRIPT, str(folder / "in.npz"), str(folder / "out.npz")],
                   check=True, env=env, timeout=600)
    return inputs, dict(np.load(folder / "out.npz"))


@pytest.mark.parametrize("length", LENGTHS)
def test_gaf_and_mtf_agree_with_pyts(pyts_images, length):
    inputs, ref = pyts_images
    x = inputs[f"x{length}"]
    gaf = GramianAngularField(64, input_length=length).encode(x[:, None])
    np.testing.assert_allclose(gaf[:, 0], ref[f"x{length}_gasf"], atol=1e-6)
    np.testing.assert_allclose(gaf[:, 1], ref[f"x{length}_gadf"], atol=1e-6)
    r = np.diff(x, axis=1)
    mtf = MarkovTransitionField(32, n_bins=8, input_length=length - 1).encode(r[:, None])
    np.testing.assert_allclose(mtf[:, 0], ref[f"x{length}_mtf"], atol=1e-6)
