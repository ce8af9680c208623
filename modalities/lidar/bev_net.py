"""Lidar BEV student for CALICO (DESIGN.md 5.3): pillars -> pseudo-image -> 2D CNN, export-friendly.

PointPillars (Lang et al., "PointPillars: Fast Encoders for Object Detection from Point
Clouds", CVPR 2019; reference nutonomy/second.pytorch, OpenPCDet ``PillarVFE`` +
``PointPillarScatter`` + ``BaseBEVBackbone``), sized for an edge device and for a dense BEV
output at the label grid's resolution::

    points (N, 3) + intensity  --pillar_inputs (numpy)-->  pillar_points (P, M, 9), pillar_mask (P, M),
                                                           cell_index (ny*nx,)
    pillar encoder: shared Linear(9, C) + BN + ReLU per point, masked max over the M slots -> (B, C, P)
    "scatter" as a gather: append one zero column (B, C, P+1), take column cell_index[c] for every
        BEV cell c (empty cells point at the zero column P) -> pseudo-image (B, C, ny, nx)
    BEV CNN (:class:`BevCnn`): stages at stride 1, 2, 4 (``widths``), each stage's output
        projected (1x1) to ``out_channels``, upsampled back to stride 1 and summed, one 1x1
        conv -> (B, out_channels, ny, nx)

Grid: one pillar is one cell of a :class:`modalities.bev_labels.BevGridSpec` (the key frame's
LIDAR_TOP frame, x right, y forward in nuScenes)::

        y (lidar)
        ^   cell (ix, iy) covers
        |   [x_min + ix*s, x_min + (ix+1)*s) x [y_min + iy*s, y_min + (iy+1)*s)
        |
        +-------> x (lidar)     BEV map (B, C, ny, nx): row = iy, column = ix

so the output lines up with BEV labels and with the camera student
(:mod:`modalities.camera.bev_lift`) of the same grid without any flip.

Deployability (DESIGN.md section 6): the index bookkeeping whose size depends on the scan
(which cell holds which pillar) is computed outside the network, in numpy, as the dense
``cell_index`` (ny*nx,) int64; inside, the PointPillars scatter becomes a ``GatherElements``.
The exported graph (opset 17, BatchNorm folded into Conv) holds Transpose, Conv, Relu, Mul,
ReduceMax, Slice, Concat, Expand/Tile (index broadcast), GatherElements, Reshape, Resize
(constant scales) and Add: no ScatterND, no NonZero, every shape static.

Pillar encoder: PointPillars' simplified PointNet is a Linear + BatchNorm + ReLU shared by all
points, then a max over the points of a pillar. Padded slots are zeroed at the input (so
their values never matter, also for the BatchNorm statistics in training, which, as in
OpenPCDet's ``PFNLayer``, include the padded slots) and their outputs multiplied by the mask
before the max: ReLU outputs are >= 0, so a masked slot (0) never beats a real point, and an
empty pillar gives exactly 0.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

# The input spec and its numpy feeds live in bev_spec.py (imported by the torch-free deploy adapter).
from modalities.lidar.bev_spec import (  # noqa: F401  (re-exported)
    NUM_POINT_FEATURES,
    POINT_FEATURE_NAMES,
    PillarBevSpec,
    pillar_inputs,
)


def conv_bn_relu(c_in: int, c_out: int, kernel: int = 3, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=kernel // 2, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    )


class BevCnn(nn.Module):
    """Dense BEV encoder-decoder at full grid resolution (PointPillars' backbone + neck, bilinear upsampling).

    Stage i runs at stride 2**i: a 3x3 Conv-BN-ReLU (stride 2 from the second stage on) to
    ``widths[i]`` channels, then ``blocks[i]`` more 3x3 Conv-BN-ReLU. Each stage's output goes
    through a 1x1 Conv-BN-ReLU to ``out_channels`` at its own resolution, is upsampled
    (bilinear, constant scale 2**i, ``align_corners=False``) to stride 1; the sum goes
    through one 1x1 Conv-BN-ReLU. (PointPillars concatenates transposed-conv upsamplings
    instead; projecting before upsampling keeps the full-resolution part at ``out_channels``.)
    Shared by :class:`PillarBevNet` and the camera student ``modalities.camera.bev_lift``.

    ny and nx must be multiples of ``input_multiple`` = 2**(len(widths) - 1).
    """

    def __init__(self, in_channels: int, widths: tuple[int, ...], out_channels: int, blocks: tuple[int, ...]):
        super().__init__()
        if not widths or len(blocks) != len(widths):
            raise ValueError(f"widths and blocks need one entry per stage (>= 1), got {widths} and {blocks}")
        self.stages = nn.ModuleList()
        c = in_channels
        for i, (w, n) in enumerate(zip(widths, blocks)):
            layers = [conv_bn_relu(c, w, 3, stride=1 if i == 0 else 2)]
            layers += [conv_bn_relu(w, w, 3) for _ in range(n)]
            self.stages.append(nn.Sequential(*layers))
            c = w
        self.laterals = nn.ModuleList(conv_bn_relu(w, out_channels, 1) for w in widths)
        self.fuse = conv_bn_relu(out_channels, out_channels, 1)  # 1x1: a 3x3 here costs 0.6 GMAC at 128 x 128
        self.input_multiple = 2 ** (len(widths) - 1)
        self.out_channels = out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = None
        for i, (stage, lateral) in enumerate(zip(self.stages, self.laterals)):
            x = stage(x)
            y = lateral(x)
            if i:  # constant scale factors keep the exported Resize static
                y = F.interpolate(y, scale_factor=float(2**i), mode="bilinear", align_corners=False)
            out = y if out is None else out + y
        return self.fuse(out)


def _tracing() -> bool:
    return torch.jit.is_tracing() or torch.onnx.is_in_onnx_export()


class PillarBevNet(nn.Module):
    """Pillar encoder + gather "scatter" + :class:`BevCnn`; see the module docstring.

    forward(pillar_points (B, P, M, F) float, pillar_mask (B, P, M) float 0/1, cell_index
    (B, ny*nx) int64 in [0, P]) -> (B, out_channels, ny, nx).

    Args:
        ny, nx: BEV grid shape (``PillarBevSpec.ny/nx``), multiples of 2**(len(widths) - 1).
        in_features: per-point features (``NUM_POINT_FEATURES``).
        pillar_channels: width of the pillar encoder (PointPillars: 64; 32 suffices at 0.5 m cells).
        widths: channels of the BEV CNN stages at stride 1, 2, 4, ...
        out_channels: channels of the output map (``feature_dim``).
    """

    def __init__(
        self,
        ny: int,
        nx: int,
        in_features: int = NUM_POINT_FEATURES,
        pillar_channels: int = 32,
        widths: tuple[int, ...] = (32, 64, 128),
        out_channels: int = 64,
    ):
        super().__init__()
        multiple = 2 ** (len(widths) - 1)
        if ny < 1 or nx < 1 or ny % multiple or nx % multiple:
            raise ValueError(f"ny, nx must be positive multiples of {multiple} (2**(len(widths)-1)), got {ny}, {nx}; "
                             "change the grid range or the number of stages")
        self.ny, self.nx = int(ny), int(nx)
        self.in_features = in_features
        self.pillar_channels = pillar_channels
        # The shared per-point Linear as a 1x1 conv on (B, F, P, M): no reshapes with batch-dependent shapes.
        self.point_linear = nn.Conv2d(in_features, pillar_channels, 1, bias=False)
        self.point_bn = nn.BatchNorm2d(pillar_channels, eps=1e-3, momentum=0.01)  # PointPillars' BN settings
        self.bev = BevCnn(pillar_channels, tuple(widths), out_channels, blocks=(1,) + (2,) * (len(widths) - 1))
        self.feature_dim = out_channels

    def _check(self, pillar_points: torch.Tensor, pillar_mask: torch.Tensor, cell_index: torch.Tensor) -> None:
        if _tracing():
            return
        if pillar_points.ndim != 4 or pillar_points.shape[-1] != self.in_features:
            raise ValueError(f"pillar_points: expected (B, P, M, {self.in_features}), got {tuple(pillar_points.shape)}")
        if pillar_mask.shape != pillar_points.shape[:3]:
            raise ValueError(f"pillar_mask: expected {tuple(pillar_points.shape[:3])}, got {tuple(pillar_mask.shape)}")
        b, p = pillar_points.shape[:2]
        if cell_index.shape != (b, self.ny * self.nx) or cell_index.dtype != torch.int64:
            raise ValueError(f"cell_index: expected int64 ({b}, {self.ny * self.nx}), "
                             f"got {cell_index.dtype} {tuple(cell_index.shape)}")
        if cell_index.numel() and (int(cell_index.min()) < 0 or int(cell_index.max()) > p):
            raise ValueError(f"cell_index: values must be in [0, {p}] (P = empty cell); build it with pillar_inputs")

    def encode_pillars(self, pillar_points: torch.Tensor, pillar_mask: torch.Tensor) -> torch.Tensor:
        """(B, P, M, F), (B, P, M) -> (B, pillar_channels, P) pillar features; 0 for empty pillars."""
        mask = pillar_mask.unsqueeze(1)  # (B, 1, P, M)
        x = pillar_points.permute(0, 3, 1, 2) * mask  # (B, F, P, M); padded slots zeroed
        x = F.relu(self.point_bn(self.point_linear(x)))
        return (x * mask).amax(dim=3)  # ReLU >= 0: a masked slot (0) never wins

    def pseudo_image(
        self, pillar_points: torch.Tensor, pillar_mask: torch.Tensor, cell_index: torch.Tensor
    ) -> torch.Tensor:
        """The PointPillars pseudo-image (B, pillar_channels, ny, nx): pillar features gathered per cell."""
        self._check(pillar_points, pillar_mask, cell_index)
        feats = self.encode_pillars(pillar_points, pillar_mask)  # (B, C, P)
        # Column P = 0 for empty cells (a Slice/Mul/Concat; F.pad exports a ConstantOfShape/Slice chain).
        feats = torch.cat([feats, feats[:, :, :1] * 0.0], dim=2)  # (B, C, P+1)
        index = cell_index.unsqueeze(1).repeat(1, self.pillar_channels, 1)  # (B, C, ny*nx)
        return torch.gather(feats, 2, index).view(-1, self.pillar_channels, self.ny, self.nx)

    def forward(self, pillar_points: torch.Tensor, pillar_mask: torch.Tensor, cell_index: torch.Tensor) -> torch.Tensor:
        return self.bev(self.pseudo_image(pillar_points, pillar_mask, cell_index))
