import math
from collections import OrderedDict

import numpy as np
import pytest
import torch
from torch import nn

from pipelines.losses import dino_loss, ema_momentum, ema_update, teacher_temperature, update_center


def _softmax_row(row, temp):
    """Softmax of one row of logits, written out with math.exp (max-shifted)."""
    top = max(row)
    exps = [math.exp((x - top) / temp) for x in row]
    total = sum(exps)
    return [e / total for e in exps]


def _log_softmax_row(row, temp):
    top = max(row)
    log_total = math.log(sum(math.exp((x - top) / temp) for x in row))
    return [(x - top) / temp - log_total for x in row]


def _oracle(student, teacher, center, student_temp=0.1, teacher_temp=0.04, include_self=False):
    """The paper's loss with explicit loops over teacher views, student views, batch and classes."""
    student = np.asarray(student, dtype=np.float64)
    teacher = np.asarray(teacher, dtype=np.float64)
    center = np.asarray(center, dtype=np.float64).reshape(-1)
    num_student, batch, num_classes = student.shape
    num_teacher = teacher.shape[0]
    total, pairs = 0.0, 0
    for t in range(num_teacher):
        for s in range(num_student):
            if s == t and not include_self:
                continue
            pair = 0.0
            for b in range(batch):
                p = _softmax_row([teacher[t, b, k] - center[k] for k in range(num_classes)], teacher_temp)
                log_q = _log_softmax_row(list(student[s, b]), student_temp)
                pair += -sum(p[k] * log_q[k] for k in range(num_classes))
            total += pair / batch
            pairs += 1
    return total / pairs


