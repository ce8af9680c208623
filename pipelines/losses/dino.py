"""DINO self-distillation: multi-crop cross-entropy to a centred, sharpened EMA teacher.

Caron et al., "Emerging Properties in Self-Supervised Vision Transformers", ICCV 2021.
Reference code: facebookresearch/dino, ``main_dino.py`` (``DINOLoss``, the EMA update in
``train_one_epoch``) and ``utils.py`` (``cosine_scheduler``).

The paper's defining idea: a student network is trained to match the output distribution
of a momentum (EMA) teacher across crops of the same input, "the teacher's outputs are
centered and sharpened" (centering with a running mean of the teacher logits, sharpening with
a low teacher temperature), which together avoid collapse without contrastive negatives.
The teacher sees only the global crops, the student all crops, and no loss is computed
between a view and itself. DESIGN 5.4: EMA momentum cosine 0.996 -> 1, center momentum 0.9,
teacher temperature warm-up 0.04 -> 0.07, student temperature 0.1.

Everything here is a pure function (no module state): the caller keeps ``center`` (a tensor,
e.g. a registered buffer of its LightningModule) and the teacher network, and calls, per
step, ``dino_loss`` -> backward/step -> ``ema_update`` and ``center = update_center(...)``.

Differences from the reference, on purpose:
- Views are a separate leading axis, (S, B, K) and (T, B, K), not concatenated along the
  batch: the reference's ``student_output`` of shape (S*B, K), views in chunks of B, is
  ``student_output.view(S, B, K)``.
- The loss and the centre are computed in at least float32 (a teacher temperature of 0.04
  multiplies fp16/bf16 logits by 25 before the softmax).
- ``ema_update`` copies the student's buffers (BatchNorm running statistics) into the
  teacher. The reference leaves the teacher's buffers alone (its teacher stays in train mode
  and keeps its own BatchNorm statistics; the DINO ViTs have no BatchNorm at all). Copying
  gives a teacher whose eval-mode statistics are those of the student it averages, whatever
  mode the caller runs the teacher in.
"""

from __future__ import annotations

import math

import torch
from torch import nn


def dino_loss(
    student_out: torch.Tensor,
    teacher_out: torch.Tensor,
    center: torch.Tensor,
    student_temp: float = 0.1,
    teacher_temp: float = 0.04,
) -> torch.Tensor:
    """Mean cross-entropy from each teacher (global) view to every OTHER student view.

    p_t = softmax((teacher_out[t] - center) / teacher_temp), detached (no gradient flows to
    the teacher nor to the centre); log q_s = log_softmax(student_out[s] / student_temp).
    The loss is the mean over the T*S - T pairs (t, s) with s != t of
    ``mean_b( -sum_k p_t[b, k] * log q_s[b, k] )``: student view t is the same crop as
    teacher view t, so those self-pairs are skipped, as in the paper.

    Args:
        student_out: (S, B, K) logits of the S student views (global views first).
        teacher_out: (T, B, K) logits of the teacher on the T global views, T <= S; view t is
            the same crop as student view t.
        center: (K,) or (1, K), the running mean of the teacher logits (``update_center``).
        student_temp: student softmax temperature (0.1 in the paper).
        teacher_temp: teacher softmax temperature for this epoch (``teacher_temperature``).

    Returns:
        Scalar tensor (dtype at least float32).

    Raises:
        ValueError: on shapes that do not match the above, a non-positive temperature, or
            S = T = 1 (no pair of distinct views: the loss is undefined).
    """
    _validate_views(student_out, teacher_out, center)
    if not student_temp > 0 or not teacher_temp > 0:
        raise ValueError(f"temperatures must be > 0; got student_temp={student_temp}, teacher_temp={teacher_temp}")
    num_student, num_teacher = student_out.shape[0], teacher_out.shape[0]
    if num_student * num_teacher - num_teacher == 0:
        raise ValueError(
            "dino_loss needs at least two views (S >= 2): with one student and one teacher view "
            "the only pair is a view with itself, which DINO skips"
        )
    acc = torch.promote_types(torch.promote_types(student_out.dtype, teacher_out.dtype), torch.float32)
    centre = center.detach().to(acc).reshape(-1)
    teacher_probs = torch.softmax((teacher_out.detach().to(acc) - centre) / teacher_temp, dim=-1)
    student_logp = torch.log_softmax(student_out.to(acc) / student_temp, dim=-1)

    # Einsum letters: t = teacher view, s = student view, b = batch, k = output dimension.
    # cross[t, s] = mean_b -sum_k p[t, b, k] log q[s, b, k]; the S x T x B x K product is
    # never materialised (an einsum contracts k and b).
    batch = student_out.shape[1]
    cross = -torch.einsum("tbk,sbk->ts", teacher_probs, student_logp) / batch
    self_pairs = torch.eye(num_teacher, num_student, dtype=torch.bool, device=cross.device)
    return cross.masked_fill(self_pairs, 0.0).sum() / (num_teacher * num_student - num_teacher)


