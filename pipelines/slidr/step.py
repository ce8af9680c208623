"""One SLidR step: batch -> teacher pixel features + student point features -> loss.

No Ray here: this runs in unit tests, benchmarks and the Ray Train worker alike.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ..losses import superpixel_contrastive_loss
from .data import SlidrBatch


def distill_loss(student: nn.Module, teacher: nn.Module, batch: SlidrBatch, temperature: float) -> torch.Tensor:
    """SLidR loss of one batch (DESIGN 5.1): pooled point features vs pooled pixel features.

    ``student`` maps the batch's ``StudentInput`` to (P, D) point features: a
    :class:`pipelines.student_inputs.PointFeatureNet`, or DistributedDataParallel of one.
    """
    pixel = teacher(batch.images)  # (I, D, h, w), unit norm per pixel
    D = pixel.shape[1]
    pixel_feats = pixel.permute(0, 2, 3, 1).reshape(-1, D)
    pixel_superpixel = batch.superpixels.reshape(-1)
    points = student(batch.student_input)  # (P, D)
    loss = superpixel_contrastive_loss(
        points[batch.pair_point], batch.pair_superpixel, pixel_feats, pixel_superpixel,
        batch.num_superpixels, temperature,
    )
    if not torch.isfinite(loss):
        raise FloatingPointError(f"non-finite SLidR loss ({loss.item()}) on scans {batch.tokens}")
    return loss


def train_step(
    student: nn.Module,
    teacher: nn.Module,
    batch: SlidrBatch,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    temperature: float,
    device_type: str,
    amp: bool,
) -> torch.Tensor:
    """Forward (fp16 autocast when ``amp``), backward and one optimizer step; returns the loss."""
    with torch.autocast(device_type, dtype=torch.float16, enabled=amp):
        loss = distill_loss(student, teacher, batch, temperature)
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
    return loss.detach()


def cosine_lr(step: int, total_steps: int, base_lr: float, min_lr: float = 0.0) -> float:
    """Cosine decay from ``base_lr`` at step 0 to ``min_lr`` at ``total_steps``."""
    t = min(max(step, 0), total_steps) / max(total_steps, 1)
    return min_lr + 0.5 * (base_lr - min_lr) * (1 + math.cos(math.pi * t))


def distill_lr(epoch: int, step: int, steps_per_epoch: int, epochs: int, base_lr: float, warmup_epochs: float) -> float:
    """SLidR's learning rate at ``step`` of ``epoch``: a linear warm-up over the first ``warmup_epochs``
    (per step, from ``base_lr / warmup steps``), then the reference's per-epoch cosine over the epochs after
    the warm-up (with no warm-up: ``cosine_lr(epoch, epochs, base_lr)``, the reference schedule)."""
    warmup_steps = int(round(warmup_epochs * steps_per_epoch))
    global_step = epoch * steps_per_epoch + step
    if global_step < warmup_steps:
        return base_lr * (global_step + 1) / warmup_steps
    first = math.ceil(warmup_epochs) if warmup_steps else 0
    return cosine_lr(max(epoch - first, 0), epochs - first, base_lr)


def parameter_norm(module: nn.Module) -> float:
    """L2 norm of all parameters: logged per epoch, it shows a rate that inflates the weights."""
    return math.sqrt(sum(float(p.detach().float().pow(2).sum()) for p in module.parameters()))
