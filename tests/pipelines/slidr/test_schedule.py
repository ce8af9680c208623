"""SLidR's distillation schedule: the reference's per-epoch cosine, an optional per-step warm-up, AdamW."""

import math

import pytest
import torch
from pydantic import ValidationError

from pipelines.slidr.config import DistillConfig, OptimConfig
from pipelines.slidr.step import cosine_lr, distill_lr, parameter_norm


def test_no_warmup_is_the_reference_per_epoch_cosine():
    for epoch in range(8):
        for step in (0, 3, 8):
            assert distill_lr(epoch, step, 9, 8, 0.5, 0.0) == cosine_lr(epoch, 8, 0.5)
    assert distill_lr(0, 0, 9, 8, 0.5, 0.0) == 0.5


def test_warmup_rises_per_step_then_cosine_over_the_remaining_epochs():
    lrs = [distill_lr(0, s, 10, 5, 1.0, 1.0) for s in range(10)]
    assert lrs == pytest.approx([(s + 1) / 10 for s in range(10)])
    # After one warm-up epoch the cosine restarts at the base rate and spans the 4 remaining epochs.
    assert [distill_lr(e, 0, 10, 5, 1.0, 1.0) for e in range(1, 5)] == pytest.approx(
        [cosine_lr(e, 4, 1.0) for e in range(4)])
    assert distill_lr(4, 9, 10, 5, 1.0, 1.0) < distill_lr(2, 0, 10, 5, 1.0, 1.0) < 1.0


def test_fractional_warmup_reaches_the_base_rate_within_the_first_epoch():
    lrs = [distill_lr(0, s, 10, 4, 2.0, 0.5) for s in range(10)]
    assert lrs[:5] == pytest.approx([2.0 * (s + 1) / 5 for s in range(5)])
    assert lrs[5:] == pytest.approx([2.0] * 5)
    assert distill_lr(1, 0, 10, 4, 2.0, 0.5) == pytest.approx(cosine_lr(0, 3, 2.0))


def test_warmup_within_training():
    with pytest.raises(ValidationError, match="warmup_epochs"):
        OptimConfig(epochs=2, warmup_epochs=2.5)
    one = OptimConfig(epochs=1)  # the default one-epoch warm-up is then the whole run
    assert [distill_lr(0, s, 4, 1, one.lr, one.warmup_epochs) for s in range(4)] == pytest.approx(
        [one.lr * (s + 1) / 4 for s in range(4)])
    with pytest.raises(ValidationError):
        OptimConfig(name="lamb")


def test_parameter_norm_is_the_l2_norm_of_all_parameters():
    m = torch.nn.Linear(3, 2)
    expected = math.sqrt(sum(float((p ** 2).sum()) for p in m.parameters()))
    assert parameter_norm(m) == pytest.approx(expected)
    with torch.no_grad():
        m.weight.mul_(2.0)
        m.bias.mul_(2.0)
    assert parameter_norm(m) == pytest.approx(2 * expected)


def test_adamw_by_default_reference_sgd_on_request():
    cfg = DistillConfig(dataset="d", superpixels="s", student="range_net")
    assert (cfg.optim.name, cfg.optim.lr, cfg.optim.warmup_epochs) == ("adamw", 1e-3, 1.0)
    ref = DistillConfig(dataset="d", superpixels="s", student="range_net",
                        optim={"name": "sgd", "lr": 0.5, "weight_decay": 1e-4, "warmup_epochs": 0})
    assert ref.optim.name == "sgd" and ref.optim.momentum == 0.9 and ref.optim.dampening == 0.1
