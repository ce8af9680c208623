"""Deploy adapter ``imu_activity``: an IMU recording -> the activity of every 5 s window.

Runtime path (numpy only; the input contract is :class:`modalities.imu.spec.ImuWindowSpec`, read
from ``metadata.json`` ``task.input``, the object training and evaluation used, with the
training windows' per-channel normalisation)::

    IMU file (.csv with the spec's column names and units, or .npy (N, 7))
      -> modalities.imu.io.read_imu: SI units, duplicates dropped (errors name the file, row, column)
      -> resample to rate_hz (linear; grid samples inside a gap > max_gap_s invalid)
      -> non-overlapping windows k * window_s inside the recording; a window touching a gap is
         skipped (counted and listed in the result)
      -> (w - mean[c]) / std[c] per channel
      -> feeds {"imu": (n, 6, L)} for the n valid windows  [engine, batch 1: one window at a time]
      -> {"logits": (n, K)} -> softmax per window
      -> <stem>.activity.json (per window: start_s, end_s, top-k activities with scores; skipped
         windows) and <stem>.activity.csv (start_s,end_s,label,score: the top activity per window)

The windows follow COMODO (Chen et al. 2025, "COMODO: Cross-Modal Video-to-IMU Distillation for
Efficient Egocentric Human Activity Recognition", https://github.com/Breezelled/COMODO): 6 channels
(acc xyz, gyro xyz), 200 Hz, 5 s windows aligned with the video clips the teacher saw (window k
covers ``[k * window_s, (k + 1) * window_s)`` on the recording clock). The deployed network is the
fine-tuned :class:`modalities.imu.students.ImuClassifier` (IMU student + linear classifier), exported
as is at batch 1; a recording's windows are run one engine batch at a time
(:func:`deploy.runtime.run_batches`).
Metric: window accuracy (%) over the bundle's held-out recordings (every window of a recording
carries its label), with the confusion matrix (rows = label, columns = prediction).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from modalities.errors import DataError
from modalities.fileio import atomic_write_json, atomic_write_text
from modalities.imu.io import ImuRecording, read_imu, resample, window_starts, windows
from modalities.imu.spec import ImuWindowSpec

from .base import Feeds
from .classification import DEFAULT_TOP_K, ClassificationAdapter, load_classifier, softmax, write_labelled_samples

log = logging.getLogger("edgedistill.deploy")

KIND = "imu_activity"
INPUT_NAME = "imu"
OUTPUT_NAME = "logits"
RESULT_SUFFIX = ".activity.json"
CSV_SUFFIX = ".activity.csv"
CSV_HEADER = "start_s,end_s,label,score"
DEPLOYED_GRAPH = ("student (IMU encoder: Conv1d stages or patch transformer -> mean over time) "
                  "-> Linear(classifier) -> window logits")


@dataclass(frozen=True)
class ActivityWindows:
    """The result of one recording.

    Attributes:
        probs: (n, K) float32 class probabilities of the n classified windows.
        starts_s: (n,) float64 window starts (s, recording clock); window i covers [start, start + window_s).
        window_s: window length (s).
        skipped_s: (m,) float64 starts of the windows skipped because they touch a sensor gap.
    """

    probs: np.ndarray
    starts_s: np.ndarray
    window_s: float
    skipped_s: np.ndarray

    def majority(self) -> tuple[int, int]:
        """(class index, number of windows) of the most frequent top-1 activity (ties: lower index)."""
        counts = np.bincount(self.probs.argmax(1), minlength=self.probs.shape[1])
        return int(counts.argmax()), int(counts.max())


def recording_windows(spec: ImuWindowSpec, rec: ImuRecording) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(normalised (n, 6, L) float32, starts_s (n,), skipped starts_s (m,)) of the valid windows of a recording.

    The steps of :meth:`ImuWindowSpec.prepare` after reading (resample, window, normalise), on a
    recording already in memory. DataError naming the file when no window is left to classify.
    """
    res = resample(rec, spec.rate_hz, spec.max_gap_s)
    starts = window_starts(res, spec.window_s)
    w, ok = windows(res, starts, spec.window_samples)
    if not len(starts):
        raise DataError(rec.path, f"the recording covers {rec.t[0]:.3f}-{rec.t[-1]:.3f} s ({rec.duration_s:.3f} s), "
                        f"shorter than one {spec.window_s:g} s window ({spec.window_samples} samples at "
                        f"{spec.rate_hz:g} Hz, windows start at k * {spec.window_s:g} s): nothing to classify")
    if not ok.any():
        raise DataError(rec.path, f"all {len(starts)} {spec.window_s:g} s window(s) touch a sensor gap longer than "
                        f"max_gap_s {spec.max_gap_s:g} s: nothing to classify")
    return spec.normalize(w[ok]), starts[ok], starts[~ok]


