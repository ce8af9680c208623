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
import shutil
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from modalities.errors import DataError
from modalities.fileio import atomic_write_json, atomic_write_text
from modalities.imu.io import ImuRecording, read_imu, resample, window_starts, windows
from modalities.imu.spec import ImuWindowSpec

from .base import Feeds, Sample, TaskAdapter
from .keyword_spotting import KeywordSpotting, file_stem, softmax, top_k

log = logging.getLogger("edgedistill.deploy")

KIND = "imu_activity"
INPUT_NAME = "imu"
OUTPUT_NAME = "logits"
DEFAULT_TOP_K = 3
RESULT_SUFFIX = ".activity.json"
CSV_SUFFIX = ".activity.csv"
CSV_HEADER = "start_s,end_s,label,score"
TARGET_SUFFIX = ".label.json"
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


class ImuActivity(TaskAdapter):
    """Activity recognition per window of an IMU recording through an IMU student + linear classifier."""

    kind = KIND
    sample_noun = "window"  # bench times one window; a held-out sample (one recording) holds several

    def __init__(self, metadata: dict, bundle_dir: Path | None = None):
        super().__init__(metadata, bundle_dir)
        self.spec = ImuWindowSpec.from_dict(metadata["task"]["input"], "metadata.json task.input")
        self.input_name = metadata["inputs"][0]["name"]
        self.output_name = metadata["outputs"][0]["name"]
        self.classes = [str(c) for c in metadata["model"]["classes"]]
        self.num_classes = int(metadata["model"]["num_classes"])
        if len(self.classes) != self.num_classes:
            raise ValueError(f"metadata.json: {len(self.classes)} classes listed for num_classes {self.num_classes}")
        self.k = max(1, min(int(metadata["task"].get("top_k", DEFAULT_TOP_K)), self.num_classes))

    def read(self, path: Path) -> ImuRecording:
        """The recording in SI units (columns and units from the spec); DataError / MissingDataError naming the file."""
        return read_imu(Path(path), self.spec.columns)

    def preprocess(self, raw: ImuRecording) -> tuple[Feeds, tuple[np.ndarray, np.ndarray]]:
        x, starts, skipped = recording_windows(self.spec, raw)
        if len(skipped):
            log.info("%s: %d of %d windows skipped (sensor gap > %g s)", raw.path.name, len(skipped),
                     len(skipped) + len(starts), self.spec.max_gap_s)
        return {self.input_name: x}, (starts, skipped)

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

    def top(self, probs: np.ndarray) -> list[dict]:
        return top_k(probs, self.classes, self.k)

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

    load_target = KeywordSpotting.load_target  # ``<token>.label.json`` -> class index, checked

    def metric(self, run: Callable[[Feeds], Feeds], samples: list[Sample]) -> dict:
        """Window accuracy (%) of ``run`` on ``samples`` (recordings; each window carries its recording's label),
        plus the (K, K) confusion matrix of the windows (rows = label)."""
        K = self.num_classes
        conf = np.zeros((K, K), np.int64)
        for s in samples:
            feeds, state = self.preprocess(self.read(s.path))
            pred = self.postprocess(run(feeds), state).probs.argmax(1)
            np.add.at(conf, (self.load_target(s), pred), 1)
        n = int(conf.sum())
        value = float(100.0 * np.trace(conf) / n) if n else float("nan")
        return {"name": "accuracy", "value": value, "samples": len(samples), "points": n, "points_noun": "windows",
                "confusion": conf.tolist()}


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
    """Copy a sidecar's ``<split>_samples`` (IMU file + label) into ``folder/data/<split>/``.

    Each recording is copied byte for byte (the format the robot reads) to ``<token><suffix>``
    (the token made a safe file name by :func:`file_stem`); its label goes to
    ``<token>.label.json`` (``{"label", "class_index"}``). Missing files, unknown labels,
    repeated tokens and recordings without one valid window raise, naming them.
    """
    refs = sidecar.get(f"{split}_samples")
    if refs is None:
        raise ValueError(f"model sidecar: no '{split}_samples' list")
    refs = refs[:max_samples] if max_samples else refs
    spec = ImuWindowSpec.from_dict(sidecar["input"], "sidecar input")
    classes = [str(c) for c in sidecar["classes"]]
    missing = [ref.get("imu") for ref in refs if not ref.get("imu") or not Path(ref["imu"]).is_file()]
    if missing:
        raise FileNotFoundError(f"IMU files named by the model's sidecar ({split}) are missing: {missing}")
    tokens = [str(ref["token"]) for ref in refs]
    repeated = sorted({t for t in tokens if tokens.count(t) > 1})
    if repeated:
        raise ValueError(f"model sidecar ({split}): sample tokens {repeated} are repeated")
    out = []
    dest = folder / "data" / split
    dest.mkdir(parents=True, exist_ok=True)
    used: set[str] = set()
    for ref, token in zip(refs, tokens, strict=True):
        src = Path(ref["imu"])
        if ref.get("label") not in classes:
            raise ValueError(f"{src}: label {ref.get('label')!r} ({split} sample {token}) is not one of the model's "
                             f"classes {classes}")
        recording_windows(spec, read_imu(src, spec.columns))  # a bad recording fails the export here, named
        stem = file_stem(token, used)
        imu_rel, label_rel = f"data/{split}/{stem}{src.suffix}", f"data/{split}/{stem}{TARGET_SUFFIX}"
        shutil.copyfile(src, folder / imu_rel)
        atomic_write_json(folder / label_rel, {"label": ref["label"], "class_index": classes.index(ref["label"])})
        out.append({"token": token, "input": imu_rel, "target": label_rel})
    return out


def torch_module(weights: Path, meta: dict):
    """The deployed graph (:class:`ImuClassifier`, eval mode) from the weights stored in a bundle."""
    from safetensors.torch import load_file  # noqa: PLC0415

    from modalities.imu.students import ImuClassifier, build_imu_student  # noqa: PLC0415

    weights = Path(weights)
    if not weights.is_file():
        raise FileNotFoundError(f"weights not found: {weights}")
    model = ImuClassifier(build_imu_student(meta["model"]["student"], meta["model"]["student_kwargs"]),
                          int(meta["model"]["num_classes"]))
    try:
        model.load_state_dict(load_file(str(weights)))
    except RuntimeError as e:
        raise ValueError(f"{weights}: not the weights of a {meta['model']['student']} ImuClassifier with "
                         f"{meta['model']['student_kwargs']} ({str(e).splitlines()[0]})") from None
    return model.eval()
