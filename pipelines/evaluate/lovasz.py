"""Lovasz-softmax loss (Berman et al., "The Lovasz-Softmax loss", CVPR 2018; reference
bermanmaxim/LovaszSoftmax), the IoU surrogate SLidR's fine-tuning adds to cross-entropy."""

from __future__ import annotations

import torch


def _lovasz_grad(gt_sorted: torch.Tensor) -> torch.Tensor:
    """Gradient of the Lovasz extension of the Jaccard loss w.r.t. sorted errors."""
    gts = gt_sorted.sum()
    intersection = gts - gt_sorted.cumsum(0)
    union = gts + (1 - gt_sorted).cumsum(0)
    jaccard = 1.0 - intersection / union
    jaccard[1:] = jaccard[1:] - jaccard[:-1]
    return jaccard


def lovasz_softmax(probs: torch.Tensor, labels: torch.Tensor, ignore: int = 255) -> torch.Tensor:
    """Mean over present classes of the Lovasz hinge on sorted per-point errors.

    Args:
        probs: (P, C) class probabilities (softmax output).
        labels: (P,) int64 targets; ``ignore`` entries are left out.
    """
    keep = labels != ignore
    probs, labels = probs[keep], labels[keep]
    if labels.numel() == 0:
        return probs.sum() * 0.0
    losses = []
    for c in range(probs.shape[1]):
        fg = (labels == c).to(probs.dtype)
        if fg.sum() == 0:
            continue  # "present" classes only, as the reference's default
        errors = (fg - probs[:, c]).abs()
        errors_sorted, perm = torch.sort(errors, descending=True)
        losses.append(torch.dot(errors_sorted, _lovasz_grad(fg[perm])))
    return torch.stack(losses).mean() if losses else probs.sum() * 0.0
