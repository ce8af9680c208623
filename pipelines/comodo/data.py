"""Egocentric recordings for the video-to-IMU stages: the manifest, the split by subject, aligned IMU windows.

A dataset of kind ``egocentric`` (:class:`pipelines.datasets.EgocentricDatasetSpec`) is a
``labels.csv`` with one row per recording: ``recording`` (the IMU file, CSV or NPY, relative to
the root), ``label`` (the activity), optional ``subject`` (without it every recording is its own
subject) and optional ``video`` (the MP4; distillation needs it, evaluation does not). The
synthetic generator (:mod:`modalities.synthetic.egocentric`) writes this layout; a user's own
labelled IMU recordings at any rate and unit convention evaluate the same way.

Clips and windows share one clock: window ``k`` of a recording covers ``[k w, (k + 1) w)`` seconds
(``w`` = 5 s by default) of both the video and the IMU, so a teacher embedding and an IMU window
pair up by (recording, start).
"""

from __future__ import annotations

import csv
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from modalities.errors import DataError, require_file

log = logging.getLogger("edgedistill.comodo")


@dataclass(frozen=True)
class Recording:
    name: str  # the manifest's ``recording`` field (the IMU file relative to the root)
    imu: Path
    video: Path | None
    label: str
    subject: str


def read_recordings(root: Path, manifest: str = "labels.csv") -> list[Recording]:
    """Every row of ``<root>/<manifest>``; a DataError names the file and row of a malformed one."""
    root = Path(root)
    path = require_file(root / manifest, "recordings manifest")
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        columns = reader.fieldnames or []
        missing = [c for c in ("recording", "label") if c not in columns]
        if missing:
            raise DataError(path, f"row 1 (header): missing column(s) {missing}; found {columns}; "
                                  "expected recording,label[,subject][,video]")
        out, seen = [], set()
        for row_no, row in enumerate(reader, start=2):
            name, label = (row.get("recording") or "").strip(), (row.get("label") or "").strip()
            if not name or not label:
                raise DataError(path, f"row {row_no}: empty recording or label")
            if name in seen:
                raise DataError(path, f"row {row_no}: recording {name!r} is listed twice")
            seen.add(name)
            video = (row.get("video") or "").strip()
            out.append(Recording(name, root / name, root / video if video else None, label,
                                 (row.get("subject") or "").strip() or name))
    if not out:
        raise DataError(path, "lists no recording")
    return out


def split_by_subject(recordings: list[Recording], test_subjects: list[str] | None,
                     holdout_subjects: int, where: Path) -> tuple[list[Recording], list[Recording]]:
    """(train, test) recordings: ``test_subjects`` or else the last ``holdout_subjects`` subjects (sorted)."""
    subjects = sorted({r.subject for r in recordings})
    if test_subjects is not None:
        unknown = sorted(set(test_subjects) - set(subjects))
        if unknown:
            raise DataError(where, f"test_subjects {unknown} do not occur; subjects are {subjects[:10]}")
        held = set(test_subjects)
    else:
        if holdout_subjects >= len(subjects):
            raise DataError(where, f"holdout_subjects={holdout_subjects} leaves no training subject "
                                   f"({len(subjects)} subjects)")
        held = set(subjects[len(subjects) - holdout_subjects:])
    train = [r for r in recordings if r.subject not in held]
    test = [r for r in recordings if r.subject in held]
    unseen = sorted({r.label for r in test} - {r.label for r in train})
    if unseen:
        log.warning("%s: activities %s occur only for the held-out subjects: they cannot be learnt", where, unseen)
    return train, test


def dataset_recordings(root: Path, spec) -> tuple[list[Recording], list[Recording]]:
    """(train, test) recordings of an ``egocentric`` dataset spec at ``root``."""
    recordings = read_recordings(root, spec.manifest)
    return split_by_subject(recordings, spec.test_subjects, spec.holdout_subjects, Path(root) / spec.manifest)


def imu_columns(spec):
    """The dataset's :class:`modalities.imu.io.ImuColumns` (its ``imu`` field)."""
    from modalities.imu.io import ImuColumns  # noqa: PLC0415

    return ImuColumns.from_dict(dict(spec.imu), "datasets.<egocentric>.imu")


def clip_key(name: str, start_s: float) -> str:
    """The pairing key of a clip / window: recording and start (ms)."""
    return f"{name}@{int(round(start_s * 1000))}"


@dataclass
class WindowSet:
    """Raw (un-normalised) IMU windows of several recordings with where they came from."""

    windows: np.ndarray  # (n, 6, L) float32, m/s^2 and rad/s
    starts: np.ndarray  # (n,) seconds
    recording: np.ndarray  # (n,) int index into the recordings list
    skipped_recordings: list[str]  # "<file>: <problem>"
    skipped_windows: int  # windows over a gap longer than max_gap_s


def read_windows(recordings: list[Recording], imu_spec, starts: dict[str, list[float]] | None = None) -> WindowSet:
    """Raw windows of ``recordings`` on ``imu_spec``'s grid (:class:`modalities.imu.spec.ImuWindowSpec`).

    ``starts``: per recording name, the window starts to take (the teacher's clips); None: every
    window inside the recording. A recording that cannot be read is a counted skip (logged with
    the reader's message); a window over a gap is a counted skip too.
    """
    from modalities.imu.io import read_imu, resample, window_starts, windows  # noqa: PLC0415

    out_w, out_s, out_r, skipped, bad = [], [], [], [], 0
    L = imu_spec.window_samples
    for i, rec in enumerate(recordings):
        try:
            res = resample(read_imu(rec.imu, imu_spec.columns), imu_spec.rate_hz, imu_spec.max_gap_s)
        except (DataError, OSError) as err:
            log.warning("skipping recording %s: %s", rec.name, err)
            skipped.append(str(err))
            continue
        wanted = np.asarray(starts.get(rec.name, []) if starts is not None else window_starts(res, imu_spec.window_s),
                            np.float64)
        if starts is not None:
            inside = set(np.round(window_starts(res, imu_spec.window_s) * 1000).astype(np.int64).tolist())
            keep = np.array([int(round(s * 1000)) in inside for s in wanted], bool)
            bad += int((~keep).sum())
            wanted = wanted[keep]
        if len(wanted) == 0:
            continue
        w, ok = windows(res, wanted, L)
        bad += int((~ok).sum())
        out_w.append(w[ok])
        out_s.append(wanted[ok])
        out_r.append(np.full(int(ok.sum()), i, np.int64))
    if not out_w:
        return WindowSet(np.zeros((0, 6, L), np.float32), np.zeros(0), np.zeros(0, np.int64), skipped, bad)
    return WindowSet(np.concatenate(out_w).astype(np.float32), np.concatenate(out_s), np.concatenate(out_r),
                     skipped, bad)
