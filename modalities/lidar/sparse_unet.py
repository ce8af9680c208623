"""Sparse 3D U-Net (MinkUNet-34C shape) on spconv: SLidR's lidar student.

The network is the Res16UNet34C / MinkUNet34C of Choy et al., "4D Spatio-Temporal
ConvNets: Minkowski Convolutional Neural Networks", CVPR 2019 (reference
NVIDIA/MinkowskiEngine ``examples/minkunet.py``), as used by SLidR (Sautier et al.,
"Image-to-Lidar Self-Supervised Distillation for Autonomous Driving Data", CVPR 2022;
reference valeoai/SLidR ``model/res16unet.py``), re-expressed with spconv 2.x
(Yan et al., "SECOND", Sensors 2018; traveller59/spconv)::

    level  stride  channels (encoder)           channels (decoder)
      0      1     stem 32 (SubM k=kernel)  ->  cat(up 96, 32)  -> block8 96  -> head 1x1 -> out_dim
      1      2     down 32 -> block1 32     ->  cat(up 96, 32)  -> block7 96
      2      4     down 32 -> block2 64     ->  cat(up 128, 64) -> block6 128
      3      8     down 64 -> block3 128    ->  cat(up 256, 128)-> block5 256
      4     16     down 128 -> block4 256   ->  inverse conv up ...

Downsampling is ``SparseConv3d(k=2, s=2)`` (MinkowskiEngine's ``conv(k=2, s=2)``),
upsampling the matching ``SparseInverseConv3d`` (same ``indice_key``), so every level's
decoder voxels are exactly its encoder voxels, and the output is aligned row for row
with the input voxels. Blocks are ResNet BasicBlocks of submanifold 3x3x3 convolutions.

Coordinates are ``(batch, i, j, k)`` int32, non-negative (shift them with
``modalities.lidar.voxelize.shift_to_nonnegative``), unique per batch entry.

spconv algorithm: spconv's CPU build only runs ``ConvAlgo.Native``; on CUDA the
implicit-GEMM kernels (``MaskImplicitGemm``) are faster and support fp16. Weights have
the same (KRSC) layout for every algorithm in spconv 2.3, so the algorithm is a plain
attribute of each conv module. With ``algo=None`` (default) the network picks it from
the device of the input at every forward (a cheap check; the conv attributes are only
rewritten when the device type changes), so ``model.cuda()`` / ``model.cpu()`` after
construction just work. With an explicit ``algo`` the choice is fixed.
"""

from __future__ import annotations

from collections.abc import Sequence

import warnings

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn



class _LazySpconv:
    """``spconv.pytorch``, imported at first use. Its import takes ~9 s on a 2-core CPU (it builds its
    kernel tables), which every process that merely imports this module (a range-view or audio Ray
    worker, the evaluate stage of a range-view student) would otherwise pay."""

    _module = None

    def __getattr__(self, name: str):
        if _LazySpconv._module is None:
            with warnings.catch_warnings():
                # spconv 2.3 decorates its ops with the deprecated torch.cuda.amp.custom_fwd/bwd.
                warnings.simplefilter("ignore", FutureWarning)
                import spconv.pytorch as module  # noqa: PLC0415
            _LazySpconv._module = module
        return getattr(_LazySpconv._module, name)


spconv = _LazySpconv()

MINKUNET34C_PLANES = (32, 64, 128, 256, 256, 128, 96, 96)
MINKUNET34C_LAYERS = (2, 3, 4, 6, 2, 2, 2, 2)
NUM_LEVELS = 4  # stride-2 downsamplings; voxel coordinates are padded to a multiple of 2**4

# Names of the spconv algorithms (``ConvAlgo`` members) that ``algo=`` accepts as strings.
ALGOS = {"native": "Native", "mask_implicit_gemm": "MaskImplicitGemm", "mask_split_implicit_gemm": "MaskSplitImplicitGemm"}


