"""Builders for the SLidR student and teacher (each takes its own sub-config, not the root)."""

from __future__ import annotations

from torch import nn

from modalities.camera.teachers import ImageTeacher, build_teacher
from modalities.lidar.students import build_lidar_student

from .config import DistillConfig, TeacherConfig


def student_kwargs(cfg: DistillConfig, normalize: bool = True) -> dict:
    """Constructor arguments of the configured student (saved beside exported models)."""
    if cfg.student == "sparse_unet":
        return {"in_channels": 1, "out_dim": cfg.out_dim, "planes": list(cfg.sparse_unet.planes),
                "layers": list(cfg.sparse_unet.layers), "normalize": normalize}
    w = cfg.range_net.base_channels
    return {"out_dim": cfg.out_dim, "widths": [w, w, 2 * w, 4 * w, 8 * w], "normalize": normalize,
            "input_channels": list(cfg.range_net.channels)}


def build_student(cfg: DistillConfig, normalize: bool = True) -> nn.Module:
    return build_lidar_student(cfg.student, student_kwargs(cfg, normalize))


def build_image_teacher(cfg: TeacherConfig, out_dim: int) -> ImageTeacher:
    return build_teacher(cfg.name, weights_path=cfg.weights_path, out_dim=out_dim)
