"""The deployable network: range-view student backbone + classifier as one static-shape module.

The fine-tuned segmenter of the evaluate stage is ``student`` (a :class:`RangeNet`) plus
``classifier = nn.Linear(student.feature_dim, num_classes)`` applied per point on the
pre-head features. A Linear on every pixel's feature vector is a 1x1 convolution with the
same weights, so the deployed module is::

    (B, C_in, H, W) -> student.backbone -> (B, F, H, W) -> Conv1x1(F -> K) -> logits (B, K, H, W)

and the per-point gather happens after the engine (:mod:`deploy.tasks.point_segmentation`). The point
logits are then exactly those of the pipeline's ``Segmenter`` (up to float rounding).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from modalities.lidar.range_net import RangeNet


class RangeSegmenter(nn.Module):
    """(B, C_in, H, W) range image -> (B, num_classes, H, W) logits."""

    def __init__(self, student: RangeNet, classifier: nn.Linear):
        super().__init__()
        if classifier.in_features != student.feature_dim:
            raise ValueError(f"classifier: in_features {classifier.in_features} != student.feature_dim {student.feature_dim}")
        self.student = student
        self.classifier = nn.Conv2d(classifier.in_features, classifier.out_features, 1)
        with torch.no_grad():
            self.classifier.weight.copy_(classifier.weight[:, :, None, None])
            self.classifier.bias.copy_(classifier.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.student.backbone(x))


def load_range_segmenter(weights: Path, student_kind: str, student_kwargs: dict, num_classes: int) -> RangeSegmenter:
    """Rebuild the fine-tuned student + classifier from its safetensors (``student.*``, ``classifier.*``), eval mode."""
    from safetensors.torch import load_file  # noqa: PLC0415

    from modalities.lidar.students import build_lidar_student  # noqa: PLC0415

    weights = Path(weights)
    if not weights.is_file():
        raise FileNotFoundError(f"weights not found: {weights}")
    state = load_file(str(weights))
    student = build_lidar_student(student_kind, student_kwargs)
    if not isinstance(student, RangeNet):
        raise ValueError(f"{weights}: student {student_kind!r} is not a range-view network")
    student.load_state_dict({k[len("student."):]: v for k, v in state.items() if k.startswith("student.")})
    classifier = nn.Linear(student.feature_dim, int(num_classes))
    classifier.load_state_dict({k[len("classifier."):]: v for k, v in state.items() if k.startswith("classifier.")})
    return RangeSegmenter(student, classifier).eval()
