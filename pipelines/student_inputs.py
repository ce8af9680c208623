"""Scans -> the input of a lidar student, and the student's output -> one feature per point.

Both lidar students see a batch of scans through the same interface, so distillation and
evaluation never branch on the architecture beyond this file:

- ``sparse_unet``: cylindrical voxels (first point's intensity as the feature), coords
  shifted non-negative by a multiple of 16; a point reads its voxel's feature.
- ``range_net``: the range image of a :class:`modalities.lidar.range_spec.RangeImageSpec`
  (the same object the student record, the deploy bundle and the robot runtime carry); a
  point reads the feature of its (row, col) pixel. A point outside every beam has no
  pixel (``point_valid`` False).

Intensities are in [0, 1] (``PointCloud.unit_intensity``: the file format's scale divided out).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from modalities.lidar.range_net import RangeNet, gather_point_features
from modalities.lidar.range_spec import RangeImageSpec, range_spec_for_student
from modalities.lidar.sensors import LidarSensor
from modalities.lidar.sparse_unet import SparseUNet, spatial_shape_for
from modalities.lidar.voxelize import shift_to_nonnegative, voxelize_cylindrical

STUDENT_KINDS = ("sparse_unet", "range_net")


@dataclass
class StudentInput:
    kind: str
    batch_size: int
    point_batch: torch.Tensor  # (P,) scan index of every point, scans concatenated
    point_valid: torch.Tensor  # (P,) bool: the student has a feature for this point
    voxel_coords: torch.Tensor | None = None  # (M, 4) int32 [b, i, j, k]
    voxel_feats: torch.Tensor | None = None  # (M, 1)
    spatial_shape: list[int] | None = None
    point_voxel: torch.Tensor | None = None  # (P,) voxel row of every point
    range_input: torch.Tensor | None = None  # (B, C, H, W)
    point_row: torch.Tensor | None = None  # (P,)
    point_col: torch.Tensor | None = None

    def to(self, device: torch.device | str) -> "StudentInput":
        for name, value in vars(self).items():
            if isinstance(value, torch.Tensor):
                setattr(self, name, value.to(device, non_blocking=True))
        return self


def range_spec_of(student: nn.Module, sensor: LidarSensor) -> RangeImageSpec | None:
    """The range-image spec a range-view ``student`` takes for ``sensor`` (None for other students)."""
    if not isinstance(student, RangeNet):
        return None
    return range_spec_for_student(student.input_multiple, student.input_channels, sensor)


def make_student_input(
    kind: str,
    points_xyz: list[np.ndarray],
    intensity: list[np.ndarray],
    voxel_size: tuple[float, float, float] = (0.1, 1.0, 0.1),
    range_spec: RangeImageSpec | None = None,
    rings: list[np.ndarray | None] | None = None,
) -> StudentInput:
    """Batch the scans ``points_xyz[b]`` (N_b, 3) with intensities in [0, 1] (and beam ``rings[b]``) for ``kind``."""
    point_batch = torch.from_numpy(np.concatenate([np.full(len(p), b) for b, p in enumerate(points_xyz)]))
    if kind == "sparse_unet":
        coords, feats, point_voxel = [], [], []
        offset = 0
        for b, (xyz, inten) in enumerate(zip(points_xyz, intensity)):
            vc, inverse, first = voxelize_cylindrical(xyz, voxel_size)
            vc = shift_to_nonnegative(vc, 16)
            coords.append(np.concatenate([np.full((len(vc), 1), b, dtype=np.int32), vc.astype(np.int32)], 1))
            feats.append(inten[first][:, None])  # SLidR: the intensity of the first point in the voxel
            point_voxel.append(inverse + offset)
            offset += len(vc)
        voxel_coords = torch.from_numpy(np.concatenate(coords))
        return StudentInput(
            kind, len(points_xyz), point_batch, torch.ones(len(point_batch), dtype=torch.bool),
            voxel_coords=voxel_coords,
            voxel_feats=torch.from_numpy(np.concatenate(feats).astype(np.float32)),
            spatial_shape=spatial_shape_for(voxel_coords),
            point_voxel=torch.from_numpy(np.concatenate(point_voxel)),
        )
    if kind == "range_net":
        if range_spec is None:
            raise ValueError("the range_net student needs its range image spec (sensor model, channels, padding)")
        images, rows, cols, valid = [], [], [], []
        for xyz, inten, ring in zip(points_xyz, intensity, rings or [None] * len(points_xyz)):
            inp = range_spec(xyz, inten, ring)
            images.append(torch.from_numpy(inp.image))
            rows.append(torch.from_numpy(inp.rows).clamp(min=0))
            cols.append(torch.from_numpy(inp.cols).clamp(min=0))
            valid.append(torch.from_numpy(inp.valid))
        return StudentInput(
            kind, len(points_xyz), point_batch, torch.cat(valid),
            range_input=torch.stack(images), point_row=torch.cat(rows), point_col=torch.cat(cols),
        )
    raise ValueError(f"unknown student {kind!r}; known: {STUDENT_KINDS}")


class PointFeatureNet(nn.Module):
    """A lidar student as one module, ``StudentInput -> (P, D)`` point features.

    Training wraps this (not the bare student) in DistributedDataParallel, whose contract is
    that the forward pass runs through ``DDP.forward`` (buffer broadcast, reducer
    bookkeeping); the students' point features come from several of their sub-modules
    (backbone, head, gather), which a DDP-wrapped bare student does not expose.
    """

    def __init__(self, student: nn.Module):
        super().__init__()
        self.student = student

    def forward(self, inp: StudentInput, backbone_only: bool = False) -> torch.Tensor:
        return point_features(self.student, inp, backbone_only)


def point_features(student: nn.Module, inp: StudentInput, backbone_only: bool = False) -> torch.Tensor:
    """(P, D) feature of every point (rows of invalid points are meaningless: mask them).

    ``backbone_only`` returns the pre-head features (linear probe / segmentation head input).
    """
    if inp.kind == "sparse_unet":
        if not isinstance(student, SparseUNet):
            raise TypeError(f"a sparse_unet input needs a SparseUNet student, got {type(student).__name__}")
        vox = student.backbone_features(inp.voxel_feats, inp.voxel_coords, inp.batch_size, inp.spatial_shape)
        if not backbone_only:
            vox = student.forward_head(vox)
        return vox[inp.point_voxel]
    if not isinstance(student, RangeNet):
        raise TypeError(f"a range_net input needs a RangeNet student, got {type(student).__name__}")
    fmap = student.backbone(inp.range_input)
    if not backbone_only:
        fmap = student.forward_head(fmap)
    return gather_point_features(fmap, inp.point_batch, inp.point_row, inp.point_col)