def _inputs(seed, views=4, global_views=2, batch=3, classes=6, scale=1.0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    student = scale * torch.randn(views, batch, classes, generator=g, dtype=dtype)
    teacher = scale * torch.randn(global_views, batch, classes, generator=g, dtype=dtype)
    center = 0.3 * torch.randn(1, classes, generator=g, dtype=dtype)
    return student, teacher, center


@pytest.mark.parametrize("seed,views,global_views", [(0, 4, 2), (1, 2, 2), (2, 6, 2), (3, 3, 1), (4, 3, 3)])
def test_matches_loop_oracle(seed, views, global_views):
    student, teacher, center = _inputs(seed, views, global_views)
    got = dino_loss(student, teacher, center)
    want = _oracle(student, teacher, center)
    assert got.dtype == torch.float64
    assert got.item() == pytest.approx(want, rel=1e-10)
    # (K,) centre is the same as (1, K).
    assert dino_loss(student, teacher, center[0]).item() == pytest.approx(want, rel=1e-10)


def test_float32_inputs_match_oracle():
    student, teacher, center = _inputs(5, dtype=torch.float32)
    got = dino_loss(student, teacher, center, student_temp=0.2, teacher_temp=0.06)
    assert got.dtype == torch.float32
    assert got.item() == pytest.approx(_oracle(student, teacher, center, 0.2, 0.06), rel=1e-5)


def test_self_pairs_are_excluded():
    # Student view t equals teacher view t (the same crop): including the self-pairs would
    # change the value, and pull the mean towards the (lower) self cross-entropy.
    student, teacher, center = _inputs(6, views=4, global_views=2)
    student[:2] = teacher
    center.zero_()
    with_self = _oracle(student, teacher, center, 0.04, 0.04, include_self=True)
    without = _oracle(student, teacher, center, 0.04, 0.04)
    assert abs(with_self - without) > 0.1 * abs(without)
    got = dino_loss(student, teacher, center, student_temp=0.04, teacher_temp=0.04).item()
    assert got == pytest.approx(without, rel=1e-10)
    assert got != pytest.approx(with_self, rel=1e-3)


def test_two_views_is_the_mean_of_the_two_cross_pairs():
    student, teacher, center = _inputs(7, views=2, global_views=2, batch=1, classes=3)
    one_pair = lambda s, t: _oracle(student[s : s + 1], teacher[t : t + 1], center, include_self=True)  # noqa: E731
    want = (one_pair(1, 0) + one_pair(0, 1)) / 2
    assert dino_loss(student, teacher, center).item() == pytest.approx(want, rel=1e-10)


def test_gradient_reaches_student_only():
    student, teacher, center = _inputs(8)
    student.requires_grad_(True)
    teacher.requires_grad_(True)
    center.requires_grad_(True)
    dino_loss(student, teacher, center).backward()
    assert teacher.grad is None
    assert center.grad is None
    assert student.grad is not None and student.grad.abs().sum() > 0


def test_student_gradient_matches_closed_form():
    # d loss / d z[s, b] = sum_{t != s, t < T} (q[s, b] - p[t, b]) / (pairs * B * student_temp),
    # where q, p are the student / teacher probabilities.
    student, teacher, center = _inputs(9, views=4, global_views=2, batch=2, classes=4)
    student.requires_grad_(True)
    st, tt = 0.1, 0.04
    dino_loss(student, teacher, center, st, tt).backward()
    s_np, t_np, c_np = student.detach().numpy(), teacher.numpy(), center.numpy()[0]
    num_student, batch, num_classes = s_np.shape
    num_teacher = t_np.shape[0]
    pairs = num_teacher * num_student - num_teacher
    want = np.zeros_like(s_np)
    for s in range(num_student):
        for b in range(batch):
            q = _softmax_row(list(s_np[s, b]), st)
            for t in range(num_teacher):
                if t == s:
                    continue
                p = _softmax_row([t_np[t, b, k] - c_np[k] for k in range(num_classes)], tt)
                for k in range(num_classes):
                    want[s, b, k] += (q[k] - p[k]) / (pairs * batch * st)
    np.testing.assert_allclose(student.grad.numpy(), want, rtol=1e-9, atol=1e-12)


def test_center_is_subtracted():
    student, teacher, center = _inputs(10)
    zero = torch.zeros_like(center)
    centred = dino_loss(student, teacher, center).item()
    assert centred != pytest.approx(dino_loss(student, teacher, zero).item(), rel=1e-4)
    # Subtracting the centre equals shifting the teacher logits the other way.
    shifted = dino_loss(student, teacher - center, zero).item()
    assert dino_loss(student, teacher, center).item() == pytest.approx(shifted, rel=1e-12)
    # A constant centre is a softmax shift: no effect.
    assert dino_loss(student, teacher, torch.full_like(center, 5.0)).item() == pytest.approx(
        dino_loss(student, teacher, zero).item(), rel=1e-12
    )


def test_temperature_semantics():
    student, teacher, center = _inputs(11)
    base = dino_loss(student, teacher, center, student_temp=0.1, teacher_temp=0.04).item()
    # Temperatures divide the logits (teacher: after centring).
    doubled = dino_loss(2 * student, teacher, center, student_temp=0.2, teacher_temp=0.04).item()
    assert doubled == pytest.approx(base, rel=1e-12)
    assert dino_loss(student, 3 * teacher, 3 * center, student_temp=0.1, teacher_temp=0.12).item() == pytest.approx(
        base, rel=1e-12
    )
    # A vanishing teacher temperature gives one-hot targets at the argmax of the centred logits.
    sharp = dino_loss(student, teacher, center, student_temp=0.1, teacher_temp=1e-6).item()
    t_np, s_np, c_np = teacher.numpy(), student.numpy(), center.numpy()[0]
    total, pairs = 0.0, 0
    for t in range(t_np.shape[0]):
        for s in range(s_np.shape[0]):
            if s == t:
                continue
            for b in range(s_np.shape[1]):
                target = int(np.argmax(t_np[t, b] - c_np))
                total += -_log_softmax_row(list(s_np[s, b]), 0.1)[target] / s_np.shape[1]
            pairs += 1
    assert sharp == pytest.approx(total / pairs, rel=1e-9)
    # A higher teacher temperature gives a flatter target, of higher entropy, and changes the loss.
    assert dino_loss(student, teacher, center, teacher_temp=0.07).item() != pytest.approx(base, rel=1e-4)


def test_update_center_against_hand_computation():
    teacher = torch.tensor(
        [[[1.0, 2.0, 3.0], [3.0, 0.0, -1.0]], [[-1.0, 4.0, 0.0], [5.0, 2.0, 2.0]]], dtype=torch.float64
    )  # mean over views and batch: [2, 2, 1]
    center = torch.tensor([[10.0, 0.0, -10.0]], dtype=torch.float64)
    before = center.clone()
    new = update_center(center, teacher, momentum=0.9)
    want = torch.tensor([[0.9 * 10 + 0.1 * 2, 0.1 * 2, -0.9 * 10 + 0.1 * 1]], dtype=torch.float64)
    torch.testing.assert_close(new, want, rtol=1e-12, atol=1e-12)
    assert new.shape == (1, 3)
    assert torch.equal(center, before)  # not mutated
    flat = update_center(center[0], teacher, momentum=0.5)
    assert flat.shape == (3,)
    torch.testing.assert_close(flat, torch.tensor([6.0, 1.0, -4.5], dtype=torch.float64))


def test_update_center_loop_oracle_and_no_grad():
    student, teacher, center = _inputs(12, views=3, global_views=3, batch=5, classes=4)
    teacher.requires_grad_(True)
    new = update_center(center, teacher, momentum=0.7)
    assert not new.requires_grad
    t_np = teacher.detach().numpy()
    for k in range(4):
        mean_k = sum(t_np[t, b, k] for t in range(3) for b in range(5)) / 15
        assert new[0, k].item() == pytest.approx(0.7 * center[0, k].item() + 0.3 * mean_k, rel=1e-12)


def test_teacher_temperature_schedule():
    assert teacher_temperature(0, 30) == pytest.approx(0.04)
    assert teacher_temperature(29, 30) == pytest.approx(0.07)  # the reference's linspace ends at warmup - 1
    assert teacher_temperature(30, 30) == pytest.approx(0.07)
    assert teacher_temperature(99, 30, total_epochs=100) == pytest.approx(0.07)
    # Same values as the reference's np.linspace schedule, epoch by epoch.
    reference = np.concatenate((np.linspace(0.04, 0.07, 10), np.full(20, 0.07)))
    for epoch, want in enumerate(reference):
        assert teacher_temperature(epoch, 10, total_epochs=30) == pytest.approx(want, rel=1e-12)
    assert teacher_temperature(4.5, 10) == pytest.approx(0.04 + 0.03 * 0.5)
    assert teacher_temperature(0, 0) == pytest.approx(0.07)
    assert teacher_temperature(0, 1) == pytest.approx(0.04) and teacher_temperature(1, 1) == pytest.approx(0.07)
    assert teacher_temperature(3, 5, start=0.1, end=0.2) == pytest.approx(0.175)
    with pytest.raises(ValueError, match="past the schedule"):
        teacher_temperature(100, 30, total_epochs=100)
    with pytest.raises(ValueError, match="epoch must be >= 0"):
        teacher_temperature(-1, 30)


def test_ema_momentum_schedule():
    assert ema_momentum(0, 1000) == pytest.approx(0.996, rel=1e-15)
    assert ema_momentum(1000, 1000) == pytest.approx(1.0, rel=1e-15)
    assert ema_momentum(500, 1000) == pytest.approx(0.998, rel=1e-12)
    assert ema_momentum(250, 1000, base=0.9, final=1.0) == pytest.approx(1.0 - 0.1 * (math.cos(math.pi / 4) + 1) / 2)
    values = [ema_momentum(i, 50) for i in range(51)]
    assert all(a <= b for a, b in zip(values, values[1:]))
    with pytest.raises(ValueError, match="step must be in"):
        ema_momentum(1001, 1000)
    with pytest.raises(ValueError, match="total_steps must be >= 1"):
        ema_momentum(0, 0)


def _tiny_net(seed):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4)).double()


