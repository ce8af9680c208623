"""Evaluation task of IMU-window students (COMODO, InfoNCE): activity recognition on unseen subjects.

Labelled data: an ``egocentric`` dataset's ``labels.csv`` (any folder of IMU CSV/NPY files at any
rate and either unit convention, with ``recording,label[,subject]``): the training subjects'
windows give the labels (the few-label subsets are drawn from them), the held-out subjects'
windows the metric, top-1 accuracy (%) of 5 s windows (top-3 reported beside it). Inputs are
exactly the robot runtime's (:meth:`modalities.imu.spec.ImuWindowSpec.prepare` with the student
record's spec). Features: the encoder's pooled embedding, BatchNorm recalibrated on the training
windows for both inits. Protocols: the generic linear probe and SVM (StandardScaler + RBF SVM,
DESIGN 5.2), and LP-FT fine-tuning on augmented windows; the fine-tuned distilled model is saved
with a deploy sidecar (task ``imu_activity``, :mod:`deploy.tasks.imu_activity`).

A recording that cannot be read and a window over an IMU gap are counted skips.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from modalities.fileio import atomic_write_json

from ..comodo.data import dataset_recordings, imu_columns, read_windows
from .clip_classification import PreparedStudent, accuracy, recalibrate_batchnorm
from .config import EvaluateConfig, segmenter_name


class WindowClassificationTask:
    """Activity recognition of an ``egocentric`` dataset's IMU windows; see the module docstring."""

    metric = "accuracy"
    metric_label = "top-1 accuracy"
    sample_noun = "window"
    confusion_figures = True
    top_k = 3
    description = "Activity recognition (top-1 accuracy of 5 s IMU windows) on the held-out subjects"

    def __init__(self, ctx, cfg: EvaluateConfig):
        if getattr(ctx.dataset, "kind", None) != "egocentric":
            raise ValueError(f"IMU-window students are evaluated on an egocentric dataset, not {ctx.dataset.kind!r}")
        self.root = Path(ctx.inputs["dataset"])
        self.dataset = ctx.dataset
        self.train_recs, self.test_recs = dataset_recordings(self.root, ctx.dataset)
        self.class_names = sorted({r.label for r in self.train_recs})
        self.num_classes = len(self.class_names)
        self.cfg, self.seed = cfg, ctx.seed
        self._raw: dict[str, tuple] = {}
        self.skipped = 0  # unreadable recordings + windows over gaps

    def score(self, conf: np.ndarray) -> float:
        return accuracy(conf)

    def _load(self, spec):
        """(train WindowSet, train labels, test WindowSet, test labels), read once per grid (rate, window, gaps)."""
        key = str({k: v for k, v in spec.to_dict().items() if k not in ("mean", "std")})
        if key not in self._raw:
            out = []
            for recs in (self.train_recs, self.test_recs):
                ws = read_windows(recs, spec)
                self.skipped += len(ws.skipped_recordings) + ws.skipped_windows
                known = np.array([recs[r].label in self.class_names for r in ws.recording], bool)
                if not known.all():  # an activity only the held-out subjects do: not learnable, left out
                    self.skipped += int((~known).sum())
                    ws.windows, ws.starts, ws.recording = ws.windows[known], ws.starts[known], ws.recording[known]
                if len(ws.windows) == 0:
                    raise ValueError(f"{self.root}: no readable IMU window in the "
                                     f"{'training' if recs is self.train_recs else 'held-out'} subjects' recordings")
                labels = torch.tensor([self.class_names.index(recs[r].label) for r in ws.recording])
                out += [ws, labels]
            self._raw = {key: tuple(out)}
        return self._raw[key]

    def student(self, record: dict, stage_dir: Path) -> "PreparedWindowStudent":
        from modalities.imu.spec import ImuWindowSpec  # noqa: PLC0415
        from modalities.imu.students import build_imu_student  # noqa: PLC0415

        spec = ImuWindowSpec.from_dict(record["input"], f"{stage_dir}/student.json input")
        spec = ImuWindowSpec.from_dict({**spec.to_dict(), "columns": imu_columns(self.dataset).to_dict()},
                                       "dataset imu columns")
        tr, ytr, te, yte = self._load(spec)
        self._sizes = (len(tr.windows), len(te.windows))
        xtr, xte = torch.from_numpy(spec.normalize(tr.windows)), torch.from_numpy(spec.normalize(te.windows))
        nets = {}
        for init in ("distilled", "random"):
            torch.manual_seed(self.seed)
            net = build_imu_student(record["kind"], record["kwargs"])
            if init == "distilled":
                net.load_state_dict(load_file(str(stage_dir / record["weights"])))
            recalibrate_batchnorm(net, xtr, 256)
            nets[init] = net
        return PreparedWindowStudent(self, record, spec, nets, (tr, ytr, xtr), (te, yte, xte))

    @property
    def num_train(self) -> int:
        return next(iter(self._raw.values()))[0].windows.shape[0] if self._raw else 0

    @property
    def test(self) -> list:
        return list(range(next(iter(self._raw.values()))[2].windows.shape[0])) if self._raw else []

    def train_tokens(self, idx) -> list[str]:
        ws = next(iter(self._raw.values()))[0]
        return [f"{self.train_recs[ws.recording[i]].name}@{ws.starts[i]:g}s" for i in idx]


class PreparedWindowStudent(PreparedStudent):
    def classifier(self, student: torch.nn.Module):
        from modalities.imu.students import ImuClassifier  # noqa: PLC0415

        return ImuClassifier(student, self.task.num_classes)

    def views(self, pick: np.ndarray, rng: np.random.Generator) -> torch.Tensor:
        from modalities.imu.augment import ImuAugmentParams, augment  # noqa: PLC0415

        raw, params = self.train[0].windows, ImuAugmentParams()
        return torch.from_numpy(self.spec.normalize(np.stack([augment(raw[i], rng, params) for i in pick])))

    def save(self, folder: Path, stage: str, model, fraction: float, metric: float, idx) -> Path:
        """``<stage>_<pct>pct.safetensors`` (ImuClassifier) and its deploy sidecar (task ``imu_activity``)."""
        t = self.task
        name = segmenter_name(stage, fraction)
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / f".{name}.safetensors.tmp"
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp))
        tmp.replace(folder / f"{name}.safetensors")
        ws_train = self.train[0]

        def sample(rec) -> dict:
            return {"token": rec.name, "imu": str(Path(rec.imu).resolve()), "label": rec.label}

        calibration = sorted({int(ws_train.recording[i]) for i in idx})
        atomic_write_json(folder / f"{name}.json", {
            "format": 2, "task": "imu_activity", "distill_stage": stage, "student_record": self.record,
            "label_fraction": fraction, "student": self.record["kind"], "student_kwargs": self.record["kwargs"],
            "num_classes": t.num_classes, "classes": list(t.class_names),
            "metric_heldout": {"name": "accuracy", "value": metric}, "weights": f"{name}.safetensors",
            "state_dict_layout": f"student.* = {self.record['kind']}, classifier.* = nn.Linear(feature_dim, num_classes)",
            "input": self.spec.to_dict(),
            "calibration_samples": [sample(t.train_recs[r]) for r in calibration],
            "heldout_samples": [sample(t.test_recs[r]) for r in sorted(set(self.test[0].recording.tolist()))],
        })
        return folder / f"{name}.safetensors"
