"""Introspection of a built model: receptive field, parameters, FLOPs.

``receptive_field`` walks the modules (no forward pass): convolutions and
pools contribute (k - 1)·d and their stride, ``nn.Sequential`` composes its
children, blocks with a ``geometry(axis)`` method describe their own wiring
(series / parallel), and element-wise modules (norms, activations, 1×1 maps,
dropout) contribute nothing. A module that holds convolutions but neither is
a Sequential nor has ``geometry`` raises, so a new block cannot be silently
mis-measured. The walk stops at ``nn.Flatten``: the reported field is the one
of a position of the last convolutional feature map.

``flops`` runs one forward pass (batch 1, on the model's device: meta works) with hooks and
counts 2 × multiply-accumulates of every convolution and linear layer.
"""

from __future__ import annotations

import torch
from torch import nn

from pipeline.models.layers import IDENTITY, Geometry, compose

_CONV = (nn.Conv1d, nn.Conv2d)
_POOL = (nn.MaxPool1d, nn.MaxPool2d, nn.AvgPool1d, nn.AvgPool2d)


def _pick(value, axis: int) -> int:
    return int(value[axis]) if isinstance(value, (tuple, list)) else int(value)


def module_geometry(module: nn.Module, axis: int = 0) -> Geometry:
    """Receptive field and stride of one module along ``axis`` (0 = time / height)."""
    if hasattr(module, "geometry"):
        return module.geometry(axis)
    if isinstance(module, _CONV):
        k, d, s = _pick(module.kernel_size, axis), _pick(module.dilation, axis), _pick(module.stride, axis)
        return Geometry((k - 1) * d + 1, s)
    if isinstance(module, _POOL):
        k = _pick(module.kernel_size, axis)
        s = _pick(module.stride if module.stride is not None else module.kernel_size, axis)
        d = _pick(getattr(module, "dilation", 1), axis)
        return Geometry((k - 1) * d + 1, s)
    if isinstance(module, nn.Sequential):
        return sequential_geometry(module, axis)
    if any(isinstance(m, _CONV + _POOL) or hasattr(m, "geometry") for m in module.modules()):
        raise TypeError(
            f"receptive_field: {type(module).__name__} holds convolutions but has no geometry(axis) method"
        )
    return IDENTITY


def sequential_geometry(modules, axis: int = 0) -> Geometry:
    """Compose the geometry of modules applied in order, stopping at nn.Flatten."""
    parts = []
    for m in modules:
        if isinstance(m, nn.Flatten):
            break
        parts.append(module_geometry(m, axis))
    return compose(*parts) if parts else IDENTITY


def receptive_field(model: nn.Module):
    """Input steps seen by one position of the model's last feature map.

    Sequence models: an int (time steps). Image models: (height, width).
    """
    body = getattr(model, "body", model)
    if getattr(model, "kind", "sequence") == "image":
        return (module_geometry(body, 0).rf, module_geometry(body, 1).rf)
    return module_geometry(body, 0).rf


def total_stride(model: nn.Module):
    """Input steps between neighbouring positions of the last feature map."""
    body = getattr(model, "body", model)
    if getattr(model, "kind", "sequence") == "image":
        return (module_geometry(body, 0).jump, module_geometry(body, 1).jump)
    return module_geometry(body, 0).jump


def count_parameters(model: nn.Module, trainable_only: bool = True) -> int:
    """Number of (trainable) parameter elements; works on the meta device."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def _conv_macs(m: nn.Module, out: torch.Tensor) -> int:
    k = 1
    for v in (m.kernel_size if isinstance(m.kernel_size, tuple) else (m.kernel_size,)):
        k *= int(v)
    return (out.numel() // out.shape[0]) * (m.in_channels // m.groups) * k


def flops(model: nn.Module, input_shape: tuple[int, ...] | None = None) -> int:
    """FLOPs (2 × MACs of conv and linear layers) for one sample of ``input_shape``.

    ``input_shape`` excludes the batch axis; default: ``model.input_shape``.
    """
    shape = tuple(input_shape or model.input_shape)
    total = [0]
    hooks = []

    def conv_hook(m, inp, out):
        total[0] += 2 * _conv_macs(m, out)

    def linear_hook(m, inp, out):
        total[0] += 2 * (out.numel() // (out.shape[0] if out.dim() > 1 else 1)) * m.in_features

    for m in model.modules():
        if isinstance(m, _CONV) or (hasattr(m, "kernel_size") and hasattr(m, "in_channels") and hasattr(m, "groups")):
            hooks.append(m.register_forward_hook(conv_hook))
        elif isinstance(m, nn.Linear):
            hooks.append(m.register_forward_hook(linear_hook))
    was_training = model.training
    try:
        model.eval()
        p = next(model.parameters())
        with torch.no_grad():
            model(torch.zeros((1,) + shape, dtype=p.dtype, device=p.device))
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    return total[0]
