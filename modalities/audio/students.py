"""Audio networks on the normalised log-mel (DESIGN 5.4): one compact CNN family for the DINO
backbone and the keyword-spotting student, and the DINO projection head.

Input: ``(B, 1, n_mels, frames)`` normalised log-mel (:class:`modalities.audio.logmel.LogMelSpec`);
the front-end stays outside the network (DESIGN 6: JetPack 6's TensorRT 10.3 has no STFT), so
the exported graph is convolutions, BatchNorm, ReLU and a mean: it runs on any frame count
(multi-crop local views are shorter) and exports to ONNX with static shapes.

``ds_cnn``: a depthwise-separable CNN of the DS-CNN family (Zhang et al., "Hello Edge: Keyword
Spotting on Microcontrollers", arXiv:1711.07128, https://github.com/ARM-software/ML-KWS-for-MCU),
arranged as a stem and four stages of residual depthwise-separable blocks, so that UnFuSeD's
heads can sit on the outputs of stages 1-3 (:meth:`AudioCNN.stage_features`). The stage layout,
widths and strides are ours: ``widths=(32, 64, 64, 96)`` has 29k parameters and 5.7 M MACs per 1 s clip (the shipped
student; benchmarks/audio.py); ``widths=(64, 128, 128, 192)`` has 109k.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class DSBlock(nn.Module):
    """Depthwise 3x3 (stride s) -> BN -> ReLU -> pointwise 1x1 -> BN, plus a projected shortcut; ReLU."""

    def __init__(self, c_in: int, c_out: int, stride: tuple[int, int]):
        super().__init__()
        self.dw = nn.Conv2d(c_in, c_in, 3, stride=stride, padding=1, groups=c_in, bias=False)
        self.bn1 = nn.BatchNorm2d(c_in)
        self.pw = nn.Conv2d(c_in, c_out, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.short = None
        if c_in != c_out or stride != (1, 1):
            self.short = nn.Sequential(nn.AvgPool2d(stride, stride, ceil_mode=True) if stride != (1, 1) else nn.Identity(),
                                       nn.Conv2d(c_in, c_out, 1, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.bn2(self.pw(F.relu(self.bn1(self.dw(x)))))
        s = x if self.short is None else self.short(x)
        if s.shape[-2:] != y.shape[-2:]:  # ceil-mode pooling of an odd size: crop to the conv's size
            s = s[..., : y.shape[-2], : y.shape[-1]]
        return F.relu(y + s)


class AudioCNN(nn.Module):
    """Stem conv + 4 stages of :class:`DSBlock` -> global mean -> ``feature_dim`` embedding.

    Args:
        widths: channels of the four stages (the stem has ``widths[0]``).
        blocks: blocks per stage (the first block of stages 2-4 halves frequency and time).
        stem_stride: the stem's (frequency, time) stride.
    """

    def __init__(self, widths: tuple[int, ...] = (32, 64, 64, 96), blocks: tuple[int, ...] = (1, 1, 1, 1),
                 stem_stride: tuple[int, int] = (2, 2)):
        super().__init__()
        widths, blocks, stem_stride = tuple(widths), tuple(blocks), tuple(stem_stride)
        if len(widths) != 4 or len(blocks) != 4 or min(widths) < 1 or min(blocks) < 1:
            raise ValueError(f"AudioCNN: widths and blocks need 4 positive entries, got {widths}, {blocks}")
        self.stem = nn.Sequential(nn.Conv2d(1, widths[0], 3, stride=stem_stride, padding=1, bias=False),
                                  nn.BatchNorm2d(widths[0]), nn.ReLU())
        stages, c = [], widths[0]
        for i, (w, n) in enumerate(zip(widths, blocks)):
            layers = []
            for j in range(n):
                layers.append(DSBlock(c, w, (2, 2) if i > 0 and j == 0 else (1, 1)))
                c = w
            stages.append(nn.Sequential(*layers))
        self.stages = nn.ModuleList(stages)
        self.widths = widths
        self.feature_dim = widths[-1]

    def stage_maps(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The four stages' feature maps of a (B, 1, F, T) input."""
        if x.ndim == 3:
            x = x[:, None]
        x = self.stem(x)
        out = []
        for stage in self.stages:
            x = stage(x)
            out.append(x)
        return out

    def stage_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Each stage's map averaged over frequency and time: four (B, widths[i]) tensors."""
        return [m.mean(dim=(2, 3)) for m in self.stage_maps(x)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 1, F, T) or (B, F, T) normalised log-mel -> (B, feature_dim) embedding."""
        return self.stage_maps(x)[-1].mean(dim=(2, 3))


class DINOHead(nn.Module):
    """DINO projection head (DESIGN 5.4): 3-layer MLP -> bottleneck -> L2 -> weight-normed linear to K.

    As in Caron et al., ICCV 2021 (https://github.com/facebookresearch/dino, ``DINOHead``): GELU
    MLP, the last layer's weight norm ``g`` fixed to 1.
    """

    def __init__(self, in_dim: int, out_dim: int = 1024, hidden_dim: int = 512, bottleneck_dim: int = 256):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(in_dim, hidden_dim), nn.GELU(), nn.Linear(hidden_dim, hidden_dim), nn.GELU(),
                                 nn.Linear(hidden_dim, bottleneck_dim))
        self.last = nn.utils.parametrizations.weight_norm(nn.Linear(bottleneck_dim, out_dim, bias=False))
        with torch.no_grad():
            self.last.parametrizations.weight.original0.fill_(1.0)
        self.last.parametrizations.weight.original0.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.last(F.normalize(self.mlp(x), dim=-1))


class KeywordClassifier(nn.Module):
    """The deployed keyword spotter: :class:`AudioCNN` backbone + linear classifier; logits (B, K)."""

    def __init__(self, student: AudioCNN, num_classes: int):
        super().__init__()
        self.student = student
        self.classifier = nn.Linear(student.feature_dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.student(x))


STUDENTS = {"ds_cnn": AudioCNN}


def build_audio_student(kind: str, kwargs: dict) -> AudioCNN:
    """An audio network by kind and constructor arguments (a student record's ``kind`` / ``kwargs``)."""
    if kind not in STUDENTS:
        raise ValueError(f"unknown audio network {kind!r}; known: {sorted(STUDENTS)}")
    return STUDENTS[kind](**kwargs)


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
