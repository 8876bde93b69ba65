"""Transfer learning, offline: SimCLR pre-training of a 2D backbone on unlabeled charts, and local weight files.

SimCLR (Chen et al. 2020): two augmented views of each chart go through the
backbone and a projection head (global average pool -> Linear -> ReLU ->
Linear); the NT-Xent loss (:func:`nt_xent`) pulls the two views of one chart
together and pushes them from the other ``2N - 2`` views of the batch. Only
the backbone (``model.body``) is kept; the fine-tune builds a fresh head.

Leakage: pre-training runs once **per fold**, on the chart images of every
symbol whose ts is at or before that fold's training end
(:func:`pretrain_rows`), labels unused. Per fold rather than once on the
first fold's span reused everywhere: each fold's encoder then sees exactly
the history its fine-tune may see (like-for-like with the scratch model of
the same fold), and no fold reuses an encoder trained on less than its own
past; the cost is bounded by ``pretrain_max_images`` views per epoch.

Augmentations keep the chart's meaning (:func:`augment_charts`, chart
channels only; the symbol planes are left as they are):

- time crop: blank the leftmost ``0..max_drop_bars`` bars (whole bars, never
  the rightmost bar, positions and scale unchanged), so the newest bar is
  always there as it was drawn;
- vertical shift: the price area moves up or down by at most ``max_shift``
  pixels (zero fill, the volume area stays);
- pixel dropout and small Gaussian noise (clipped to [0, 1]).

Never a horizontal flip (time reversal changes the chart's meaning) and never
a colour inversion.

Local weights (``CONVTRADE_PRETRAINED_WEIGHTS``): a ``.safetensors`` file or a
torchvision-style ``state_dict`` ``.pth`` (read with ``torch.load(...,
weights_only=True)``), never downloaded. :func:`load_backbone_weights` maps
its tensors onto the backbone by name (torchvision ResNet names
``conv1 / bn1 / layerS.J.conv1 ... / downsample`` or our own ``body.*`` /
``model.body.*``) and shape, and reports what was loaded and what was skipped
(with why); a file that is unreadable or of which nothing matches is an error
naming it. The transfer model starts from the file, then pre-trains (or, with
``CONVTRADE_PRETRAIN_EPOCHS=0``, fine-tunes straight from the file).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import re
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from pipeline.config import Settings
from pipeline.core.digests import sha256_of

PRETRAIN_FILE = "pretrained_backbone.safetensors"  # per fold, beside the fine-tuned artifact
PRETRAIN_REPORT = "pretrain.json"


@dataclasses.dataclass(frozen=True)
class ChartAugment:
    """Strengths of the chart-preserving augmentations (see the module docstring)."""

    bar_width: int = 3  # columns per bar (Jiang-Kelly-Xiu charts: 3)
    bars: int = 20  # bars per chart: the rightmost one is never blanked
    shift_rows: int = 0  # rows of the price area, from the top (0: all rows)
    max_drop_bars: int = 5
    max_shift: int = 2
    dropout: float = 0.02
    noise: float = 0.02

    def __post_init__(self) -> None:
        if not 0 <= self.max_drop_bars < self.bars:
            raise ValueError(f"ChartAugment: max_drop_bars={self.max_drop_bars} must be in [0, {self.bars}) "
                             "(the rightmost bar is always kept)")
        if self.max_shift < 0 or not 0.0 <= self.dropout < 1.0 or self.noise < 0:
            raise ValueError(f"ChartAugment: max_shift >= 0, dropout in [0, 1), noise >= 0; got {self}")

    @classmethod
    def for_encoding(cls, name: str) -> "ChartAugment":
        """The augmentations for encoding ``name`` (candlestick charts: time along the width)."""
        from pipeline.encodings.build import spec
        from pipeline.encodings.candlestick import CandlestickChart

        enc = spec(name).encoder
        if not isinstance(enc, CandlestickChart):
            raise ValueError(f"pre-training: encoding {name!r} is not a candlestick chart; the chart-preserving "
                             "augmentations (time crop, vertical shift of the price area) are defined for the "
                             "candlestick_* encodings only")
        return cls(bar_width=3, bars=enc.bars, shift_rows=enc.price_rows,
                   max_drop_bars=min(cls.max_drop_bars, enc.bars - 1))


@dataclasses.dataclass(frozen=True)
class PretrainConfig:
    """SimCLR recipe. Defaults are :class:`pipeline.config.Settings`' (one home); see :meth:`from_settings`."""

    epochs: int = Settings.pretrain_epochs
    max_images: int = Settings.pretrain_max_images
    batch_size: int = Settings.pretrain_batch_size
    temperature: float = Settings.pretrain_temperature
    learning_rate: float = Settings.pretrain_learning_rate
    weight_decay: float = Settings.weight_decay
    projection_dim: int = Settings.pretrain_projection_dim
    weights: str = Settings.pretrained_weights  # local torchvision-format / safetensors file ("": none)

    @classmethod
    def from_settings(cls, settings) -> "PretrainConfig":
        return cls(epochs=settings.pretrain_epochs, max_images=settings.pretrain_max_images,
                   batch_size=settings.pretrain_batch_size, temperature=settings.pretrain_temperature,
                   learning_rate=settings.pretrain_learning_rate, weight_decay=settings.weight_decay,
                   projection_dim=settings.pretrain_projection_dim, weights=str(settings.pretrained_weights))


