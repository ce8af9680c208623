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

import copy
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from modalities.fileio import atomic_write_json
from modalities.segmentation_metrics import confusion_matrix

from ..comodo.data import dataset_recordings, imu_columns, read_windows
from .clip_classification import accuracy, features, recalibrate_batchnorm
from .config import EvaluateConfig, segmenter_name
from .protocols import fit_linear_probe, warmup_cosine


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


class PreparedWindowStudent:
    def __init__(self, task: WindowClassificationTask, record, spec, nets, train, test):
        self.task, self.record, self.spec, self.nets = task, record, spec, nets
        self.train, self.test = train, test
        self.feats = {init: (features(n, train[2]), features(n, test[2])) for init, n in nets.items()}

    def labeled_features(self, init: str, idx) -> tuple[torch.Tensor, torch.Tensor]:
        idx = torch.as_tensor(np.asarray(idx))
        return self.feats[init][0][idx], self.train[1][idx]

    def test_features(self, init: str) -> tuple[torch.Tensor, torch.Tensor]:
        return self.feats[init][1], self.test[1]

    def finetune(self, init: str, idx, seed: int):
        """(confusion on the held-out windows, fine-tuned ImuClassifier) from ``init`` with labels on windows ``idx``."""
        from modalities.imu.augment import ImuAugmentParams, augment  # noqa: PLC0415
        from modalities.imu.students import ImuClassifier  # noqa: PLC0415

        t, cfg = self.task, self.task.cfg
        head = fit_linear_probe(*self.labeled_features(init, idx), t.num_classes, cfg.probe_steps, cfg.probe_lr, seed)
        model = ImuClassifier(copy.deepcopy(self.nets[init]), t.num_classes)
        model.classifier.load_state_dict(head.state_dict())
        opt = torch.optim.AdamW([{"params": model.student.parameters(), "lr": cfg.finetune_lr * cfg.backbone_lr_scale},
                                 {"params": model.classifier.parameters(), "lr": cfg.finetune_lr}], weight_decay=1e-2)
        base = [g["lr"] for g in opt.param_groups]
        warmup = int(cfg.warmup_fraction * cfg.finetune_steps)
        rng = np.random.default_rng(seed)
        torch.manual_seed(seed)
        raw, labels, params = self.train[0].windows, self.train[1], ImuAugmentParams()
        idx = np.asarray(idx)
        batch = min(len(idx), 64)
        model.train()
        for step in range(cfg.finetune_steps):
            for g, lr in zip(opt.param_groups, base):
                g["lr"] = lr * warmup_cosine(step, cfg.finetune_steps, warmup)
            pick = rng.choice(idx, size=batch, replace=len(idx) < batch)
            x = torch.from_numpy(self.spec.normalize(np.stack([augment(raw[i], rng, params) for i in pick])))
            loss = F.cross_entropy(model(x), labels[torch.as_tensor(pick)])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        model.eval()
        with torch.no_grad():
            pred = torch.cat([model(self.test[2][i:i + 256]) for i in range(0, len(self.test[2]), 256)]).argmax(1)
        return confusion_matrix(pred.numpy(), self.test[1].numpy(), t.num_classes), model

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
