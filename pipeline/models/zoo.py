"""Build any zoo model by name and variant; save and load it with its config.

>>> model = build_model("tcn")                       # CPU-sized default
>>> model = build_model("resnet1d", "resnet50", in_channels=15, input_length=512)
>>> model = build_model("resnet2d", input_shape=(3, 64, 64))
>>> list_models()                                    # {"tcn": ["default", ...], ...}

Each architecture module registers a config dataclass, its named variants
(``default`` is always small enough to train on 2 CPU cores), a builder and
whether it is causal and a sequence or image model.

``python -m pipeline.models --table`` prints the markdown table of
parameters, receptive fields and FLOPs of every variant.
"""

from __future__ import annotations

import dataclasses
import importlib
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from pipeline.models.heads import HeadOutput, MultiTaskHead
from pipeline.models.layers import check_input

# One file per architecture under pipeline/models/, each registering its architecture (here) and its trainable
# models (pipeline.models.catalogue). Adding an architecture: its file, and its name here.
ARCHITECTURE_MODULES = (
    "wavenet", "tcn", "resnet1d", "densenet1d", "convnext1d", "inception", "cnn_ta", "resnet2d", "orderbook_net",
)
FORMAT_VERSION = 1


class ZooModel(nn.Module):
    """A feature extractor (``body``) followed by the shared multi-task head.

    ``forward(x)`` returns a :class:`HeadOutput` per window. Causal sequence
    models also offer ``forward_sequence(x)``: outputs at every time step,
    where step t depends on inputs ≤ t only.
    """

    def __init__(self, config: Any, body: nn.Module, head: MultiTaskHead, *, causal: bool, kind: str,
                 min_length: int = 1):
        super().__init__()
        self.config = config
        self.body = body
        self.head = head
        self.causal = causal
        self.kind = kind
        self.in_channels = int(config.in_channels)
        self.min_length = int(min_length)
        self.name = ""
        self.variant = ""
        self.input_shape: tuple[int, ...] = ()

    def features(self, x: torch.Tensor) -> torch.Tensor:
        check_input(x, 3 if self.kind == "sequence" else 4, self.in_channels, self.name or type(self).__name__)
        if x.shape[-1] < self.min_length and self.kind == "sequence":
            raise ValueError(f"{self.name}: input length {x.shape[-1]} is shorter than the minimum {self.min_length}")
        return self.body(x)

    def forward(self, x: torch.Tensor) -> HeadOutput:
        return self.head(self.features(x))

    def forward_sequence(self, x: torch.Tensor) -> HeadOutput:
        """Per-step outputs (B, 3, T) / (B, T); causal sequence models only."""
        if not self.causal:
            raise TypeError(f"{self.name}: forward_sequence needs a causal model")
        return self.head.per_step(self.features(x))

    def extra_repr(self) -> str:
        return f"name={self.name!r}, variant={self.variant!r}, causal={self.causal}, kind={self.kind!r}"


@dataclasses.dataclass(frozen=True)
class Architecture:
    """One registered architecture."""

    name: str
    config_class: type
    variants: dict[str, Any]
    builder: Callable[[Any], ZooModel]
    causal: bool
    kind: str  # "sequence" | "image"
    default_input_shape: tuple[int, ...]  # without batch; channels first
    description: str = ""


_ARCHITECTURES: dict[str, Architecture] = {}


def register_architecture(arch: Architecture) -> Architecture:
    if "default" not in arch.variants:
        raise ValueError(f"architecture {arch.name!r} must define a 'default' variant")
    _ARCHITECTURES[arch.name] = arch
    return arch


def load_architectures() -> None:
    """Import every architecture module (each registers itself on import)."""
    for module in ARCHITECTURE_MODULES:
        importlib.import_module(f"pipeline.models.{module}")


def architecture(name: str) -> Architecture:
    load_architectures()
    try:
        return _ARCHITECTURES[name]
    except KeyError:
        raise KeyError(f"unknown model {name!r}: choose one of {sorted(_ARCHITECTURES)}") from None


def list_models() -> dict[str, list[str]]:
    """Every architecture name with its variant names."""
    load_architectures()
    return {name: list(a.variants) for name, a in _ARCHITECTURES.items()}


def model_config(name: str, variant: str = "default", **overrides: Any) -> Any:
    """The config record of a variant with ``overrides`` applied (validated field names)."""
    arch = architecture(name)
    if variant not in arch.variants:
        raise KeyError(f"model {name!r} has no variant {variant!r}: choose one of {list(arch.variants)}")
    fields = {f.name for f in dataclasses.fields(arch.config_class)}
    unknown = sorted(set(overrides) - fields)
    if unknown:
        raise TypeError(f"model {name!r}: unknown config field(s) {unknown}; fields are {sorted(fields)}")
    return dataclasses.replace(arch.variants[variant], **overrides)


