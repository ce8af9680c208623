"""Audio readers and the dataset index: WAV/FLAC -> float32 mono at 16 kHz, class folders, CSV manifests.

Every clip the audio method sees passes through :func:`read_audio`::

    file (.wav | .flac, any channels, any rate, PCM or float)   --soundfile (libsndfile)-->
      (frames, channels) float32 in [-1, 1]  --mean over channels-->  (frames,) mono
      --scipy.signal.resample_poly(up, down), up/down = 16000/rate reduced by their gcd-->
      (round(frames * 16000 / rate),) float32 mono at TARGET_RATE_HZ

Silent and clipped (full-scale) clips are valid input. Bad input raises
:class:`modalities.errors.DataError` (a ``ValueError``) or :class:`~modalities.errors.MissingDataError`
(also a ``FileNotFoundError``), the message starting with the file's path: an empty file, a
file with no audio frames, a truncated or corrupt file, a file that is not audio, non-finite
samples. libsndfile reads a truncated WAV silently (it trusts the file size over the header),
so the WAV ``data`` chunk's declared size is checked against the bytes present.

Dataset index, as in torchvision's ``ImageFolder`` and Speech Commands (Warden 2018,
arXiv:1804.03209): :func:`scan_class_folders` (class = sub-folder name) and
:func:`read_manifest` (CSV ``path,label[,speaker]``).
"""

from __future__ import annotations

import csv
import io
import math
import struct
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from modalities.errors import DataError, MissingDataError, require_file
from modalities.fileio import atomic_write_bytes

TARGET_RATE_HZ = 16_000  # DESIGN 5.4: every clip is resampled to 16 kHz
AUDIO_SUFFIXES = (".wav", ".flac")
# A streamed WAV (espeak-ng --stdout, sox -) declares a placeholder data size near 2**31 or 2**32.
_STREAMED_WAV_DATA_BYTES = 0x7FFF0000


def _soundfile():
    try:
        import soundfile
    except ImportError as e:  # pragma: no cover - the package is a project requirement
        raise ImportError("reading audio needs the soundfile package: pip install 'soundfile>=0.12'") from e
    return soundfile


@dataclass(frozen=True)
class AudioItem:
    """One entry of a dataset index.

    Attributes:
        path: the audio file.
        label: class name (the word), or None in an unlabelled pool.
        speaker: speaker / voice id when known (Speech Commands: the hash before ``_nohash_``;
            the keyword generator: the voice id before the last ``_``), else None.
    """

    path: Path
    label: str | None
    speaker: str | None = None


