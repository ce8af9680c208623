"""Stages ``slidr_sparse`` / ``slidr_range``: SLidR distillation of one lidar student on Ray Train.

Outputs: ``student.safetensors`` (the distilled student, head included), ``student.json``
(the student record: everything evaluation and deploy need to rebuild and feed it),
``teacher_head.safetensors``, ``history.json`` (per-epoch loss, throughput and the counted
skips), ``loss_curve.png`` and ``tensorboard/``. Ray's checkpoints live in the hidden
``.ray_results/`` folder; a re-run of an interrupted stage resumes from the newest one.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import torch
import yaml

from modalities.fileio import atomic_write_json, sha256_file
from modalities.lidar.sensors import load_sensor

from ..plots import save_line_plot
from ..ray_train import checkpoint_directory, fit, latest_checkpoint
from ..runner import StageContext, StageResult
from ..student_record import STUDENT_RECORD
from .config import DistillConfig
from ..student_inputs import range_spec_of
from .data import list_scans, split_by_scene
from .model import build_student, student_kwargs
from .train import train_loop_per_worker

SKIP_COUNTERS = ("skipped_no_pairs", "images_without_pairs", "crops_below_min_pairs", "pairs_without_student_feature")


def upstream_config(stage_dir: Path) -> dict:
    """The resolved config an upstream stage ran with (its ``config.yaml``)."""
    return yaml.safe_load((stage_dir / "config.yaml").read_text())


def student_record(cfg: DistillConfig, range_spec, stage_dir: Path) -> dict:
    """The self-describing hand-off to evaluation and deploy (they never read this stage's config).

    ``input`` says how a scan becomes the student's input: cylindrical voxels of the given
    size (sparse_unet) or the full range-image spec (range_net,
    :class:`modalities.lidar.range_spec.RangeImageSpec`); intensities are in [0, 1], the file
    format's scale divided out.
    """
    if cfg.student == "sparse_unet":
        inp = {"kind": "cylindrical_voxels", "voxel_size": list(cfg.sparse_unet.voxel_size),
               "intensity": "unit: the file's intensity divided by its format's full scale"}
    else:
        inp = range_spec.to_dict()
    return {
        "format": 2, "kind": cfg.student, "kwargs": student_kwargs(cfg), "task": "point_features",
        "input": inp,
        "teacher": {"name": cfg.teacher.name, "weights_path": str(cfg.teacher.weights_path or "") or None},
        "method": "slidr", "weights": "student.safetensors",
        "weights_sha256": sha256_file(stage_dir / "student.safetensors"),
    }


def run_distill(ctx: StageContext) -> StageResult:
    cfg: DistillConfig = ctx.config  # type: ignore[assignment]
    scans = list_scans(ctx.inputs["dataset"], ctx.dataset.version, ctx.inputs[cfg.superpixels])
    train_scans, held_out = split_by_scene(scans, ctx.dataset.holdout_scenes)
    if cfg.max_train_scans:
        train_scans = train_scans[: cfg.max_train_scans]
    budget = int(upstream_config(ctx.inputs[cfg.superpixels])["budget"])
    range_spec = range_spec_of(build_student(cfg), load_sensor(ctx.dataset.lidar_sensor))
    ctx.log.info("%s: %d training scans (%d held out), %d epochs, batch %d", cfg.student, len(train_scans),
                 len(held_out), cfg.optim.epochs, cfg.batch_scans)
    # Checkpoints: the stage folder, or <storage_path>/<run id>/<stage> (a shared folder or URI for clusters).
    storage = (f"{cfg.storage_path.rstrip('/')}/{ctx.run_dir.name}/{ctx.name}" if cfg.storage_path
               else ctx.stage_dir / ".ray_results")
    result = fit(
        train_loop_per_worker,
        {
            "distill": cfg.model_dump(mode="json"),
            "scans": train_scans,
            "budget": budget,
            "range_spec": range_spec,
            "seed": ctx.seed,
            "tensorboard_dir": str((ctx.stage_dir / "tensorboard").resolve()),
        },
        storage=storage,
        num_workers=cfg.num_workers,
        use_gpu=cfg.use_gpu,
        max_failures=cfg.max_failures,
    )
    if result.error:
        raise result.error
    # No checkpoint reported by this fit: every epoch had been trained before an interruption,
    # and the loop only loaded the last checkpoint; take that one.
    checkpoint = result.checkpoint.as_directory() if result.checkpoint else checkpoint_directory(latest_checkpoint(storage))
    with checkpoint as folder:
        folder = Path(folder)
        for name in ("student.safetensors", "teacher_head.safetensors"):
            shutil.copyfile(folder / name, ctx.stage_dir / f".{name}.tmp")
            (ctx.stage_dir / f".{name}.tmp").replace(ctx.stage_dir / name)
        history = torch.load(folder / "state.pt", map_location="cpu", weights_only=True)["history"]
    atomic_write_json(ctx.stage_dir / "history.json", history)
    atomic_write_json(ctx.stage_dir / STUDENT_RECORD, student_record(cfg, range_spec, ctx.stage_dir))
    epochs = [h["epoch"] + 1 for h in history]
    save_line_plot(ctx.stage_dir / "loss_curve.png", {cfg.student: (epochs, [h["loss"] for h in history])},
                   "epoch", "SLidR loss", f"SLidR distillation: {cfg.student}")
    metrics = {
        "student": cfg.student,
        "teacher": cfg.teacher.name,
        "train_scans": len(train_scans),
        "epochs": len(history),
        "loss_first_epoch": history[0]["loss"],
        "loss_last_epoch": history[-1]["loss"],
        "scans_per_s_last_epoch": history[-1]["scans_per_s"],
        **{k: int(sum(h[k] for h in history)) for k in SKIP_COUNTERS},
    }
    md = (f"Loss per epoch of the {cfg.student} student against the frozen {cfg.teacher.name} teacher "
          f"(skips and degenerate crops are counted in the table above):\n\n![loss]({ctx.name}/loss_curve.png)\n")
    return StageResult(metrics=metrics, report_md=md)