def test_ema_update_against_manual_formula():
    teacher, student = _tiny_net(0), _tiny_net(1)
    student.train()
    g = torch.Generator().manual_seed(2)
    student(torch.randn(8, 3, generator=g, dtype=torch.float64))  # moves the student's running stats
    t_before = {k: v.clone() for k, v in teacher.state_dict().items()}
    s_before = {k: v.clone() for k, v in student.state_dict().items()}
    m = 0.75
    ema_update(teacher, student, m)
    after = teacher.state_dict()
    for name in ("0.weight", "0.bias", "1.weight", "1.bias"):
        want = m * t_before[name] + (1 - m) * s_before[name]
        torch.testing.assert_close(after[name], want, rtol=1e-12, atol=1e-12)
    for name in ("1.running_mean", "1.running_var", "1.num_batches_tracked"):
        assert torch.equal(after[name], s_before[name]), name
    assert not torch.equal(t_before["1.running_mean"], s_before["1.running_mean"])
    for name, value in student.state_dict().items():
        assert torch.equal(value, s_before[name]), name  # student untouched
    assert all(p.grad is None for p in teacher.parameters())


def test_ema_update_momentum_one_keeps_parameters():
    teacher, student = _tiny_net(3), _tiny_net(4)
    before = [p.clone() for p in teacher.parameters()]
    ema_update(teacher, student, 1.0)
    assert all(torch.equal(a, b) for a, b in zip(teacher.parameters(), before))