def resample_poly_to(samples: np.ndarray, rate_hz: int, target_hz: int = TARGET_RATE_HZ) -> np.ndarray:
    """Polyphase resampling of (N,) samples from ``rate_hz`` to ``target_hz`` (float32 out).

    ``scipy.signal.resample_poly`` with up/down = target/rate reduced by their gcd (48 kHz -> 16 kHz
    is 1/3, 44.1 kHz -> 16 kHz is 160/441) and its default Kaiser-windowed (beta 5) anti-alias
    FIR; the output has ``ceil(N * up / down)`` samples.
    """
    from scipy.signal import resample_poly

    if rate_hz <= 0 or target_hz <= 0:
        raise ValueError(f"sample rates must be > 0, got {rate_hz} -> {target_hz}")
    x = np.asarray(samples)
    if rate_hz == target_hz:
        return x.astype(np.float32, copy=True)
    g = math.gcd(int(rate_hz), int(target_hz))
    return resample_poly(x.astype(np.float64), int(target_hz) // g, int(rate_hz) // g).astype(np.float32)


def mix_to_mono(frames_by_channel: np.ndarray) -> np.ndarray:
    """(frames, channels) -> (frames,) by averaging the channels (a (frames,) input is returned as is)."""
    x = np.asarray(frames_by_channel)
    return x if x.ndim == 1 else x.mean(axis=1, dtype=np.float64).astype(np.float32)


def read_audio(path: str | Path, target_rate_hz: int = TARGET_RATE_HZ) -> tuple[np.ndarray, int]:
    """Read a WAV or FLAC file as ``(samples, target_rate_hz)``: (N,) float32 mono, resampled.

    Channels are averaged (mono mixdown), the rate converted with :func:`resample_poly_to`.
    Raises DataError naming the file for empty, frame-less, truncated, corrupt or non-audio files
    and for non-finite samples; MissingDataError when the file does not exist.
    """
    p = require_file(path, "audio file")
    data = p.read_bytes()
    if not data:
        raise DataError(p, "the file is empty (0 bytes); re-copy or re-generate it")
    samples, rate = decode_audio_bytes(data, where=p)
    return resample_poly_to(samples, rate, target_rate_hz), target_rate_hz


def decode_audio_bytes(data: bytes, where: str | Path = "<bytes>") -> tuple[np.ndarray, int]:
    """Decode an in-memory WAV/FLAC to ``((N,) float32 mono, native rate)``; errors name ``where``."""
    sf = _soundfile()
    if data[:4] == b"RIFF" and data[8:12] == b"WAVE":
        _check_wav_not_truncated(data, where)
    try:
        frames, rate = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
    except (RuntimeError, TypeError, ValueError) as e:  # soundfile.LibsndfileError is a RuntimeError
        reason = str(e).split(": ", 1)[-1] if "Error opening" in str(e) else str(e)
        raise DataError(where, f"cannot decode as WAV/FLAC audio ({reason}); the file is corrupt, truncated "
                               "or not an audio file") from None
    if frames.shape[0] == 0 or frames.shape[1] == 0:
        raise DataError(where, f"no audio frames (a zero-length recording, {frames.shape[1]} channel(s) at {rate} Hz)")
    if not np.isfinite(frames).all():
        raise DataError(where, f"{int((~np.isfinite(frames)).sum())} non-finite (NaN/inf) samples")
    return mix_to_mono(frames), int(rate)


def _check_wav_not_truncated(data: bytes, where: str | Path) -> None:
    """Compare the RIFF ``data`` chunk's declared size with the bytes that follow it."""
    offset = 12
    while offset + 8 <= len(data):
        chunk_id, size = data[offset:offset + 4], struct.unpack_from("<I", data, offset + 4)[0]
        if chunk_id == b"data":
            present = len(data) - (offset + 8)
            if size > present and size < _STREAMED_WAV_DATA_BYTES:
                raise DataError(where, f"truncated WAV: the data chunk declares {size} bytes but only {present} "
                                       "follow; the file was cut short (interrupted copy or write)")
            return
        offset += 8 + size + (size & 1)
    # No data chunk: libsndfile reports that as a decode error.


def write_wav(path: str | Path, samples: np.ndarray, rate_hz: int = TARGET_RATE_HZ, subtype: str = "PCM_16") -> None:
    """Write (N,) or (N, C) float samples in [-1, 1] as a WAV, atomically (values outside are clipped).

    The bytes depend only on the samples, rate and subtype, so equal inputs give identical files.
    """
    sf = _soundfile()
    x = np.clip(np.asarray(samples, np.float32), -1.0, 1.0)
    buf = io.BytesIO()
    sf.write(buf, x, int(rate_hz), format="WAV", subtype=subtype)
    atomic_write_bytes(path, buf.getvalue())


def is_audio_file(path: Path) -> bool:
    """A visible ``.wav``/``.flac`` file (case-insensitive); atomic-write temporaries are dot-files."""
    return path.is_file() and not path.name.startswith(".") and path.suffix.lower() in AUDIO_SUFFIXES


def speaker_from_name(path: str | Path) -> str | None:
    """Speaker id from a file name: Speech Commands ``<hash>_nohash_<n>``, else ``<voice>_<n>`` -> voice."""
    stem = Path(path).stem
    if "_nohash_" in stem:
        return stem.split("_nohash_", 1)[0]
    return stem.rsplit("_", 1)[0] if "_" in stem else None


def list_audio_files(folder: str | Path) -> list[Path]:
    """The audio files directly in ``folder``, sorted by name (an unlabelled pool)."""
    root = Path(folder)
    if not root.is_dir():
        raise MissingDataError(root, "audio folder")
    files = sorted(p for p in root.iterdir() if is_audio_file(p))
    if not files:
        raise DataError(root, f"no {'/'.join(AUDIO_SUFFIXES)} files in this folder")
    return files


def scan_class_folders(root: str | Path) -> list[AudioItem]:
    """Index ``root/<class>/<file>.wav|.flac`` (torchvision ``ImageFolder`` layout, Speech Commands).

    Classes are the visible sub-folder names, sorted; files within a class sorted by name, so the
    index is the same on every machine. ``speaker`` comes from :func:`speaker_from_name`. Folders
    starting with ``_`` or ``.`` (Speech Commands' ``_background_noise_``) are not classes. An
    empty class folder is an error (as in ``ImageFolder``), naming the folder.
    """
    base = Path(root)
    if not base.is_dir():
        raise MissingDataError(base, "dataset folder")
    classes = sorted(d for d in base.iterdir() if d.is_dir() and not d.name.startswith((".", "_")))
    if not classes:
        raise DataError(base, "no class sub-folders (expected root/<label>/<clip>.wav)")
    items: list[AudioItem] = []
    for d in classes:
        files = sorted(p for p in d.iterdir() if is_audio_file(p))
        if not files:
            raise DataError(d, f"class folder '{d.name}' holds no {'/'.join(AUDIO_SUFFIXES)} files")
        items.extend(AudioItem(p, d.name, speaker_from_name(p)) for p in files)
    return items


def read_manifest(csv_path: str | Path, check_files: bool = True) -> list[AudioItem]:
    """Read a CSV index with header ``path,label[,speaker]`` (extra columns are ignored).

    Relative paths are relative to the CSV's folder. Errors name the CSV and the row (row 1 is
    the header): a missing column, an empty path or label, a duplicated path, and (with
    ``check_files``) a listed file that does not exist.
    """
    p = require_file(csv_path, "manifest")
    with open(p, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        columns = [c.strip() for c in (reader.fieldnames or [])]
        missing = [c for c in ("path", "label") if c not in columns]
        if missing:
            raise DataError(p, f"row 1 (header): missing column(s) {missing}; expected path,label[,speaker], "
                               f"got {columns}")
        reader.fieldnames = columns
        items, seen = [], {}
        for row_no, row in enumerate(reader, start=2):
            rel = (row.get("path") or "").strip()
            label = (row.get("label") or "").strip()
            speaker = (row.get("speaker") or "").strip() or None
            if not rel:
                raise DataError(p, f"row {row_no}: empty path")
            if not label:
                raise DataError(p, f"row {row_no}: empty label for '{rel}'")
            audio = Path(rel) if Path(rel).is_absolute() else p.parent / rel
            if audio in seen:
                raise DataError(p, f"row {row_no}: '{rel}' is already listed in row {seen[audio]}")
            seen[audio] = row_no
            if check_files and not audio.is_file():
                raise DataError(p, f"row {row_no}: audio file '{rel}' not found (looked at {audio})")
            items.append(AudioItem(audio, label, speaker))
    if not items:
        raise DataError(p, "the manifest lists no clips")
    return items


def write_manifest(csv_path: str | Path, items: Iterable[AudioItem]) -> None:
    """Write ``path,label,speaker`` rows (paths relative to the CSV's folder when below it), atomically."""
    p = Path(csv_path)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["path", "label", "speaker"])
    for it in items:
        try:
            rel = Path(it.path).relative_to(p.parent).as_posix()
        except ValueError:
            rel = str(it.path)
        w.writerow([rel, it.label or "", it.speaker or ""])
    atomic_write_bytes(p, buf.getvalue().encode("utf-8"))
