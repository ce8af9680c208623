"""Layered self-distillation on pseudo-labels (UnFuSeD, in the "Be Your Own Teacher" form).

Seth, Ghosh, Umesh and Manocha, "UNFUSED: UNsupervised Finetuning Using SElf supervised
Distillation", ICASSP 2023 workshop (SASB), arXiv:2303.05668. Self-distillation form of
Zhang et al., "Be Your Own Teacher: Improve the Performance of Convolutional Neural Networks
via Self Distillation", ICCV 2019.

The paper's defining idea: pseudo-labels from clustering the embeddings of a self-supervised
(DINO) teacher on the target data "guide self-distillation on a randomly initialized
model" ("unsupervised fine-tuning") before the real fine-tuning on labels. The
self-distillation is BYOT's: classifier heads on intermediate stages of the student learn
from the labels, from the final classifier's softened output (KL) and from the final
stage's features (L2 hint), so the deep classifier teaches the shallow ones inside one
network.

The exact weighting below is OUR READING of DESIGN 5.4 ("CE on pseudo-labels from heads on
three intermediate stages (alpha 0.7) + final classifier, KL of each head to the final
classifier (beta 0.3), MSE (gamma 0.003)"): the authors' code does not run as published,
so nothing here is checked against it. BYOT itself weights each head
``(1 - alpha) * CE + alpha * KL`` plus ``lambda * ||F_i - F_C||^2``; here the head CE is
weighted by alpha, the KL by beta, the feature term by gamma, and the final classifier's CE
by 1. As in Hinton et al.'s distillation (and BYOT's reference implementations), the KL is
scaled by T^2 so its gradient does not shrink with the temperature, and the final
classifier and final features are detached in the KL and feature terms: they teach the
heads and receive gradient only from their own CE.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F


def unfused_loss(
    head_logits: Sequence[torch.Tensor],
    head_features: Sequence[torch.Tensor],
    final_logits: torch.Tensor,
    final_features: torch.Tensor,
    targets: torch.Tensor,
    alpha: float = 0.7,
    beta: float = 0.3,
    gamma: float = 0.003,
    temperature: float = 1.0,
) -> tuple[torch.Tensor, dict[str, float]]:
    """UnFuSeD self-distillation loss of one batch.

    ``loss = CE(final, y) + sum_i [ alpha * CE(head_i, y)
    + beta * T^2 * KL(softmax(final / T).detach() || softmax(head_i / T))
    + gamma * mean_b ||F_i[b] - F_final[b].detach()||^2 ]``

    with CE the batch-mean cross-entropy, KL summed over classes and averaged over the batch
    ("batchmean"), and the feature term summed over D and averaged over the batch.

    Args:
        head_logits: one (B, K) tensor per intermediate-stage classifier head (three in
            DESIGN 5.4), at least one.
        head_features: the heads' (B, D) bottleneck features, one per head, same order.
        final_logits: (B, K) logits of the final classifier.
        final_features: (B, D) features of the final stage (the hint the heads match).
        targets: (B,) int64 pseudo-labels in [0, K) (k-means cluster ids).
        alpha: weight of each head's CE (0.7).
        beta: weight of each head's KL to the final classifier (0.3).
        gamma: weight of each head's squared-L2 feature distance (0.003).
        temperature: softmax temperature T of the KL term (1.0).

    Returns:
        ``(loss, parts)``: the scalar loss (dtype at least float32) and a dict of detached
        floats, each UNWEIGHTED and summed over heads: ``ce_final``, ``ce_heads``
        (sum_i CE_i), ``kl`` (sum_i KL_i, without the T^2 factor) and ``mse`` (sum_i of the
        per-sample squared distance averaged over the batch), so that
        ``loss = ce_final + alpha * ce_heads + beta * T^2 * kl + gamma * mse``.

    Raises:
        ValueError: on shape mismatches, no heads, targets that are not int64 in [0, K),
            a non-positive temperature or a negative weight.
    """
    _validate(head_logits, head_features, final_logits, final_features, targets, alpha, beta, gamma, temperature)
    acc = torch.promote_types(final_logits.dtype, torch.float32)
    final_logits = final_logits.to(acc)
    teacher_logp = F.log_softmax(final_logits.detach() / temperature, dim=1)
    teacher_features = final_features.detach().to(acc)

    ce_final = F.cross_entropy(final_logits, targets)
    ce_heads, kl, mse = [], [], []
    for logits, features in zip(head_logits, head_features):
        logits = logits.to(acc)
        ce_heads.append(F.cross_entropy(logits, targets))
        # F.kl_div(input=log q, target=log p, log_target=True) = sum p (log p - log q).
        kl.append(
            F.kl_div(F.log_softmax(logits / temperature, dim=1), teacher_logp, reduction="batchmean", log_target=True)
        )
        mse.append((features.to(acc) - teacher_features).pow(2).sum(dim=1).mean())
    ce_heads_sum = torch.stack(ce_heads).sum()
    kl_sum = torch.stack(kl).sum()
    mse_sum = torch.stack(mse).sum()
    loss = ce_final + alpha * ce_heads_sum + beta * temperature**2 * kl_sum + gamma * mse_sum
    parts = {
        "ce_final": float(ce_final.detach()),
        "ce_heads": float(ce_heads_sum.detach()),
        "kl": float(kl_sum.detach()),
        "mse": float(mse_sum.detach()),
    }
    return loss, parts


def _validate(
    head_logits: Sequence[torch.Tensor],
    head_features: Sequence[torch.Tensor],
    final_logits: torch.Tensor,
    final_features: torch.Tensor,
    targets: torch.Tensor,
    alpha: float,
    beta: float,
    gamma: float,
    temperature: float,
) -> None:
    if final_logits.ndim != 2 or final_features.ndim != 2:
        raise ValueError(
            f"final_logits and final_features must be 2-D, (B, K) and (B, D); got "
            f"{tuple(final_logits.shape)} and {tuple(final_features.shape)} (pool the time/frequency axes first)"
        )
    batch, num_classes = final_logits.shape
    if final_features.shape[0] != batch:
        raise ValueError(f"final_features has batch {final_features.shape[0]} but final_logits has {batch}")
    if len(head_logits) != len(head_features):
        raise ValueError(
            f"got {len(head_logits)} head_logits but {len(head_features)} head_features: one feature tensor per head"
        )
    if len(head_logits) == 0:
        raise ValueError("unfused_loss needs at least one intermediate head; without heads use F.cross_entropy")
    for i, (logits, features) in enumerate(zip(head_logits, head_features)):
        if tuple(logits.shape) != (batch, num_classes):
            raise ValueError(
                f"head_logits[{i}] has shape {tuple(logits.shape)}, expected {(batch, num_classes)} like final_logits"
            )
        if tuple(features.shape) != tuple(final_features.shape):
            raise ValueError(
                f"head_features[{i}] has shape {tuple(features.shape)}, expected {tuple(final_features.shape)} "
                "like final_features (the heads' bottlenecks must project to the final feature width)"
            )
    if tuple(targets.shape) != (batch,):
        raise ValueError(f"targets must have shape ({batch},), one pseudo-label per sample; got {tuple(targets.shape)}")
    if targets.dtype != torch.int64:
        raise ValueError(f"targets must be int64 (torch.long) class ids; got {targets.dtype}")
    if targets.numel() and (int(targets.min()) < 0 or int(targets.max()) >= num_classes):
        raise ValueError(
            f"targets must be in [0, {num_classes}); found min {int(targets.min())}, max {int(targets.max())}"
        )
    if batch == 0:
        raise ValueError("empty batch: the loss is undefined")
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0; got {temperature}")
    for name, weight in (("alpha", alpha), ("beta", beta), ("gamma", gamma)):
        if not weight >= 0:
            raise ValueError(f"{name} must be >= 0; got {weight}")
