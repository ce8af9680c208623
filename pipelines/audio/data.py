"""Keyword datasets for the audio stages: the splits, cached log-mels, and the training views.

Every clip is read once (:func:`modalities.audio.io.read_audio`: any rate / channel count ->
16 kHz mono) and turned into its *un-normalised* log-mel (numpy twin of the front-end,
:class:`modalities.audio.logmel.LogMelSpec`, full length) in the stage's driver; the arrays go
to the training workers as one ``.npz`` file. A file that cannot be read is a counted skip,
named in the log and the stage's metrics, never a silent hole.

Views are made on the log-mel, per clip, in numpy (cheap at 64 x ~100):

* a time crop (zero-padded, i.e. with log(eps), when the clip is shorter);
* a random gain of +-``gain_db``: a constant shift of the log power by g ln(10) / 10
  (exact where the mel power is far above eps);
* with probability ``noise_mix``, another clip added at -10..-20 dB in the power domain
  (``logaddexp``: exact for the sum of powers, which is what uncorrelated sounds give on average);
* the dataset normalisation, then SpecAugment masks filled with 0 (the normalised mean).

Optional per-view *acoustic* augmentations (off unless set; DINO's views use them): every
view of a clip otherwise shares the clip's background-noise colour and level, room and
voice, and self-distillation can agree on those instead of on the word. Each view then gets
its own

* time stretch by r ~ U(1/(1+s), 1+s) (linear interpolation of the frames, before the crop);
* vocal-tract-length-style frequency warp: the mel axis resampled by a ~ U(1/(1+w), 1+w)
  (Jaitly & Hinton, "Vocal Tract Length Perturbation", ICML WS 2013, here on the mel axis);
* equaliser: a random spectral tilt of +-``tilt_db`` dB across the band plus a smooth
  random curve (two cosines across the mel axis), added to the log power;
* synthetic background noise with probability ``noise_prob``: power spectral density
  ~ 1/f^e, e ~ U(0, 2) (white .. brown), through the spec's own mel filterbank (the exact
  expected band power), fluctuating per time-frequency cell, at an SNR ~ U(``noise_snr_db``)
  relative to the view's mean mel power, added in the power domain.
"""

from __future__ import annotations

import csv
import functools
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from modalities.audio.io import AudioItem, list_audio_files, read_audio, read_manifest, scan_class_folders
from modalities.audio.logmel import LogMelSpec, mel_filterbank
from modalities.errors import DataError

log = logging.getLogger("edgedistill.audio")


@dataclass
class KeywordSplits:
    train: list[AudioItem]
    test: list[AudioItem]
    pool: list[Path]
    classes: list[str]


def _labelled(root: Path, name: str) -> list[AudioItem]:
    if (root / f"{name}.csv").is_file():
        return read_manifest(root / f"{name}.csv")
    if (root / name).is_dir():
        return scan_class_folders(root / name)
    raise DataError(root, f"no split '{name}': expected {name}.csv (path,label[,speaker]) or a folder {name}/<label>/")