def update_center(center: torch.Tensor, teacher_out: torch.Tensor, momentum: float = 0.9) -> torch.Tensor:
    """EMA of the teacher logits: ``momentum * center + (1 - momentum) * mean_{t,b} teacher_out``.

    Pure: returns a new tensor of ``center``'s shape and dtype, without gradient; ``center``
    is not modified. DINO updates the centre after computing the loss with the old one.

    Under DDP the reference all-reduces the batch mean over ranks
    (``dist.all_reduce(sum) / (T * B * world_size)``) so every rank keeps the same centre.
    This function does not communicate: callers under DDP pass the all-gathered
    ``teacher_out`` (or apply the formula to the all-reduced mean themselves), otherwise the
    ranks' centres drift apart.

    Args:
        center: (K,) or (1, K).
        teacher_out: (T, B, K) teacher logits of this step (the global views).
        momentum: centre momentum (0.9 in the paper), in [0, 1].

    Raises:
        ValueError: on mismatched shapes or a momentum outside [0, 1].
    """
    if teacher_out.ndim != 3:
        raise ValueError(f"teacher_out must be 3-D (views, batch, K); got shape {tuple(teacher_out.shape)}")
    _validate_center(center, teacher_out.shape[2])
    if not 0.0 <= momentum <= 1.0:
        raise ValueError(f"momentum must be in [0, 1]; got {momentum}")
    with torch.no_grad():
        acc = torch.promote_types(torch.promote_types(center.dtype, teacher_out.dtype), torch.float32)
        batch_mean = teacher_out.detach().to(acc).mean(dim=(0, 1))
        new = momentum * center.detach().to(acc).reshape(-1) + (1.0 - momentum) * batch_mean
        return new.reshape(center.shape).to(center.dtype)


def teacher_temperature(
    epoch: float,
    warmup_epochs: int,
    start: float = 0.04,
    end: float = 0.07,
    total_epochs: int | None = None,
) -> float:
    """Teacher temperature of an epoch: linear warm-up ``start -> end``, then constant ``end``.

    As the reference (``np.linspace(start, end, warmup_epochs)`` then ``end``): epoch 0 gives
    ``start`` and epoch ``warmup_epochs - 1`` already gives ``end``, i.e.
    ``start + (end - start) * epoch / (warmup_epochs - 1)`` for epoch < warmup_epochs - 1.
    Fractional epochs interpolate on the same line. ``warmup_epochs <= 1`` gives ``start``
    for epochs below ``warmup_epochs`` (the reference's one-point linspace) and ``end``
    after.

    Args:
        epoch: 0-based epoch (>= 0).
        warmup_epochs: length of the warm-up in epochs (30 in the paper's ViT runs).
        start: initial teacher temperature (0.04).
        end: final teacher temperature (0.07 in DESIGN 5.4; the paper uses 0.04-0.07).
        total_epochs: if given, ``epoch`` must be below it (the reference's schedule has
            ``total_epochs`` entries).

    Raises:
        ValueError: on a negative epoch or warm-up, non-positive temperatures, or an epoch
            at or past ``total_epochs``.
    """
    if epoch < 0:
        raise ValueError(f"epoch must be >= 0; got {epoch}")
    if warmup_epochs < 0:
        raise ValueError(f"warmup_epochs must be >= 0; got {warmup_epochs}")
    if not start > 0 or not end > 0:
        raise ValueError(f"temperatures must be > 0; got start={start}, end={end}")
    if total_epochs is not None and epoch >= total_epochs:
        raise ValueError(f"epoch {epoch} is past the schedule of total_epochs={total_epochs} (epochs are 0-based)")
    if warmup_epochs <= 1:
        return float(start) if epoch < warmup_epochs else float(end)
    fraction = min(epoch / (warmup_epochs - 1), 1.0)
    return float(start + (end - start) * fraction)


