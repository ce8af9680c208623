import math

import numpy as np
import pytest
import torch

from pipelines.losses import unfused_loss


def _softmax_row(row, temp=1.0):
    top = max(row)
    exps = [math.exp((x - top) / temp) for x in row]
    total = sum(exps)
    return [e / total for e in exps]


def _oracle(head_logits, head_features, final_logits, final_features, targets, alpha, beta, gamma, temperature):
    """The objective written out with loops over heads, samples, classes and feature channels."""
    heads = [np.asarray(h, dtype=np.float64) for h in head_logits]
    feats = [np.asarray(f, dtype=np.float64) for f in head_features]
    final = np.asarray(final_logits, dtype=np.float64)
    final_f = np.asarray(final_features, dtype=np.float64)
    y = [int(v) for v in targets]
    batch, classes = final.shape
    dim = final_f.shape[1]

    def ce(logits):
        return sum(-math.log(_softmax_row(list(logits[b]))[y[b]]) for b in range(batch)) / batch

    ce_final = ce(final)
    ce_heads = kl = mse = 0.0
    for head, feat in zip(heads, feats):
        ce_heads += ce(head)
        for b in range(batch):
            p = _softmax_row(list(final[b]), temperature)
            q = _softmax_row(list(head[b]), temperature)
            kl += sum(p[k] * (math.log(p[k]) - math.log(q[k])) for k in range(classes)) / batch
            mse += sum((feat[b, d] - final_f[b, d]) ** 2 for d in range(dim)) / batch
    loss = ce_final + alpha * ce_heads + beta * temperature**2 * kl + gamma * mse
    return loss, {"ce_final": ce_final, "ce_heads": ce_heads, "kl": kl, "mse": mse}