def build_model(name: str, variant: str = "default", in_channels: int | None = None,
                input_length: int | None = None, input_shape: tuple[int, ...] | None = None,
                **overrides: Any) -> ZooModel:
    """Build architecture ``name`` at ``variant`` for the given input.

    Sequence models take ``in_channels`` and ``input_length`` (default 15 ×
    256); image models take ``input_shape`` = (channels, height, width),
    by default the image of the variant's config.
    ``overrides`` replace fields of the variant's config record.
    """
    arch = architecture(name)
    record = model_config(name, variant)
    default_shape = arch.default_input_shape
    if arch.kind == "image" and hasattr(record, "image_size"):
        default_shape = (record.in_channels, *record.image_size)  # a variant may fix its own image
    shape = list(input_shape or default_shape)
    if arch.kind == "sequence":
        if input_shape is not None and len(shape) != 2:
            raise ValueError(f"{name}: input_shape of a sequence model is (channels, length), got {input_shape}")
        if in_channels is not None:
            shape[0] = in_channels
        if input_length is not None:
            shape[1] = input_length
    else:
        if len(shape) != 3:
            raise ValueError(f"{name}: input_shape of an image model is (channels, height, width), got {input_shape}")
        if in_channels is not None:
            shape[0] = in_channels
        if input_length is not None:
            raise ValueError(f"{name} is an image model: pass input_shape=(C, H, W), not input_length")
    cfg_overrides = dict(overrides)
    cfg_overrides["in_channels"] = shape[0]
    if arch.kind == "image" and "image_size" in {f.name for f in dataclasses.fields(arch.config_class)}:
        cfg_overrides.setdefault("image_size", tuple(shape[1:]))
    config = model_config(name, variant, **cfg_overrides)
    model = arch.builder(config)
    model.name, model.variant, model.input_shape = name, variant, tuple(int(s) for s in shape)
    if arch.kind == "sequence" and shape[1] < model.min_length:
        raise ValueError(f"{name}/{variant}: input_length {shape[1]} is shorter than its minimum {model.min_length}")
    return model


def save_model(model: ZooModel, path: str | Path) -> Path:
    """Write weights, config, name, variant and input shape to one file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({
        "format_version": FORMAT_VERSION,
        "name": model.name,
        "variant": model.variant,
        "input_shape": list(model.input_shape),
        "config": dataclasses.asdict(model.config),
        "state_dict": model.state_dict(),
    }, path)
    return path


def load_model(path: str | Path, map_location: str | torch.device = "cpu") -> ZooModel:
    """Rebuild a model saved by :func:`save_model` (in eval mode)."""
    payload = torch.load(Path(path), map_location=map_location, weights_only=True)
    if payload.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{path}: not a convtrade model file (format_version={payload.get('format_version')})")
    arch = architecture(payload["name"])
    fields = {f.name: f for f in dataclasses.fields(arch.config_class)}
    cfg = {k: tuple(v) if isinstance(v, list) else v for k, v in payload["config"].items()}
    unknown = sorted(set(cfg) - set(fields))
    if unknown:
        raise ValueError(f"{path}: config fields {unknown} unknown to {payload['name']}")
    config = arch.config_class(**cfg)
    model = arch.builder(config)
    model.name, model.variant = payload["name"], payload["variant"]
    model.input_shape = tuple(payload["input_shape"])
    model.load_state_dict(payload["state_dict"])
    return model.eval()


def variant_table(in_channels: int = 15, input_length: int = 256) -> str:
    """Markdown table: architecture, variant, params, receptive field, FLOPs/sample.

    Built on the meta device, so published sizes cost no memory.
    """
    from pipeline.models.geometry import count_parameters, flops, receptive_field

    rows = ["| architecture | variant | causal | input | params | receptive field | FLOPs/sample |",
            "|---|---|---|---|---:|---:|---:|"]
    for name, variants in list_models().items():
        arch = architecture(name)
        for variant in variants:
            with torch.device("meta"):
                if arch.kind == "sequence":
                    model = build_model(name, variant, in_channels=in_channels, input_length=input_length)
                else:
                    model = build_model(name, variant)
            rf = receptive_field(model)
            rf_text = str(rf) if isinstance(rf, int) else "×".join(map(str, rf))
            shape = "×".join(map(str, model.input_shape))
            rows.append(f"| {name} | {variant} | {'yes' if arch.causal else 'no'} | {shape} | "
                        f"{count_parameters(model):,} | {rf_text} | {_human(flops(model))} |")
    return "\n".join(rows)


def _human(n: float) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= scale:
            return f"{n / scale:.2f} {unit}"
    return str(int(n))