# --------------------------------------------------------------------------- loss and augmentations
def nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float) -> torch.Tensor:
    """NT-Xent over a batch of N pairs: mean over the 2N views of the cross-entropy of its positive among
    the other 2N - 1 views, on cosine similarities divided by ``temperature``."""
    if z1.shape != z2.shape or z1.dim() != 2:
        raise ValueError(f"nt_xent: two (N, D) batches of the same shape expected, got {tuple(z1.shape)} "
                         f"and {tuple(z2.shape)}")
    if not temperature > 0:
        raise ValueError(f"nt_xent: temperature must be > 0, got {temperature}")
    n = z1.shape[0]
    z = F.normalize(torch.cat([z1, z2]), dim=1)
    sim = (z @ z.T) / temperature
    sim = sim.masked_fill(torch.eye(2 * n, dtype=torch.bool, device=z.device), float("-inf"))
    target = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(z.device)
    return F.cross_entropy(sim, target)


def augment_charts(x: torch.Tensor, aug: ChartAugment, generator: torch.Generator, n_chart: int) -> torch.Tensor:
    """One random view of each raw chart of ``x`` (B, C, H, W), pixels in [0, 1]; channels from ``n_chart``
    on (the symbol planes) are returned unchanged."""
    b, _, h, w = x.shape
    if aug.shift_rows > h or aug.bars * aug.bar_width > w:
        raise ValueError(f"augment_charts: {aug} does not fit charts of {h} x {w} pixels")
    y = x[:, :n_chart].clone()
    if aug.max_drop_bars:
        drop = torch.randint(0, aug.max_drop_bars + 1, (b,), generator=generator) * aug.bar_width
        keep = torch.arange(w).view(1, w) >= drop.view(b, 1)  # (B, W): columns left of the crop are blanked
        y = y * keep.view(b, 1, 1, w)
    if aug.max_shift:
        rows = aug.shift_rows or h
        shift = torch.randint(-aug.max_shift, aug.max_shift + 1, (b,), generator=generator)
        src = torch.arange(rows).view(1, rows) - shift.view(b, 1)  # (B, rows): row r shows old row r - s
        valid = (src >= 0) & (src < rows)
        idx = src.clamp(0, rows - 1).view(b, 1, rows, 1).expand(b, n_chart, rows, w)
        moved = y[:, :, :rows].gather(2, idx) * valid.view(b, 1, rows, 1)
        y = torch.cat([moved, y[:, :, rows:]], dim=2)
    if aug.dropout:
        y = y * (torch.rand(y.shape, generator=generator) >= aug.dropout)
    if aug.noise:
        y = (y + aug.noise * torch.randn(y.shape, generator=generator)).clamp(0.0, 1.0)
    return torch.cat([y, x[:, n_chart:]], dim=1)


