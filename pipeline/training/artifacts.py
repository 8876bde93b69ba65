"""A fold's artifacts: ``weights.safetensors`` (no pickle), ``config.json`` (everything needed to rebuild the
network and its input scaling) and ``program.pt2`` (torch.export, where the network exports)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import dataclasses
import json
import subprocess
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from pipeline.models.zoo import build_model
from pipeline.training.inference import InferenceModel

ARTIFACT_FORMAT = 1

if TYPE_CHECKING:
    from pipeline.training.datasets import WindowStore
    from pipeline.training.recipe import TrainingConfig


def code_version() -> str:
    try:
        return subprocess.run(["git", "describe", "--always", "--dirty"], capture_output=True, text=True,
                              cwd=Path(__file__).parent, timeout=10).stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


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
