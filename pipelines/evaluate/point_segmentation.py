"""Evaluation task of point-feature students (SLidR's lidar students): per-point semantic segmentation.

Labelled data: the dataset's lidarseg scans mapped to the 16 benchmark classes, the
training split for labels, the held-out scenes for the metric (point-wise mIoU). Features:
the student's pre-head per-point features (:mod:`pipelines.evaluate.probe`), with BatchNorm
recalibrated on the training scans for both inits. Fine-tuning: :func:`probe.finetune`
(LP-FT, Lovasz). The fine-tuned distilled model is saved with a deploy sidecar
(task ``point_segmentation``, the adapter :mod:`deploy.tasks.point_segmentation`).
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from modalities.fileio import atomic_write_json
from modalities.lidar.labels import CLASS_NAMES
from modalities.segmentation_metrics import mean_iou
from modalities.lidar.sensors import load_sensor
from modalities.lidar.students import build_lidar_student

from ..slidr.data import ScanRef, list_scans, split_by_scene
from .config import EvaluateConfig, segmenter_name
from .probe import StudentSpec, concat_features, extract_features, finetune, load_labeled_scans, recalibrate_student_batchnorm
from .protocols import fit_linear_probe


class PointSegmentationTask:
    """Per-point segmentation of a dataset's lidarseg scans; see the module docstring."""

    metric = "miou"
    metric_label = "mIoU"
    sample_noun = "scan"
    class_names = CLASS_NAMES

    @staticmethod
    def score(conf) -> float:
        """Point-wise mIoU (%) of a confusion matrix."""
        return mean_iou(conf)

    def __init__(self, ctx, cfg: EvaluateConfig):
        scans = list_scans(ctx.inputs["dataset"], ctx.dataset.version, None)
        self.train_refs, self.test_refs = split_by_scene(scans, ctx.dataset.holdout_scenes)
        if not self.test_refs:
            raise ValueError("evaluation needs held-out scenes: set the dataset's holdout_scenes >= 1")
        if cfg.max_test_scans:
            self.test_refs = self.test_refs[: cfg.max_test_scans]
        self.train, self.test = load_labeled_scans(self.train_refs), load_labeled_scans(self.test_refs)
        self.sensor = load_sensor(ctx.dataset.lidar_sensor)
        self.cfg, self.seed = cfg, ctx.seed
        self.num_classes = len(CLASS_NAMES)

    @property
    def num_train(self) -> int:
        return len(self.train)

    def train_tokens(self, idx) -> list[str]:
        return [self.train_refs[i].token for i in idx]

    def student(self, record: dict, stage_dir: Path) -> "PreparedStudent":
        """Both inits of a record's student, prepared (features extracted) once for every protocol run."""
        spec = StudentSpec.from_record(record, self.sensor, f"{stage_dir}/student.json")
        prepared = {init: _prepared_student(record, stage_dir, init, self.seed, self.train, self.test, spec,
                                            self.cfg.batch_scans) for init in ("distilled", "random")}
        torch.manual_seed(self.seed)
        fresh = build_lidar_student(record["kind"], record["kwargs"])  # fine-tune weight-scale reference
        return PreparedStudent(self, record, spec, prepared, fresh)


class PreparedStudent:
    def __init__(self, task: PointSegmentationTask, record, spec, prepared, fresh):
        self.task, self.record, self.spec, self.prepared, self.fresh = task, record, spec, prepared, fresh

    def labeled_features(self, init: str, idx) -> tuple[torch.Tensor, torch.Tensor]:
        return concat_features([self.prepared[init][1][i] for i in idx])

    def test_features(self, init: str) -> tuple[torch.Tensor, torch.Tensor]:
        return self.prepared[init][2]

    def finetune(self, init: str, idx, seed: int):
        """(confusion on the held-out scans, fine-tuned model) from ``init`` with labels on the scans ``idx``."""
        t, cfg = self.task, self.task.cfg
        head = fit_linear_probe(*self.labeled_features(init, idx), t.num_classes, cfg.probe_steps, cfg.probe_lr, seed)
        conf, _, model = finetune(
            self.prepared[init][0], [t.train[i] for i in idx], t.test, self.spec, t.num_classes,
            cfg.finetune_steps, cfg.finetune_lr, cfg.batch_scans, seed, cfg.lovasz_weight,
            init_reference=self.fresh, head=head, backbone_lr_scale=cfg.backbone_lr_scale,
            warmup_steps=int(cfg.warmup_fraction * cfg.finetune_steps))
        return conf, model

    def save(self, folder: Path, stage: str, model, fraction: float, metric: float, idx) -> Path:
        """The deployable fine-tuned model and its sidecar (see :func:`save_segmenter`)."""
        t = self.task
        return save_segmenter(folder, stage, self.record, model, fraction, metric,
                              [t.train_refs[i] for i in idx], t.test_refs)


def save_segmenter(folder: Path, stage: str, record: dict, model, fraction: float, miou: float,
                   calibration: list[ScanRef], heldout: list[ScanRef]) -> Path:
    """``<stage>_<pct>pct.safetensors`` (student + classifier) and a JSON sidecar that rebuilds it.

    The sidecar is everything the deploy stage needs without importing ``pipelines``: the
    task kind, the student class and constructor arguments, the classes, the input spec,
    and the real scans to calibrate INT8 on (labeled training scans) and to measure
    accuracy on (held-out scenes).
    """
    name = segmenter_name(stage, fraction)
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".{name}.safetensors.tmp"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp))
    tmp.replace(folder / f"{name}.safetensors")
    atomic_write_json(folder / f"{name}.json", {
        "format": 2, "task": "point_segmentation",
        "distill_stage": stage, "student_record": record, "label_fraction": fraction,
        "student": record["kind"], "student_kwargs": record["kwargs"], "num_classes": len(CLASS_NAMES),
        "classes": list(CLASS_NAMES), "miou_heldout": miou, "weights": f"{name}.safetensors",
        "state_dict_layout": "student.* = the student, classifier.* = nn.Linear(student.feature_dim, num_classes)",
        "input": record["input"], "label_mapping": "nuScenes lidarseg general index -> 16 benchmark classes",
        "calibration_scans": [_scan_files(s) for s in calibration],
        "heldout_scans": [_scan_files(s) for s in heldout],
    })
    return folder / f"{name}.safetensors"


def _scan_files(scan: ScanRef) -> dict:
    return {"token": scan.token, "lidar": str(Path(scan.lidar_path).resolve()),
            "lidarseg": str(Path(scan.lidarseg_path).resolve()) if scan.lidarseg_path else None}



def _prepared_student(record: dict, stage_dir: Path, init: str, seed: int, train_scans, test_scans, spec, batch: int):
    """(student, per-scan train features, test features) with BatchNorm recalibrated on the training scans.

    The recalibration uses no labels and runs for both inits: without it the random init is
    probed with untrained running statistics, which measures nothing about its features.
    """
    torch.manual_seed(seed)
    student = build_lidar_student(record["kind"], record["kwargs"])
    if init == "distilled":
        student.load_state_dict(load_file(str(stage_dir / record["weights"])))
    recalibrate_student_batchnorm(student, train_scans, spec, batch)
    return student, extract_features(student, train_scans, spec, batch), concat_features(
        extract_features(student, test_scans, spec, batch))