def activity_paths(out_dir: Path, source: Path) -> tuple[Path, Path]:
    """``out_dir/<stem>.activity.json`` and ``.activity.csv`` of an IMU file (``imu.csv`` -> ``imu.activity.json``)."""
    stem = Path(source).stem
    return Path(out_dir) / f"{stem}{RESULT_SUFFIX}", Path(out_dir) / f"{stem}{CSV_SUFFIX}"


class ImuActivity(ClassificationAdapter):
    """Activity recognition per window of an IMU recording through an IMU student + linear classifier.

    The metric is window accuracy: each window of a held-out recording carries the recording's label.
    """

    kind = KIND
    sample_noun = "window"  # bench times one window; a held-out sample (one recording) holds several
    points_noun = "windows"
    spec_class = ImuWindowSpec

    def read(self, path: Path) -> ImuRecording:
        """The recording in SI units (columns and units from the spec); DataError / MissingDataError naming the file."""
        return read_imu(Path(path), self.spec.columns)

    def preprocess(self, raw: ImuRecording) -> tuple[Feeds, tuple[np.ndarray, np.ndarray]]:
        x, starts, skipped = recording_windows(self.spec, raw)
        if len(skipped):
            log.info("%s: %d of %d windows skipped (sensor gap > %g s)", raw.path.name, len(skipped),
                     len(skipped) + len(starts), self.spec.max_gap_s)
        return {self.input_name: x}, (starts, skipped)

    def class_probs(self, result: ActivityWindows) -> np.ndarray:
        return result.probs

    def postprocess(self, outputs: Feeds, state: tuple[np.ndarray, np.ndarray]) -> ActivityWindows:
        starts, skipped = state
        logits = outputs[self.output_name]
        if logits.shape != (len(starts), self.num_classes):
            raise ValueError(f"output '{self.output_name}': expected ({len(starts)}, {self.num_classes}) for "
                             f"{len(starts)} windows, got {logits.shape}")
        return ActivityWindows(softmax(logits), starts, float(self.spec.window_s), skipped)

    def bench_input(self, raw: ImuRecording) -> ImuRecording:
        """The recording cut to its first valid window (the recorded samples around it, so the resampled window
        is the same): ``edgedistill bench`` then times resampling + normalisation + engine of one 5 s window."""
        _, starts, _ = recording_windows(self.spec, raw)
        span = (self.spec.window_samples - 1) / self.spec.rate_hz
        i0 = max(0, int(np.searchsorted(raw.t, starts[0], side="right")) - 1)
        i1 = min(len(raw.t) - 1, int(np.searchsorted(raw.t, starts[0] + span, side="left")))
        cut = replace(raw, t=raw.t[i0:i1 + 1], data=raw.data[i0:i1 + 1])
        try:
            if len(recording_windows(self.spec, cut)[1]) == 1:
                return cut
        except DataError:
            pass
        log.warning("%s: could not cut one window out of the recording; benchmarking all of it", raw.path)
        return raw

    def write(self, result: ActivityWindows, source: Path, out_dir: Path | None) -> Path:
        """Write ``<stem>.activity.json`` and ``<stem>.activity.csv`` (atomically); returns the JSON's path."""
        source = Path(source)
        json_path, csv_path = activity_paths(Path(out_dir) if out_dir else source.parent, source)
        w = result.window_s
        rows = [{"start_s": float(s), "end_s": float(s + w), "top_k": self.top(p)}
                for s, p in zip(result.starts_s, result.probs, strict=True)]
        best, count = result.majority()
        atomic_write_json(json_path, {
            "file": str(source), "model": self.meta["model"]["name"], "window_s": w, "k": self.k,
            "windows": rows, "skipped_windows": [{"start_s": float(s), "end_s": float(s + w), "reason": "sensor gap"}
                                                 for s in result.skipped_s],
            "majority": {"label": self.classes[best], "windows": count, "of": len(rows)}})
        atomic_write_text(csv_path, "\n".join([CSV_HEADER] + [
            f"{r['start_s']:.6f},{r['end_s']:.6f},{r['top_k'][0]['label']},{r['top_k'][0]['score']:.6f}"
            for r in rows]) + "\n")
        log.info("%s: %d windows, mostly %s -> %s, %s", source.name, len(rows), self.classes[best], json_path,
                 csv_path.name)
        return json_path

    def summary(self, result: ActivityWindows, source: Path) -> str:
        n, skipped = len(result.starts_s), len(result.skipped_s)
        best, count = result.majority()
        gaps = f" ({skipped} skipped: sensor gaps)" if skipped else ""
        return (f"{Path(source).name}: {n} windows of {result.window_s:g} s{gaps}, mostly {self.classes[best]} "
                f"({count}/{n})")

