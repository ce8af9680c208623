"""Training augmentations for keyword clips: waveform (numpy) and log-mel (numpy or torch).

Each is a small pure function: it never modifies its input and draws all randomness from the
``numpy.random.Generator`` it is given, so a seeded generator replays the same augmentation.
Waveforms are (N,) float32 at 16 kHz; log-mels are (..., n_mels, T) (the last two axes).

Time and frequency masking follow SpecAugment (Park et al., Interspeech 2019,
arXiv:1904.08779): a mask of width w ~ U{0, W} at a start drawn uniformly; masked values are
set to ``fill`` (0 = the dataset mean once normalised). Random crop, time shift and
background-noise mixing follow the Speech Commands training recipe (Warden 2018, arXiv:1804.03209).
"""

from __future__ import annotations

from typing import Any

import numpy as np


def random_crop_or_pad(wave: np.ndarray, n_samples: int, rng: np.random.Generator) -> np.ndarray:
    """Exactly ``n_samples``: a random window of a longer clip, or a shorter clip at a random offset in zeros.

    (The deterministic evaluation counterpart is :func:`modalities.audio.logmel.fix_length`.)
    """
    x = np.asarray(wave, np.float32)
    n = x.shape[-1]
    if n >= n_samples:
        start = int(rng.integers(0, n - n_samples + 1))
        return x[..., start:start + n_samples].copy()
    out = np.zeros(x.shape[:-1] + (n_samples,), np.float32)
    start = int(rng.integers(0, n_samples - n + 1))
    out[..., start:start + n] = x
    return out


def random_gain(wave: np.ndarray, rng: np.random.Generator, gain_db: tuple[float, float] = (-6.0, 6.0)) -> np.ndarray:
    """Scale by 10 ** (g / 20), g ~ U(gain_db). Not clipped: the front-end accepts any amplitude."""
    g = rng.uniform(*gain_db)
    return (np.asarray(wave, np.float32) * np.float32(10.0 ** (g / 20.0))).astype(np.float32)


def time_shift(wave: np.ndarray, rng: np.random.Generator, max_shift: int = 1600) -> np.ndarray:
    """Shift by s ~ U{-max_shift, max_shift} samples (100 ms at 16 kHz), zero-filling (no wrap-around)."""
    x = np.asarray(wave, np.float32)
    s = int(rng.integers(-max_shift, max_shift + 1))
    out = np.zeros_like(x)
    if s >= 0:
        out[..., s:] = x[..., :x.shape[-1] - s]
    else:
        out[..., :s] = x[..., -s:]
    return out


def mix_background(wave: np.ndarray, noise: np.ndarray, rng: np.random.Generator,
                   snr_db: tuple[float, float] = (5.0, 20.0)) -> np.ndarray:
    """Add a random segment of ``noise`` (tiled when shorter) scaled to an SNR ~ U(snr_db) dB.

    SNR = 10 log10(P_wave / P_noise) with P the mean square over the clip. A silent ``wave``
    or ``noise`` is returned unchanged (no SNR is defined).
    """
    x = np.asarray(wave, np.float32)
    nz = np.asarray(noise, np.float32).reshape(-1)
    n = x.shape[-1]
    if nz.size == 0:
        raise ValueError("mix_background: the noise is empty")
    if nz.size < n:
        nz = np.tile(nz, -(-n // nz.size))
    start = int(rng.integers(0, nz.size - n + 1))
    seg = nz[start:start + n].astype(np.float64)
    snr = rng.uniform(*snr_db)
    p_wave, p_noise = float(np.mean(np.square(x, dtype=np.float64))), float(np.mean(seg * seg))
    if p_wave == 0.0 or p_noise == 0.0:
        return x.copy()
    scale = np.sqrt(p_wave / (p_noise * 10.0 ** (snr / 10.0)))
    return (x + scale * seg).astype(np.float32)


def _copy(x: Any) -> Any:
    return x.clone() if hasattr(x, "clone") else np.array(x, copy=True)


def time_mask(log_mel: Any, rng: np.random.Generator, max_width: int = 10, n_masks: int = 2, fill: float = 0.0) -> Any:
    """SpecAugment time masking: ``n_masks`` spans of w ~ U{0, max_width} frames set to ``fill`` (last axis).

    One draw for the whole array (a batch shares the masks: draw per clip for per-clip masks).
    """
    out = _copy(log_mel)
    T = int(out.shape[-1])
    for _ in range(n_masks):
        w = int(rng.integers(0, min(max_width, T) + 1))
        t0 = int(rng.integers(0, T - w + 1))
        out[..., t0:t0 + w] = fill
    return out


def freq_mask(log_mel: Any, rng: np.random.Generator, max_width: int = 8, n_masks: int = 2, fill: float = 0.0) -> Any:
    """SpecAugment frequency masking: ``n_masks`` bands of w ~ U{0, max_width} mel bins set to ``fill`` (axis -2)."""
    out = _copy(log_mel)
    F = int(out.shape[-2])
    for _ in range(n_masks):
        w = int(rng.integers(0, min(max_width, F) + 1))
        f0 = int(rng.integers(0, F - w + 1))
        out[..., f0:f0 + w, :] = fill
    return out