def pretrain_rows(store, train_end_ms: int) -> np.ndarray:
    """Image rows (every symbol) of the samples whose ts is at or before ``train_end_ms``; labels unused."""
    return np.unique(store.sample_rows[store.sample_ts_ms <= int(train_end_ms)])


# --------------------------------------------------------------------------- SimCLR
class ProjectionHead(nn.Module):
    def __init__(self, width: int, dim: int):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(width, width), nn.ReLU(inplace=True), nn.Linear(width, dim))

    def forward(self, feature_map: torch.Tensor) -> torch.Tensor:
        return self.net(feature_map.mean(dim=tuple(range(2, feature_map.dim()))))


def pretrain_backbone(module, store, rows: np.ndarray, config: PretrainConfig, aug: ChartAugment, seed: int,
                      log: Callable[[str], None] = print, tag: str = "pretrain") -> list[dict]:
    """SimCLR on the images at ``rows``: trains ``module.model.body`` in place (inputs normalised by
    ``module.normalise``, as the fine-tune sees them). Returns the loss per epoch."""
    rows = np.asarray(rows, dtype=np.int64)
    if rows.shape[0] < 2:
        raise ValueError(f"{tag}: {rows.shape[0]} image(s) before the training end; SimCLR needs at least 2")
    body, n_chart = module.model.body, store.n_feature_channels
    torch.manual_seed(seed)
    with torch.no_grad():
        was = body.training
        body.eval()
        width = int(body(module.normalise(torch.from_numpy(store.gather(rows[:1])))).shape[1])
        body.train(was)
    head = ProjectionHead(width, config.projection_dim)
    params = [*body.parameters(), *head.parameters()]
    opt = torch.optim.AdamW(params, lr=config.learning_rate, weight_decay=config.weight_decay)
    per_epoch = min(rows.shape[0], config.max_images) if config.max_images else rows.shape[0]
    batch = max(2, min(config.batch_size, per_epoch))
    steps = max(1, config.epochs * math.ceil(per_epoch / batch))
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    curve = []
    body.train()
    head.train()
    for epoch in range(config.epochs):
        rng = np.random.default_rng([seed, epoch])
        gen = torch.Generator().manual_seed(seed * 100003 + epoch)
        order = rng.permutation(rows.shape[0])[:per_epoch]
        t0, total, seen = time.perf_counter(), 0.0, 0
        for i in range(0, order.shape[0], batch):
            idx = np.sort(order[i:i + batch])
            if idx.shape[0] < 2:
                continue  # one chart has no negatives
            x = torch.from_numpy(store.gather(rows[idx]))
            views = torch.cat([augment_charts(x, aug, gen, n_chart), augment_charts(x, aug, gen, n_chart)])
            z = head(body(module.normalise(views)))
            loss = nt_xent(z[:idx.shape[0]], z[idx.shape[0]:], config.temperature)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            sched.step()
            total += float(loss.detach()) * idx.shape[0]
            seen += idx.shape[0]
        elapsed = time.perf_counter() - t0
        row = {"epoch": epoch, "nt_xent": total / max(1, seen), "images": seen,
               "images_per_s": seen / max(elapsed, 1e-9)}
        curve.append(row)
        log(f"{tag} epoch {epoch + 1}/{config.epochs}: NT-Xent {row['nt_xent']:.4f} "
            f"(temperature {config.temperature}, {seen} images of {rows.shape[0]}, {row['images_per_s']:.0f}/s)")
    return curve


