"""A Speech Commands-like keyword dataset synthesised with espeak-ng, split by voice.

The 20 keywords of DESIGN 5.4 (as in Speech Commands, Warden 2018, arXiv:1804.03209: the digits
"zero" ... "nine" and "yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go") are
spoken by espeak-ng voices (language/accent x voice variant, each with its own speed and
pitch), then given a room and a background per clip::

    espeak-ng -v <language>+<variant> -s <wpm> -p <pitch> -a <amplitude> --stdout <word>
      -> 22.05 kHz int16 -> silence trimmed -> resampled to 16 kHz (scipy resample_poly)
      -> reverberation (probability p): convolved with a synthetic impulse response, a direct
         path plus exponentially decaying Gaussian noise reaching -60 dB at RT60 ~ U(rt60_s)
      -> placed at a random offset in a clip_seconds clip (a longer utterance is centre-cropped)
      -> background (probability p): white / pink / brown (1/f^0, 1/f^1, 1/f^2 power) noise at
         SNR ~ U(snr_db) dB relative to the utterance's power
      -> scaled to a peak ~ U(peak); 16-bit PCM WAV

Layout under ``root``::

    root/dataset.json                   config, espeak-ng version, voices per split, counts
    root/<split>/<word>/<voice-id>_<take>.wav     split in train / val / test, BY VOICE
    root/<split>.csv                    path,label,speaker (modalities.audio.io.read_manifest)
    root/pool/<voice-id>_<n>.wav        unlabelled pre-training pool: the keywords and other
                                        words / short phrases, spoken by the training voices
                                        and pool-only voices (never a val/test voice); the
                                        label-free data of DINO pre-training (Caron et al.,
                                        ICCV 2021) and UnFuSeD pseudo-labelling (DESIGN 5.4)
    root/pool.csv                       path,text,speaker (what each pool clip says; diagnostics only)

A voice id is ``<language>+<variant>-s<wpm>-p<pitch>`` (e.g. ``en-029+f2-s150-p62``); every
voice is a distinct (language, variant) pair, so no test voice is heard in training.

Deterministic: every clip draws from its own generator seeded by (seed, crc32 of its
split/voice/text/take), so the same config gives byte-identical files (for one espeak-ng
version, recorded in dataset.json) whatever the order or number of workers. Files are written
atomically; a re-run into the same root (same config) keeps the finished files and writes the
rest; a different config is refused.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import shutil
import subprocess
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
from scipy.signal import fftconvolve

from modalities.fileio import atomic_write_json, atomic_write_text

from .io import TARGET_RATE_HZ, AudioItem, decode_audio_bytes, resample_poly_to, write_manifest, write_wav

KEYWORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine",
            "yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go")
# Non-keyword words (Speech Commands' auxiliary words) and short phrases for the unlabelled pool.
POOL_EXTRA_TEXTS = ("bed", "bird", "cat", "dog", "happy", "house", "marvin", "sheila", "tree", "wow",
                    "backward", "forward", "follow", "learn", "visual", "turn left", "go forward",
                    "stop the robot", "yes please", "one two three")
# espeak-ng's own English voices (gmw/*; the mbrola mb-* voices need extra packages).
ESPEAK_LANGUAGES = ("en", "en-us", "en-gb-scotland", "en-gb-x-gbclan", "en-gb-x-rp", "en-gb-x-gbcwmd",
                    "en-029", "en-us-nyc")
ESPEAK_VARIANTS = ("m1", "m2", "m3", "m4", "m5", "m6", "m7", "f1", "f2", "f3", "f4", "f5")
SPLITS = ("train", "val", "test")
ESPEAK_MISSING = "espeak-ng not found on PATH: install espeak-ng: apt-get install espeak-ng"
GENERATOR_VERSION = 1
NOISE_EXPONENTS = {"white": 0.0, "pink": 1.0, "brown": 2.0}  # power spectral density ~ 1 / f**exponent


class EspeakError(RuntimeError):
    """espeak-ng is missing or failed to synthesise."""


@dataclass(frozen=True)
class AcousticsConfig:
    """Per-clip room and background, each drawn per clip."""

    noise_probability: float = 0.9  # clips with background noise; the rest are clean
    snr_db: tuple[float, float] = (5.0, 30.0)  # speech-to-noise; lower the floor for a harder set
    noise_colours: tuple[str, ...] = ("white", "pink", "brown")
    reverb_probability: float = 0.7
    rt60_s: tuple[float, float] = (0.1, 0.6)  # small room .. reverberant hall
    direct_to_reverb_db: tuple[float, float] = (0.0, 12.0)  # direct-path energy over tail energy
    peak: tuple[float, float] = (0.1, 0.9)  # output peak amplitude (16-bit PCM, so no clipping)


@dataclass(frozen=True)
class KeywordDatasetConfig:
    """What :func:`generate_keyword_dataset` writes (defaults: 320 train + 120 test clips, 480 pool clips)."""

    words: tuple[str, ...] = KEYWORDS
    train_voices: int = 8
    val_voices: int = 0  # set > 0 for a voice-disjoint validation split
    test_voices: int = 3
    takes: int = 2  # clips per (voice, word); each take re-draws speed/pitch jitter, room, noise
    pool_voices: int = 4  # pool-only voices, added to the training voices in the pool
    pool_takes: int = 1  # clips per (pool voice, text)
    pool_extra_texts: tuple[str, ...] = POOL_EXTRA_TEXTS
    clip_seconds: float = 1.0
    pool_clip_seconds: float = 1.5  # longer than a keyword clip so phrases fit and crops vary
    sample_rate_hz: int = TARGET_RATE_HZ
    speed_wpm: tuple[int, int] = (130, 200)  # per voice; espeak-ng's default is 175
    pitch: tuple[int, int] = (25, 75)  # per voice, espeak-ng 0..99, default 50
    amplitude: tuple[int, int] = (60, 160)  # per clip, espeak-ng 0..200, default 100
    seed: int = 0
    acoustics: AcousticsConfig = field(default_factory=AcousticsConfig)

    def __post_init__(self) -> None:
        def bad(name: str, why: str) -> None:
            raise ValueError(f"keyword dataset config: field '{name}' = {getattr(self, name)!r}: {why}")

        if not self.words or len(set(self.words)) != len(self.words):
            bad("words", "needs at least one word and no duplicates")
        for name in ("train_voices", "test_voices", "takes"):
            if getattr(self, name) < 1:
                bad(name, "must be >= 1")
        for name in ("val_voices", "pool_voices", "pool_takes"):
            if getattr(self, name) < 0:
                bad(name, "must be >= 0")
        n = self.train_voices + self.val_voices + self.test_voices + self.pool_voices
        if n > len(ESPEAK_LANGUAGES) * len(ESPEAK_VARIANTS):
            bad("train_voices", f"{n} voices in all exceed the {len(ESPEAK_LANGUAGES) * len(ESPEAK_VARIANTS)} "
                                "distinct espeak-ng language+variant pairs")
        for name in ("clip_seconds", "pool_clip_seconds"):
            if getattr(self, name) <= 0:
                bad(name, "must be > 0")
        for name in ("speed_wpm", "pitch", "amplitude"):
            lo, hi = getattr(self, name)
            if not 0 <= lo <= hi:
                bad(name, "needs 0 <= low <= high")
        a = self.acoustics
        if not set(a.noise_colours) <= set(NOISE_EXPONENTS) or not a.noise_colours:
            raise ValueError(f"keyword dataset config: field 'acoustics.noise_colours' = {a.noise_colours!r}: "
                             f"choose from {list(NOISE_EXPONENTS)}")
        if not (0 < a.peak[0] <= a.peak[1] <= 1):
            raise ValueError(f"keyword dataset config: field 'acoustics.peak' = {a.peak!r}: needs 0 < low <= high <= 1")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (tuples become lists)."""
        return json.loads(json.dumps(asdict(self)))

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "KeywordDatasetConfig":
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"keyword dataset config: unknown field(s) {sorted(unknown)}")
        kw = {k: tuple(v) if isinstance(v, list) else v for k, v in d.items() if k != "acoustics"}
        ac = {k: tuple(v) if isinstance(v, list) else v for k, v in d.get("acoustics", {}).items()}
        return cls(**kw, acoustics=AcousticsConfig(**ac))


