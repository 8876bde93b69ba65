"""Receptive fields, parameter counts and FLOPs against independent closed forms."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch import nn

from pipeline.models.geometry import count_parameters, flops, receptive_field, total_stride
from pipeline.models.zoo import architecture, build_model, list_models, variant_table

NAMES = list(list_models())
SEQUENCE = [n for n in NAMES if architecture(n).kind == "sequence"]


def on_meta(name: str, variant: str = "default", **kw):
    with torch.device("meta"):
        return build_model(name, variant, **kw)


@pytest.mark.parametrize("variant", list_models()["wavenet"])
@pytest.mark.parametrize("overrides", [{}, {"kernel_size": 3, "stacks": 2}, {"layers_per_stack": 5, "stacks": 3}])
def test_wavenet_receptive_field_closed_form(variant, overrides):
    model = on_meta("wavenet", variant, **overrides)
    cfg = model.config
    dilations = [2 ** i for i in range(cfg.layers_per_stack)] * cfg.stacks
    assert receptive_field(model) == 1 + sum((cfg.kernel_size - 1) * d for d in dilations)


@pytest.mark.parametrize("variant", list_models()["tcn"])
@pytest.mark.parametrize("overrides", [{}, {"kernel_size": 2}, {"channels": (8, 8, 16)}])
def test_tcn_receptive_field_closed_form(variant, overrides):
    model = on_meta("tcn", variant, **overrides)
    cfg = model.config
    # Two dilated convolutions per residual block.
    dilations = [2 ** i for i in range(len(cfg.channels))]
    assert receptive_field(model) == 1 + sum(2 * (cfg.kernel_size - 1) * d for d in dilations)


def footprint(model, length: int, position: int | None = None) -> int:
    """Width of the input span whose gradient reaches one position of the last feature map."""
    x = torch.rand(1, model.in_channels, length, dtype=torch.float64, requires_grad=True)
    feats = model.features(x)
    j = feats.shape[-1] - 1 if position is None else position
    # A random mix of channels (a plain sum is constant after a LayerNorm, so its gradient is zero).
    weights = torch.randn(feats.shape[1], dtype=feats.dtype)
    (feats[0, :, j] * weights).sum().backward()
    hit = torch.nonzero(x.grad.abs().sum(1)[0]).flatten()
    return int(hit.max() - hit.min() + 1)


@pytest.mark.parametrize("name", ["wavenet", "tcn"])
def test_causal_receptive_field_matches_the_gradient_footprint(name):
    """The walk over layers equals the span the last step actually reads."""
    torch.manual_seed(0)
    model = build_model(name, in_channels=3, input_length=600).double().eval()
    if name == "tcn":  # positive weights and inputs keep every ReLU open (WaveNet's gates never close)
        for p in model.parameters():
            p.data.abs_()
    assert footprint(model, 600) == receptive_field(model)


@pytest.mark.parametrize("name", [n for n in SEQUENCE if not architecture(n).causal])
def test_non_causal_footprint_fits_in_the_receptive_field(name):
    """Max-pools route gradients to one input per window, so the footprint can only be smaller."""
    torch.manual_seed(0)
    # the geometry is the structure's: resnet1d's zero-initialised residual branches pass no gradient at init
    structural = {"zero_init_residual": False} if name == "resnet1d" else {}
    model = build_model(name, in_channels=3, input_length=1024, **structural).double().eval()
    rf, jump = receptive_field(model), total_stride(model)
    out_len = model.features(torch.zeros(1, 3, 1024, dtype=torch.float64)).shape[-1]
    span = footprint(model, 1024, out_len // 2)
    assert span <= rf
    assert span > rf // 2  # the walk is not wildly larger than reality
    assert jump == 1024 // out_len


def test_receptive_field_refuses_unknown_blocks():
    class Mystery(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv1d(1, 1, 3)

        def forward(self, x):
            return self.conv(x)

    with pytest.raises(TypeError, match="Mystery holds convolutions"):
        receptive_field(nn.Sequential(nn.Conv1d(1, 1, 3), Mystery()))


def test_resnet2d_resnet18_matches_torchvision_parameter_count():
    """torchvision ResNet-18: 11,689,512 parameters with a 1000-class fc (512·1000 + 1000)."""
    model = on_meta("resnet2d", "resnet18")
    assert count_parameters(model) == 11_689_512 - (512 * 1000 + 1000) + (512 * 6 + 6)
    assert receptive_field(model) == (435, 435)  # published receptive field of ResNet-18


@pytest.mark.parametrize("variant", list_models()["convnext1d"])
def test_convnext1d_parameter_count_closed_form(variant):
    model = on_meta("convnext1d", variant)
    cfg = model.config
    d = cfg.dims
    expected = cfg.in_channels * d[0] * cfg.stem_kernel + d[0] + 2 * d[0]  # stem conv + LayerNorm
    for i, (depth, dim) in enumerate(zip(cfg.depths, d)):
        if i:
            k = 2 if cfg.downsample else 1
            expected += 2 * d[i - 1] + d[i - 1] * dim * k + dim  # LayerNorm + conv k=2 s=2 (1×1 at full resolution)
        # depthwise k=7 (+bias), LayerNorm, 1×1 ×4 (+bias), 1×1 back (+bias), layer scale
        expected += depth * (dim * cfg.kernel_size + dim + 2 * dim + 4 * dim * dim + 4 * dim + 4 * dim * dim + dim + dim)
    reads = 2 if cfg.pooling == "avg_last" else 1  # the head reads the average and the newest step, or the newest
    expected += 2 * d[-1] + 6 * reads * d[-1] + 6  # final LayerNorm + head
    assert count_parameters(model) == expected


@pytest.mark.parametrize("name", ["resnet1d", "densenet1d", "convnext1d"])
def test_strided_families_default_to_full_resolution_and_the_newest_step(name):
    """The CPU-sized defaults keep the time resolution and their head reads the newest step (a 32-bar window is not
    summarised into one step); the published sizes keep their ImageNet downsampling (total stride 32 or 16)."""
    default = build_model(name, in_channels=3, input_length=32)
    assert total_stride(default) == 1 and default.head.pooling in ("last", "avg_last")
    assert default.features(torch.zeros(1, 3, 32)).shape[-1] == 32
    published = {"resnet1d": "resnet18", "densenet1d": "small", "convnext1d": "tiny"}[name]
    assert total_stride(on_meta(name, published)) in (16, 32)


def test_resnet1d_variants_grow_as_published():
    counts = {v: count_parameters(on_meta("resnet1d", v)) for v in ("resnet18", "resnet34", "resnet50")}
    # 1D kernels hold k instead of k² weights: roughly a third of the 2D ResNets (11.7M, 21.8M, 25.6M).
    assert 3.5e6 < counts["resnet18"] < counts["resnet34"] < counts["resnet50"] < 25.6e6


def test_densenet_variant_sizes():
    counts = [count_parameters(on_meta("densenet1d", v)) for v in ("tiny", "small", "medium", "large")]
    assert counts == sorted(counts) and counts[0] < 200_000 < counts[-1]
    model = on_meta("densenet1d", "small")
    # transitions compress the channel count by θ = 0.5: 48 + 6·24 = 192 → 96; 96 + 12·24 = 384 → 192; + 8·24
    assert model.head.linear.in_features == 2 * (192 + 8 * 24)  # the head reads the average and the newest step


def test_tcn_flops_closed_form():
    model = build_model("tcn", in_channels=15, input_length=256)
    cfg, t = model.config, 256
    macs, cin = 0, cfg.in_channels
    for cout in cfg.channels:
        macs += (cin * cout + cout * cout) * cfg.kernel_size * t + (cin * cout * t if cin != cout else 0)
        cin = cout
    macs += cin * 6  # head
    assert flops(model) == 2 * macs


def test_wavenet_flops_closed_form():
    model = build_model("wavenet", in_channels=15, input_length=128)
    cfg, t = model.config, 128
    r, s, n = cfg.residual_channels, cfg.skip_channels, cfg.layers_per_stack * cfg.stacks
    macs = 15 * r * t  # input 1×1
    macs += n * (r * 2 * r * cfg.kernel_size * t + r * s * t) + (n - 1) * r * r * t  # layers; last has no residual
    macs += s * s * t + s * 6  # post 1×1 and head
    assert flops(model) == 2 * macs


@pytest.mark.parametrize("name", NAMES)
def test_flops_scale_with_length_and_work_on_meta(name):
    model = on_meta(name)
    f = flops(model)
    assert f > 0
    if architecture(name).kind == "sequence":
        # Convolutions cost in proportion to length; only the head is length-independent.
        longer = on_meta(name, input_length=512)
        assert 1.9 * f < flops(longer) <= 2 * f


def test_variant_table_lists_every_variant():
    table = variant_table().splitlines()
    total = sum(len(v) for v in list_models().values())
    assert len(table) == 2 + total
    row = next(line for line in table if line.startswith("| resnet2d | resnet18 |"))
    assert "11,179,590" in row and "435×435" in row


REQUIRED = {
    "wavenet": {"default"},
    "tcn": {"default", "batchnorm"},
    "resnet1d": {"default", "se", "multiscale", "resnet18", "resnet34", "resnet50"},
    "densenet1d": {"default", "tiny", "small", "medium", "large"},
    "convnext1d": {"default", "tiny", "small", "base"},
    "inception": {"default", "inceptiontime"},
    "cnn_ta": {"default"},
    "resnet2d": {"default", "resnet18"},
    "orderbook_net": {"default"},
}


def test_registry_holds_every_architecture_and_variant():
    available = {k: set(v) for k, v in list_models().items()}
    for name, variants in REQUIRED.items():
        assert variants <= available[name], name
    for name in available:
        arch = architecture(name)
        assert arch.kind in ("sequence", "image") and isinstance(arch.causal, bool)


@pytest.mark.parametrize("name", NAMES)
def test_every_variant_builds_on_meta_with_its_config(name):
    arch = architecture(name)
    for variant, record in arch.variants.items():
        model = on_meta(name, variant)
        expected = dataclasses.replace(record, in_channels=model.input_shape[0])
        if arch.kind == "image":
            expected = dataclasses.replace(expected, image_size=tuple(model.input_shape[1:]))
        assert (model.name, model.variant, model.config) == (name, variant, expected)
        assert model.causal == arch.causal and model.kind == arch.kind


def test_image_variants_default_to_their_own_image():
    assert on_meta("orderbook_net", "deeplob").input_shape == (1, 100, 40)
    assert on_meta("orderbook_net").input_shape == (2, 64, 20)
    assert on_meta("resnet2d", input_shape=(15, 32, 32)).config.image_size == (32, 32)


def test_build_errors_name_the_problem():
    with pytest.raises(KeyError, match="unknown model 'lstm'"):
        build_model("lstm")
    with pytest.raises(KeyError, match="no variant 'huge'"):
        build_model("tcn", "huge")
    with pytest.raises(TypeError, match=r"unknown config field\(s\) \['kernal_size'\]"):
        build_model("tcn", kernal_size=3)
    with pytest.raises(ValueError, match="shorter than its minimum"):
        build_model("convnext1d", "tiny", input_length=16)  # patchify k=4 and 3 stride-2 stages: at least 32
    with pytest.raises(ValueError, match="image model"):
        build_model("resnet2d", input_length=64)
    with pytest.raises(ValueError, match="multiple of 4"):
        build_model("orderbook_net", input_shape=(2, 64, 10))
    with pytest.raises(ValueError, match="norm must be one of"):
        build_model("tcn", norm="layer")