# ----------------------------------------------------------------------------- export side


def task_metadata(sidecar: dict) -> dict:
    """``metadata.json`` ``task`` section of an IMU activity model's sidecar."""
    spec = ImuWindowSpec.from_dict(sidecar["input"], "sidecar input")
    return {"kind": KIND, "input": spec.to_dict(), "classes": list(sidecar["classes"]),
            "top_k": min(DEFAULT_TOP_K, int(sidecar["num_classes"])),
            "preprocessing": "read_imu (spec columns and units -> m/s^2, rad/s) -> resample to rate_hz (linear; "
                             "gaps > max_gap_s invalid) -> non-overlapping window_s windows at k * window_s, those "
                             "touching a gap skipped -> (w - mean[c]) / std[c]; windows run one at a time (batch 1)",
            "postprocessing": "softmax over each window's logits -> probability per activity; the top_k activities "
                              "per window; <stem>.activity.json + <stem>.activity.csv"}


def describe_input(task: dict) -> str:
    """One line of report.md about the input contract."""
    s = ImuWindowSpec.from_dict(task["input"], "metadata.json task.input")
    c = s.columns
    return (f"input spec `{s.kind}` v{s.version}: IMU columns {list(c.names)} ({c.time_unit}, {c.acc_unit}, "
            f"{c.gyro_unit}) -> 6 channels (acc m/s^2, gyro rad/s) resampled to {s.rate_hz:g} Hz, non-overlapping "
            f"{s.window_s:g} s windows ({s.window_samples} samples), windows with a gap > {s.max_gap_s:g} s skipped; "
            f"normalisation mean {[round(v, 4) for v in s.mean]}, std {[round(v, 4) for v in s.std]}; "
            f"output: top-{task.get('top_k', DEFAULT_TOP_K)} activities per window")


def io_metadata(sidecar: dict) -> tuple[list[dict], list[dict]]:
    """Named input and output specs (batch 1 = one window, static) of the deployed graph."""
    spec = ImuWindowSpec.from_dict(sidecar["input"], "sidecar input")
    K = int(sidecar["num_classes"])
    return ([{"name": INPUT_NAME, "shape": [1, *spec.shape], "dtype": "float32",
              "layout": "NCL (window, channel ax ay az gx gy gz, sample)"}],
            [{"name": OUTPUT_NAME, "shape": [1, K], "dtype": "float32", "layout": "NC (window, activity)"}])


def write_samples(folder: Path, sidecar: dict, split: str, max_samples: int | None = None) -> list[dict]:
    """Copy a sidecar's ``<split>_samples`` (IMU file + label) into ``folder/data/<split>/``
    (:func:`deploy.tasks.classification.write_labelled_samples`); a recording without one valid window fails
    the export there, named."""
    spec = ImuWindowSpec.from_dict(sidecar["input"], "sidecar input")
    return write_labelled_samples(folder, sidecar, split, max_samples, file_key="imu", file_noun="IMU",
                                  check=lambda src: recording_windows(spec, read_imu(src, spec.columns)))


def torch_module(weights: Path, meta: dict):
    """The deployed graph (:class:`ImuClassifier`, eval mode) from the weights stored in a bundle."""
    from modalities.imu.students import ImuClassifier, build_imu_student  # noqa: PLC0415

    return load_classifier(weights, meta, ImuClassifier, build_imu_student)
