"""The audio front-end contract (DESIGN 5.4) as one frozen, torch-free object, with its numpy implementation.

A :class:`LogMelSpec` says everything that turns a 16 kHz mono waveform into the input of an
audio network. Training (through :class:`modalities.audio.logmel_torch.TorchLogMel`, torchaudio,
on batches), evaluation, the exported bundle's ``metadata.json`` and the torch-free robot
runtime (:meth:`LogMelSpec.__call__`, numpy) all build their inputs from the same object,
serialised with :meth:`LogMelSpec.to_dict`, so they cannot drift apart through a changed default::

    waveform (N,) float32, 16 kHz mono (modalities.audio.io.read_audio)
      fix_length: exactly clip_samples = 16000 (1 s): a longer clip is CENTRE-cropped (its
        middle second), a shorter one is zero-padded at the END (left-aligned: the clip still
        starts at t = 0, as Speech Commands' loader pads)
      STFT: n_fft 1024, periodic Hann window of n_fft samples, hop 160 (10 ms), centred frames
        (n_fft // 2 reflect padding each side)  -> n_frames = 1 + clip_samples // hop = 101
      power |X|^2  @  64 triangular HTK-mel filters on 60..7800 Hz, no area normalisation
      log(mel + eps), eps = 1e-6
      (v - mean) / std with ONE dataset-level scalar mean and std (fit_normalisation)
    -> (n_mels, n_frames) = (64, 101) float32

The STFT and filterbank follow ``torchaudio.transforms.MelSpectrogram`` exactly (docs:
https://pytorch.org/audio/stable/generated/torchaudio.transforms.MelSpectrogram.html; the
filterbank is ``torchaudio.functional.melscale_fbanks(norm=None, mel_scale="htk")``:
mel(f) = 2595 log10(1 + f / 700)). The two implementations agree to well under 1e-4 of the
feature scale on real clips (tests/modalities/audio/test_audio_logmel.py): max |numpy - torch| over
the un-normalised log-mel, divided by the standard deviation of that clip's log-mel (the unit
in which the normalised network input is measured), is at most 3.5e-5 (median 1e-5) over the
20 keywords spoken by espeak-ng, clean and with pink noise, and at most 2e-5 on white, pink and
brown noise (as raw log units: at most 2.1e-4, in near-silent bins of clean speech). The numpy
twin computes in float64; torchaudio in float32.

A silent clip is valid: every value is log(eps) (finite), normalised to (log(eps) - mean) / std.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from modalities.field_checks import check_rules, construct, expect_dict, expect_kind_version, required_values


def hz_to_mel_htk(f_hz: np.ndarray | float) -> np.ndarray:
    """HTK mel scale, mel = 2595 log10(1 + f / 700) (torchaudio ``mel_scale="htk"``)."""
    return 2595.0 * np.log10(1.0 + np.asarray(f_hz, np.float64) / 700.0)


def mel_to_hz_htk(mel: np.ndarray | float) -> np.ndarray:
    """Inverse of :func:`hz_to_mel_htk`."""
    return 700.0 * (10.0 ** (np.asarray(mel, np.float64) / 2595.0) - 1.0)


def mel_filterbank(sample_rate_hz: int, n_fft: int, n_mels: int, f_min_hz: float, f_max_hz: float) -> np.ndarray:
    """(n_fft // 2 + 1, n_mels) float64 triangular filters, as ``torchaudio.functional.melscale_fbanks``.

    ``n_mels + 2`` points equally spaced in HTK mel between f_min and f_max give each filter's
    left edge, peak (1.0) and right edge; the FFT bins sit at ``linspace(0, sr // 2, n_freqs)``.
    No area normalisation (``norm=None``).
    """
    n_freqs = n_fft // 2 + 1
    bin_hz = np.linspace(0.0, sample_rate_hz // 2, n_freqs)
    edges_hz = mel_to_hz_htk(np.linspace(hz_to_mel_htk(f_min_hz), hz_to_mel_htk(f_max_hz), n_mels + 2))
    width_hz = np.diff(edges_hz)  # (n_mels + 1,)
    slopes = edges_hz[None, :] - bin_hz[:, None]  # (n_freqs, n_mels + 2)
    rising = -slopes[:, :-2] / width_hz[:-1]
    falling = slopes[:, 2:] / width_hz[1:]
    return np.maximum(0.0, np.minimum(rising, falling))


@functools.lru_cache(maxsize=8)
def _cached_filterbank(sample_rate_hz: int, n_fft: int, n_mels: int, f_min_hz: float, f_max_hz: float) -> np.ndarray:
    fb = mel_filterbank(sample_rate_hz, n_fft, n_mels, f_min_hz, f_max_hz)
    fb.setflags(write=False)
    return fb


@functools.lru_cache(maxsize=8)
def _sparse_filterbank_t(sample_rate_hz: int, n_fft: int, n_mels: int, f_min_hz: float, f_max_hz: float):
    from scipy import sparse  # noqa: PLC0415

    return sparse.csr_matrix(_cached_filterbank(sample_rate_hz, n_fft, n_mels, f_min_hz, f_max_hz).T)


@functools.lru_cache(maxsize=8)
def _periodic_hann(n: int) -> np.ndarray:
    w = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n) / n)
    w.setflags(write=False)
    return w


def fix_length(wave: Any, n_samples: int) -> Any:
    """Crop or pad the last axis to ``n_samples``: centre-crop a longer clip, zero-pad a shorter one at the end.

    Works on numpy arrays and torch tensors (same type out); never modifies the input.
    """
    n = int(wave.shape[-1])
    if n > n_samples:
        start = (n - n_samples) // 2
        return wave[..., start:start + n_samples]
    if n == n_samples:
        return wave
    if hasattr(wave, "detach"):  # a torch tensor; torch is imported only when one is given
        import torch.nn.functional as F

        return F.pad(wave, (0, n_samples - n))
    pad = [(0, 0)] * (wave.ndim - 1) + [(0, n_samples - n)]
    return np.pad(wave, pad)


@dataclass(frozen=True)
class LogMelSpec:
    """How a waveform becomes an audio network's (n_mels, n_frames) input; see the module docstring.

    Attributes:
        sample_rate_hz: the waveform's rate (clips are resampled to it on reading).
        n_fft: FFT size and window length (samples).
        hop_length: samples between frames (160 = 10 ms at 16 kHz).
        n_mels: mel filters; f_min_hz, f_max_hz: their range (keep f_max below the Nyquist rate).
        eps: added before the log; silence maps to log(eps). Raise it only to suppress a
            recording's noise floor, and then refit the normalisation.
        clip_seconds: the fixed clip length (1 s, as Speech Commands); sets ``n_frames``.
        mean, std: dataset-level normalisation of the log-mel (:func:`fit_normalisation`);
            the defaults 0 and 1 mean "not fitted yet".
    """

    sample_rate_hz: int = 16_000
    n_fft: int = 1024
    hop_length: int = 160
    n_mels: int = 64
    f_min_hz: float = 60.0
    f_max_hz: float = 7800.0
    eps: float = 1e-6
    clip_seconds: float = 1.0
    mean: float = 0.0
    std: float = 1.0
    kind: ClassVar[str] = "log_mel"
    version: ClassVar[int] = 1
    window: ClassVar[str] = "periodic hann, win_length = n_fft, centred frames with reflect padding"
    mel_scale: ClassVar[str] = "htk, triangular filters without area normalisation"

    def __post_init__(self) -> None:
        checks = {
            "sample_rate_hz": self.sample_rate_hz > 0,
            "n_fft": self.n_fft >= 2,
            "hop_length": self.hop_length >= 1,
            "n_mels": self.n_mels >= 1,
            "f_min_hz": 0 <= self.f_min_hz < self.f_max_hz,
            "f_max_hz": self.f_max_hz <= self.sample_rate_hz / 2,
            "eps": self.eps > 0,
            "clip_seconds": self.clip_seconds > 0 and self.clip_samples > self.n_fft // 2,
            "std": self.std > 0 and np.isfinite(self.std),
            "mean": bool(np.isfinite(self.mean)),
        }
        check_rules(self, checks, _FIELD_RULES, "log-mel spec")

    @property
    def clip_samples(self) -> int:
        """Samples in one clip (16000 for 1 s at 16 kHz)."""
        return int(round(self.clip_seconds * self.sample_rate_hz))

    @property
    def n_frames(self) -> int:
        """Frames of one clip: 1 + clip_samples // hop_length (centred STFT), 101 by default."""
        return 1 + self.clip_samples // self.hop_length

    @property
    def feature_shape(self) -> tuple[int, int]:
        """(n_mels, n_frames) of one clip's features."""
        return self.n_mels, self.n_frames

    def with_stats(self, mean: float, std: float) -> "LogMelSpec":
        """The same front-end with the dataset normalisation ``mean``, ``std``."""
        return replace(self, mean=float(mean), std=float(std))

    def fix_length(self, wave: Any) -> Any:
        """Crop (centre) or pad (zeros at the end) the last axis to ``clip_samples``; numpy or torch."""
        return fix_length(wave, self.clip_samples)

    def filterbank(self) -> np.ndarray:
        """(n_fft // 2 + 1, n_mels) float64 mel filterbank (computed once per front-end; read-only)."""
        return _cached_filterbank(self.sample_rate_hz, self.n_fft, self.n_mels, self.f_min_hz, self.f_max_hz)

    def log_mel(self, wave: np.ndarray, crop: bool = True) -> np.ndarray:
        """Un-normalised log(mel + eps) of (N,) or (B, N) waveforms -> (n_mels, T) or (B, n_mels, T) float32.

        With ``crop`` the waveform is first cropped/padded to one clip (T = ``n_frames``);
        without it T = 1 + N // hop_length (N must exceed n_fft // 2 for the reflect padding).
        """
        from scipy import fft as sp_fft  # noqa: PLC0415  (pocketfft in C++: ~2x numpy's rfft here)

        x = np.asarray(wave, np.float64)
        if crop:
            x = self.fix_length(x)
        half = self.n_fft // 2
        if x.shape[-1] <= half:
            raise ValueError(f"log-mel: a waveform of {x.shape[-1]} samples is too short for reflect padding "
                             f"(needs > n_fft // 2 = {half}); pad it or use crop=True")
        padded = np.pad(x, [(0, 0)] * (x.ndim - 1) + [(half, half)], mode="reflect")
        frames = np.lib.stride_tricks.sliding_window_view(padded, self.n_fft, axis=-1)[..., ::self.hop_length, :]
        spectrum = sp_fft.rfft(frames * _periodic_hann(self.n_fft), axis=-1)  # (..., T, n_freqs)
        power = spectrum.real ** 2 + spectrum.imag ** 2
        # (n_mels, n_freqs) CSR: each triangle spans a few bins (~970 non-zeros of 33k); same sums as the dense product.
        fb_t = _sparse_filterbank_t(self.sample_rate_hz, self.n_fft, self.n_mels, self.f_min_hz, self.f_max_hz)
        flat = power.reshape(-1, power.shape[-1])
        mel = np.asarray(fb_t @ flat.T)  # (n_mels, ... * T)
        mel = mel.reshape(self.n_mels, *power.shape[:-1])  # (n_mels, ..., T)
        return np.moveaxis(np.log(mel + self.eps), 0, -2).astype(np.float32)

    def normalise(self, log_mel: Any) -> Any:
        """(v - mean) / std (numpy or torch)."""
        return (log_mel - self.mean) / self.std

    def __call__(self, wave: np.ndarray) -> np.ndarray:
        """The network input of (N,) or (B, N) 16 kHz waveforms: normalised (…, n_mels, n_frames) float32."""
        return self.normalise(self.log_mel(wave)).astype(np.float32)

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"kind": self.kind, "version": self.version}
        d.update({f.name: getattr(self, f.name) for f in fields(self)})
        d.update({"window": self.window, "mel_scale": self.mel_scale, "feature_shape": list(self.feature_shape),
                  "clip_samples": self.clip_samples,
                  "length": "longer clips centre-cropped, shorter clips zero-padded at the end",
                  "normalisation": "(log(mel + eps) - mean) / std, one dataset-level scalar each"})
        return d

    @classmethod
    def from_dict(cls, d: dict, where: str = "log-mel spec") -> "LogMelSpec":
        """Inverse of :meth:`to_dict`; raises ValueError naming ``where`` and the field that cannot be read."""
        expect_dict(d, where)
        expect_kind_version(d, where, cls.kind, cls.version)
        kwargs: dict[str, Any] = {}
        for f, value in required_values(cls, d, where):
            cast = int if f.type in ("int", int) else float
            try:
                if isinstance(value, bool) or (cast is int and float(value) != int(value)):
                    raise TypeError
                kwargs[f.name] = cast(value)
            except (TypeError, ValueError):
                raise ValueError(f"{where}: field '{f.name}' = {value!r} is not a{'n integer' if cast is int else ' number'}"
                                 ) from None
        return construct(cls, kwargs, where)


_FIELD_RULES = {
    "sample_rate_hz": "must be > 0",
    "n_fft": "must be >= 2",
    "hop_length": "must be >= 1",
    "n_mels": "must be >= 1",
    "f_min_hz": "needs 0 <= f_min_hz < f_max_hz",
    "f_max_hz": "must not exceed sample_rate_hz / 2",
    "eps": "must be > 0",
    "clip_seconds": "must be > 0 and give more than n_fft // 2 samples",
    "std": "must be finite and > 0",
    "mean": "must be finite",
}


def dataset_stats(clips: Iterable[np.ndarray | str | Path], spec: LogMelSpec) -> tuple[float, float]:
    """Scalar mean and std of the un-normalised log-mel over every value of every clip.

    ``clips``: (N,) waveforms at ``spec.sample_rate_hz`` or audio file paths (read with
    :func:`modalities.audio.io.read_audio`). Each clip is cropped/padded to one clip first, so
    the padding of short clips is counted as the network will see it. Sums in float64.
    Raises ValueError for no clips or a zero std (every clip silent).
    """
    from .io import read_audio

    count, total, total_sq = 0, 0.0, 0.0
    for clip in clips:
        wave = read_audio(clip, spec.sample_rate_hz)[0] if isinstance(clip, (str, Path)) else clip
        v = spec.log_mel(wave).astype(np.float64)
        count += v.size
        total += float(v.sum())
        total_sq += float(np.square(v).sum())
    if count == 0:
        raise ValueError("dataset_stats: no clips given")
    mean = total / count
    std = float(np.sqrt(max(total_sq / count - mean * mean, 0.0)))
    if not std > 1e-6 * max(1.0, abs(mean)):  # float64 rounding leaves ~1e-8 where every value is equal
        raise ValueError("dataset_stats: the log-mel std is 0 (every clip silent or identical); "
                         "fit the normalisation on real recordings")
    return mean, std


def fit_normalisation(spec: LogMelSpec, clips: Iterable[np.ndarray | str | Path]) -> LogMelSpec:
    """``spec`` with the mean/std of :func:`dataset_stats` over ``clips`` (fit on the training split only)."""
    return spec.with_stats(*dataset_stats(clips, spec))