def _pool(root: Path, name: str | None) -> list[Path]:
    if not name:
        return []
    manifest = root / f"{name}.csv"
    if manifest.is_file():
        with open(manifest, newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
        if rows and "path" not in rows[0]:
            raise DataError(manifest, "row 1 (header): no 'path' column")
        return [root / r["path"] if not Path(r["path"]).is_absolute() else Path(r["path"]) for r in rows]
    if (root / name).is_dir():
        return list_audio_files(root / name)
    return []


def load_splits(root: Path, spec) -> KeywordSplits:
    """The train / test items and the unlabelled pool of a ``keywords`` dataset spec at ``root``."""
    root = Path(root)
    train, test = _labelled(root, spec.train), _labelled(root, spec.test)
    classes = sorted({i.label for i in train})
    unseen = sorted({i.label for i in test} - set(classes))
    if unseen:
        raise DataError(root / spec.test, f"test labels {unseen} never occur in the training split")
    overlap = sorted({i.speaker for i in train if i.speaker} & {i.speaker for i in test if i.speaker})
    if overlap:
        log.warning("%s: %d speaker(s) occur in both train and test (e.g. %s): the held-out accuracy is not on "
                    "unseen speakers", root, len(overlap), overlap[:3])
    return KeywordSplits(train, test, _pool(root, spec.pool), classes)


def read_log_mels(paths: list[Path], spec: LogMelSpec, crop: bool) -> tuple[list[np.ndarray | None], list[str]]:
    """Un-normalised log-mel of each file (None where it cannot be read) and the skip messages."""
    from tqdm import tqdm  # noqa: PLC0415

    out, skipped = [], []
    for p in tqdm(paths, desc="log-mel", unit="clip", mininterval=5, dynamic_ncols=True):
        try:
            wave, _ = read_audio(p, spec.sample_rate_hz)
        except (DataError, OSError, ValueError, RuntimeError) as e:
            skipped.append(f"{p}: {e}")
            out.append(None)
            continue
        out.append(spec.log_mel(wave, crop=crop).astype(np.float32))
    for msg in skipped[:5]:
        log.warning("skipped unreadable clip %s", msg)
    if len(skipped) > 5:
        log.warning("... and %d more unreadable clips", len(skipped) - 5)
    return out, skipped


def fit_stats(log_mels: list[np.ndarray]) -> tuple[float, float]:
    """Scalar mean and std over every value of the (1 s, cropped) training log-mels."""
    total = sum(float(m.sum(dtype=np.float64)) for m in log_mels)
    count = sum(m.size for m in log_mels)
    mean = total / count
    var = sum(float(np.square(m - mean, dtype=np.float64).sum()) for m in log_mels) / count
    if not var > 0:
        raise ValueError("log-mel std is 0: every training clip is silent or identical")
    return mean, float(np.sqrt(var))


def save_arrays(path: Path, arrays: list[np.ndarray], labels: np.ndarray | None = None) -> None:
    """Variable-length (n_mels, T) arrays as one .npz (concatenated + offsets), written atomically."""
    lengths = np.array([a.shape[1] for a in arrays], np.int64)
    data = {"values": np.concatenate(arrays, axis=1), "lengths": lengths}
    if labels is not None:
        data["labels"] = labels
    tmp = path.with_name(f".{path.name}.tmp.npz")
    np.savez(tmp, **data)
    tmp.replace(path)


def load_arrays(path: Path) -> tuple[list[np.ndarray], np.ndarray | None]:
    with np.load(path, allow_pickle=False) as z:
        values, lengths = z["values"], z["lengths"]
        labels = z["labels"] if "labels" in z.files else None
    ends = np.cumsum(lengths)
    return [values[:, e - n: e] for e, n in zip(ends, lengths)], labels


def crop_frames(m: np.ndarray, frames: int, rng: np.random.Generator | None, floor: float,
                focus: bool = False) -> np.ndarray:
    """A ``frames``-long time window (random with ``rng``, else centred), padded with ``floor`` when shorter.

    ``focus``: the random window starts only where the window's mean log-mel energy is at
    least the median over all starts, so a short crop of a clip that is mostly silence or
    background still holds part of the utterance.
    """
    T = m.shape[1]
    if T < frames:
        out = np.full((m.shape[0], frames), floor, np.float32)
        off = 0 if rng is None else int(rng.integers(0, frames - T + 1))
        out[:, off: off + T] = m
        return out
    if rng is None:
        start = (T - frames) // 2
    elif focus and T > frames:
        energy = np.concatenate([[0.0], np.cumsum(m.mean(axis=0, dtype=np.float64))])
        window = energy[frames:] - energy[:-frames]  # (T - frames + 1,) summed energy per start
        start = int(rng.choice(np.flatnonzero(window >= np.median(window))))
    else:
        start = int(rng.integers(0, T - frames + 1))
    return m[:, start: start + frames]


@dataclass(frozen=True)
class ViewParams:
    gain_db: float = 6.0
    noise_mix: float = 0.5
    freq_mask: int = 8
    time_mask: int = 10
    focus: bool = False  # crops favour the louder half of the clip (crop_frames)
    # Acoustic augmentations (module docstring); 0 / None = off.
    time_stretch: float = 0.0
    freq_warp: float = 0.0
    tilt_db: float = 0.0
    noise_prob: float = 0.0
    noise_snr_db: tuple[float, float] = (0.0, 20.0)


def stretch_time(m: np.ndarray, rate: float) -> np.ndarray:
    """(n_mels, T) -> (n_mels, round(T * rate)): the frames linearly interpolated (rate > 1 slows the clip down)."""
    T = m.shape[1]
    n = max(1, int(round(T * rate)))
    pos = np.linspace(0.0, T - 1.0, n)
    i0 = np.floor(pos).astype(np.int64)
    i1 = np.minimum(i0 + 1, T - 1)
    f = (pos - i0).astype(np.float32)
    return m[:, i0] * (1.0 - f) + m[:, i1] * f


def warp_frequency(v: np.ndarray, factor: float) -> np.ndarray:
    """Mel bin k of the result reads bin k / factor of ``v`` (linear interpolation, edge bins held)."""
    M = v.shape[0]
    pos = np.clip(np.arange(M, dtype=np.float64) / factor, 0.0, M - 1.0)
    i0 = np.floor(pos).astype(np.int64)
    i1 = np.minimum(i0 + 1, M - 1)
    f = (pos - i0).astype(np.float32)[:, None]
    return v[i0] * (1.0 - f) + v[i1] * f


def equaliser_db(n_mels: int, tilt_db: float, rng: np.random.Generator) -> np.ndarray:
    """(n_mels, 1) random gain curve in dB: a tilt in +-tilt_db plus two cosines of amplitude <= tilt_db / 2."""
    x = np.linspace(-1.0, 1.0, n_mels)
    curve = rng.uniform(-tilt_db, tilt_db) * x
    for k in (1, 2):
        curve += rng.uniform(-tilt_db, tilt_db) / 2 * np.cos(np.pi * k * (x + 1) / 2 + rng.uniform(0, 2 * np.pi))
    return curve[:, None].astype(np.float32)


def noise_log_mel(shape: tuple[int, int], spec: LogMelSpec, total_power: float,
                  rng: np.random.Generator) -> np.ndarray:
    """log mel power of coloured Gaussian noise (PSD ~ 1/f^e, e ~ U(0, 2)) whose mean summed band power is
    ``total_power`` (e on a 0.05 grid); each cell's log power is Gaussian around its band's with the mean (-0.13) and
    std (0.53) of log Gamma(4, 1/4), the power of a band summing a few FFT bins (mean power ~1.01x the band's)."""
    table = _noise_band_table(spec.sample_rate_hz, spec.n_fft, spec.n_mels, spec.f_min_hz, spec.f_max_hz)
    log_band = table[int(rng.integers(len(table)))] + np.float32(np.log(total_power))
    return log_band[:, None] - np.float32(0.13) + np.float32(0.53) * rng.standard_normal(shape, dtype=np.float32)


@functools.lru_cache(maxsize=8)
def _noise_band_table(sample_rate_hz: int, n_fft: int, n_mels: int, f_min_hz: float, f_max_hz: float) -> np.ndarray:
    """(41, n_mels) float32 log of each mel band's share of the power of 1/f^e noise, e = 0, 0.05, ..., 2."""
    fb = mel_filterbank(sample_rate_hz, n_fft, n_mels, f_min_hz, f_max_hz)
    freqs = np.maximum(np.linspace(0.0, sample_rate_hz / 2, fb.shape[0]), 20.0)
    band = (freqs[None, :] ** -np.linspace(0.0, 2.0, 41)[:, None]) @ fb
    table = np.log(band / band.sum(axis=1, keepdims=True) + 1e-30).astype(np.float32)
    table.setflags(write=False)
    return table


def make_view(m: np.ndarray, frames: int, spec: LogMelSpec, rng: np.random.Generator, p: ViewParams,
              other: np.ndarray | None = None) -> np.ndarray:
    """One augmented, normalised (n_mels, frames) view of the raw log-mel ``m`` (module docstring)."""
    floor = float(np.log(spec.eps))
    if p.time_stretch > 0:
        m = stretch_time(m, float(np.exp(rng.uniform(-1.0, 1.0) * np.log1p(p.time_stretch))))
    v = crop_frames(m, frames, rng, floor, p.focus).astype(np.float32, copy=True)
    if p.freq_warp > 0:
        v = warp_frequency(v, float(np.exp(rng.uniform(-1.0, 1.0) * np.log1p(p.freq_warp))))
    if p.tilt_db > 0:
        v = np.maximum(v + equaliser_db(v.shape[0], p.tilt_db, rng) * np.float32(np.log(10.0) / 10.0), floor)
    if p.noise_prob > 0 and rng.random() < p.noise_prob:
        power = float(np.exp(v).sum(axis=0, dtype=np.float64).mean())
        snr = rng.uniform(*p.noise_snr_db)
        v = np.logaddexp(v, noise_log_mel(v.shape, spec, power / 10.0 ** (snr / 10.0), rng)).astype(np.float32)
    if p.gain_db > 0:
        # np.float32: under NumPy 2's promotion rules a float64 scalar would turn the view into float64
        v = np.maximum(v + np.float32(rng.uniform(-p.gain_db, p.gain_db) * np.log(10.0) / 10.0), floor)
    if other is not None and p.noise_mix > 0 and rng.random() < p.noise_mix:
        o = crop_frames(other, frames, rng, floor)
        v = np.logaddexp(v, o - rng.uniform(10.0, 20.0) * np.log(10.0) / 10.0).astype(np.float32)
    v = (v - spec.mean) / spec.std
    for _ in range(2):
        if p.freq_mask > 0:
            w = int(rng.integers(0, p.freq_mask + 1))
            f0 = int(rng.integers(0, max(1, v.shape[0] - w + 1)))
            v[f0: f0 + w] = 0.0
        if p.time_mask > 0:
            w = int(rng.integers(0, min(p.time_mask, frames // 4) + 1))
            t0 = int(rng.integers(0, max(1, frames - w + 1)))
            v[:, t0: t0 + w] = 0.0
    return v


def eval_input(m: np.ndarray, spec: LogMelSpec) -> np.ndarray:
    """The deterministic network input of a raw log-mel: the centred clip, normalised (as the runtime does)."""
    return (crop_frames(m, spec.n_frames, None, float(np.log(spec.eps))) - spec.mean) / spec.std
