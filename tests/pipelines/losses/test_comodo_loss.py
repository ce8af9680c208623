import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from pipelines.losses.comodo import FeatureQueue, info_nce_loss, queue_distillation_loss


def _dot(a, b):
    return sum(x * y for x, y in zip(a, b))


def _softmax(row):
    top = max(row)
    exps = [math.exp(x - top) for x in row]
    total = sum(exps)
    return [e / total for e in exps]


def _log_softmax(row):
    top = max(row)
    log_total = math.log(sum(math.exp(x - top) for x in row))
    return [x - top - log_total for x in row]


def _queue_oracle(student, teacher, queue, teacher_temp=0.1, student_temp=0.05):
    """COMODO's loss written out: for each sample, keys are the queue rows then the batch's teacher rows."""
    student, teacher, queue = (np.asarray(t, dtype=np.float64).tolist() for t in (student, teacher, queue))
    keys = list(queue) + list(teacher)
    total = 0.0
    for s_row, t_row in zip(student, teacher):
        p = _softmax([_dot(t_row, k) / teacher_temp for k in keys])
        log_q = _log_softmax([_dot(s_row, k) / student_temp for k in keys])
        total += -sum(pk * lk for pk, lk in zip(p, log_q))
    return total / len(student)


def _info_nce_oracle(student, teacher, temperature, symmetric):
    student, teacher = (np.asarray(t, dtype=np.float64).tolist() for t in (student, teacher))
    n = len(student)
    forward = 0.0
    for i in range(n):  # student i against every teacher j
        forward += -_log_softmax([_dot(student[i], teacher[j]) / temperature for j in range(n)])[i]
    forward /= n
    if not symmetric:
        return forward
    backward = 0.0
    for j in range(n):  # teacher j against every student i
        backward += -_log_softmax([_dot(student[i], teacher[j]) / temperature for i in range(n)])[j]
    return 0.5 * (forward + backward / n)


def _unit(seed, *shape, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(*shape, generator=g, dtype=dtype), dim=-1)


@pytest.mark.parametrize("seed,batch,queue_len,dim", [(0, 4, 7, 8), (1, 1, 3, 5), (2, 5, 0, 6), (3, 3, 20, 4)])
def test_queue_loss_matches_loop_oracle(seed, batch, queue_len, dim):
    student, teacher, queue = _unit(seed, batch, dim), _unit(seed + 100, batch, dim), _unit(seed + 200, queue_len, dim)
    got = queue_distillation_loss(student, teacher, queue)
    assert got.ndim == 0
    assert got.item() == pytest.approx(_queue_oracle(student, teacher, queue), rel=1e-9, abs=1e-9)


@pytest.mark.parametrize("teacher_temp,student_temp", [(0.2, 0.1), (0.05, 0.5), (1.0, 1.0)])
def test_queue_loss_temperatures_match_oracle(teacher_temp, student_temp):
    student, teacher, queue = _unit(5, 3, 6), _unit(6, 3, 6), _unit(7, 9, 6)
    got = queue_distillation_loss(student, teacher, queue, teacher_temp=teacher_temp, student_temp=student_temp)
    assert got.item() == pytest.approx(_queue_oracle(student, teacher, queue, teacher_temp, student_temp), rel=1e-9)


def test_queue_loss_float32_and_empty_queue_keys_are_the_batch():
    student, teacher = _unit(8, 6, 16, dtype=torch.float32), _unit(9, 6, 16, dtype=torch.float32)
    empty = torch.zeros(0, 16)
    got = queue_distillation_loss(student, teacher, empty)
    assert got.dtype == torch.float32
    assert got.item() == pytest.approx(_queue_oracle(student, teacher, empty.numpy()), rel=1e-5)
    # The current teacher batch is always a key: different from a loss over the queue alone.
    alone = _queue_oracle(student, teacher, np.zeros((0, 16)))
    with_queue = queue_distillation_loss(student, teacher, _unit(10, 5, 16, dtype=torch.float32)).item()
    assert with_queue != pytest.approx(alone, rel=1e-3)


def test_queue_loss_gradient_flows_to_the_student_only():
    student = _unit(11, 4, 8).requires_grad_(True)
    teacher = _unit(12, 4, 8).requires_grad_(True)
    queue = _unit(13, 6, 8).requires_grad_(True)
    loss = queue_distillation_loss(student, teacher, queue)
    loss.backward()
    assert student.grad is not None and student.grad.abs().sum() > 0
    assert teacher.grad is None and queue.grad is None
    # Gradient against a finite difference of the oracle on one coordinate.
    eps = 1e-6
    plus, minus = student.detach().clone(), student.detach().clone()
    plus[1, 2] += eps
    minus[1, 2] -= eps
    numeric = (_queue_oracle(plus, teacher.detach(), queue.detach()) - _queue_oracle(minus, teacher.detach(),
                                                                                         queue.detach())) / (2 * eps)
    assert student.grad[1, 2].item() == pytest.approx(numeric, rel=1e-5, abs=1e-8)