@dataclass(frozen=True)
class Voice:
    """An espeak-ng speaker: language/accent + voice variant, with its own speed and pitch."""

    language: str
    variant: str
    speed_wpm: int
    pitch: int

    @property
    def id(self) -> str:
        return f"{self.language}+{self.variant}-s{self.speed_wpm}-p{self.pitch}"


def assign_voices(config: KeywordDatasetConfig) -> dict[str, list[Voice]]:
    """Distinct (language, variant) voices for train / val / test / pool-only, drawn from ``config.seed``."""
    rng = np.random.default_rng([config.seed, 0x766F696365])  # "voice"
    pairs = [(lang, var) for lang in ESPEAK_LANGUAGES for var in ESPEAK_VARIANTS]
    order = rng.permutation(len(pairs))
    counts = {"train": config.train_voices, "val": config.val_voices, "test": config.test_voices,
              "pool": config.pool_voices}
    out, i = {}, 0
    for split, n in counts.items():
        voices = []
        for _ in range(n):
            lang, var = pairs[order[i]]
            i += 1
            voices.append(Voice(lang, var, int(rng.integers(config.speed_wpm[0], config.speed_wpm[1] + 1)),
                                int(rng.integers(config.pitch[0], config.pitch[1] + 1))))
        out[split] = voices
    return out