# --------------------------------------------------------------------------- local weight files
@dataclasses.dataclass
class WeightsReport:
    path: str
    loaded: list[str]  # backbone names (ours) that were set from the file
    skipped: list[tuple[str, str]]  # (name in the file, why)
    adapted: list[str] = dataclasses.field(default_factory=list)  # loaded after an input-channel adaptation

    def summary(self) -> str:
        why = {}
        for _, reason in self.skipped:
            why[reason] = why.get(reason, 0) + 1
        parts = ", ".join(f"{n} {r}" for r, n in sorted(why.items()))
        return (f"{self.path}: loaded {len(self.loaded)} tensors into the backbone"
                + (f" ({', '.join(self.adapted)} adapted to the input channels)" if self.adapted else "")
                + f", skipped {len(self.skipped)}" + (f" ({parts})" if parts else ""))


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors of a ``.safetensors`` file or a ``state_dict`` ``.pth``/``.pt`` (weights_only); errors name the file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"pretrained weights {path}: no such file (CONVTRADE_PRETRAINED_WEIGHTS); "
                                "nothing is downloaded, give a local .safetensors or .pth file")
    try:
        if path.suffix == ".safetensors":
            state = load_file(path)
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any reader failure is the same user error: a bad file
        raise ValueError(f"pretrained weights {path}: unreadable ({type(exc).__name__}: {exc})") from None
    for key in ("state_dict", "model"):  # a training checkpoint that nests its state dict
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict):
        raise ValueError(f"pretrained weights {path}: holds a {type(state).__name__}, not a state dict of tensors")
    tensors = {str(k): v for k, v in state.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise ValueError(f"pretrained weights {path}: no tensor in the file")
    return tensors


_TV_BLOCK = re.compile(r"layer(\d+)\.(\d+)\.(.+)")
_TV_BASIC = {"conv1": "main.0", "bn1": "main.1", "conv2": "main.3", "bn2": "main.4",
             "downsample.0": "shortcut.0", "downsample.1": "shortcut.1"}
_TV_BOTTLENECK = {**_TV_BASIC, "conv3": "main.6", "bn3": "main.7"}


def _torchvision_names(model) -> dict[str, str]:
    """torchvision ResNet module prefixes -> our ``body.<i>`` prefixes (resnet2d bodies only)."""
    from pipeline.models.resnet1d import Bottleneck, _Residual

    body = model.body
    children = list(body.named_children())
    out = {}
    convs = [n for n, m in children if isinstance(m, nn.Conv2d)]
    norms = [n for n, m in children if isinstance(m, nn.BatchNorm2d)]
    if convs:
        out["conv1"] = f"body.{convs[0]}"
    if norms:
        out["bn1"] = f"body.{norms[0]}"
    blocks = [(n, m) for n, m in children if isinstance(m, _Residual)]
    layers = tuple(getattr(model.config, "layers", ()))
    if not blocks or sum(layers) != len(blocks):
        return out
    k = 0
    for stage, count in enumerate(layers, start=1):
        for j in range(count):
            name, block = blocks[k]
            inner = _TV_BOTTLENECK if isinstance(block, Bottleneck) else _TV_BASIC
            for tv, ours in inner.items():
                out[f"layer{stage}.{j}.{tv}"] = f"body.{name}.{ours}"
            k += 1
    return out


def _our_name(key: str, tv: dict[str, str]) -> tuple[str | None, bool]:
    """(our backbone name of a file's tensor or None, whether it came by a torchvision name)."""
    key = key.removeprefix("module.")
    for prefix in ("model.body.", "body.", "backbone."):
        if key.startswith(prefix):
            return "body." + key[len(prefix):], False
    prefix, _, leaf = key.rpartition(".")
    if prefix in tv:
        return f"{tv[prefix]}.{leaf}", True
    return None, False


def load_backbone_weights(model, path: str | Path, image_channels: int | None = None) -> WeightsReport:
    """Copy the file's backbone tensors into ``model.body`` where name and shape match; see the module docstring.

    An RGB stem convolution (torchvision's, 3 input channels) on a one-channel chart (``image_channels=1``,
    plus its symbol planes) is adapted: the RGB filters are summed onto a single chart channel (timm's
    recipe for grey images), the symbol planes keep their fresh initialisation.
    """
    state = read_state_dict(path)
    tv = _torchvision_names(model)
    own = model.state_dict()
    stem = tv.get("conv1", "") + ".weight"
    new, loaded, skipped, adapted = {}, [], [], []
    for key, value in state.items():
        name, torchvision = _our_name(key, tv)
        if name is None:
            skipped.append((key, "not a backbone tensor"))
        elif name not in own:
            skipped.append((key, "no such backbone tensor"))
        elif (torchvision and name == stem and image_channels == 1 and value.dim() == 4 and value.shape[1] == 3
              and own[name].shape[0] == value.shape[0] and own[name].shape[2:] == value.shape[2:]):
            w = own[name].clone()  # an RGB stem on a grey chart (+ symbol planes, whatever their number)
            w[:, :1] = value.sum(dim=1, keepdim=True).to(w.dtype)
            new[name] = w
            loaded.append(name)
            adapted.append(name)
        elif own[name].shape == value.shape:
            new[name] = value.to(own[name].dtype)
            loaded.append(name)
        else:
            skipped.append((key, "shape differs"))
    for name in [n for n in loaded if n.endswith(".num_batches_tracked")]:  # a scalar matches any norm layer:
        if name.replace(".num_batches_tracked", ".weight") not in new:  # only with its layer's weights
            loaded.remove(name)
            del new[name]
            skipped.append((name, "its layer did not load"))
    if not loaded:
        examples = ", ".join(list(state)[:4])
        raise ValueError(f"pretrained weights {path}: no tensor matches the {getattr(model, 'name', '')} "
                         f"{getattr(model, 'variant', '')} backbone by name and shape (file has e.g. {examples}; "
                         f"the backbone has e.g. {', '.join(list(own)[:3])}); for torchvision ResNet-18 weights "
                         "use CONVTRADE_MODEL_VARIANT=resnet18")
    model.load_state_dict({**own, **new})
    return WeightsReport(str(path), loaded, skipped, adapted)


# --------------------------------------------------------------------------- the fold hook


def initialise_backbone(module, store, config, fold_index: int, fit: np.ndarray, val: np.ndarray, out_dir: Path,
                        log: Callable[[str], None] = print) -> dict:
    """The init hook of :func:`pipeline.training.walk_forward.train_fold` for a transfer model: the local
    weights file (if any), then SimCLR on the fold's training-span images; cached per fold in
    ``out_dir/pretrained_backbone.safetensors`` (reused while its key matches), reported in ``pretrain.json``."""
    pc: PretrainConfig = config.pretrain
    tag = f"{config.architecture} fold {fold_index} pretrain"
    span = np.concatenate([fit, val])
    train_end = int(store.sample_ts_ms[span].max())
    rows = pretrain_rows(store, train_end)
    aug = ChartAugment.for_encoding(config.encoding) if pc.epochs else None
    digest = sha256_of(pc.weights) if pc.weights and Path(pc.weights).is_file() else ""
    key = hashlib.sha256(json.dumps([dataclasses.asdict(pc), digest, config.zoo_name, config.variant, config.seed,
                                     fold_index, store.fingerprint, train_end,
                                     dataclasses.asdict(aug) if aug else None]).encode()
                         + rows.tobytes() + module.center.numpy().tobytes()
                         + module.scale.numpy().tobytes()).hexdigest()
    path, report_path = Path(out_dir) / PRETRAIN_FILE, Path(out_dir) / PRETRAIN_REPORT
    body = module.model.body
    if path.exists() and report_path.exists():
        with safe_open(path, "pt") as f:
            cached = (f.metadata() or {}).get("key")
        if cached == key:
            body.load_state_dict(load_file(path))
            log(f"{tag}: reused {path}")
            return json.loads(report_path.read_text())
    report: dict = {"train_end_ms": train_end, "images": int(rows.shape[0]), "weights": None, "curve": []}
    if pc.weights:
        loaded = load_backbone_weights(module.model, pc.weights, store.n_feature_channels)
        log(f"{tag}: {loaded.summary()}")
        report["weights"] = {"path": loaded.path, "sha256": digest, "loaded": loaded.loaded,
                             "skipped": loaded.skipped, "adapted": loaded.adapted}
    if pc.epochs:
        log(f"{tag}: SimCLR on {rows.shape[0]} images of {len(store.symbols)} symbols at or before "
            f"{np.datetime64(train_end, 'ms')} (the fold's training end)")
        report["curve"] = pretrain_backbone(module, store, rows, pc, aug, config.seed * 7907 + fold_index, log, tag)
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    report_path.write_text(json.dumps(report, indent=1))
    save_file({k: v.contiguous() for k, v in body.state_dict().items()}, path, metadata={"key": key})
    return report