def ema_momentum(step: int, total_steps: int, base: float = 0.996, final: float = 1.0) -> float:
    """Teacher EMA momentum at ``step``: cosine from ``base`` (step 0) to ``final`` (step total).

    ``m = final - (final - base) * (cos(pi * step / total_steps) + 1) / 2``, the reference's
    ``cosine_scheduler(base, final, epochs, iters_per_epoch)`` with total_steps =
    epochs * iters_per_epoch (the reference indexes steps 0..total_steps-1, so it never quite
    reaches ``final``; here step == total_steps is allowed and gives ``final``).

    Raises:
        ValueError: if total_steps < 1 or step is outside [0, total_steps].
    """
    if total_steps < 1:
        raise ValueError(f"total_steps must be >= 1; got {total_steps}")
    if not 0 <= step <= total_steps:
        raise ValueError(f"step must be in [0, total_steps={total_steps}]; got {step}")
    return float(final - (final - base) * (math.cos(math.pi * step / total_steps) + 1.0) / 2.0)


def ema_update(teacher: nn.Module, student: nn.Module, momentum: float) -> None:
    """In place, without gradient: teacher params <- m * teacher + (1 - m) * student.

    Every parameter is averaged, trainable or not (as the reference, which zips all
    ``parameters()``). Buffers (BatchNorm running mean/var, num_batches_tracked) are copied
    from the student (see the module docstring for why this departs from the reference).
    Parameters and buffers are matched by name; the student is not modified.

    Args:
        teacher: the EMA network (same architecture as the student).
        student: the trained network; unwrap DDP first (``student.module``), or the names
            carry a ``module.`` prefix and do not match.
        momentum: m in [0, 1] (``ema_momentum``); m = 1 leaves the parameters unchanged.

    Raises:
        ValueError: if the parameter or buffer names or shapes differ, or m is outside [0, 1].
    """
    if not 0.0 <= momentum <= 1.0:
        raise ValueError(f"momentum must be in [0, 1]; got {momentum}")
    teacher_params = dict(teacher.named_parameters())
    student_params = dict(student.named_parameters())
    teacher_buffers = dict(teacher.named_buffers())
    student_buffers = dict(student.named_buffers())
    for kind, t_dict, s_dict in (
        ("parameter", teacher_params, student_params),
        ("buffer", teacher_buffers, student_buffers),
    ):
        if t_dict.keys() != s_dict.keys():
            only_t = sorted(t_dict.keys() - s_dict.keys())[:5]
            only_s = sorted(s_dict.keys() - t_dict.keys())[:5]
            raise ValueError(
                f"teacher and student {kind} names differ: only in teacher {only_t}, only in "
                f"student {only_s} (unwrap DDP/compile wrappers: pass model.module)"
            )
        for name, t in t_dict.items():
            if t.shape != s_dict[name].shape:
                raise ValueError(
                    f"{kind} {name!r} has shape {tuple(t.shape)} in the teacher but "
                    f"{tuple(s_dict[name].shape)} in the student"
                )
    with torch.no_grad():
        for name, t in teacher_params.items():
            t.mul_(momentum).add_(student_params[name].detach().to(t.dtype), alpha=1.0 - momentum)
        for name, t in teacher_buffers.items():
            t.copy_(student_buffers[name])


def _validate_center(center: torch.Tensor, num_outputs: int) -> None:
    if tuple(center.shape) not in ((num_outputs,), (1, num_outputs)):
        raise ValueError(
            f"center must have shape ({num_outputs},) or (1, {num_outputs}) to match K={num_outputs} "
            f"outputs; got {tuple(center.shape)}"
        )


def _validate_views(student_out: torch.Tensor, teacher_out: torch.Tensor, center: torch.Tensor) -> None:
    if student_out.ndim != 3 or teacher_out.ndim != 3:
        raise ValueError(
            f"student_out and teacher_out must be 3-D (views, batch, K); got shapes "
            f"{tuple(student_out.shape)} and {tuple(teacher_out.shape)} (a reference-style "
            "(views*B, K) output is out.view(views, B, K))"
        )
    num_student, batch, num_outputs = student_out.shape
    num_teacher = teacher_out.shape[0]
    if teacher_out.shape[1:] != (batch, num_outputs):
        raise ValueError(
            f"student_out and teacher_out disagree on (batch, K): student {(batch, num_outputs)}, "
            f"teacher {tuple(teacher_out.shape[1:])}"
        )
    if num_teacher > num_student:
        raise ValueError(
            f"teacher_out has {num_teacher} views but student_out only {num_student}: the teacher "
            "sees the global views, which are the first views of the student (T <= S)"
        )
    if batch == 0 or num_outputs == 0 or num_teacher == 0:
        raise ValueError(
            f"empty views, batch or K: student {tuple(student_out.shape)}, teacher {tuple(teacher_out.shape)}"
        )
    _validate_center(center, num_outputs)