def _inputs(seed, heads=3, batch=5, classes=7, dim=4, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    head_logits = [2 * torch.randn(batch, classes, generator=g, dtype=dtype) for _ in range(heads)]
    head_features = [torch.randn(batch, dim, generator=g, dtype=dtype) for _ in range(heads)]
    final_logits = 2 * torch.randn(batch, classes, generator=g, dtype=dtype)
    final_features = torch.randn(batch, dim, generator=g, dtype=dtype)
    targets = torch.randint(0, classes, (batch,), generator=g)
    return head_logits, head_features, final_logits, final_features, targets


@pytest.mark.parametrize(
    "seed,heads,weights",
    [
        (0, 3, dict(alpha=0.7, beta=0.3, gamma=0.003, temperature=1.0)),
        (1, 3, dict(alpha=0.7, beta=0.3, gamma=0.003, temperature=3.0)),
        (2, 1, dict(alpha=0.5, beta=1.0, gamma=0.1, temperature=2.0)),
        (3, 2, dict(alpha=0.0, beta=0.0, gamma=1.0, temperature=0.5)),
    ],
)
def test_matches_loop_oracle(seed, heads, weights):
    args = _inputs(seed, heads=heads)
    loss, parts = unfused_loss(*args, **weights)
    want, want_parts = _oracle(*args, **weights)
    assert loss.dtype == torch.float64
    assert loss.item() == pytest.approx(want, rel=1e-10)
    assert set(parts) == {"ce_final", "ce_heads", "kl", "mse"}
    for name, value in want_parts.items():
        assert isinstance(parts[name], float)
        assert parts[name] == pytest.approx(value, rel=1e-10), name


def test_defaults_are_design_weights():
    args = _inputs(4)
    loss, _ = unfused_loss(*args)
    assert loss.item() == pytest.approx(_oracle(*args, alpha=0.7, beta=0.3, gamma=0.003, temperature=1.0)[0], rel=1e-10)


def test_float32_matches_oracle():
    args = _inputs(5, dtype=torch.float32)
    loss, _ = unfused_loss(*args)
    assert loss.dtype == torch.float32
    assert loss.item() == pytest.approx(_oracle(*args, 0.7, 0.3, 0.003, 1.0)[0], rel=1e-5)


def test_zero_beta_gamma_reduce_to_cross_entropies():
    head_logits, head_features, final_logits, final_features, targets = _inputs(6)
    args = (head_logits, head_features, final_logits, final_features, targets)
    loss, parts = unfused_loss(*args, alpha=0.7, beta=0.0, gamma=0.0)
    y = targets.tolist()

    def ce(logits):
        rows = logits.tolist()
        return sum(-math.log(_softmax_row(rows[b])[y[b]]) for b in range(len(y))) / len(y)

    want = ce(final_logits) + 0.7 * sum(ce(h) for h in head_logits)
    assert loss.item() == pytest.approx(want, rel=1e-10)
    assert parts["kl"] > 0 and parts["mse"] > 0  # reported even when weighted by zero


def test_final_receives_gradient_only_from_its_cross_entropy():
    head_logits, head_features, final_logits, final_features, targets = _inputs(7)
    for t in (*head_logits, *head_features, final_logits, final_features):
        t.requires_grad_(True)
    args = (head_logits, head_features, final_logits, final_features, targets)
    loss, _ = unfused_loss(*args, beta=0.3, gamma=0.5, temperature=2.0)
    loss.backward()
    # Closed-form gradient of the final CE alone: (softmax(z) - onehot(y)) / B.
    z = final_logits.detach().numpy()
    batch, classes = z.shape
    want = np.zeros_like(z)
    for b in range(batch):
        p = _softmax_row(list(z[b]))
        for k in range(classes):
            want[b, k] = (p[k] - (1.0 if k == int(targets[b]) else 0.0)) / batch
    np.testing.assert_allclose(final_logits.grad.numpy(), want, rtol=1e-9, atol=1e-12)
    assert final_features.grad is None  # used only as a detached hint
    assert all(h.grad is not None and h.grad.abs().sum() > 0 for h in head_logits)
    assert all(f.grad is not None and f.grad.abs().sum() > 0 for f in head_features)


def test_head_feature_gradient_matches_closed_form():
    head_logits, head_features, final_logits, final_features, targets = _inputs(8, heads=2)
    for f in head_features:
        f.requires_grad_(True)
    gamma = 0.25
    loss, _ = unfused_loss(head_logits, head_features, final_logits, final_features, targets, gamma=gamma)
    loss.backward()
    batch = final_features.shape[0]
    for f in head_features:
        want = 2 * gamma * (f.detach().numpy() - final_features.numpy()) / batch
        np.testing.assert_allclose(f.grad.numpy(), want, rtol=1e-10, atol=1e-14)


def test_identical_head_has_zero_distillation_terms():
    head_logits, head_features, final_logits, final_features, targets = _inputs(9, heads=1)
    _, parts = unfused_loss([final_logits.clone()], [final_features.clone()], final_logits, final_features, targets)
    assert parts["kl"] == pytest.approx(0.0, abs=1e-12)
    assert parts["mse"] == pytest.approx(0.0, abs=1e-12)
    assert parts["ce_heads"] == pytest.approx(parts["ce_final"], rel=1e-12)


def test_shape_errors():
    head_logits, head_features, final_logits, final_features, targets = _inputs(10)
    with pytest.raises(ValueError, match="3 head_logits but 2 head_features"):
        unfused_loss(head_logits, head_features[:2], final_logits, final_features, targets)
    with pytest.raises(ValueError, match="at least one intermediate head"):
        unfused_loss([], [], final_logits, final_features, targets)
    with pytest.raises(ValueError, match=r"head_logits\[1\] has shape \(5, 6\)"):
        narrow = [head_logits[0], head_logits[1][:, :6], head_logits[2]]
        unfused_loss(narrow, head_features, final_logits, final_features, targets)
    with pytest.raises(ValueError, match=r"head_features\[2\] has shape \(4, 4\)"):
        unfused_loss(head_logits, [*head_features[:2], head_features[2][:4]], final_logits, final_features, targets)
    with pytest.raises(ValueError, match="must be 2-D"):
        unfused_loss(head_logits, head_features, final_logits[None], final_features, targets)
    with pytest.raises(ValueError, match="final_features has batch 4"):
        unfused_loss(head_logits, head_features, final_logits, final_features[:4], targets)
    with pytest.raises(ValueError, match=r"targets must have shape \(5,\)"):
        unfused_loss(head_logits, head_features, final_logits, final_features, targets[:3])
    with pytest.raises(ValueError, match="must be int64"):
        unfused_loss(head_logits, head_features, final_logits, final_features, targets.int())
    with pytest.raises(ValueError, match=r"targets must be in \[0, 7\)"):
        unfused_loss(head_logits, head_features, final_logits, final_features, targets + 7)
    with pytest.raises(ValueError, match="temperature must be > 0"):
        unfused_loss(head_logits, head_features, final_logits, final_features, targets, temperature=0.0)
    with pytest.raises(ValueError, match="beta must be >= 0"):
        unfused_loss(head_logits, head_features, final_logits, final_features, targets, beta=-0.1)
