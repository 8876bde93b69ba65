"""Behaviour of every registered architecture at its default size.

Parametrized over the registry: shapes, causality, gradients, determinism,
a short training run on a learnable synthetic task, export, save / load.
"""

from __future__ import annotations

import warnings

import pytest
import torch

from pipeline.models.heads import HeadOutput
from pipeline.training.losses import LossConfig, multitask_loss
from pipeline.models.zoo import architecture, build_model, list_models, load_model, save_model

# plain cross-entropy on the direction (no smoothing, no class weights): the training loss, direction only
DIRECTION_CE = LossConfig(class_weighting="none", label_smoothing=0.0)

NAMES = list(list_models())
SEQUENCE = [n for n in NAMES if architecture(n).kind == "sequence"]
IMAGE = [n for n in NAMES if architecture(n).kind == "image"]
CAUSAL = [n for n in NAMES if architecture(n).causal]

# Small inputs per image architecture: (C, H, W) used by the generic tests.
SMALL_IMAGE = {"cnn_ta": (1, 15, 15), "resnet2d": (3, 32, 32), "orderbook_net": (2, 32, 20)}


def small_model(name: str, **kw) -> torch.nn.Module:
    if architecture(name).kind == "sequence":
        return build_model(name, in_channels=kw.pop("in_channels", 4), input_length=kw.pop("input_length", 64), **kw)
    return build_model(name, input_shape=kw.pop("input_shape", SMALL_IMAGE[name]), **kw)


def check_output(out: HeadOutput, batch: int) -> None:
    assert isinstance(out, HeadOutput)
    assert out.direction_logits.shape == (batch, 3)
    for t in out[1:]:
        assert t.shape == (batch,)
    assert (out.expected_volatility >= 0).all()
    assert ((out.confidence >= 0) & (out.confidence <= 1)).all()
    assert all(torch.isfinite(t).all() for t in out)


SEQ_SHAPES = [(1, 15, 256), (3, 4, 64), (2, 7, 100)]


@pytest.mark.parametrize("name", SEQUENCE)
@pytest.mark.parametrize("batch,channels,length", SEQ_SHAPES)
def test_sequence_shapes(name, batch, channels, length):
    model = build_model(name, in_channels=channels, input_length=length).eval()
    with torch.no_grad():
        check_output(model(torch.randn(batch, channels, length)), batch)
        if model.causal:
            seq = model.forward_sequence(torch.randn(batch, channels, length))
            assert seq.direction_logits.shape == (batch, 3, length)
            assert all(t.shape == (batch, length) for t in seq[1:])


IMAGE_SHAPES = {
    "cnn_ta": [(2, 1, 15, 15), (1, 3, 20, 12)],
    "resnet2d": [(2, 3, 64, 64), (1, 1, 32, 48), (3, 15, 40, 40)],
    "orderbook_net": [(2, 2, 64, 20), (1, 1, 40, 8), (2, 4, 100, 40)],
}


@pytest.mark.parametrize("name,shape", [(n, s) for n in IMAGE for s in IMAGE_SHAPES[n]])
def test_image_shapes(name, shape):
    model = build_model(name, input_shape=shape[1:]).eval()
    with torch.no_grad():
        check_output(model(torch.randn(*shape)), shape[0])


@pytest.mark.parametrize("name", NAMES)
def test_wrong_input_is_rejected_with_its_shape(name):
    model = small_model(name).eval()
    shape = (2, model.in_channels + 1) + tuple(model.input_shape[1:])
    with pytest.raises(ValueError, match=r"channels, got shape"):
        model(torch.randn(*shape))
    with pytest.raises(ValueError, match=r"expected input"):
        model(torch.randn(*model.input_shape))  # batch axis missing


@pytest.mark.parametrize("name", CAUSAL)
@pytest.mark.parametrize("cut", [0, 37, 62])
def test_causal_outputs_ignore_the_future(name, cut):
    """Changing inputs after step p leaves every output at steps ≤ p bit-identical."""
    torch.manual_seed(1)
    model = small_model(name).double().eval()
    x = torch.randn(2, 4, 64, dtype=torch.float64)
    y = x.clone()
    y[:, :, cut + 1:] = torch.randn_like(y[:, :, cut + 1:]) * 3
    with torch.no_grad():
        a, b = model.forward_sequence(x), model.forward_sequence(y)
    for ta, tb in zip(a, b):
        assert torch.equal(ta[..., : cut + 1], tb[..., : cut + 1])
        assert not torch.equal(ta[..., cut + 1:], tb[..., cut + 1:])  # the change did reach later steps
    # The pooled output is the last step of the per-step output.
    with torch.no_grad():
        pooled = model(x)
    torch.testing.assert_close(pooled.direction_logits, a.direction_logits[..., -1])