def test_queue_loss_minimised_when_student_equals_teacher_and_falls_with_training():
    teacher, queue = _unit(14, 8, 16), _unit(15, 32, 16)
    # CE(p, q) >= H(p); with equal temperatures, student == teacher gives exactly H(p).
    matched = queue_distillation_loss(teacher, teacher, queue, teacher_temp=0.1, student_temp=0.1).item()
    other = queue_distillation_loss(_unit(16, 8, 16), teacher, queue, teacher_temp=0.1, student_temp=0.1).item()
    assert matched < other
    raw = torch.randn(8, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(17), requires_grad=True)
    opt = torch.optim.SGD([raw], lr=0.5)
    losses = []
    for _ in range(30):
        opt.zero_grad()
        loss = queue_distillation_loss(F.normalize(raw, dim=1), teacher, queue)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]


def test_queue_loss_teacher_temperature_sharpens_targets():
    """A lower teacher temperature concentrates the target on the nearest key: with the student at
    the teacher's own embedding, the loss approaches -log q(self key)."""
    teacher, queue = _unit(18, 4, 8), _unit(19, 10, 8)
    student = teacher.clone()
    sharp = queue_distillation_loss(student, teacher, queue, teacher_temp=1e-4, student_temp=0.05).item()
    keys = torch.cat([queue, teacher])
    log_q = torch.log_softmax(student @ keys.T / 0.05, dim=1)
    self_term = -log_q[torch.arange(4), 10 + torch.arange(4)].mean().item()
    assert sharp == pytest.approx(self_term, rel=1e-6)
    soft = queue_distillation_loss(student, teacher, queue, teacher_temp=10.0, student_temp=0.05).item()
    assert soft > sharp  # flat targets put weight on far keys, which the sharp student rates unlikely


@pytest.mark.parametrize("student_shape,teacher_shape,queue_shape", [
    ((4, 8), (4, 7), (3, 8)),   # D differs
    ((4, 8), (5, 8), (3, 8)),   # B differs
    ((4, 8), (4, 8), (3, 7)),   # queue D differs
    ((4, 8), (4, 8), (8,)),     # queue not 2-D
    ((8,), (8,), (3, 8)),       # 1-D embeddings
    ((0, 8), (0, 8), (3, 8)),   # empty batch
])
def test_queue_loss_rejects_bad_shapes(student_shape, teacher_shape, queue_shape):
    with pytest.raises(ValueError):
        queue_distillation_loss(torch.randn(*student_shape), torch.randn(*teacher_shape), torch.randn(*queue_shape))


@pytest.mark.parametrize("kwargs", [{"teacher_temp": 0.0}, {"student_temp": -0.1}])
def test_queue_loss_rejects_bad_temperatures(kwargs):
    with pytest.raises(ValueError, match="temp"):
        queue_distillation_loss(_unit(0, 2, 4), _unit(1, 2, 4), _unit(2, 3, 4), **kwargs)


@pytest.mark.parametrize("seed,batch,symmetric,temperature", [(0, 5, True, 0.07), (1, 4, False, 0.07),
                                                              (2, 3, True, 0.5), (3, 1, True, 0.1)])
def test_info_nce_matches_loop_oracle(seed, batch, symmetric, temperature):
    student, teacher = _unit(seed, batch, 6), _unit(seed + 50, batch, 6)
    got = info_nce_loss(student, teacher, temperature=temperature, symmetric=symmetric)
    assert got.item() == pytest.approx(_info_nce_oracle(student, teacher, temperature, symmetric), rel=1e-9)


def test_info_nce_directions_differ_and_symmetric_is_their_mean():
    student, teacher = _unit(20, 6, 5), _unit(21, 6, 5)
    forward = info_nce_loss(student, teacher, symmetric=False).item()
    backward = info_nce_loss(teacher, student, symmetric=False).item()  # teacher rows as queries
    assert forward != pytest.approx(backward, rel=1e-3)
    assert info_nce_loss(student, teacher, symmetric=True).item() == pytest.approx(0.5 * (forward + backward), rel=1e-9)


def test_info_nce_rewards_aligned_pairs_and_rejects_bad_input():
    teacher = _unit(22, 8, 16)
    assert info_nce_loss(teacher, teacher).item() < info_nce_loss(_unit(23, 8, 16), teacher).item()
    student = teacher.clone().requires_grad_(True)
    t = teacher.clone().requires_grad_(True)
    info_nce_loss(student, t.detach()).backward()
    assert student.grad is not None and t.grad is None
    with pytest.raises(ValueError):
        info_nce_loss(torch.randn(4, 8), torch.randn(3, 8))
    with pytest.raises(ValueError):
        info_nce_loss(torch.randn(4, 8), torch.randn(4, 8), temperature=0.0)


