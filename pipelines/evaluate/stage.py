"""Stage ``evaluate``: few-label semantic segmentation of every distilled student vs random init.

For each training stage named in ``students`` (read through its student record,
``student.json``), each label fraction and each protocol, the same network is evaluated
from the distilled weights and from random initialisation in paired runs (the same
labelled subset and seed for both; ``repeats`` / ``finetune_repeats`` runs). Every
comparison is a record with the mean gain and its 95% interval
(:func:`pipelines.evaluate.protocols.paired_comparison`) in ``results.json``, in the
stage's metrics (``report.json``) and in the report, with per-class IoU.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from modalities.fileio import atomic_write_json
from modalities.lidar.labels import CLASS_NAMES
from modalities.lidar.sensors import load_sensor
from modalities.lidar.students import build_lidar_student
from modalities.segmentation_metrics import iou_per_class, mean_iou

from ..runner import StageContext, StageResult
from ..slidr.data import ScanRef, list_scans, split_by_scene
from ..student_record import read_student_record
from .config import EvaluateConfig, segmenter_name
from .probe import (StudentSpec, concat_features, extract_features, finetune, load_labeled_scans,
                    recalibrate_student_batchnorm)
from .protocols import fit_linear_probe, linear_probe, paired_comparison


def save_segmenter(folder: Path, stage: str, record: dict, model, fraction: float, miou: float,
                   sensor: dict, calibration: list[ScanRef], heldout: list[ScanRef]) -> Path:
    """``<stage>_<pct>pct.safetensors`` (student + classifier) and a JSON sidecar that rebuilds it.

    The sidecar is everything the deploy stage needs without importing ``pipelines``: the
    student class and constructor arguments, the classes, the pre-processing parameters,
    and the real scans to calibrate INT8 on (labeled training scans) and to measure
    accuracy on (held-out scenes).
    """
    name = segmenter_name(stage, fraction)
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".{name}.safetensors.tmp"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp))
    tmp.replace(folder / f"{name}.safetensors")
    atomic_write_json(folder / f"{name}.json", {
        "distill_stage": stage, "student_record": record, "label_fraction": fraction,
        "student": record["kind"], "student_kwargs": record["kwargs"], "num_classes": len(CLASS_NAMES),
        "classes": list(CLASS_NAMES), "miou_heldout": miou, "weights": f"{name}.safetensors",
        "state_dict_layout": "student.* = the student, classifier.* = nn.Linear(student.feature_dim, num_classes)",
        "preprocessing": {"intensity_scale": record["input"]["intensity_scale"], "sensor": sensor,
                          "voxel_size": record["input"].get("voxel_size"), "point_columns": "x y z intensity ring",
                          "label_mapping": "nuScenes lidarseg general index -> 16 benchmark classes"},
        "calibration_scans": [_scan_files(s) for s in calibration],
        "heldout_scans": [_scan_files(s) for s in heldout],
    })
    return folder / f"{name}.safetensors"


def _scan_files(scan: ScanRef) -> dict:
    return {"token": scan.token, "lidar": str(Path(scan.lidar_path).resolve()),
            "lidarseg": str(Path(scan.lidarseg_path).resolve()) if scan.lidarseg_path else None}


def labeled_subset(n: int, fraction: float, seed: int) -> np.ndarray:
    """Indices of ``max(1, round(fraction * n))`` scans, a seeded choice shared by all runs."""
    k = max(1, int(round(fraction * n)))
    return np.sort(np.random.default_rng(seed).permutation(n)[:k])


INITS = ("distilled", "random")


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


def run_evaluate(ctx: StageContext) -> StageResult:
    cfg: EvaluateConfig = ctx.config  # type: ignore[assignment]
    scans = list_scans(ctx.inputs["dataset"], ctx.dataset.version, None)
    train_refs, test_refs = split_by_scene(scans, ctx.dataset.holdout_scenes)
    if not test_refs:
        raise ValueError("evaluation needs held-out scenes: set the dataset's holdout_scenes >= 1")
    if cfg.max_test_scans:
        test_refs = test_refs[: cfg.max_test_scans]
    train_scans, test_scans = load_labeled_scans(train_refs), load_labeled_scans(test_refs)
    sensor = load_sensor(ctx.dataset.lidar_sensor)
    C = len(CLASS_NAMES)
    runs, comparisons = [], []
    for stage in cfg.students:
        record = read_student_record(ctx.inputs[stage])
        spec = StudentSpec.from_record(record, sensor)
        prepared = {init: _prepared_student(record, ctx.inputs[stage], init, ctx.seed, train_scans, test_scans, spec,
                                            cfg.batch_scans) for init in INITS}
        torch.manual_seed(ctx.seed)
        fresh = build_lidar_student(record["kind"], record["kwargs"])  # fine-tune weight-scale reference
        for fraction in cfg.label_fractions:
            for protocol in cfg.protocols:
                if protocol == "finetune" and fraction not in cfg.finetune_fractions():
                    continue
                repeats = cfg.repeats if protocol == "linear_probe" else cfg.finetune_repeats
                miou = {init: [] for init in INITS}
                conf_sum = {init: np.zeros((C, C), np.int64) for init in INITS}
                for r in range(repeats):
                    seed = ctx.seed * 1000 + r  # one labelled subset and seed per paired run, shared by both inits
                    labeled_idx = labeled_subset(len(train_scans), fraction, seed)
                    for init in INITS:
                        student, train_feats, test_feats = prepared[init]
                        labeled_feats = concat_features([train_feats[i] for i in labeled_idx])
                        ctx.log.info("%s (%s init) %s, %.0f%% labels (%d scans), run %d/%d", stage, init, protocol,
                                     fraction * 100, len(labeled_idx), r + 1, repeats)
                        if protocol == "linear_probe":
                            conf = linear_probe(labeled_feats, test_feats, C, cfg.probe_steps, cfg.probe_lr, seed)
                        else:
                            head = fit_linear_probe(*labeled_feats, C, cfg.probe_steps, cfg.probe_lr, seed)
                            conf, _, model = finetune(
                                student, [train_scans[i] for i in labeled_idx], test_scans, spec, C,
                                cfg.finetune_steps, cfg.finetune_lr, cfg.batch_scans, seed, cfg.lovasz_weight,
                                init_reference=fresh, head=head, backbone_lr_scale=cfg.backbone_lr_scale,
                                warmup_steps=int(cfg.warmup_fraction * cfg.finetune_steps))
                            if init == "distilled" and r == 0:  # the deployable segmentation model (see deploy/)
                                save_segmenter(ctx.stage_dir / "models", stage, record, model, fraction,
                                               mean_iou(conf), sensor.to_dict(),
                                               [train_refs[i] for i in labeled_idx], test_refs)
                        miou[init].append(mean_iou(conf))
                        conf_sum[init] += conf
                        runs.append({"student": stage, "init": init, "protocol": protocol, "label_fraction": fraction,
                                     "run": r, "seed": seed, "labeled_scans": [train_refs[i].token for i in labeled_idx],
                                     "miou": miou[init][-1]})
                comparisons.append({
                    "student": stage, "student_kind": record["kind"], "protocol": protocol, "label_fraction": fraction,
                    "labeled_scans": len(labeled_idx), "test_scans": len(test_scans), "metric": "miou",
                    **paired_comparison(miou["distilled"], miou["random"]),
                    "iou_per_class": {init: _class_iou(conf_sum[init]) for init in INITS},
                })
    atomic_write_json(ctx.stage_dir / "results.json", {"comparisons": comparisons, "runs": runs})
    summary = [{k: v for k, v in c.items() if k != "iou_per_class"} for c in comparisons]
    return StageResult(metrics={"comparisons": summary}, report_md=_report(comparisons, len(test_scans)))


def _class_iou(conf: np.ndarray) -> dict:
    return {n: (None if math.isnan(v) else round(float(v) * 100, 2)) for n, v in zip(CLASS_NAMES, iou_per_class(conf))}


def _report(comparisons: list[dict], test_scans: int) -> str:
    lines = ["| student | protocol | labels | random init mIoU | distilled mIoU | gain [95% CI] | paired runs | gain? |",
             "|---|---|---|---|---|---|---|---|"]
    for c in comparisons:
        ci = "n/a" if c["gain_ci95"] is None else f"[{c['gain_ci95'][0]:+.1f}, {c['gain_ci95'][1]:+.1f}]"
        verdict = ("yes" if c["gain_mean"] > 0 else "no: a loss") if c["claimed"] else "within noise"
        lines.append(f"| {c['student']} ({c['student_kind']}) | {c['protocol']} | {c['label_fraction']:.0%} "
                     f"({c['labeled_scans']} scan{'s' if c['labeled_scans'] > 1 else ''}) | {c['random_mean']:.1f} | {c['distilled_mean']:.1f} | "
                     f"{c['gain_mean']:+.1f} {ci} | {c['n_paired']} | {verdict} |")
    present = [n for n in CLASS_NAMES if any(c["iou_per_class"][i][n] is not None for c in comparisons for i in INITS)]
    lines += ["", "Per-class IoU (%) on the held-out scenes, over all paired runs:", "",
              "| student | init | protocol | labels | " + " | ".join(present) + " |", "|---" * (4 + len(present)) + "|"]
    for c in comparisons:
        for init in INITS:
            iou = c["iou_per_class"][init]
            lines.append(f"| {c['student']} | {init} | {c['protocol']} | {c['label_fraction']:.0%} | "
                         + " | ".join(f"{iou[n]:.1f}" if iou[n] is not None else "-" for n in present) + " |")
    return (f"Point-wise mIoU on the held-out scenes ({test_scans} scans), distilled vs random initialisation. Each "
            "paired run draws its own labelled subset and seed, shared by both inits; a gain is claimed only when its "
            "95% interval excludes 0.\n\n" + "\n".join(lines) + "\n")