@pytest.mark.parametrize("name", [n for n in NAMES if not architecture(n).causal])
def test_non_causal_models_refuse_per_step_outputs(name):
    with pytest.raises(TypeError, match="causal"):
        small_model(name).forward_sequence(torch.randn(1, *small_model(name).input_shape))


@pytest.mark.parametrize("name", NAMES)
def test_gradient_reaches_every_parameter(name):
    torch.manual_seed(0)
    model = small_model(name).train()
    x = torch.randn((4,) + model.input_shape)
    if getattr(model.config, "zero_init_residual", False):
        # a zeroed last conv blocks its branch's gradient until the first update (by design): take one SGD step
        sum(t.sum() for t in model(x)).backward()
        torch.optim.SGD(model.parameters(), lr=0.01).step()
        model.zero_grad()
    out = model(x)
    loss = sum(t.sum() for t in out)
    loss.backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not torch.any(p.grad != 0)]
    assert not missing, f"no gradient reaches {missing}"


@pytest.mark.parametrize("name", NAMES)
def test_forward_is_deterministic_with_a_fixed_seed(name):
    outs = []
    for _ in range(2):
        torch.manual_seed(123)
        model = small_model(name).eval()
        x = torch.randn((3,) + model.input_shape)
        with torch.no_grad():
            outs.append(model(x))
    for a, b in zip(*outs):
        assert torch.equal(a, b)


