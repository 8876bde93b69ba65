"""The shared multi-task head against an independent numpy computation."""

import numpy as np
import pytest
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


def test_avg_last_pooling_reads_the_window_mean_and_its_newest_step():
    torch.manual_seed(1)
    feats = torch.randn(4, 5, 9, dtype=torch.float64)
    head = MultiTaskHead(5, "avg_last").double()
    assert head.linear.in_features == 10
    f = feats.numpy()
    pooled = np.concatenate([f.mean(-1), f[:, :, -1]], axis=1)  # the slow, obvious way
    np.testing.assert_allclose(head.pool(feats).numpy(), pooled, rtol=1e-12, atol=1e-12)
    raw = pooled @ head.linear.weight.detach().numpy().T + head.linear.bias.detach().numpy()
    with torch.no_grad():
        got = head(feats)
    for out, ref in zip(got, _reference(raw)):
        np.testing.assert_allclose(out.numpy(), ref, rtol=1e-12, atol=1e-12)
    newest = feats.clone()
    newest[:, :, -1] += 1.0  # the same mean shift placed anywhere else moves only the mean half
    middle = feats.clone()
    middle[:, :, 4] += 1.0
    assert not torch.equal(head.pool(newest), head.pool(middle))
    with pytest.raises(ValueError, match="avg_last"):
        head.per_step(feats)


def test_unknown_pooling_is_rejected_by_name():
    with pytest.raises(ValueError, match="'max'"):
        MultiTaskHead(4, "max")