def espeak_version() -> str:
    """``espeak-ng --version`` (raises EspeakError with the install hint when missing)."""
    exe = shutil.which("espeak-ng")
    if exe is None:
        raise EspeakError(ESPEAK_MISSING)
    return subprocess.run([exe, "--version"], capture_output=True, text=True, check=False).stdout.strip()


def synthesize(text: str, voice: str, speed_wpm: int = 175, pitch: int = 50, amplitude: int = 100) -> tuple[np.ndarray, int]:
    """Speak ``text`` with espeak-ng (``--stdout``) -> ((N,) float32 mono, rate_hz) at espeak's native rate."""
    exe = shutil.which("espeak-ng")
    if exe is None:
        raise EspeakError(ESPEAK_MISSING)
    cmd = [exe, "-v", voice, "-s", str(int(speed_wpm)), "-p", str(int(pitch)), "-a", str(int(amplitude)),
           "--stdout", text]
    res = subprocess.run(cmd, capture_output=True, check=False)
    if res.returncode != 0 or len(res.stdout) <= 44:
        raise EspeakError(f"espeak-ng failed (exit {res.returncode}) for {' '.join(cmd[1:])!r}: "
                          f"{res.stderr.decode(errors='replace').strip() or 'no audio written'}")
    return decode_audio_bytes(res.stdout, where=f"espeak-ng output for {text!r} ({voice})")


def coloured_noise(n_samples: int, colour: str, rng: np.random.Generator) -> np.ndarray:
    """(n,) unit-RMS Gaussian noise with power spectral density ~ 1/f^exponent (white 0, pink 1, brown 2)."""
    white = rng.standard_normal(n_samples)
    spec = np.fft.rfft(white)
    f = np.arange(spec.size, dtype=np.float64)
    f[0] = 1.0  # keep the DC bin finite; it is removed below
    spec *= f ** (-NOISE_EXPONENTS[colour] / 2.0)
    x = np.fft.irfft(spec, n_samples)
    x -= x.mean()
    return x / max(float(np.sqrt(np.mean(x * x))), 1e-12)


def exponential_impulse_response(rt60_s: float, direct_to_reverb_db: float, rate_hz: int,
                                 rng: np.random.Generator) -> np.ndarray:
    """Synthetic room: a unit direct path, then Gaussian noise decaying 60 dB over ``rt60_s``.

    The tail's energy is ``direct_to_reverb_db`` below the direct path's; length 1.2 * RT60.
    """
    n = max(2, int(1.2 * rt60_s * rate_hz))
    t = np.arange(1, n) / rate_hz
    tail = rng.standard_normal(n - 1) * np.exp(-np.log(1000.0) * t / rt60_s)
    tail *= np.sqrt(10.0 ** (-direct_to_reverb_db / 10.0) / np.sum(tail * tail))
    return np.concatenate([[1.0], tail])