def planted_task(shape: tuple[int, ...], n: int, seed: int = 0):
    """Noise whose channel 0 is shifted by (label - 1) · 0.5: down / flat / up."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 3, (n,), generator=g)
    x = torch.randn((n,) + shape, generator=g)
    x[:, 0] += 0.5 * (labels - 1).view((n,) + (1,) * (len(shape) - 1)).float()
    return x, labels


@pytest.mark.parametrize("name", NAMES)
def test_learns_a_planted_direction(name):
    """Six epochs on 256 windows take the loss far below chance (ln 3 ≈ 1.10)."""
    torch.manual_seed(0)
    model = small_model(name, input_length=32) if name in SEQUENCE else small_model(name)
    x, labels = planted_task(model.input_shape, 256)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
    model.train()
    for _epoch in range(6):
        for i in range(0, len(x), 32):
            opt.zero_grad()
            multitask_loss(model(x[i:i + 32]), labels[i:i + 32], config=DIRECTION_CE).backward()
            opt.step()
    model.eval()
    with torch.no_grad():
        loss = multitask_loss(model(x), labels, config=DIRECTION_CE).item()
        x_new, y_new = planted_task(model.input_shape, 192, seed=1)
        accuracy = (model(x_new).direction_logits.argmax(1) == y_new).float().mean().item()
    assert loss < 0.5, loss  # chance: ln 3 ≈ 1.10
    assert accuracy > 0.6, accuracy  # generalises to fresh windows (chance: 1/3)


@pytest.mark.parametrize("name", NAMES)
def test_save_load_round_trip(name, tmp_path):
    torch.manual_seed(0)
    model = small_model(name)
    batch = torch.randn((4,) + model.input_shape)
    model.train()
    model(batch)  # move batch-norm running statistics away from their initial values
    model.eval()
    path = save_model(model, tmp_path / f"{name}.pt")
    loaded = load_model(path)
    assert (loaded.name, loaded.variant, loaded.config, loaded.input_shape) == (
        model.name, model.variant, model.config, model.input_shape)
    with torch.no_grad():
        for a, b in zip(model(batch), loaded(batch)):
            assert torch.equal(a, b)


def test_round_trip_keeps_variant_and_overrides(tmp_path):
    model = build_model("tcn", "batchnorm", in_channels=5, input_length=80, kernel_size=5, channels=(8, 16))
    loaded = load_model(save_model(model, tmp_path / "tcn.pt"))
    assert loaded.variant == "batchnorm"
    assert loaded.config.kernel_size == 5 and loaded.config.channels == (8, 16) and loaded.config.norm == "batch"
    assert loaded.input_shape == (5, 80)


def test_load_rejects_foreign_files(tmp_path):
    path = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(1)}, path)
    with pytest.raises(ValueError, match="not a convtrade model file"):
        load_model(path)


@pytest.mark.parametrize("name", NAMES)
def test_torch_export_matches_eager(name):
    torch.manual_seed(0)
    model = small_model(name).eval()
    x = torch.randn((2,) + model.input_shape)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        exported = torch.export.export(model, (x,))
    with torch.no_grad():
        eager = model(x)
    got = exported.module()(x)
    for a, b in zip(eager, got):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def _variant_cases():
    from pipeline.models.geometry import count_parameters

    cases = []
    for name, variants in list_models().items():
        for variant in variants:
            if variant == "default":
                continue
            with torch.device("meta"):
                size = count_parameters(build_model(name, variant))
            if size < 3_000_000:
                cases.append((name, variant))
    return cases


@pytest.mark.parametrize("name,variant", _variant_cases())
def test_named_variants_run_and_train(name, variant):
    """Every variant up to 3M parameters: a forward and a backward on a short input."""
    torch.manual_seed(0)
    if architecture(name).kind == "sequence":
        model = build_model(name, variant, in_channels=3, input_length=64)
    else:
        model = build_model(name, variant)
    out = model.train()(torch.randn((2,) + model.input_shape))
    check_output(out, 2)
    multitask_loss(out, torch.tensor([0, 2]), config=DIRECTION_CE).backward()
    assert all(p.grad is not None for p in model.parameters())


def test_densenet_memory_efficient_gives_the_same_gradients():
    grads = []
    for efficient in (False, True):
        torch.manual_seed(0)
        model = build_model("densenet1d", in_channels=3, input_length=64, memory_efficient=efficient).train()
        x = torch.randn(4, 3, 64, generator=torch.Generator().manual_seed(1))
        multitask_loss(model(x), torch.tensor([0, 1, 2, 1]), config=DIRECTION_CE).backward()
        grads.append([p.grad.clone() for p in model.parameters()])
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("overrides", [{"se": True}, {"multiscale": True}, {"block": "bottleneck", "layers": (1, 1), "widths": (8, 16)},
                                       {"layers": (2, 1), "widths": (16, 32)}])
def test_resnet1d_options_change_the_network(overrides):
    base = build_model("resnet1d", in_channels=3, input_length=64)
    model = build_model("resnet1d", in_channels=3, input_length=64, **overrides)
    names = {type(m).__name__ for m in model.modules()}
    if overrides.get("se"):
        assert "SqueezeExcite" in names
    if overrides.get("multiscale"):
        assert "MultiScaleConv" in names
    if overrides.get("block") == "bottleneck":
        assert "Bottleneck" in names and model.head.linear.in_features == 16 * 4  # the newest step
    assert sum(p.numel() for p in model.parameters()) != sum(p.numel() for p in base.parameters())
    check_output(model.eval()(torch.randn(2, 3, 64)), 2)


def test_resnet1d_default_blocks_start_as_the_identity():
    """zero_init_residual (the CPU default, norm-free): every residual branch's last conv starts at zero, so each block
    passes the (non-negative, post-ReLU) stem features through unchanged, yet the zeroed weights still get gradients.
    The published sizes keep the standard init."""
    from pipeline.models.resnet1d import _Residual

    torch.manual_seed(0)
    model = build_model("resnet1d", in_channels=3, input_length=32).train()
    x = torch.randn(2, 3, 32)
    stem = model.body[:3](x)
    blocks = [m for m in model.body if isinstance(m, _Residual)]
    assert blocks and all(b.main[3].weight.abs().sum() == 0 for b in blocks)
    h = stem
    for b in blocks:
        out = b(h)
        shortcut = h if b.shortcut is None else b.shortcut(h)
        torch.testing.assert_close(out, torch.relu(shortcut))
        h = out
    multitask_loss(model(x), torch.tensor([0, 2]), config=DIRECTION_CE).backward()
    assert all(b.main[3].weight.grad.abs().sum() > 0 for b in blocks)
    published = build_model("resnet1d", "resnet18", in_channels=3, input_length=64)
    assert all(b.main[-1].weight.abs().sum() > 0 for b in published.body.modules() if isinstance(b, _Residual))
