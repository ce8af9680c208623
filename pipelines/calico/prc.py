"""Stage kind ``calico_prc``: point-region contrast pre-training of the pillar BEV lidar student (DESIGN 5.3).

CALICO (Sun et al., "CALICO: Self-Supervised Camera-LiDAR Contrastive Pre-training for BEV
Perception", ICLR 2024, arXiv:2306.00349; no official code). Per training scan and step:

* two views of the scan (:func:`pipelines.calico.data.augment_view`: rotation about z in
  [-90, 90] deg, scaling 0.9-1.1, flips), each pillarised
  (:func:`modalities.lidar.bev_net.pillar_inputs`) and run through the student
  (:class:`modalities.lidar.bev_net.PillarBevNet`) to a BEV map;
* ``points_inside`` points in the scan's label-free regions (the ``regions`` stage) and
  ``points_outside`` others, inside the grid in both views, read from both maps bilinearly at
  their coordinates in each view (:func:`pipelines.losses.calico.sample_bev`), then a projection
  head (Linear-ReLU-Linear to ``head_dim``, OURS) and L2 normalisation;
* ``PRC = alpha * PLRC + (1 - alpha) * RAPC`` (:func:`pipelines.losses.calico.prc_loss`), the
  region ids offset per scan so that the other scans' points are negatives too.

AdamW with warm-up and linear decay, Ray Train with a checkpoint each epoch and resume. Only the
training scenes are used: the held-out scenes stay unseen for the evaluation. Outputs:
``student.safetensors`` (the BEV backbone), ``student.json`` (task ``bev_features``, input = the
:class:`modalities.lidar.bev_net.PillarBevSpec`), ``head.safetensors``, ``history.json``,
``loss_curve.png``.
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
from .config import PrcConfig
from .data import augment_view, calico_scans, in_grid, read_scan, sample_points


def projection_head(dim_in: int, dim_out: int) -> nn.Module:
    """The training-only head on sampled BEV features (OURS: the paper does not give its heads)."""
    return nn.Sequential(nn.Linear(dim_in, dim_in), nn.ReLU(inplace=True), nn.Linear(dim_in, dim_out))


def pillar_spec(cfg: PrcConfig):
    from modalities.lidar.bev_net import PillarBevSpec  # noqa: PLC0415

    s = cfg.student
    return PillarBevSpec(x_range_m=cfg.grid.x_range_m, y_range_m=cfg.grid.y_range_m, cell_size_m=cfg.grid.cell_size_m,
                         z_range_m=s.z_range_m, max_points_per_pillar=s.max_points_per_pillar,
                         max_pillars=s.max_pillars)


def student_kwargs(cfg: PrcConfig, spec) -> dict:
    s = cfg.student
    return {"ny": spec.ny, "nx": spec.nx, "pillar_channels": s.pillar_channels, "widths": list(s.widths),
            "out_channels": s.out_channels}


def bev_grid_of(spec) -> tuple[float, float, float, float]:
    """(x_min, y_min, cell_x, cell_y) of a spec with x_range_m, y_range_m, cell_size_m (``sample_bev``'s grid)."""
    return (spec.x_range_m[0], spec.y_range_m[0], spec.cell_size_m, spec.cell_size_m)


def pillar_occupancy(lidar_paths: list, spec) -> dict:
    """How full the pillar buffers are on the (un-augmented) scans: the budget's cost is paid for every row."""
    from modalities.lidar.bev_net import pillar_inputs  # noqa: PLC0415

    from .data import read_points  # noqa: PLC0415

    stats = [pillar_inputs(*read_points(p), spec)[1] for p in lidar_paths]
    return {"pillars_per_scan_max": max(s["num_pillars"] for s in stats),
            "pillars_per_scan_mean": float(np.mean([s["num_pillars"] for s in stats])),
            "pillars_dropped": int(sum(s["pillars_dropped"] for s in stats)),
            "points_not_stored": int(sum(s["points_dropped"] for s in stats))}


def prc_batch(scans: list[tuple[np.ndarray, np.ndarray, np.ndarray]], cfg: PrcConfig, spec, rng: np.random.Generator):
    """Two views of each scan: (feeds of 2B views stacked [view 1 of every scan, then view 2], per-scan
    (xy view 1, xy view 2, region id) of the sampled points)."""
    from modalities.lidar.bev_net import pillar_inputs  # noqa: PLC0415

    a = cfg.augment
    grid = spec.grid
    views: list[list[dict]] = [[], []]
    points = []
    for xyz, intensity, region in scans:
        v1 = augment_view(xyz, rng, a.rotation_deg, a.scale, a.flip)
        v2 = augment_view(xyz, rng, a.rotation_deg, a.scale, a.flip)
        # A sampled point must be in a pillar of both views: inside the grid and the z range after each view's scale.
        stored = [in_grid(v[:, :2], grid) & (v[:, 2] >= spec.z_range_m[0]) & (v[:, 2] < spec.z_range_m[1])
                  for v in (v1, v2)]
        idx = sample_points(region, stored[0] & stored[1], cfg.points_inside, cfg.points_outside, rng)
        views[0].append(pillar_inputs(v1, intensity, spec)[0])
        views[1].append(pillar_inputs(v2, intensity, spec)[0])
        points.append((v1[idx, :2], v2[idx, :2], region[idx]))
    feeds = {k: torch.from_numpy(np.stack([f[k] for f in views[0] + views[1]])) for k in views[0][0]}
    return feeds, points


def prc_step_loss(net: nn.Module, head: nn.Module, feeds: dict, points: list, cfg: PrcConfig, grid, device):
    """(loss, parts) of one batch: BEV maps of both views, features at the sampled points, :func:`prc_loss`."""
    from ..losses.calico import prc_loss, sample_bev  # noqa: PLC0415

    maps = net(**{k: v.to(device) for k, v in feeds.items()})
    b = len(points)
    f1, f2, regions, offset = [], [], [], 0
    for i, (xy1, xy2, region) in enumerate(points):
        if not len(region):
            continue
        s1, _ = sample_bev(maps[i:i + 1], torch.from_numpy(xy1)[None].to(device), grid)
        s2, _ = sample_bev(maps[b + i:b + i + 1], torch.from_numpy(xy2)[None].to(device), grid)
        f1.append(s1[0])
        f2.append(s2[0])
        r = torch.from_numpy(region).to(device)
        regions.append(torch.where(r >= 0, r + offset, r))
        offset += int(region.max()) + 1 if (region >= 0).any() else 0
    if not f1:
        raise ValueError("no sampled point inside the BEV grid in this batch: check the grid against the scans")
    z1 = F.normalize(head(torch.cat(f1)), dim=1)
    z2 = F.normalize(head(torch.cat(f2)), dim=1)
    return prc_loss(z1, z2, torch.cat(regions), cfg.alpha, cfg.plrc_temperature, cfg.rapc_temperature)


class PrcModel(nn.Module):
    """Student + head; ``forward(feeds, points)`` is the PRC loss of a batch (one call, so DDP sees every parameter)."""

    def __init__(self, student: nn.Module, head: nn.Module, cfg: PrcConfig, grid):
        super().__init__()
        self.student, self.head, self.cfg, self.grid = student, head, cfg, grid

    def forward(self, feeds: dict, points: list):
        device = next(self.parameters()).device
        return prc_step_loss(self.student, self.head, feeds, points, self.cfg, self.grid, device)


def train_loop_per_worker(loop_config: dict) -> None:
    import ray.train.torch

    from modalities.lidar.bev_net import PillarBevNet, PillarBevSpec

    cfg = PrcConfig.model_validate(loop_config["config"])
    spec = PillarBevSpec.from_dict(loop_config["spec"])
    rank, world, device = worker_setup(loop_config)
    with np.load(loop_config["clips"]) as z:
        lidar, regions = [str(p) for p in z["lidar"]], [str(p) for p in z["regions"]]
    kwargs = student_kwargs(cfg, spec)
    net = PillarBevNet(**kwargs)
    head = projection_head(net.feature_dim, cfg.head_dim)
    both = PrcModel(net, head, cfg, bev_grid_of(spec))
    optimizer = torch.optim.AdamW(both.parameters(), lr=cfg.optim.lr, weight_decay=cfg.optim.weight_decay)
    start_epoch, history, _ = resume_training(loop_config, {"student": net, "head": head}, optimizer)
    attempt_start = start_epoch
    model = ray.train.torch.prepare_model(both)
    cache: dict[int, tuple] = {}  # scan index -> (xyz, intensity, region): read once per worker

    def scan(i: int):
        if i not in cache:
            cache[i] = read_scan(lidar[i], regions[i])
        return cache[i]

    n = len(lidar)
    batch, steps_per_epoch, total, warmup = step_schedule(n, world, cfg.batch_scans, cfg.optim.epochs,
                                                          cfg.optim.warmup_fraction)
    for epoch in range(start_epoch, cfg.optim.epochs):
        rng = np.random.default_rng([loop_config["seed"], epoch, rank])
        order = np.random.default_rng([loop_config["seed"], epoch]).permutation(n)[rank::world]
        model.train()
        losses, plrc, rapc, seen, t0 = [], [], [], 0, time.perf_counter()
        bar = epoch_bar("PRC", epoch, cfg.optim.epochs, steps_per_epoch, rank)
        for s in bar:
            step = epoch * steps_per_epoch + s
            set_lr(optimizer, cfg.optim.lr * lr_factor(step, total, warmup))
            idx = order[s * batch:(s + 1) * batch]
            feeds, points = prc_batch([scan(int(i)) for i in idx], cfg, spec, rng)
            loss, parts = model(feeds, points)
            optimizer_step(loss, optimizer, model, cfg.max_grad_norm, "PRC", epoch, s)
            losses.append(loss.item())
            plrc.append(float(parts["plrc"]))
            rapc.append(float(parts["rapc"]))
            seen += len(idx)
            bar.set_postfix(loss=f"{losses[-1]:.3f}")
        wall = time.perf_counter() - t0
        metrics = {"epoch": epoch, "attempt_start_epoch": attempt_start, "loss": float(np.mean(losses)),
                   "plrc": float(np.mean(plrc)), "rapc": float(np.mean(rapc)), "steps": len(losses),
                   "scans_per_s": seen * world / wall}
        history.append(metrics)
        report_epoch(rank, metrics, lambda folder: save_checkpoint(
            folder, {"student": unwrap(model).student, "head": unwrap(model).head}, optimizer, epoch, history))


def run_prc(ctx: StageContext) -> StageResult:
    cfg: PrcConfig = ctx.config  # type: ignore[assignment]
    split = calico_scans(ctx.inputs["dataset"], ctx.dataset.version, ctx.inputs[cfg.regions],
                         ctx.dataset.holdout_scenes)
    skipped = {k: len(v) for k, v in split.skipped.items()}
    if len(split.train) < 1:
        raise ValueError(f"{ctx.inputs['dataset']}: no training scan with regions (skipped: {skipped}); "
                         "PRC needs at least one")
    for reason, stems in split.skipped.items():
        ctx.log.warning("skipped %d training scan(s) with regions status %r: %s", len(stems), reason,
                        ", ".join(stems[:3]))
    spec = pillar_spec(cfg)
    ctx.log.info("PRC on %d training scans (%d held-out scans unseen), grid %dx%d cells of %.2f m", len(split.train),
                 len(split.heldout), spec.nx, spec.ny, spec.cell_size_m)

    occupancy = pillar_occupancy([s.lidar_path for s in split.train], spec)
    if occupancy["pillars_dropped"]:
        ctx.log.warning("%d pillars over the budget of %d were dropped (%d points not stored, full pillars included); raise student.max_pillars",
                        occupancy["pillars_dropped"], spec.max_pillars, occupancy["points_not_stored"])

    def write_cache(path: Path) -> None:
        with atomic_open(path) as f:
            np.savez(f, lidar=np.array([str(s.lidar_path) for s in split.train]),
                     regions=np.array([str(s.regions_path) for s in split.train]))

    history = fit_with_cache(ctx, cfg, train_loop_per_worker, spec.to_dict(), write_cache,
                             ("student.safetensors", "head.safetensors"))
    write_student_record(ctx.stage_dir, "pillar_bev", student_kwargs(cfg, spec), spec.to_dict(),
                         {"name": f"label-free regions of stage {cfg.regions} (self-supervised, no teacher network)"},
                         "calico_prc", task="bev_features")
    epochs = [h["epoch"] + 1 for h in history]
    save_line_plot(ctx.stage_dir / "loss_curve.png",
                   {"PRC": (epochs, [h["loss"] for h in history]), "PLRC": (epochs, [h["plrc"] for h in history]),
                    "RAPC": (epochs, [h["rapc"] for h in history])},
                   "epoch", "loss", f"CALICO PRC (alpha {cfg.alpha}) on the pillar BEV student")
    metrics = {"train_scans": len(split.train), "heldout_scans_unseen": len(split.heldout),
               **{f"skipped_{k}": v for k, v in skipped.items()}, **occupancy, "epochs": len(history),
               "loss_first_epoch": history[0]["loss"], "loss_last_epoch": history[-1]["loss"],
               "plrc_last_epoch": history[-1]["plrc"], "rapc_last_epoch": history[-1]["rapc"],
               "scans_per_s": history[-1]["scans_per_s"]}
    md = (f"Pillar BEV lidar student pre-trained by point-region contrast (alpha {cfg.alpha}) on {len(split.train)} "
          f"scans of the training scenes"
          + (f"; skipped: {skipped}" if skipped else "")
          + f". PRC loss {history[0]['loss']:.3f} -> {history[-1]['loss']:.3f} over {len(history)} epochs.\n\n"
          f"![loss]({ctx.name}/loss_curve.png)\n")
    return StageResult(metrics=metrics, report_md=md)
