"""IMU networks for COMODO video-to-IMU distillation (DESIGN 5.2): compact encoders of one window.

Input: ``(B, 6, L)`` normalised IMU windows (:class:`modalities.imu.spec.ImuWindowSpec`: acc xyz in
m/s^2 then gyro xyz in rad/s, resampled to 200 Hz, 5 s -> ``L = 1000``, per-channel mean/std
normalisation outside the network). Output: a ``(B, feature_dim)`` embedding; the distillation
projects/normalises it outside the network, the deployed activity model adds a linear classifier
(:class:`ImuClassifier`).

COMODO (Chen et al. 2025, "COMODO: Cross-Modal Video-to-IMU Distillation for Efficient Egocentric
Human Activity Recognition", https://github.com/Breezelled/COMODO) distils into large pre-trained
time-series encoders (MOMENT, Mantis); the encoders here are ours, sized for an edge CPU:

``imu_cnn`` (:class:`ImuCNN`): a strided stem and four stages of Conv1d-BN-ReLU, each halving the
time axis, then a global mean. Conv/BN/ReLU/ReduceMean only, so it exports to ONNX opset 17 on any
runtime (TensorRT included) and runs on any window length. Defaults ``widths=(32, 64, 128, 128)``,
``kernel=5``: 140,352 parameters and 8.4 M MACs per 1000-sample window (:func:`count_parameters`, :func:`count_macs`;
``tests/modalities/imu/test_imu_students.py`` checks both against the formula), 0.3-0.5 ms per window at batch 1
in ONNX Runtime on one CPU thread (measured on a loaded, shared 2-core x86 VM).

``imu_transformer`` (:class:`ImuTransformer`): non-overlapping patch embedding (Conv1d with
stride = patch), a learned positional embedding, pre-norm transformer encoder layers, LayerNorm and a
mean over tokens. Defaults ``dim=64, depth=3, heads=4, patch=25, mlp_dim=128``: 112,768 parameters
and 4.9 M MACs on the 40 tokens of a 1000-sample window, 0.4-0.5 ms per window in ONNX Runtime likewise.
"""

from __future__ import annotations

import torch
from torch import nn

NUM_CHANNELS = 6  # ax, ay, az (m/s^2), gx, gy, gz (rad/s)


