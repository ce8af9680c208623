"""Range-view lidar student: a dense 2D encoder-decoder over the range image, TensorRT-friendly.

The input is the spherical projection of a scan (RangeNet++, Milioto et al., IROS 2019;
reference PRBonn/lidar-bonnetal): one pixel per (beam, azimuth bin), channels such as
range, x, y, z, intensity and an occupancy mask. The network is a small U-Net in the
spirit of SalsaNext (Cortinhal et al., "SalsaNext: Fast, Uncertainty-aware Semantic
Segmentation of LiDAR Point Clouds", ISVC 2020; reference TiagoCortinhal/SalsaNext):
residual stages with stride-2 downsampling (first and last stages along the width only,
as RangeNet++ does, because a 16-beam image is only 16 rows high), bilinear upsampling
and skip concatenation::

    (B, C_in, H, W) -> stem -> [down s_i -> res block] x 4 -> [resize x s_i, concat skip, conv x2] x 4
                   -> backbone features (B, feature_dim, H, W) -> 1x1 head -> (B, out_dim, H, W) [-> L2]

Deployability (DESIGN.md section 6): the network contains only Conv, BatchNorm (folded
into Conv on export), ReLU, Add, Resize (constant scales) and Concat, plus
ReduceSum/Sqrt/Max/Div for the optional L2 normalisation. Every shape is static. The
point <-> pixel bookkeeping, whose sizes depend on the scan, stays outside the network:
:class:`modalities.lidar.range_spec.RangeImageSpec` (pre-processing, numpy) and :func:`gather_point_features`
(post-processing, a pure indexing function).

Width padding: the image height and width must be multiples of the net's total stride
(``RangeNet.input_multiple``, (4, 16) by default). The spec (its ``width_multiple``) pads the
width on the right with empty pixels (all channels 0, mask 0); point columns are
unchanged, so ``gather_point_features`` on the padded output needs no offset. Heights of
16, 32 and 64 beams need no padding with the default strides.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from modalities.lidar.range_view import RANGE_CHANNELS


def gather_point_features(
    feature_map: torch.Tensor, batch_idx: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor
) -> torch.Tensor:
    """Per-point features read from a dense map (outside the deployed network).

    Args:
        feature_map: (B, D, H, W).
        batch_idx, rows, cols: (P,) integer scan index and pixel of each point (only valid
            points: negative indices would wrap around silently, so they are rejected).

    Returns:
        (P, D): row p is ``feature_map[batch_idx[p], :, rows[p], cols[p]]``.
    """
    if feature_map.ndim != 4:
        raise ValueError(f"feature_map: expected (B, D, H, W), got {tuple(feature_map.shape)}")
    if not (batch_idx.shape == rows.shape == cols.shape) or rows.ndim != 1:
        raise ValueError(f"batch_idx/rows/cols: expected three (P,), got {batch_idx.shape}/{rows.shape}/{cols.shape}")
    B, _, H, W = feature_map.shape
    if rows.numel():
        for name, v, hi in (("batch_idx", batch_idx, B), ("rows", rows, H), ("cols", cols, W)):
            if int(v.min()) < 0 or int(v.max()) >= hi:
                raise ValueError(f"{name}: values must be in [0, {hi}); filter points with `valid` first")
    b, r, c = (t.to(feature_map.device, torch.long) for t in (batch_idx, rows, cols))
    return feature_map[b, :, r, c]


class ConvBNReLU(nn.Sequential):
    def __init__(self, in_channels: int, out_channels: int, kernel: int = 3, stride: int | tuple[int, int] = 1):
        super().__init__(
            nn.Conv2d(in_channels, out_channels, kernel, stride=stride, padding=kernel // 2, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
        )


class ResBlock(nn.Module):
    """Two 3x3 Conv-BN, identity shortcut, ReLU (ResNet BasicBlock)."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv1 = ConvBNReLU(channels, channels)
        self.conv2 = nn.Sequential(nn.Conv2d(channels, channels, 3, padding=1, bias=False), nn.BatchNorm2d(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(x + self.conv2(self.conv1(x)))


class RangeNet(nn.Module):
    """Range-image U-Net; (B, C_in, H, W) -> (B, out_dim, H, W).

    Args:
        input_channels: channel names of the input (a ``RangeImageSpec``'s ``channels``);
            only their number matters to the network.
        out_dim: channels of the 1x1 head.
        widths: channels of the stem followed by one width per encoder stage.
        strides: (row, column) stride of each encoder stage; H and W must be multiples of
            their products (``input_multiple``). Default: width-only first and last.
        normalize: L2-normalise each pixel's output (distillation).
    """

    def __init__(
        self,
        input_channels: Sequence[str] = RANGE_CHANNELS,
        out_dim: int = 64,
        widths: Sequence[int] = (32, 32, 64, 128, 256),
        strides: Sequence[tuple[int, int]] = ((1, 2), (2, 2), (2, 2), (1, 2)),
        normalize: bool = True,
    ):
        super().__init__()
        if len(widths) != len(strides) + 1:
            raise ValueError(f"widths needs len(strides) + 1 = {len(strides) + 1} entries (stem + stages), got {len(widths)}")
        if not input_channels:
            raise ValueError("input_channels: need at least one channel")
        self.input_channels = tuple(input_channels)
        self.strides = tuple((int(sh), int(sw)) for sh, sw in strides)
        self.input_multiple = (
            int(np.prod([s[0] for s in self.strides])),
            int(np.prod([s[1] for s in self.strides])),
        )
        self.normalize = normalize
        c_in = len(self.input_channels)
        self.stem = nn.Sequential(ConvBNReLU(c_in, widths[0]), ResBlock(widths[0]))
        self.down = nn.ModuleList(
            nn.Sequential(ConvBNReLU(widths[i], widths[i + 1], 3, stride=self.strides[i]), ResBlock(widths[i + 1]))
            for i in range(len(self.strides))
        )
        self.up = nn.ModuleList()
        c = widths[-1]
        for i in reversed(range(len(self.strides))):
            skip = widths[i]
            self.up.append(nn.Sequential(ConvBNReLU(c + skip, skip), ConvBNReLU(skip, skip)))
            c = skip
        self.feature_dim = c
        self.out_dim = out_dim
        self.head = nn.Conv2d(c, out_dim, 1)

    def _check_shape(self, x: torch.Tensor) -> None:
        if torch.jit.is_tracing() or torch.onnx.is_in_onnx_export():
            return
        mh, mw = self.input_multiple
        if x.ndim != 4 or x.shape[1] != len(self.input_channels) or x.shape[2] % mh or x.shape[3] % mw:
            raise ValueError(
                f"input: expected (B, {len(self.input_channels)}, H, W) with H a multiple of {mh} and W of {mw}, "
                f"got {tuple(x.shape)}; pad with RangeImageSpec(width_multiple={mw}, height_multiple={mh})"
            )

    def backbone(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C_in, H, W) -> (B, feature_dim, H, W) pre-head features (for linear probes)."""
        self._check_shape(x)
        x = self.stem(x)
        skips = [x]
        for down in self.down:
            x = down(x)
            skips.append(x)
        skips.pop()
        for up, (sh, sw) in zip(self.up, reversed(self.strides)):
            # Constant scale factors keep the exported Resize static (no Shape ops).
            x = F.interpolate(x, scale_factor=(float(sh), float(sw)), mode="bilinear", align_corners=False)
            x = up(torch.cat([x, skips.pop()], dim=1))
        return x

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        """(B, feature_dim, H, W) -> (B, out_dim, H, W), L2-normalised over channels when ``normalize``."""
        out = self.head(features)
        if self.normalize:
            # Written out (not F.normalize) so that the export is ReduceSum/Sqrt/Max/Div only.
            out = out / torch.sqrt((out * out).sum(dim=1, keepdim=True)).clamp_min(1e-12)
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.backbone(x))