def trim_silence(x: np.ndarray, rate_hz: int, threshold: float = 0.02, margin_s: float = 0.01) -> np.ndarray:
    """Cut leading/trailing samples below ``threshold`` x peak, keeping ``margin_s`` either side."""
    peak = float(np.max(np.abs(x))) if x.size else 0.0
    if peak == 0.0:
        return x
    loud = np.flatnonzero(np.abs(x) >= threshold * peak)
    m = int(margin_s * rate_hz)
    return x[max(0, loud[0] - m):loud[-1] + 1 + m]


def render_clip(text: str, voice: Voice, config: KeywordDatasetConfig, clip_seconds: float,
                rng: np.random.Generator) -> np.ndarray:
    """One clip of ``text`` by ``voice``: speech, room, placement, background, level (module docstring)."""
    a, sr = config.acoustics, config.sample_rate_hz
    speed = int(round(voice.speed_wpm * rng.uniform(0.9, 1.1)))
    pitch = int(np.clip(voice.pitch + rng.integers(-5, 6), 0, 99))
    amplitude = int(rng.integers(config.amplitude[0], config.amplitude[1] + 1))
    raw, raw_rate = synthesize(text, f"{voice.language}+{voice.variant}", speed, pitch, amplitude)
    speech = resample_poly_to(trim_silence(raw, raw_rate), raw_rate, sr).astype(np.float64)
    if rng.random() < a.reverb_probability:
        ir = exponential_impulse_response(rng.uniform(*a.rt60_s), rng.uniform(*a.direct_to_reverb_db), sr, rng)
        speech = fftconvolve(speech, ir)
    n = int(round(clip_seconds * sr))
    if speech.size > n:
        start = (speech.size - n) // 2
        speech = speech[start:start + n]
    offset = int(rng.integers(0, n - speech.size + 1))
    clip = np.zeros(n)
    clip[offset:offset + speech.size] = speech
    if rng.random() < a.noise_probability:
        colour = a.noise_colours[int(rng.integers(len(a.noise_colours)))]
        p_speech = float(np.mean(speech * speech))
        snr_db = rng.uniform(*a.snr_db)
        clip += coloured_noise(n, colour, rng) * np.sqrt(p_speech / 10.0 ** (snr_db / 10.0))
    peak = float(np.max(np.abs(clip)))
    if peak > 0:
        clip *= rng.uniform(*a.peak) / peak
    return clip.astype(np.float32)


def _clip_rng(seed: int, key: str) -> np.random.Generator:
    return np.random.default_rng([seed, zlib.crc32(key.encode("utf-8"))])


@dataclass(frozen=True)
class _Job:
    path: Path
    text: str
    voice: Voice
    clip_seconds: float
    key: str


def _plan(root: Path, config: KeywordDatasetConfig, voices: dict[str, list[Voice]]
          ) -> tuple[dict[str, list[AudioItem]], list[_Job], list[tuple[Path, str, str]]]:
    """Every clip to write: the labelled items per split, the jobs, and the pool rows (path, text, voice)."""
    labelled: dict[str, list[AudioItem]] = {}
    jobs: list[_Job] = []
    for split in SPLITS:
        items = []
        for word in config.words:
            for v in voices[split]:
                for take in range(config.takes):
                    p = root / split / word / f"{v.id}_{take}.wav"
                    items.append(AudioItem(p, word, v.id))
                    jobs.append(_Job(p, word, v, config.clip_seconds, f"{split}/{v.id}/{word}/{take}"))
        if voices[split]:
            labelled[split] = items
    pool_rows = []
    texts = tuple(config.words) + tuple(t for t in config.pool_extra_texts if t not in config.words)
    for v in voices["train"] + voices["pool"]:
        for i, text in enumerate(texts):
            for take in range(config.pool_takes):
                p = root / "pool" / f"{v.id}_{i * config.pool_takes + take}.wav"
                pool_rows.append((p, text, v.id))
                jobs.append(_Job(p, text, v, config.pool_clip_seconds, f"pool/{v.id}/{text}/{take}"))
    return labelled, jobs, pool_rows


