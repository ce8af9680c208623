"""Stage kind ``dino_audio``: DINO pre-training of an audio backbone on unlabelled clips (DESIGN 5.4).

Caron et al., "Emerging Properties in Self-Supervised Vision Transformers", ICCV 2021
(https://github.com/facebookresearch/dino), on the log-mel: a student and an EMA teacher
(momentum 0.996 -> 1, cosine), multi-crop (2 global time crops + ``local_crops`` short ones,
:mod:`pipelines.audio.data` views), the DINO head (3-layer MLP -> 256 -> L2 -> weight-normed
linear to K), centering (momentum 0.9) and sharpening (teacher temperature 0.04 -> 0.07 over the
warm-up epochs, student 0.1), no loss between a view and itself
(:func:`pipelines.losses.dino.dino_loss`). Not carried over from the reference: the frozen last
layer in the first epoch and the weight-decay schedule (a constant AdamW decay here).

Outputs: ``student.safetensors`` (the EMA teacher's backbone, DINO's evaluated network),
``student.json`` (task ``clip_features``, input = the log-mel spec with the training clips'
mean/std), ``dino_head.safetensors``, ``history.json`` (loss, teacher entropy, skipped clips),
``loss_curve.png``. Checkpoints each epoch; a re-run resumes (:mod:`pipelines.ray_train`).
"""

from __future__ import annotations

import copy
import dataclasses
import math
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from modalities.audio.logmel import LogMelSpec

from ..plots import save_line_plot
from ..ray_train import resume_folder
from ..runner import StageContext, StageResult
from .config import DinoConfig
from .data import ViewParams, fit_stats, load_arrays, load_splits, make_view, read_log_mels
from ..train_common import (epoch_bar, fit_on_clips, load_checkpoint, optimizer_step, report_epoch, save_checkpoint,
                           set_lr, unwrap, worker_setup, write_student_record)


class MultiCropNet(nn.Module):
    """Backbone + DINO head over a list of view batches (each its own length): one forward, concatenated logits."""

    def __init__(self, backbone: nn.Module, head: nn.Module):
        super().__init__()
        self.backbone, self.head = backbone, head

    def forward(self, views: list[torch.Tensor]) -> torch.Tensor:
        return self.head(torch.cat([self.backbone(v) for v in views]))


def prepare_clips(ctx: StageContext, use_pool: bool) -> tuple[LogMelSpec, list[np.ndarray], dict]:
    """(spec with the training clips' normalisation, raw log-mels of the pre-training clips, counts)."""
    splits = load_splits(ctx.inputs["dataset"], ctx.dataset)
    spec = LogMelSpec()
    train, skipped_train = read_log_mels([i.path for i in splits.train], spec, crop=True)
    train = [m for m in train if m is not None]
    if not train:
        raise ValueError(f"{ctx.inputs['dataset']}: no readable training clip")
    spec = spec.with_stats(*fit_stats(train))
    pool, skipped_pool = read_log_mels(splits.pool, spec, crop=False) if use_pool else ([], [])
    pool = [m for m in pool if m is not None]
    counts = {"train_clips": len(train), "pool_clips": len(pool),
              "skipped_unreadable": len(skipped_train) + len(skipped_pool)}
    return spec, train + pool, counts


def views_of_batch(clips: list[np.ndarray], idx: np.ndarray, cfg: DinoConfig, spec: LogMelSpec,
                   rng: np.random.Generator) -> list[torch.Tensor]:
    """[global 1, global 2, local 1, ...] batches of shape (B, 1, n_mels, frames)."""
    c = cfg.crops
    p = ViewParams(**{f.name: getattr(c, f.name) for f in dataclasses.fields(ViewParams)})
    others = rng.integers(0, len(clips), size=(len(idx), 2 + c.local_crops))
    out = []
    for v in range(2 + c.local_crops):
        frames = c.global_frames if v < 2 else c.local_frames
        out.append(torch.from_numpy(np.stack([make_view(clips[i], frames, spec, rng, p, clips[others[j, v]])
                                              for j, i in enumerate(idx)]))[:, None])
    return out


