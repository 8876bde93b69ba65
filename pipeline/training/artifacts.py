"""A fold's artifacts: ``weights.safetensors`` (no pickle), ``config.json`` (everything needed to rebuild the
network and its input scaling) and ``program.pt2`` (torch.export, where the network exports)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import dataclasses
import hashlib
import json
import os
import subprocess
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from pipeline.core.digests import sha256_of
from pipeline.models.zoo import build_model
from pipeline.training.inference import InferenceModel

ARTIFACT_FORMAT = 1

if TYPE_CHECKING:
    from pipeline.training.datasets import WindowStore
    from pipeline.training.recipe import TrainingConfig


ARTIFACT_FILES = ("weights.safetensors", "config.json", "program.pt2")


class ArtifactError(RuntimeError):
    """An artifact that cannot be trusted: a file missing, unreadable or not the bytes its registry row names."""


def atomic_write(path: Path, write) -> Path:
    """``write(tmp_path)`` to a temporary name beside ``path``, fsynced, then renamed over it: a kill leaves the
    old file or the new one, never half of one (a kill leaves at most a temporary ``.<stem>.tmp<pid><suffix>``)."""
    path = Path(path)
    tmp = path.with_name(f".{path.stem}.tmp{os.getpid()}{path.suffix}")
    try:
        write(tmp)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def artifact_hashes(out_dir: Path) -> dict[str, str]:
    """{file name: SHA-256} of the artifact files in ``out_dir`` (what its registry row stores)."""
    return {name: sha256_of(Path(out_dir) / name) for name in ARTIFACT_FILES if (Path(out_dir) / name).exists()}


def verify_artifact(path: Path, expected: dict[str, str] | str | None) -> None:
    """Every file named in ``expected`` ({name: SHA-256}, or its JSON) exists under ``path`` with those bytes;
    else :class:`ArtifactError` naming the file. ``None`` (a row written before hashes were stored) checks only
    that the artifact's files exist."""
    path = Path(path)
    if isinstance(expected, str):
        expected = json.loads(expected)
    if not expected:
        for name in ("config.json", "weights.safetensors"):
            if not (path / name).exists():
                raise ArtifactError(f"{path / name} does not exist")
        return
    for name, digest in expected.items():
        file = path / name
        if not file.exists():
            raise ArtifactError(f"{file} does not exist (its registry row names it)")
        got = sha256_of(file)
        if got != digest:
            raise ArtifactError(f"{file} is not the file that was trained: SHA-256 {got[:16]}..., its registry row "
                                f"says {digest[:16]}... (changed or damaged on disk)")


def code_version() -> str:
    try:
        return subprocess.run(["git", "describe", "--always", "--dirty"], capture_output=True, text=True,
                              cwd=Path(__file__).parent, timeout=10).stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _digest_sources() -> str:
    root = Path(__file__).resolve().parents[1]
    h = hashlib.sha256()
    for file in sorted(root.rglob("*.py")):
        h.update(str(file.relative_to(root)).encode())
        h.update(file.read_bytes())
    return h.hexdigest()


_SOURCE_DIGEST = _digest_sources()  # when the code was imported: the code that runs, not what is on disk later


def source_digest() -> str:
    """SHA-256 of the project's Python sources (pipeline/) as imported: tells apart two trees with the same
    ``git describe`` (a dirty tree, uncommitted changes); part of a model version's code version."""
    return _SOURCE_DIGEST


def input_shape_of(store) -> tuple[int, ...]:
    """(channels, length) of a WindowStore, (channels, height, width) of an ImageStore."""
    return tuple(int(v) for v in store.input_shape) if hasattr(store, "input_shape") else (
        len(store.channels), int(store.window))


def save_artifact(module: InferenceModel, config: TrainingConfig, store: WindowStore, info: dict, out_dir: Path,
                  extra: dict) -> Path:
    """weights.safetensors + config.json + program.pt2 (torch.export; a failure is recorded in the config)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    state = {k: v.contiguous() for k, v in module.state_dict().items()}
    atomic_write(out_dir / "weights.safetensors", lambda tmp: save_file(state, tmp))
    export_error = None
    try:
        example = torch.from_numpy(np.ascontiguousarray(store.gather(store.sample_rows[:4])))
        program = torch.export.export(module.eval(), (example,),
                                      dynamic_shapes={"x": {0: torch.export.Dim("batch", min=1, max=65536)}})
        atomic_write(out_dir / "program.pt2", lambda tmp: torch.export.save(program, tmp))
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
    atomic_write(out_dir / "config.json", lambda tmp: Path(tmp).write_text(json.dumps(cfg, indent=1)))
    return out_dir


def load_artifact(path: Path, sha256: dict[str, str] | str | None = None) -> InferenceModel:
    """Rebuild a fold's model from config.json and weights.safetensors (no pickle). With ``sha256`` (the registry
    row's ``artifact_sha256``) every file is verified first: a mismatch raises :class:`ArtifactError` naming it."""
    path = Path(path)
    if sha256 is not None:
        verify_artifact(path, sha256)
    try:
        cfg = json.loads((path / "config.json").read_text())
    except (OSError, ValueError) as exc:
        raise ArtifactError(f"{path / 'config.json'} is unreadable: {exc}") from exc
    shape = tuple(cfg.get("input_shape") or (cfg["in_channels"], cfg["window"]))
    model = build_model(cfg.get("model") or cfg["architecture"], cfg["variant"], input_shape=shape)
    norm = cfg["normalisation"]
    module = InferenceModel(model, np.array(norm["center"]), np.array(norm["scale"]),
                            cfg["target_scale"]["return"], cfg["target_scale"]["volatility"],
                            spatial_dims=len(shape) - 1)
    try:
        module.load_state_dict(load_file(path / "weights.safetensors"))
    except Exception as exc:  # noqa: BLE001 - a damaged file: say which
        raise ArtifactError(f"{path / 'weights.safetensors'} is unreadable: {type(exc).__name__}: {exc}") from exc
    return module.eval()