def algo_for_device(device: torch.device | str) -> ConvAlgo:
    """``Native`` on CPU (the only one spconv's CPU path runs), ``MaskImplicitGemm`` on CUDA."""
    return spconv.ConvAlgo.MaskImplicitGemm if torch.device(device).type == "cuda" else spconv.ConvAlgo.Native


def spatial_shape_for(coords: torch.Tensor | np.ndarray, multiple: int = 2**NUM_LEVELS) -> list[int]:
    """Smallest (D, H, W) grid holding ``coords`` (M, 4) [batch, i, j, k], each rounded up to ``multiple``.

    Raises ValueError on negative coordinates (shift them first).
    """
    c = torch.as_tensor(coords)
    if c.ndim != 2 or c.shape[1] != 4:
        raise ValueError(f"coords: expected (M, 4) [batch, i, j, k], got {tuple(c.shape)}")
    if c.shape[0] == 0:
        return [multiple] * 3
    lo = c[:, 1:].amin(0)
    if (lo < 0).any():
        raise ValueError(
            f"coords: voxel indices must be non-negative, got min {lo.tolist()}; "
            "shift them with modalities.lidar.voxelize.shift_to_nonnegative"
        )
    hi = c[:, 1:].amax(0).tolist()
    return [int(-(-(h + 1) // multiple) * multiple) for h in hi]


def _bn(channels: int, momentum: float) -> nn.BatchNorm1d:
    return nn.BatchNorm1d(channels, momentum=momentum)


def _with_features(x: spconv.SparseConvTensor, features: torch.Tensor) -> spconv.SparseConvTensor:
    return x.replace_feature(features)


class BasicBlock(nn.Module):
    """ResNet BasicBlock on a sparse tensor: (SubM3 -> BN -> ReLU -> SubM3 -> BN) + shortcut -> ReLU.

    The shortcut is a per-voxel linear map + BN when channels change (MinkowskiEngine's
    1x1 conv downsample), the identity otherwise.
    """

    def __init__(self, in_channels: int, out_channels: int, indice_key: str, algo: ConvAlgo, bn_momentum: float):
        super().__init__()
        self.conv1 = spconv.SubMConv3d(in_channels, out_channels, 3, padding=1, bias=False,
                                       indice_key=indice_key, algo=algo)
        self.bn1 = _bn(out_channels, bn_momentum)
        self.conv2 = spconv.SubMConv3d(out_channels, out_channels, 3, padding=1, bias=False,
                                       indice_key=indice_key, algo=algo)
        self.bn2 = _bn(out_channels, bn_momentum)
        self.shortcut = None
        if in_channels != out_channels:
            self.shortcut = nn.Sequential(nn.Linear(in_channels, out_channels, bias=False), _bn(out_channels, bn_momentum))

    def forward(self, x: spconv.SparseConvTensor) -> spconv.SparseConvTensor:
        identity = x.features if self.shortcut is None else self.shortcut(x.features)
        out = self.conv1(x)
        out = _with_features(out, F.relu(self.bn1(out.features)))
        out = self.conv2(out)
        return _with_features(out, F.relu(self.bn2(out.features) + identity))


class ConvBNReLU(nn.Module):
    """A sparse conv (any spconv conv module) followed by BN and ReLU on the features."""

    def __init__(self, conv: nn.Module, out_channels: int, bn_momentum: float):
        super().__init__()
        self.conv = conv
        self.bn = _bn(out_channels, bn_momentum)

    def forward(self, x: spconv.SparseConvTensor) -> spconv.SparseConvTensor:
        out = self.conv(x)
        return _with_features(out, F.relu(self.bn(out.features)))


def _stage(in_channels: int, out_channels: int, n: int, key: str, algo: ConvAlgo, bn_momentum: float) -> nn.Sequential:
    blocks = [BasicBlock(in_channels if i == 0 else out_channels, out_channels, key, algo, bn_momentum) for i in range(n)]
    return nn.Sequential(*blocks)  # blocks take sparse tensors (SparseSequential would feed them features)


class SparseUNet(nn.Module):
    """MinkUNet-34C on spconv; per-voxel features aligned with the input voxels.

    Args:
        in_channels: input features per voxel (SLidR: 1, the intensity of the first point).
        out_dim: channels of the 1x1 head (SLidR: 64).
        planes: the 8 stage widths (4 encoder, 4 decoder); default MinkUNet-34C.
        layers: BasicBlocks per stage; default MinkUNet-34C (2, 3, 4, 6, 2, 2, 2, 2).
        stem_kernel: kernel of the first submanifold conv (SLidR's ``kernel_size: 3``; MinkowskiEngine's example: 5).
        normalize: L2-normalise each output voxel (distillation); False for classification.
        algo: None (pick per input device, see module docstring), or a ``ConvAlgo`` / one of
            ``ALGOS``' keys to fix it.
        bn_momentum: BatchNorm momentum, PyTorch convention (SLidR's ``slidr_minkunet.yaml``: 0.05).
    """

    def __init__(
        self,
        in_channels: int = 1,
        out_dim: int = 64,
        planes: Sequence[int] = MINKUNET34C_PLANES,
        layers: Sequence[int] = MINKUNET34C_LAYERS,
        stem_kernel: int = 3,
        normalize: bool = True,
        algo: ConvAlgo | str | None = None,
        bn_momentum: float = 0.05,
    ):
        super().__init__()
        if len(planes) != 2 * NUM_LEVELS or len(layers) != 2 * NUM_LEVELS:
            raise ValueError(f"planes and layers need {2 * NUM_LEVELS} entries each, got {len(planes)} and {len(layers)}")
        if any(n < 1 for n in layers):
            raise ValueError(f"layers: every stage needs >= 1 block, got {tuple(layers)}")
        if stem_kernel % 2 != 1:
            raise ValueError(f"stem_kernel must be odd (submanifold conv), got {stem_kernel}")
        if isinstance(algo, str):
            if algo not in ALGOS:
                raise ValueError(f"algo: unknown '{algo}'; choose from {sorted(ALGOS)} or None (automatic)")
            algo = getattr(spconv.ConvAlgo, ALGOS[algo])
        self.auto_algo = algo is None
        initial_algo = algo_for_device("cpu") if algo is None else algo
        self._algo_device_type = "cpu" if algo is None else None
        self.normalize = normalize
        self.planes, self.layers = tuple(planes), tuple(layers)
        init_dim = planes[0]
        a, m = initial_algo, bn_momentum

        stem_key = "subm0" if stem_kernel == 3 else "stem"
        self.stem = ConvBNReLU(spconv.SubMConv3d(in_channels, init_dim, stem_kernel, padding=stem_kernel // 2,
                                                 bias=False, indice_key=stem_key, algo=a), init_dim, m)
        # Encoder: level l -> l+1 by a k=2 s=2 conv, then a stage of blocks at level l+1.
        self.down = nn.ModuleList()
        self.enc = nn.ModuleList()
        skip_channels = [init_dim]
        c = init_dim
        for lvl in range(NUM_LEVELS):
            self.down.append(ConvBNReLU(spconv.SparseConv3d(c, c, 2, stride=2, bias=False,
                                                            indice_key=f"down{lvl}", algo=a), c, m))
            self.enc.append(_stage(c, planes[lvl], layers[lvl], f"subm{lvl + 1}", a, m))
            c = planes[lvl]
            skip_channels.append(c)
        # Decoder: level l+1 -> l by the inverse of down[l], concat the level-l skip, blocks.
        self.up = nn.ModuleList()
        self.dec = nn.ModuleList()
        for i in range(NUM_LEVELS):
            lvl = NUM_LEVELS - 1 - i
            p = planes[NUM_LEVELS + i]
            self.up.append(ConvBNReLU(spconv.SparseInverseConv3d(c, p, 2, bias=False, indice_key=f"down{lvl}", algo=a), p, m))
            self.dec.append(_stage(p + skip_channels[lvl], p, layers[NUM_LEVELS + i], f"subm{lvl}", a, m))
            c = p
        self.feature_dim = c
        self.out_dim = out_dim
        self.head = nn.Linear(c, out_dim, bias=True)  # == a 1x1x1 conv with bias (MinkUNet's `final`)

    # -- algorithm -----------------------------------------------------------------------
    def set_algo(self, algo: ConvAlgo) -> None:
        """Set the spconv algorithm of every conv (all convs sharing an indice key must agree)."""
        for mod in self.modules():
            if isinstance(mod, spconv.conv.SparseConvolution):
                mod.algo = algo

    def for_device(self, device: torch.device | str) -> SparseUNet:
        """Move to ``device`` and set the algorithm for it (auto mode re-picks it anyway)."""
        self.to(device)
        self.set_algo(algo_for_device(device))
        self._algo_device_type = torch.device(device).type if self.auto_algo else None
        return self

    def _sync_algo(self, device: torch.device) -> None:
        if self.auto_algo and device.type != self._algo_device_type:
            self.set_algo(algo_for_device(device))
            self._algo_device_type = device.type

    # -- forward -------------------------------------------------------------------------
    def backbone_features(
        self,
        features: torch.Tensor,
        coords: torch.Tensor,
        batch_size: int,
        spatial_shape: Sequence[int] | None = None,
    ) -> torch.Tensor:
        """(M, feature_dim) pre-head features, row i for input voxel i (for linear probes).

        Args:
            features: (M, in_channels) float per-voxel input.
            coords: (M, 4) int [batch, i, j, k], non-negative, unique, batch in [0, batch_size).
            batch_size: number of scans in the batch.
            spatial_shape: (D, H, W) grid; default :func:`spatial_shape_for` (coords).
        """
        if features.ndim != 2 or coords.ndim != 2 or coords.shape[1] != 4 or features.shape[0] != coords.shape[0]:
            raise ValueError(
                f"expected features (M, C) and coords (M, 4) with the same M, got {tuple(features.shape)} "
                f"and {tuple(coords.shape)}"
            )
        if features.shape[0] == 0:
            raise ValueError("no voxels: SparseUNet needs at least one voxel per batch")
        if spatial_shape is None:
            spatial_shape = spatial_shape_for(coords)
        spatial_shape = [int(s) for s in spatial_shape]
        if any(s % 2**NUM_LEVELS for s in spatial_shape):
            raise ValueError(f"spatial_shape {spatial_shape}: every side must be a multiple of {2**NUM_LEVELS}")
        self._sync_algo(features.device)
        coords = coords.to(device=features.device, dtype=torch.int32).contiguous()

        x = spconv.SparseConvTensor(features, coords, spatial_shape, batch_size)
        x = self.stem(x)
        skips = [x]
        for down, enc in zip(self.down, self.enc):
            x = enc(down(x))
            skips.append(x)
        skips.pop()  # the deepest level is not a skip
        for up, dec in zip(self.up, self.dec):
            x = up(x)
            skip = skips.pop()
            # Inverse conv outputs the level's voxels in the same order as the encoder did.
            x = dec(_with_features(x, torch.cat([x.features, skip.features.to(x.features.dtype)], dim=1)))
        return x.features

    def forward_head(self, backbone_features: torch.Tensor) -> torch.Tensor:
        """(M, feature_dim) -> (M, out_dim), L2-normalised per row when ``normalize``."""
        out = self.head(backbone_features)
        return F.normalize(out, p=2, dim=1, eps=1e-12) if self.normalize else out

    def forward(
        self,
        features: torch.Tensor,
        coords: torch.Tensor,
        batch_size: int,
        spatial_shape: Sequence[int] | None = None,
    ) -> torch.Tensor:
        """(M, out_dim) per-voxel output, row i for input voxel i; see :meth:`backbone_features`."""
        return self.forward_head(self.backbone_features(features, coords, batch_size, spatial_shape))
