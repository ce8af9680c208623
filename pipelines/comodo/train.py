"""Stage kind ``comodo``: distil cached video-teacher clip embeddings into a compact IMU student (DESIGN 5.2).

COMODO (Chen et al., "COMODO: Cross-Modal Video-to-IMU Distillation for Efficient Egocentric Human
Activity Recognition", 2025; reference https://github.com/Breezelled/COMODO):

* pairs: the training subjects' 5 s IMU windows (6 channels at 200 Hz, :mod:`modalities.imu`)
  and the ``video_teacher`` stage's embedding of the same interval of their video;
* student: an IMU encoder (:mod:`modalities.imu.students`) + a projection head (Linear-ReLU-Linear
  to the teacher's dimension, training only) -> L2 norm;
* ``objective: queue``: keys = [a FIFO queue of past teacher embeddings; the current teacher batch],
  the teacher's softmax over the keys at temperature 0.1 is the target of the student's at 0.05
  (:func:`pipelines.losses.comodo.queue_distillation_loss`); the queue (16384 by default) is seeded
  with the teacher embeddings of held-out clips (``queue_seed_fraction`` of the training clips, left
  out of training);
* ``objective: infonce``: the IMU2CLIP-style symmetric contrastive baseline over the batch;
* AdamW 3e-4, 10% linear warm-up then linear decay, on augmented windows (jitter, scaling,
  sensor-frame rotation, time warp: :mod:`modalities.imu.augment`), Ray Train with a checkpoint
  (student, head, optimizer, queue) each epoch and resume.

Each epoch also scores the label-free held-out loss on the queue-seed clips (which training never
sees), against the seed queue: the sign that the student generalises rather than memorises.

Outputs: ``student.safetensors`` (the IMU encoder), ``student.json`` (task ``window_features``,
input = the :class:`modalities.imu.spec.ImuWindowSpec` with the training windows' per-channel
mean/std), ``head.safetensors``, ``history.json``, ``loss_curve.png``.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from modalities.fileio import atomic_open

from ..plots import save_line_plot
from ..runner import StageContext, StageResult
from ..train_common import (epoch_bar, fit_with_cache, lr_factor, optimizer_step, report_epoch, resume_training,
                            save_checkpoint, set_lr, step_schedule, unwrap, worker_setup, write_student_record)
from .config import ComodoConfig
from .data import clip_key, dataset_recordings, imu_columns, read_windows


class ProjectedStudent(nn.Module):
    """IMU encoder + projection head to the teacher's dimension, L2-normalised output."""

    def __init__(self, student: nn.Module, dim: int):
        super().__init__()
        self.student = student
        d = student.feature_dim
        self.head = nn.Sequential(nn.Linear(d, d), nn.ReLU(inplace=True), nn.Linear(d, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.head(self.student(x)), dim=1)


def training_views(raw: np.ndarray, idx: np.ndarray, spec, rng: np.random.Generator, params) -> torch.Tensor:
    """Augmented (raw axes: a rotation must act on the physical vectors), then normalised windows."""
    from modalities.imu.augment import augment  # noqa: PLC0415

    return torch.from_numpy(spec.normalize(np.stack([augment(raw[i], rng, params) for i in idx])))


def _loss(cfg: ComodoConfig, s: torch.Tensor, t: torch.Tensor, queue: torch.Tensor | None) -> torch.Tensor:
    from ..losses.comodo import info_nce_loss, queue_distillation_loss  # noqa: PLC0415

    if cfg.objective == "queue":
        return queue_distillation_loss(s, t, queue, cfg.teacher_temp, cfg.student_temp)
    return info_nce_loss(s, t, cfg.infonce_temp)


def train_loop_per_worker(loop_config: dict) -> None:
    import ray.train.torch

    from modalities.imu.spec import ImuWindowSpec
    from modalities.imu.students import build_imu_student

    from ..losses.comodo import FeatureQueue

    cfg = ComodoConfig.model_validate(loop_config["config"])
    spec = ImuWindowSpec.from_dict(loop_config["spec"], "comodo loop config")
    rank, world, device = worker_setup(loop_config)
    with np.load(loop_config["clips"]) as z:
        raw, targets, seed_emb = z["windows"], torch.from_numpy(z["teacher"]), torch.from_numpy(z["queue_seed"])
        heldout_raw = z["heldout_windows"]
    dim = targets.shape[1]
    net = ProjectedStudent(build_imu_student(cfg.student.kind, cfg.student.kwargs), dim)
    optimizer = torch.optim.AdamW(net.parameters(), lr=cfg.optim.lr, weight_decay=cfg.optim.weight_decay)
    queue = FeatureQueue(cfg.queue_size, dim)
    if len(seed_emb) and cfg.queue_size and cfg.objective == "queue":
        queue.seed(seed_emb)
    start_epoch, history, state = resume_training(loop_config, {"projected": net}, optimizer)
    if state:
        queue.load_state_dict(state["queue"])
    attempt_start = start_epoch
    model = ray.train.torch.prepare_model(net)
    params = cfg.augment.params()
    heldout_x = torch.from_numpy(spec.normalize(heldout_raw)) if len(heldout_raw) else None
    batch, steps_per_epoch, total, warmup = step_schedule(len(raw), world, cfg.batch_windows, cfg.optim.epochs,
                                                          cfg.optim.warmup_fraction, min_batch=2)
    for epoch in range(start_epoch, cfg.optim.epochs):
        rng = np.random.default_rng([loop_config["seed"], epoch, rank])
        order = np.random.default_rng([loop_config["seed"], epoch]).permutation(len(raw))[rank::world]
        model.train()
        losses, agree, seen, t0 = [], 0, 0, time.perf_counter()
        bar = epoch_bar("COMODO", epoch, cfg.optim.epochs, steps_per_epoch, rank)
        for s in bar:
            step = epoch * steps_per_epoch + s
            set_lr(optimizer, cfg.optim.lr * lr_factor(step, total, warmup))
            idx = order[s * batch:(s + 1) * batch]
            x = training_views(raw, idx, spec, rng, params).to(device)
            t = targets[torch.as_tensor(idx)].to(device)
            q = queue.tensor().to(device) if cfg.objective == "queue" else None
            emb = model(x)
            loss = _loss(cfg, emb, t, q)
            optimizer_step(loss, optimizer, model, cfg.max_grad_norm, "COMODO", epoch, s)
            with torch.no_grad():  # label-free diagnostic: the student's nearest key is the teacher's
                keys = torch.cat([q, t]) if q is not None else t
                agree += int(((emb @ keys.T).argmax(1) == (t @ keys.T).argmax(1)).sum())
            seen += len(idx)
            if cfg.objective == "queue" and cfg.queue_size:
                queue.enqueue(t.detach().cpu())
            losses.append(loss.item())
            bar.set_postfix(loss=f"{losses[-1]:.3f}")
        wall = time.perf_counter() - t0
        metrics = {"epoch": epoch, "attempt_start_epoch": attempt_start, "loss": float(np.mean(losses)),
                   "steps": len(losses), "nearest_key_agreement": 100.0 * agree / max(1, seen),
                   "windows_per_s": seen * world / wall, "queue": len(queue)}
        if heldout_x is not None:
            model.eval()
            with torch.no_grad():
                emb = torch.cat([model(heldout_x[i:i + 256].to(device)) for i in range(0, len(heldout_x), 256)])
                t_h = seed_emb.to(device)  # the keys: the held-out clips themselves (an empty queue)
                metrics["heldout_loss"] = float(_loss(cfg, emb, t_h, t_h[:0] if cfg.objective == "queue" else None))
        history.append(metrics)
        report_epoch(rank, metrics, lambda folder: save_checkpoint(
            folder, {"projected": unwrap(model), "student": unwrap(model).student, "head": unwrap(model).head},
            optimizer, epoch, history, {"queue": queue.state_dict()}))


def run_comodo(ctx: StageContext) -> StageResult:
    from modalities.imu.spec import ImuWindowSpec, fit_stats

    cfg: ComodoConfig = ctx.config  # type: ignore[assignment]
    root = Path(ctx.inputs["dataset"])
    teacher_dir = ctx.inputs[cfg.teacher]
    with np.load(teacher_dir / "embeddings.npz") as z:
        names, starts, emb = z["recording"], z["start_s"], z["embedding"]
    teacher_window = _teacher_window(teacher_dir)
    train, _ = dataset_recordings(root, ctx.dataset)
    spec = ImuWindowSpec(rate_hz=cfg.rate_hz, window_s=teacher_window, max_gap_s=cfg.max_gap_s,
                         columns=imu_columns(ctx.dataset))
    wanted: dict[str, list[float]] = {}
    for n, s in zip(names, starts):
        wanted.setdefault(str(n), []).append(float(s))
    recs = [r for r in train if r.name in wanted]
    ws = read_windows(recs, spec, wanted)
    row = {clip_key(str(n), float(s)): i for i, (n, s) in enumerate(zip(names, starts))}
    teacher = emb[[row[clip_key(recs[r].name, s)] for r, s in zip(ws.recording, ws.starts)]]
    n = len(ws.windows)
    if n < 4:
        raise ValueError(f"{root}: only {n} IMU windows pair with a teacher clip (skipped recordings: "
                         f"{ws.skipped_recordings[:3]}); distillation needs more")
    perm = np.random.default_rng(ctx.seed).permutation(n)
    # Held out of training for both objectives (the same training windows for COMODO and InfoNCE): they seed
    # the queue (COMODO) and give the held-out loss.
    n_seed = min(int(round(cfg.queue_seed_fraction * n)), n - 2)
    seed_idx, train_idx = np.sort(perm[:n_seed]), np.sort(perm[n_seed:])
    spec = spec.with_stats(*fit_stats(ws.windows[train_idx]))
    ctx.log.info("%d paired windows of %d recordings: %d train, %d seed the queue (held out); %d recordings and "
                 "%d windows skipped", n, len(recs), len(train_idx), n_seed, len(ws.skipped_recordings),
                 ws.skipped_windows)

    def write_cache(path: Path) -> None:
        with atomic_open(path) as f:
            np.savez(f, windows=ws.windows[train_idx], teacher=teacher[train_idx].astype(np.float32),
                     queue_seed=teacher[seed_idx].astype(np.float32), heldout_windows=ws.windows[seed_idx])

    history = fit_with_cache(ctx, cfg, train_loop_per_worker, spec.to_dict(), write_cache,
                             ("student.safetensors", "head.safetensors"))
    teacher_meta = _teacher_meta(teacher_dir)
    write_student_record(ctx.stage_dir, cfg.student.kind, cfg.student.kwargs, spec.to_dict(),
                         {"name": f"video teacher of stage {cfg.teacher} ({teacher_meta.get('backbone')}, "
                                  f"{teacher_meta.get('pooling')}, projection "
                                  f"{teacher_meta.get('projection', {}).get('method')})"},
                         f"comodo_{cfg.objective}", task="window_features")
    epochs = [h["epoch"] + 1 for h in history]
    curves = {"training loss": (epochs, [h["loss"] for h in history])}
    if "heldout_loss" in history[-1]:
        curves["held-out clips' loss"] = (epochs, [h["heldout_loss"] for h in history])
    save_line_plot(ctx.stage_dir / "loss_curve.png", curves, "epoch", "loss",
                   f"COMODO ({cfg.objective}) video-to-IMU distillation")
    metrics = {"windows": n, "train_windows": int(len(train_idx)), "queue_seed_windows": int(n_seed),
               "recordings": len(recs) - len(ws.skipped_recordings),
               "skipped_recordings": len(ws.skipped_recordings), "skipped_windows": ws.skipped_windows,
               "epochs": len(history), "loss_first_epoch": history[0]["loss"], "loss_last_epoch": history[-1]["loss"],
               "nearest_key_agreement_last_epoch": history[-1]["nearest_key_agreement"],
               **({"heldout_loss_first_epoch": history[0]["heldout_loss"],
                   "heldout_loss_last_epoch": history[-1]["heldout_loss"]} if "heldout_loss" in history[-1] else {})}
    md = (f"{cfg.student.kind} distilled from the video teacher of `{cfg.teacher}` ({cfg.objective} objective) on "
          f"{len(train_idx)} windows of the training subjects"
          + (f"; {n_seed} held-out clips seed the queue" if n_seed else "")
          + (f"; skipped: {len(ws.skipped_recordings)} unreadable recording(s) ("
             + "; ".join(ws.skipped_recordings[:3]) + ")" if ws.skipped_recordings else "")
          + (f", {ws.skipped_windows} window(s) over IMU gaps" if ws.skipped_windows else "")
          + f".\n\n![loss]({ctx.name}/loss_curve.png)\n")
    return StageResult(metrics=metrics, report_md=md)


def _teacher_meta(teacher_dir: Path) -> dict:
    import json  # noqa: PLC0415

    return json.loads((teacher_dir / "teacher.json").read_text())


def _teacher_window(teacher_dir: Path) -> float:
    return float(_teacher_meta(teacher_dir)["window_s"])