def generate_keyword_dataset(root: str | Path, config: KeywordDatasetConfig | None = None,
                             workers: int = 1) -> dict[str, Any]:
    """Write (or finish writing) the keyword dataset under ``root``; returns the dataset.json content.

    ``workers`` espeak-ng processes run at once (the files do not depend on it). Raises
    EspeakError when espeak-ng is missing, ValueError when ``root`` holds a dataset generated
    with another config.
    """
    config = config or KeywordDatasetConfig()
    root = Path(root)
    version = espeak_version()
    meta_path = root / "dataset.json"
    if meta_path.is_file():
        previous = json.loads(meta_path.read_text())
        if previous.get("config") != config.to_dict():
            raise ValueError(f"{meta_path}: this folder was generated with another config; "
                             "generate into a new folder (or delete this one)")
    voices = assign_voices(config)
    meta: dict[str, Any] = {"generator": "modalities.audio.keywords", "generator_version": GENERATOR_VERSION,
                            "espeak_ng": version, "config": config.to_dict(),
                            "voices": {k: [v.id for v in vs] for k, vs in voices.items()}, "complete": False}
    atomic_write_json(meta_path, meta)
    labelled, jobs, pool_rows = _plan(root, config, voices)
    todo = [j for j in jobs if not j.path.is_file()]

    def run(job: _Job) -> None:
        clip = render_clip(job.text, job.voice, config, job.clip_seconds, _clip_rng(config.seed, job.key))
        write_wav(job.path, clip, config.sample_rate_hz)

    from tqdm import tqdm  # noqa: PLC0415

    with tqdm(total=len(todo), desc="espeak-ng clips", unit="clip", mininterval=5, dynamic_ncols=True) as bar:
        if workers > 1:
            with ThreadPoolExecutor(workers) as ex:
                for _ in ex.map(run, todo):
                    bar.update(1)
        else:
            for job in todo:
                run(job)
                bar.update(1)
    for split, items in labelled.items():
        write_manifest(root / f"{split}.csv", items)
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows(
        [("path", "text", "speaker")] + [(p.relative_to(root).as_posix(), t, s) for p, t, s in pool_rows])
    atomic_write_text(root / "pool.csv", buf.getvalue())
    meta.update(complete=True, counts={**{k: len(v) for k, v in labelled.items()}, "pool": len(pool_rows)},
                written_now=len(todo))
    atomic_write_json(meta_path, {k: v for k, v in meta.items() if k != "written_now"})
    return meta


def main(argv: list[str] | None = None) -> None:
    """``python -m modalities.audio.keywords ROOT [--seed S] [--train-voices N] ...``"""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("root", type=Path)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--train-voices", type=int, default=KeywordDatasetConfig.train_voices)
    ap.add_argument("--val-voices", type=int, default=KeywordDatasetConfig.val_voices)
    ap.add_argument("--test-voices", type=int, default=KeywordDatasetConfig.test_voices)
    ap.add_argument("--takes", type=int, default=KeywordDatasetConfig.takes)
    ap.add_argument("--pool-voices", type=int, default=KeywordDatasetConfig.pool_voices)
    ap.add_argument("--workers", type=int, default=1)
    a = ap.parse_args(argv)
    cfg = KeywordDatasetConfig(seed=a.seed, train_voices=a.train_voices, val_voices=a.val_voices,
                               test_voices=a.test_voices, takes=a.takes, pool_voices=a.pool_voices)
    meta = generate_keyword_dataset(a.root, cfg, workers=a.workers)
    print(json.dumps({"root": str(a.root), "counts": meta["counts"], "written_now": meta["written_now"]}))


if __name__ == "__main__":
    main()