def test_ema_update_name_mismatch_raises():
    teacher = _tiny_net(5)
    renamed = nn.Sequential(OrderedDict(lin=nn.Linear(3, 4), bn=nn.BatchNorm1d(4))).double()
    with pytest.raises(ValueError, match="parameter names differ"):
        ema_update(teacher, renamed, 0.9)
    wider = nn.Sequential(nn.Linear(3, 5), nn.BatchNorm1d(5)).double()
    with pytest.raises(ValueError, match="has shape"):
        ema_update(teacher, wider, 0.9)
    with pytest.raises(ValueError, match="momentum must be in"):
        ema_update(teacher, _tiny_net(6), 1.5)


def test_shape_errors():
    student, teacher, center = _inputs(13)
    with pytest.raises(ValueError, match="must be 3-D"):
        dino_loss(student.reshape(-1, 6), teacher, center)
    with pytest.raises(ValueError, match="must be 3-D"):
        dino_loss(student, teacher[0], center)
    with pytest.raises(ValueError, match=r"disagree on \(batch, K\)"):
        dino_loss(student, teacher[:, :2], center)
    with pytest.raises(ValueError, match=r"disagree on \(batch, K\)"):
        dino_loss(student, teacher[:, :, :5], center)
    with pytest.raises(ValueError, match="T <= S"):
        dino_loss(student[:1], teacher, center)
    with pytest.raises(ValueError, match=r"center must have shape \(6,\) or \(1, 6\)"):
        dino_loss(student, teacher, center[:, :5])
    with pytest.raises(ValueError, match=r"center must have shape"):
        dino_loss(student, teacher, center.expand(2, 6))
    with pytest.raises(ValueError, match="at least two views"):
        dino_loss(student[:1], teacher[:1], center)
    with pytest.raises(ValueError, match="temperatures must be > 0"):
        dino_loss(student, teacher, center, teacher_temp=0.0)
    with pytest.raises(ValueError, match=r"center must have shape"):
        update_center(center[:, :5], teacher)
    with pytest.raises(ValueError, match="must be 3-D"):
        update_center(center, teacher[0])
