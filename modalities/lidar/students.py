"""Lidar student classes by name, so a saved model can be rebuilt from (kind, kwargs) alone."""

from __future__ import annotations

from torch import nn

from .range_net import RangeNet
from .sparse_unet import SparseUNet

STUDENTS: dict[str, type[nn.Module]] = {"sparse_unet": SparseUNet, "range_net": RangeNet}


def build_lidar_student(kind: str, kwargs: dict) -> nn.Module:
    if kind not in STUDENTS:
        raise ValueError(f"unknown lidar student {kind!r}; known: {sorted(STUDENTS)}")
    return STUDENTS[kind](**kwargs)
