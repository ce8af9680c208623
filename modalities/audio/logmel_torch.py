"""The torchaudio implementation of :class:`modalities.audio.logmel.LogMelSpec`, for training on batches.

Same contract as the numpy twin (see :mod:`modalities.audio.logmel`), built on
``torchaudio.transforms.MelSpectrogram`` (https://pytorch.org/audio/stable/generated/torchaudio.transforms.MelSpectrogram.html)
with every argument spelled out, so a torchaudio default change cannot move it away from the
numpy runtime. Runs on any device (the filterbank and window are buffers).
"""

from __future__ import annotations

import torch
import torchaudio
from torch import nn

from .logmel import LogMelSpec


class TorchLogMel(nn.Module):
    """(B, N) or (N,) float waveforms -> (B, n_mels, n_frames) or (n_mels, n_frames) features.

    Args:
        spec: the front-end contract.
        normalise: apply the spec's (v - mean) / std (False: the raw log(mel + eps), e.g. to
            fit the statistics or to apply SpecAugment before normalising).
        crop: crop/pad to one clip first (centre-crop, zero-pad at the end), as the numpy twin.
    """

    def __init__(self, spec: LogMelSpec, normalise: bool = True, crop: bool = True) -> None:
        super().__init__()
        self.spec, self.normalise, self.crop = spec, normalise, crop
        self.mel = torchaudio.transforms.MelSpectrogram(
            sample_rate=spec.sample_rate_hz, n_fft=spec.n_fft, win_length=spec.n_fft, hop_length=spec.hop_length,
            f_min=spec.f_min_hz, f_max=spec.f_max_hz, pad=0, n_mels=spec.n_mels, window_fn=torch.hann_window,
            power=2.0, normalized=False, center=True, pad_mode="reflect", norm=None, mel_scale="htk")

    def forward(self, waves: torch.Tensor) -> torch.Tensor:
        x = self.spec.fix_length(waves) if self.crop else waves
        out = torch.log(self.mel(x) + self.spec.eps)
        return self.spec.normalise(out) if self.normalise else out
