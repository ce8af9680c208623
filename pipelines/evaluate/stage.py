"""Stage ``evaluate``: few-label semantic segmentation of every distilled student vs random init.

For each training stage named in ``students`` (read through its student record,
``student.json``), each label fraction and each protocol, the same network is evaluated
twice: from the distilled weights and from random initialisation (same seed). Point-wise mIoU and per-class IoU on
the held-out scenes go into ``results.json`` and the report.
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
from .probe import StudentSpec, extract_features, finetune, linear_probe, load_labeled_scans


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
    rows = []
    for stage in cfg.students:
        record = read_student_record(ctx.inputs[stage])
        spec = StudentSpec.from_record(record, sensor)
        for init in ("slidr", "random"):
            torch.manual_seed(ctx.seed)
            student = build_lidar_student(record["kind"], record["kwargs"])
            if init == "slidr":
                student.load_state_dict(load_file(str(ctx.inputs[stage] / record["weights"])))
            test_feats = None
            for fraction in cfg.label_fractions:
                labeled_idx = labeled_subset(len(train_scans), fraction, ctx.seed)
                labeled = [train_scans[i] for i in labeled_idx]
                for protocol in cfg.protocols:
                    if protocol == "finetune" and fraction not in cfg.finetune_fractions():
                        continue
                    ctx.log.info("%s %s init, %s, %.0f%% labels (%d scans)", record["kind"], init, protocol,
                                 fraction * 100, len(labeled))
                    if protocol == "linear_probe":
                        if test_feats is None:
                            test_feats = extract_features(student, test_scans, spec, cfg.batch_scans)
                        train_feats = extract_features(student, labeled, spec, cfg.batch_scans)
                        conf = linear_probe(train_feats, test_feats, C, cfg.probe_steps, cfg.probe_lr, ctx.seed)
                    else:
                        torch.manual_seed(ctx.seed)
                        fresh = build_lidar_student(record["kind"], record["kwargs"])  # weight-scale reference
                        conf, _, model = finetune(student, labeled, test_scans, spec, C, cfg.finetune_steps,
                                                  cfg.finetune_lr, cfg.batch_scans, ctx.seed, cfg.lovasz_weight,
                                                  init_reference=fresh)
                        if init == "slidr":  # the deployable segmentation model (see deploy/)
                            save_segmenter(ctx.stage_dir / "models", stage, record, model, fraction, mean_iou(conf),
                                           sensor.to_dict(), [train_refs[i] for i in labeled_idx], test_refs)
                    iou = iou_per_class(conf)
                    rows.append({
                        "student": record["kind"], "init": init, "protocol": protocol, "label_fraction": fraction,
                        "labeled_scans": len(labeled), "test_scans": len(test_scans), "miou": mean_iou(conf),
                        "iou": {n: (None if math.isnan(v) else round(float(v) * 100, 2)) for n, v in zip(CLASS_NAMES, iou)},
                    })
    atomic_write_json(ctx.stage_dir / "results.json", rows)
    metrics, lines = {}, ["| student | protocol | labels | random init mIoU | SLidR mIoU | gain |", "|---|---|---|---|---|---|"]
    for r in rows:
        if r["init"] != "slidr":
            continue
        base = next(b for b in rows if b["init"] == "random" and all(
            b[k] == r[k] for k in ("student", "protocol", "label_fraction")))
        key = f"{r['student']}/{r['protocol']}/{r['label_fraction']:g}"
        metrics[f"{key}/random"] = round(base["miou"], 2)
        metrics[f"{key}/slidr"] = round(r["miou"], 2)
        lines.append(f"| {r['student']} | {r['protocol']} | {r['label_fraction']:.0%} ({r['labeled_scans']} scans) | "
                     f"{base['miou']:.1f} | {r['miou']:.1f} | {r['miou'] - base['miou']:+.1f} |")
    present = [n for n in CLASS_NAMES if any(r["iou"][n] is not None for r in rows)]
    lines += ["", "Per-class IoU (%) on the held-out scenes:", "",
              "| student | init | protocol | labels | " + " | ".join(present) + " |",
              "|---" * (4 + len(present)) + "|"]
    for r in rows:
        lines.append(f"| {r['student']} | {r['init']} | {r['protocol']} | {r['label_fraction']:.0%} | "
                     + " | ".join(f"{r['iou'][n]:.1f}" if r["iou"][n] is not None else "-" for n in present) + " |")
    md = "Point-wise mIoU on held-out scenes, distilled (SLidR) vs random initialisation:\n\n" + "\n".join(lines) + "\n"
    return StageResult(metrics=metrics, report_md=md)
