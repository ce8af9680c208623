"""SLidR per-worker training loop (runs inside a Ray Train worker).

Only this function touches ``ray.train`` (prepare, report, checkpoints); the step itself is
:func:`pipelines.slidr.step.distill_loss`. Each epoch ends with a checkpoint folder:
``student.safetensors``, ``teacher_head.safetensors``, ``state.pt`` (optimizer, epoch, loss
history, tensors and plain types only, read back with ``weights_only=True``) and
``meta.json`` written last. A restarted worker, or a re-run of the stage, continues from
the newest checkpoint; the data order of an epoch depends only on (seed, epoch), so a
resumed run sees the same batches an uninterrupted one would.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from ..ray_train import META, resume_folder
from .config import DistillConfig
from .data import Collate, SlidrDataset
from .model import build_image_teacher, build_student
from ..student_inputs import PointFeatureNet
from .step import distill_lr, parameter_norm, train_step

STAT_KEYS = ("scans", "skipped_no_pairs", "images_without_pairs", "crops_below_min_pairs", "pairs",
             "pairs_without_student_feature")


def _unwrap(module: torch.nn.Module) -> torch.nn.Module:
    return module.module if hasattr(module, "module") else module


def save_checkpoint(folder: Path, student, teacher, optimizer, epoch: int, history: list[dict], config: dict) -> None:
    """``student``: the bare student (the safetensors keys are its own, wrappers excluded)."""
    save_file({k: v.contiguous() for k, v in _unwrap(student).state_dict().items()}, str(folder / "student.safetensors"))
    save_file({k: v.contiguous() for k, v in _unwrap(teacher).head.state_dict().items()},
              str(folder / "teacher_head.safetensors"))
    torch.save({"optimizer": optimizer.state_dict(), "epoch": epoch, "history": history}, folder / "state.pt")
    (folder / "distill_config.json").write_text(json.dumps(config, indent=2, sort_keys=True))
    (folder / META).write_text(json.dumps({"epoch": epoch}))


def load_checkpoint(folder: Path, student, teacher, optimizer) -> tuple[int, list[dict]]:
    _unwrap(student).load_state_dict(load_file(str(folder / "student.safetensors")))
    _unwrap(teacher).head.load_state_dict(load_file(str(folder / "teacher_head.safetensors")))
    state = torch.load(folder / "state.pt", map_location="cpu", weights_only=True)
    optimizer.load_state_dict(state["optimizer"])
    return int(state["epoch"]), list(state["history"])


def train_loop_per_worker(loop_config: dict) -> None:
    import ray.train
    import ray.train.torch
    from torch.utils.tensorboard import SummaryWriter
    from tqdm import tqdm

    cfg = DistillConfig.model_validate(loop_config["distill"])
    torch.set_num_threads(max(1, int(loop_config["cpus_per_worker"])))
    ctx = ray.train.get_context()
    rank = ctx.get_world_rank()
    device = ray.train.torch.get_device()
    torch.manual_seed(loop_config["seed"])

    student = build_student(cfg)
    teacher = build_image_teacher(cfg.teacher, cfg.out_dim)
    params = list(student.parameters()) + list(teacher.head.parameters())
    if cfg.optim.name == "adamw":
        optimizer = torch.optim.AdamW(params, lr=cfg.optim.lr, weight_decay=cfg.optim.weight_decay)
    else:
        optimizer = torch.optim.SGD(
            params, lr=cfg.optim.lr, momentum=cfg.optim.momentum, dampening=cfg.optim.dampening,
            weight_decay=cfg.optim.weight_decay,
        )
    start_epoch, history = 0, []
    folder = resume_folder(loop_config)
    if folder is not None:
        start_epoch, history = load_checkpoint(folder, student, teacher, optimizer)
        start_epoch += 1
    attempt_start = start_epoch  # recorded per epoch: > 0 marks epochs trained after a resume
    # DDP (more than one worker) wraps the point-feature module, so gradients sync (PointFeatureNet).
    model = ray.train.torch.prepare_model(PointFeatureNet(student))
    student = _unwrap(model).student  # moved to the device by prepare_model
    teacher.to(device)

    dataset = SlidrDataset(loop_config["scans"], cfg.augment, loop_config["budget"], loop_config["seed"])
    collate = Collate(cfg.student, loop_config["budget"], cfg.sparse_unet.voxel_size, loop_config["range_spec"])
    generator = torch.Generator().manual_seed(loop_config["seed"])
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=cfg.batch_scans, shuffle=True, collate_fn=collate, num_workers=cfg.loader_workers,
        generator=generator, drop_last=False,
    )
    loader = ray.train.torch.prepare_data_loader(loader, move_to_device=False)
    use_amp = cfg.amp and device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    writer = SummaryWriter(loop_config["tensorboard_dir"]) if rank == 0 else None

    for epoch in range(start_epoch, cfg.optim.epochs):
        steps_per_epoch = max(1, len(loader))
        dataset.set_epoch(epoch)
        generator.manual_seed(loop_config["seed"] * 100_003 + epoch)  # epoch order independent of resumes
        if hasattr(loader, "sampler") and hasattr(loader.sampler, "set_epoch"):
            loader.sampler.set_epoch(epoch)
        model.train()
        teacher.train()
        totals = dict.fromkeys(STAT_KEYS, 0)
        losses, t0, t_data, t_step = [], time.perf_counter(), 0.0, 0.0
        t_mark = time.perf_counter()
        bar = tqdm(loader, desc=f"{cfg.student} epoch {epoch + 1}/{cfg.optim.epochs}", disable=rank != 0,
                   mininterval=5, dynamic_ncols=True)
        for batch in bar:
            if batch is None:  # every scan of the batch had no pair in any camera
                totals["skipped_no_pairs"] += cfg.batch_scans
                continue
            for k in STAT_KEYS:
                totals[k] += batch.stats.get(k, 0)
            batch.to(device)
            t_data += time.perf_counter() - t_mark
            t_mark = time.perf_counter()
            lr = distill_lr(epoch, len(losses), steps_per_epoch, cfg.optim.epochs, cfg.optim.lr, cfg.optim.warmup_epochs)
            for group in optimizer.param_groups:
                group["lr"] = lr
            loss = train_step(model, teacher, batch, optimizer, scaler, cfg.temperature, device.type, use_amp)
            losses.append(loss.item())
            t_step += time.perf_counter() - t_mark
            t_mark = time.perf_counter()
            bar.set_postfix(loss=f"{losses[-1]:.3f}")
        if not losses:
            raise ValueError(
                f"epoch {epoch}: no batch with point-pixel pairs ({totals['skipped_no_pairs']} scans skipped);"
                " check the calibration and that points project into the cameras"
            )
        wall = time.perf_counter() - t0
        metrics = {
            "epoch": epoch, "attempt_start_epoch": attempt_start, "loss": sum(losses) / len(losses), "lr": lr,
            "steps": len(losses), "student_weight_norm": parameter_norm(student),
            "scans_per_s": totals["scans"] / wall, "data_s": t_data, "step_s": t_step, **totals,
        }
        history.append(metrics)
        if writer is not None:
            for k in ("loss", "lr", "scans_per_s", "student_weight_norm"):
                writer.add_scalar(f"distill/{k}", metrics[k], epoch)
            writer.flush()
        with tempfile.TemporaryDirectory() as tmp:
            ckpt = None
            if rank == 0:
                save_checkpoint(Path(tmp), student, teacher, optimizer, epoch, history, loop_config["distill"])
                ckpt = ray.train.Checkpoint.from_directory(tmp)
            ray.train.report(metrics, checkpoint=ckpt)
    if writer is not None:
        writer.close()