def _conv_bn_relu(c_in: int, c_out: int, kernel: int, stride: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv1d(c_in, c_out, kernel, stride=stride, padding=kernel // 2, bias=False),
                         nn.BatchNorm1d(c_out), nn.ReLU())


def _check_input(x: torch.Tensor, name: str) -> None:
    if torch.jit.is_tracing():  # shapes are fixed in an export trace; checking them only adds tracer warnings
        return
    if x.ndim != 3 or x.shape[1] != NUM_CHANNELS:
        raise ValueError(f"{name}: expected (B, {NUM_CHANNELS}, L) IMU windows, got shape {tuple(x.shape)}")


class ImuCNN(nn.Module):
    """Stem + 4 stages of stride-2 Conv1d-BN-ReLU -> global mean -> ``feature_dim`` embedding.

    Time axis for ``L = 1000``: 1000 -> stem 500 -> 250 -> 125 -> 63 -> 32, then averaged.

    Args:
        widths: channels of the four stages (the stem has ``widths[0]``); ``feature_dim = widths[-1]``.
        kernel: odd kernel size of the stage convolutions (padding ``kernel // 2``).
        blocks: convolutions per stage; the first of each stage has stride 2, the others stride 1.
        stem_kernel: odd kernel size of the stride-2 stem convolution.
        in_channels: input channels (6: acc xyz + gyro xyz).
    """

    def __init__(self, widths: tuple[int, ...] = (32, 64, 128, 128), kernel: int = 5,
                 blocks: tuple[int, ...] = (1, 1, 1, 1), stem_kernel: int = 7, in_channels: int = NUM_CHANNELS):
        super().__init__()
        widths, blocks = tuple(int(w) for w in widths), tuple(int(b) for b in blocks)
        if len(widths) != 4 or len(blocks) != 4 or min(widths) < 1 or min(blocks) < 1:
            raise ValueError(f"ImuCNN: widths and blocks need 4 positive entries, got {widths}, {blocks}")
        if kernel < 1 or kernel % 2 == 0 or stem_kernel < 1 or stem_kernel % 2 == 0:
            raise ValueError(f"ImuCNN: kernel and stem_kernel must be odd and positive, got {kernel}, {stem_kernel}")
        if in_channels != NUM_CHANNELS:
            raise ValueError(f"ImuCNN: in_channels must be {NUM_CHANNELS} (acc xyz + gyro xyz), got {in_channels}")
        self.stem = _conv_bn_relu(in_channels, widths[0], stem_kernel, 2)
        stages, c = [], widths[0]
        for w, n in zip(widths, blocks):
            layers = []
            for j in range(n):
                layers.append(_conv_bn_relu(c, w, kernel, 2 if j == 0 else 1))
                c = w
            stages.append(nn.Sequential(*layers))
        self.stages = nn.Sequential(*stages)
        self.widths = widths
        self.feature_dim = widths[-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 6, L) normalised IMU windows -> (B, feature_dim) embedding."""
        _check_input(x, "ImuCNN")
        return self.stages(self.stem(x)).mean(dim=2)


class ImuTransformer(nn.Module):
    """Patch embedding + learned positions + pre-norm encoder layers + LayerNorm + token mean.

    Tokens: ``L // patch`` non-overlapping patches (a trailing partial patch is dropped); windows of
    any length up to ``max_len`` samples are accepted (positions ``0 .. L // patch - 1`` are used).

    Args:
        dim: token width = ``feature_dim``.
        depth: number of ``nn.TransformerEncoderLayer`` (pre-norm, GELU).
        heads: attention heads (must divide ``dim``).
        patch: samples per token (25 = 125 ms at 200 Hz).
        mlp_dim: hidden width of each layer's feed-forward block.
        max_len: longest window in samples (1000 = 5 s at 200 Hz).
        dropout: dropout inside the encoder layers.
    """

    def __init__(self, dim: int = 64, depth: int = 3, heads: int = 4, patch: int = 25, mlp_dim: int = 128,
                 max_len: int = 1000, dropout: float = 0.0, in_channels: int = NUM_CHANNELS):
        super().__init__()
        if dim < 1 or depth < 1 or heads < 1 or dim % heads:
            raise ValueError(f"ImuTransformer: need dim, depth, heads >= 1 and heads dividing dim; "
                             f"got dim={dim}, depth={depth}, heads={heads}")
        if patch < 1 or max_len < patch:
            raise ValueError(f"ImuTransformer: need 1 <= patch <= max_len; got patch={patch}, max_len={max_len}")
        if in_channels != NUM_CHANNELS:
            raise ValueError(f"ImuTransformer: in_channels must be {NUM_CHANNELS}, got {in_channels}")
        self.patch, self.max_len = int(patch), int(max_len)
        self.embed = nn.Conv1d(in_channels, dim, patch, stride=patch)
        self.pos = nn.Parameter(torch.zeros(1, max_len // patch, dim))
        nn.init.trunc_normal_(self.pos, std=0.02)
        layer = nn.TransformerEncoderLayer(dim, heads, mlp_dim, dropout=dropout, activation="gelu",
                                           batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(dim)
        self.feature_dim = dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 6, L) normalised IMU windows, patch <= L <= max_len -> (B, feature_dim) embedding."""
        _check_input(x, "ImuTransformer")
        if not torch.jit.is_tracing() and not self.patch <= x.shape[2] <= self.max_len:
            raise ValueError(f"ImuTransformer: window length must be in [{self.patch}, {self.max_len}] samples "
                             f"(patch, max_len), got {x.shape[2]}")
        tokens = self.embed(x).transpose(1, 2)  # (B, T, dim), T = L // patch
        tokens = tokens + self.pos[:, : tokens.shape[1]]
        return self.norm(self.encoder(tokens)).mean(dim=1)


class ImuClassifier(nn.Module):
    """The deployed activity model: an IMU student + linear classifier; (B, 6, L) -> logits (B, C)."""

    def __init__(self, student: nn.Module, num_classes: int):
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"ImuClassifier: num_classes must be >= 1, got {num_classes}")
        self.student = student
        self.classifier = nn.Linear(student.feature_dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.student(x))


IMU_STUDENTS = {"imu_cnn": ImuCNN, "imu_transformer": ImuTransformer}


def build_imu_student(kind: str, kwargs: dict) -> nn.Module:
    """An IMU network by kind and constructor arguments (a student record's ``kind`` / ``kwargs``)."""
    if kind not in IMU_STUDENTS:
        raise ValueError(f"unknown IMU network {kind!r}; known: {sorted(IMU_STUDENTS)}")
    return IMU_STUDENTS[kind](**dict(kwargs))


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def count_macs(module: nn.Module, window_samples: int = 1000) -> int:
    """Multiply-accumulates of one forward pass on a (1, 6, window_samples) window.

    Counts Conv1d and Linear (the weights' work, the bulk of the cost) plus the attention products
    of ``nn.MultiheadAttention`` (2 * T^2 * dim per layer); BatchNorm, activations and norms are not counted.
    """
    macs = 0

    def conv_hook(m: nn.Conv1d, _inputs, out: torch.Tensor) -> None:
        nonlocal macs
        macs += out.shape[0] * out.shape[2] * m.out_channels * (m.in_channels // m.groups) * m.kernel_size[0]

    def linear_hook(m: nn.Linear, inputs, _out) -> None:
        nonlocal macs
        macs += inputs[0].numel() // m.in_features * m.in_features * m.out_features

    def attention_hook(m: nn.MultiheadAttention, inputs, _out) -> None:
        nonlocal macs
        query = inputs[0]  # batch_first (B, T, E); q, k, v and output projections + QK^T and AV
        b, t, e = query.shape
        macs += b * t * e * 4 * e + 2 * b * t * t * e

    hooks = []
    for m in module.modules():
        if isinstance(m, nn.Conv1d):
            hooks.append(m.register_forward_hook(conv_hook))
        elif isinstance(m, nn.Linear) and not isinstance(m, nn.modules.linear.NonDynamicallyQuantizableLinear):
            hooks.append(m.register_forward_hook(linear_hook))
        elif isinstance(m, nn.MultiheadAttention):
            hooks.append(m.register_forward_hook(attention_hook))
    was_training = module.training
    try:
        module.eval()  # with grad enabled: the encoder layers' fused inference path would skip the hooks
        module(torch.zeros(1, NUM_CHANNELS, window_samples))
    finally:
        for h in hooks:
            h.remove()
        module.train(was_training)
    return int(macs)