def _rows(start, n, dim=3):
    """Row i is filled with the value start + i, so a row's identity is readable from the tensor."""
    return torch.arange(start, start + n, dtype=torch.float32)[:, None].repeat(1, dim)


def _ids(t):
    return [int(v) for v in t[:, 0].tolist()]


class _ListQueue:
    """FIFO oracle: a python list, append at the end, drop from the front."""

    def __init__(self, size):
        self.size, self.items = size, []

    def push(self, ids):
        for i in ids:
            self.items.append(i)
            if len(self.items) > self.size:
                self.items.pop(0)


def test_queue_fifo_matches_list_oracle():
    queue, oracle = FeatureQueue(size=5, dim=3), _ListQueue(5)
    assert len(queue) == 0 and queue.tensor().shape == (0, 3)
    start = 0
    for n in [2, 2, 3, 1, 7, 0, 4, 5, 1]:
        queue.enqueue(_rows(start, n))
        oracle.push(range(start, start + n))
        start += n
        assert _ids(queue.tensor()) == oracle.items
        assert len(queue) == len(oracle.items)
        assert (queue.tensor() == queue.tensor()[:, :1]).all()  # rows kept whole


def test_queue_seed_replaces_contents_and_keeps_newest():
    queue = FeatureQueue(size=4, dim=3)
    queue.enqueue(_rows(100, 3))
    queue.seed(_rows(0, 2))
    assert _ids(queue.tensor()) == [0, 1]
    queue.seed(_rows(10, 9))
    assert _ids(queue.tensor()) == [15, 16, 17, 18]
    queue.enqueue(_rows(50, 1))
    assert _ids(queue.tensor()) == [16, 17, 18, 50]


def test_queue_detaches_copies_and_rejects_bad_shapes():
    queue = FeatureQueue(size=3, dim=2)
    emb = torch.randn(2, 2, requires_grad=True)
    queue.enqueue(emb * 2)
    out = queue.tensor()
    assert not out.requires_grad
    with torch.no_grad():
        emb.add_(1.0)
    assert torch.equal(queue.tensor(), out)
    out.zero_()  # the returned tensor is a copy
    assert not torch.equal(queue.tensor(), out)
    with pytest.raises(ValueError):
        queue.enqueue(torch.randn(2, 3))
    with pytest.raises(ValueError):
        queue.seed(torch.randn(2))
    with pytest.raises(ValueError):
        FeatureQueue(0, 4)


def test_queue_state_round_trip_through_weights_only_load(tmp_path):
    queue = FeatureQueue(size=4, dim=3)
    queue.enqueue(_rows(0, 6))  # wrapped: contents 2..5
    path = tmp_path / "queue.pt"
    torch.save({"queue": queue.state_dict()}, path)
    state = torch.load(path, weights_only=True)["queue"]
    restored = FeatureQueue(size=4, dim=3)
    restored.load_state_dict(state)
    assert _ids(restored.tensor()) == [2, 3, 4, 5]
    # Both continue identically after the round trip.
    queue.enqueue(_rows(6, 3))
    restored.enqueue(_rows(6, 3))
    assert _ids(restored.tensor()) == _ids(queue.tensor()) == [5, 6, 7, 8]
    partial = FeatureQueue(size=4, dim=3)
    partial.enqueue(_rows(0, 2))
    again = FeatureQueue(size=4, dim=3)
    again.load_state_dict(partial.state_dict())
    again.enqueue(_rows(2, 3))
    assert _ids(again.tensor()) == [1, 2, 3, 4]
    with pytest.raises(ValueError, match="size"):
        FeatureQueue(size=5, dim=3).load_state_dict(state)


def test_queue_feeds_the_loss_like_the_reference_update():
    """The reference keeps Q[batch:] of cat(queue, z_v) after each step: a full FIFO of constant size."""
    queue = FeatureQueue(size=6, dim=4)
    queue.seed(_unit(30, 6, 4))
    ref_queue = queue.tensor()
    for step in range(3):
        teacher, student = _unit(31 + step, 2, 4), _unit(40 + step, 2, 4)
        got = queue_distillation_loss(student, teacher, queue.tensor())
        assert got.item() == pytest.approx(_queue_oracle(student, teacher, ref_queue), rel=1e-9)
        queue.enqueue(teacher)
        ref_queue = torch.cat([ref_queue, teacher])[2:]
        assert torch.equal(queue.tensor(), ref_queue)
