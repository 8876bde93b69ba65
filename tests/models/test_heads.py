"""The shared multi-task head against an independent numpy computation."""

import numpy as np
import torch

from pipeline.models.heads import MultiTaskHead, split_head


def _reference(raw: np.ndarray) -> tuple[np.ndarray, ...]:
    """Split 6 numbers along axis 1 the slow, obvious way."""
    return (raw[:, 0:3], raw[:, 3], np.log1p(np.exp(raw[:, 4])), 1.0 / (1.0 + np.exp(-raw[:, 5])))


def test_split_head_matches_numpy_per_window_and_per_step():
    g = torch.Generator().manual_seed(3)
    for shape in ((5, 6), (4, 6, 7)):
        raw = torch.randn(shape, generator=g, dtype=torch.float64) * 3
        got = split_head(raw, dim=1)
        for out, ref in zip(got, _reference(raw.numpy())):
            np.testing.assert_allclose(out.numpy(), ref, rtol=1e-12, atol=1e-12)
        assert got.expected_volatility.min() >= 0
        assert 0 <= got.confidence.min() and got.confidence.max() <= 1


def test_split_head_gradient_reaches_only_the_used_outputs():
    raw = torch.randn(4, 6, requires_grad=True)
    out = split_head(raw)
    (out.direction_logits.sum() + 2 * out.expected_return.sum()).backward()
    expected = torch.zeros(4, 6)
    expected[:, :3] = 1.0
    expected[:, 3] = 2.0
    assert torch.equal(raw.grad, expected)


def test_head_dropout_is_identity_at_zero_and_active_when_set():
    torch.manual_seed(0)
    feats = torch.randn(64, 8, 5)
    plain = MultiTaskHead(8, "avg", dropout=0.0).train()
    raw = plain.linear(feats.mean(-1))
    assert torch.equal(plain(feats).expected_return, raw[:, 3])
    dropping = MultiTaskHead(8, "avg", dropout=0.5).train()
    dropping.linear.load_state_dict(plain.linear.state_dict())
    assert not torch.equal(dropping(feats).expected_return, raw[:, 3])
    dropping.eval()
    assert torch.equal(dropping(feats).expected_return, raw[:, 3])