def _entropy(logits: torch.Tensor, center: torch.Tensor, temp: float) -> float:
    p = torch.softmax((logits - center) / temp, dim=-1)
    return float(-(p * torch.log(p.clamp_min(1e-12))).sum(-1).mean())


def train_loop_per_worker(loop_config: dict) -> None:
    import ray.train.torch

    from modalities.audio.students import DINOHead, build_audio_student
    from ..evaluate.protocols import warmup_cosine
    from ..losses.dino import dino_loss, ema_momentum, ema_update, teacher_temperature, update_center

    cfg = DinoConfig.model_validate(loop_config["config"])
    spec = LogMelSpec.from_dict(loop_config["spec"])
    rank, world, device = worker_setup(loop_config)
    clips, _ = load_arrays(Path(loop_config["clips"]))

    backbone = build_audio_student("ds_cnn", cfg.backbone.kwargs())
    student = MultiCropNet(backbone, DINOHead(backbone.feature_dim, cfg.out_dim, cfg.hidden_dim, cfg.bottleneck_dim))
    teacher = copy.deepcopy(student)
    for p in teacher.parameters():
        p.requires_grad_(False)
    optimizer = torch.optim.AdamW([p for p in student.parameters() if p.requires_grad], lr=cfg.optim.lr,
                                  weight_decay=cfg.optim.weight_decay)
    center = torch.zeros(cfg.out_dim)
    start_epoch, history = 0, []
    folder = resume_folder(loop_config)
    if folder is not None:
        state = load_checkpoint(folder, {"dino_student": student, "dino_teacher": teacher}, optimizer)
        start_epoch, history, center = int(state["epoch"]) + 1, list(state["history"]), state["center"]
    attempt_start = start_epoch  # recorded per epoch: > 0 marks epochs trained after a resume
    model = ray.train.torch.prepare_model(student)
    teacher.to(device)
    center = center.to(device)

    per_rank = int(math.ceil(len(clips) / world))
    steps_per_epoch = max(1, per_rank // cfg.batch_clips)  # drop the last partial batch (BatchNorm, even views)
    total = steps_per_epoch * cfg.optim.epochs
    warmup = steps_per_epoch * cfg.optim.warmup_epochs
    for epoch in range(start_epoch, cfg.optim.epochs):
        rng = np.random.default_rng([loop_config["seed"], epoch, rank])  # epoch data independent of resumes
        order = np.random.default_rng([loop_config["seed"], epoch]).permutation(len(clips))[rank::world]
        t_temp = teacher_temperature(epoch, cfg.teacher_temp_warmup_epochs, cfg.teacher_temp, cfg.teacher_temp_final)
        model.train()
        teacher.train()
        losses, entropies, t0 = [], [], time.perf_counter()
        bar = epoch_bar("DINO", epoch, cfg.optim.epochs, steps_per_epoch, rank)
        for s in bar:
            step = epoch * steps_per_epoch + s
            set_lr(optimizer, cfg.optim.lr * warmup_cosine(step, total, warmup))
            views = [v.to(device) for v in views_of_batch(clips, order[s * cfg.batch_clips:(s + 1) * cfg.batch_clips],
                                                          cfg, spec, rng)]
            B = views[0].shape[0]
            with torch.no_grad():
                t_out = teacher(views[:2]).view(2, B, -1)
            s_out = model(views).view(len(views), B, -1)
            loss = dino_loss(s_out, t_out, center, cfg.student_temp, t_temp)
            optimizer_step(loss, optimizer, model, cfg.max_grad_norm, "DINO", epoch, s)
            ema_update(teacher, unwrap(model), ema_momentum(step, total, cfg.ema_momentum, 1.0))
            batch_mean = t_out.mean(dim=(0, 1))
            if world > 1:  # every rank's center sees the global batch (DINO all-reduces it)
                torch.distributed.all_reduce(batch_mean)
                batch_mean /= world
            center = update_center(center, batch_mean[None, None], cfg.center_momentum)
            losses.append(loss.item())
            entropies.append(_entropy(t_out.reshape(-1, t_out.shape[-1]), center, t_temp))
            bar.set_postfix(loss=f"{losses[-1]:.3f}")
        wall = time.perf_counter() - t0
        metrics = {"epoch": epoch, "attempt_start_epoch": attempt_start, "loss": float(np.mean(losses)),
                   "teacher_entropy": float(np.mean(entropies)),
                   "max_entropy": math.log(cfg.out_dim), "teacher_temp": t_temp, "steps": len(losses),
                   "clips_per_s": len(losses) * cfg.batch_clips * world / wall, "lr_peak": cfg.optim.lr}
        history.append(metrics)

        def write(folder: Path) -> None:
            save_checkpoint(folder, {"dino_student": unwrap(model), "dino_teacher": teacher}, optimizer, epoch, history,
                            {"center": center.cpu()})
            save_checkpoint_backbone(folder, teacher)

        report_epoch(rank, metrics, write)


def save_checkpoint_backbone(folder: Path, teacher: MultiCropNet) -> None:
    """The hand-off files: the teacher's backbone and head, under the names the stage publishes."""
    from safetensors.torch import save_file

    save_file({k: v.contiguous().cpu() for k, v in teacher.backbone.state_dict().items()}, str(folder / "student.safetensors"))
    save_file({k: v.contiguous().cpu() for k, v in teacher.head.state_dict().items()}, str(folder / "dino_head.safetensors"))


def run_dino(ctx: StageContext) -> StageResult:
    cfg: DinoConfig = ctx.config  # type: ignore[assignment]
    spec, clips, counts = prepare_clips(ctx, cfg.use_pool)
    if len(clips) < cfg.batch_clips * cfg.num_workers:
        raise ValueError(f"{ctx.inputs['dataset']}: {len(clips)} clips are fewer than one batch "
                         f"({cfg.batch_clips} x {cfg.num_workers} workers); lower batch_clips")
    ctx.log.info("DINO on %d clips (%d training, %d pool; %d unreadable skipped), %d epochs, batch %d",
                 len(clips), counts["train_clips"], counts["pool_clips"], counts["skipped_unreadable"],
                 cfg.optim.epochs, cfg.batch_clips)
    history = fit_on_clips(ctx, cfg, train_loop_per_worker, spec.to_dict(), clips, None,
                           ("student.safetensors", "dino_head.safetensors"))
    write_student_record(ctx.stage_dir, "ds_cnn", cfg.backbone.kwargs(), spec.to_dict(),
                         {"name": "dino EMA teacher (self-distillation, no external teacher)"}, "dino")
    epochs = [h["epoch"] + 1 for h in history]
    save_line_plot(ctx.stage_dir / "loss_curve.png", {"DINO loss": (epochs, [h["loss"] for h in history]),
                                                     "teacher entropy": (epochs, [h["teacher_entropy"] for h in history])},
                   "epoch", "value", "DINO pre-training on the log-mel")
    metrics = {**counts, "epochs": len(history), "loss_first_epoch": history[0]["loss"],
               "loss_last_epoch": history[-1]["loss"], "teacher_entropy_last_epoch": history[-1]["teacher_entropy"],
               "max_entropy": history[-1]["max_entropy"], "clips_per_s_last_epoch": history[-1]["clips_per_s"],
               "log_mel_mean": spec.mean, "log_mel_std": spec.std}
    md = (f"DINO loss and the teacher's output entropy per epoch (a collapse shows as entropy near 0 or at its maximum "
          f"{history[-1]['max_entropy']:.2f}):\n\n![loss]({ctx.name}/loss_curve.png)\n")
    return StageResult(metrics=metrics, report_md=md)
