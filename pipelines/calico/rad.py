"""Stage kind ``calico_rad``: region-aware distillation of the PRC lidar student into the camera BEV student (DESIGN 5.3).

CALICO (Sun et al., ICLR 2024, arXiv:2306.00349; no official code), second stage. The teacher is
the ``calico_prc`` stage's pillar BEV network, frozen; the student is the camera BEV network
(:class:`modalities.camera.bev_lift.CameraBevNet`: EfficientNet-Lite0 image features lifted to the
BEV grid with fixed geometry). Per training scan:

* once, before training: the teacher's BEV map of the un-augmented scan, read at up to
  ``points_per_scan`` points of the scan's label-free regions (inside the grid), L2-normalised;
* each step: the student's BEV map from the scan's camera images, read at the same points, a
  projection head (Linear-ReLU-Linear to the teacher's width, training only, OURS), L2 norm;
* :func:`pipelines.losses.calico.rad_loss`: each region's pooled student embedding must match the
  teacher's embedding of the same region against the teacher's other regions (of all scans in the
  batch), every point of a region alike and every region weighted 1/N_regions.

No image augmentation (the lift geometry is tied to the calibration); AdamW with warm-up and
linear decay; Ray Train with a checkpoint each epoch and resume. Only the training scenes are used.
Skips (counted, reported): scans with no region point in the grid, scans missing a configured camera, scans
whose calibration puts none of their region points in any camera (a wrong calibration would otherwise train
the student on an empty lift without a sign).
Outputs: ``student.safetensors``, ``student.json`` (task ``bev_features``, input = cameras, image
size, lift heights and grid), ``head.safetensors``, ``history.json``, ``loss_curve.png``.
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
from ..student_record import read_student_record
from ..train_common import (epoch_bar, fit_with_cache, lr_factor, optimizer_step, report_epoch, resume_training,
                            save_checkpoint, set_lr, step_schedule, unwrap, worker_setup, write_student_record)
from .config import RadConfig
from .data import calico_scans, camera_inputs, camera_views, in_grid, read_scan, sample_points
from .prc import bev_grid_of, projection_head


def camera_spec(cfg: RadConfig) -> dict:
    """The camera student's input spec (stored in its record; the evaluation and deploy rebuild the inputs from it)."""
    s = cfg.student
    return {"cameras": list(s.cameras), "image_hw": list(s.image_hw), "heights_m": list(s.heights_m),
            "grid": cfg.grid.spec().to_dict()}


def camera_kwargs(cfg: RadConfig) -> dict:
    s, g = cfg.student, cfg.grid.spec()
    return {"ny": g.ny, "nx": g.nx, "num_cameras": len(s.cameras), "num_heights": len(s.heights_m),
            "pretrained": s.pretrained, "lift_channels": s.lift_channels, "widths": list(s.widths),
            "out_channels": s.out_channels}


def load_bev_student(record: dict, stage_dir: Path) -> nn.Module:
    """A trained BEV student from its record (weights read with safetensors), in eval mode."""
    from safetensors.torch import load_file  # noqa: PLC0415

    from modalities.bev_students import build_bev_student  # noqa: PLC0415

    net = build_bev_student(record["kind"], {**record["kwargs"], **({"pretrained": False}
                                                                     if record["kind"] == "camera_bev" else {})})
    net.load_state_dict(load_file(str(Path(stage_dir) / record["weights"])))
    return net.eval()


@torch.no_grad()
def teacher_targets(teacher: nn.Module, spec, xyz: np.ndarray, intensity: np.ndarray, region: np.ndarray,
                    n_points: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(xy (n, 2), region (n,), L2-normalised teacher features (n, C)) at up to ``n_points`` region points."""
    from modalities.lidar.bev_net import pillar_inputs  # noqa: PLC0415

    from ..losses.calico import sample_bev  # noqa: PLC0415

    z_ok = (xyz[:, 2] >= spec.z_range_m[0]) & (xyz[:, 2] < spec.z_range_m[1])
    idx = sample_points(region, in_grid(xyz[:, :2], spec.grid) & z_ok, n_points, 0, rng)
    feeds = pillar_inputs(xyz, intensity, spec)[0]
    bev = teacher(**{k: torch.from_numpy(v)[None] for k, v in feeds.items()})
    feats, _ = sample_bev(bev, torch.from_numpy(xyz[idx, :2])[None], bev_grid_of(spec))
    return xyz[idx, :2].astype(np.float32), region[idx], F.normalize(feats[0], dim=1).numpy().astype(np.float32)


def points_in_view(xy: np.ndarray, cams, grid, image_hw, heights_m) -> np.ndarray:
    """(n,) bool: the BEV cell of each point is seen by at least one camera at one lift height (the frame's
    calibration, :func:`modalities.camera.bev_inputs.lift_geometry`); False outside the grid."""
    from modalities.camera.bev_inputs import lift_geometry  # noqa: PLC0415

    _, valid = lift_geometry([(c.K, c.T_cam_from_lidar, c.width, c.height) for c in cams], grid, tuple(image_hw),
                             heights_m)
    cell_seen = valid.any(axis=(0, 1))
    ix, iy, inside = grid.cell_of(xy)
    return inside & cell_seen[np.where(inside, iy, 0), np.where(inside, ix, 0)]


class RadModel(nn.Module):
    """Camera student + head; ``forward(feeds, points)`` is the RAD loss of a batch."""

    def __init__(self, student: nn.Module, head: nn.Module, cfg: RadConfig, grid):
        super().__init__()
        self.student, self.head, self.cfg, self.grid = student, head, cfg, grid

    def forward(self, feeds: dict, points: list) -> torch.Tensor:
        from ..losses.calico import rad_loss, sample_bev  # noqa: PLC0415

        device = next(self.parameters()).device
        maps = self.student(**{k: v.to(device) for k, v in feeds.items()})
        s, t, regions, offset = [], [], [], 0
        for i, (xy, region, target) in enumerate(points):
            f, _ = sample_bev(maps[i:i + 1], torch.from_numpy(xy)[None].to(device), self.grid)
            s.append(f[0])
            t.append(torch.from_numpy(target).to(device))
            regions.append(torch.from_numpy(region).to(device) + offset)
            offset += int(region.max()) + 1
        student = F.normalize(self.head(torch.cat(s)), dim=1)
        return rad_loss(student, torch.cat(t), torch.cat(regions), self.cfg.temperature, self.cfg.normalize_pooled)


def train_loop_per_worker(loop_config: dict) -> None:
    import ray.train.torch

    from modalities.bev_labels import BevGridSpec
    from modalities.camera.bev_lift import CameraBevNet

    cfg = RadConfig.model_validate(loop_config["config"])
    spec = loop_config["spec"]
    grid = BevGridSpec.from_dict(spec["grid"])
    rank, world, device = worker_setup(loop_config)
    with np.load(loop_config["clips"], allow_pickle=False) as z:
        xy, region, target, offsets = z["xy"], z["region"], z["target"], z["offsets"]
        image_paths, K, T, wh = z["image_paths"], z["K"], z["T"], z["wh"]
    net = CameraBevNet(**camera_kwargs(cfg))
    head = projection_head(net.feature_dim, target.shape[1])
    both = RadModel(net, head, cfg, bev_grid_of(grid))
    optimizer = torch.optim.AdamW(both.parameters(), lr=cfg.optim.lr, weight_decay=cfg.optim.weight_decay)
    start_epoch, history, _ = resume_training(loop_config, {"student": net, "head": head}, optimizer)
    attempt_start = start_epoch
    model = ray.train.torch.prepare_model(both)
    cache: dict[int, dict] = {}  # scan -> camera feeds (images resized once, geometry computed once)

    def feeds_of(i: int) -> dict:
        if i not in cache:
            from modalities.nuscenes_tables import CameraView  # noqa: PLC0415

            views = [CameraView(channel="", image_path=Path(str(image_paths[i, c])), K=K[i, c], width=int(wh[i, c, 0]),
                                height=int(wh[i, c, 1]), T_cam_from_lidar=T[i, c], timestamp_us=0,
                                sample_data_token="") for c in range(image_paths.shape[1])]
            cache[i] = camera_inputs(views, grid, tuple(spec["image_hw"]), spec["heights_m"])
        return cache[i]

    n = len(offsets) - 1
    batch, steps_per_epoch, total, warmup = step_schedule(n, world, cfg.batch_scans, cfg.optim.epochs,
                                                          cfg.optim.warmup_fraction)
    for epoch in range(start_epoch, cfg.optim.epochs):
        order = np.random.default_rng([loop_config["seed"], epoch]).permutation(n)[rank::world]
        model.train()
        losses, seen, t0 = [], 0, time.perf_counter()
        bar = epoch_bar("RAD", epoch, cfg.optim.epochs, steps_per_epoch, rank)
        for s in bar:
            step = epoch * steps_per_epoch + s
            set_lr(optimizer, cfg.optim.lr * lr_factor(step, total, warmup))
            idx = [int(i) for i in order[s * batch:(s + 1) * batch]]
            per_scan = [feeds_of(i) for i in idx]
            feeds = {k: torch.from_numpy(np.stack([f[k] for f in per_scan])) for k in per_scan[0]}
            points = [(xy[offsets[i]:offsets[i + 1]], region[offsets[i]:offsets[i + 1]],
                       target[offsets[i]:offsets[i + 1]]) for i in idx]
            loss = model(feeds, points)
            optimizer_step(loss, optimizer, model, cfg.max_grad_norm, "RAD", epoch, s)
            losses.append(loss.item())
            seen += len(idx)
            bar.set_postfix(loss=f"{losses[-1]:.3f}")
        wall = time.perf_counter() - t0
        metrics = {"epoch": epoch, "attempt_start_epoch": attempt_start, "loss": float(np.mean(losses)),
                   "steps": len(losses), "scans_per_s": seen * world / wall}
        history.append(metrics)
        report_epoch(rank, metrics, lambda folder: save_checkpoint(
            folder, {"student": unwrap(model).student, "head": unwrap(model).head}, optimizer, epoch, history))


def run_rad(ctx: StageContext) -> StageResult:
    from modalities.lidar.bev_net import PillarBevSpec  # noqa: PLC0415

    cfg: RadConfig = ctx.config  # type: ignore[assignment]
    teacher_dir = ctx.inputs[cfg.teacher]
    record = read_student_record(teacher_dir)
    if record["kind"] != "pillar_bev":
        raise ValueError(f"{teacher_dir}/student.json: the RAD teacher must be a pillar_bev student, got {record['kind']!r}")
    teacher = load_bev_student(record, teacher_dir)
    lidar_spec = PillarBevSpec.from_dict(record["input"])
    split = calico_scans(ctx.inputs["dataset"], ctx.dataset.version, ctx.inputs[cfg.regions],
                         ctx.dataset.holdout_scenes)
    skipped = {k: len(v) for k, v in split.skipped.items()}
    rng = np.random.default_rng(ctx.seed)
    grid = cfg.grid.spec()
    xy, region, target, offsets, views = [], [], [], [0], []
    unseen = 0  # region points in cells that no camera sees at any lift height (kept: the BEV CNN learns context)
    for scan in split.train:
        cams = camera_views(scan.cameras, cfg.student.cameras)
        if cams is None:
            skipped["missing_camera"] = skipped.get("missing_camera", 0) + 1
            ctx.log.warning("skipped %s: it lacks one of the cameras %s", scan.token, cfg.student.cameras)
            continue
        pts, reg, feats = teacher_targets(teacher, lidar_spec, *read_scan(scan.lidar_path, scan.regions_path),
                                          cfg.points_per_scan, rng)
        if not len(reg):
            skipped["no_region_point_in_grid"] = skipped.get("no_region_point_in_grid", 0) + 1
            continue
        seen = points_in_view(pts, cams, grid, cfg.student.image_hw, cfg.student.heights_m)
        if not seen.any():
            skipped["no_region_point_in_camera_view"] = skipped.get("no_region_point_in_camera_view", 0) + 1
            ctx.log.warning("skipped %s (%s): its calibration puts none of its %d region points in any camera %s",
                            scan.token, scan.lidar_path, len(reg), cfg.student.cameras)
            continue
        unseen += int((~seen).sum())
        xy.append(pts)
        region.append(reg)
        target.append(feats)
        offsets.append(offsets[-1] + len(reg))
        views.append(cams)
    if not views:
        raise ValueError(f"{ctx.inputs['dataset']}: no training scan with regions and all cameras {cfg.student.cameras}"
                         f" (skipped: {skipped})")
    ctx.log.info("RAD on %d training scans, %d region points; teacher %s (stage %s); skipped %s", len(views),
                 offsets[-1], record["kind"], cfg.teacher, skipped or "none")

    def write_cache(path: Path) -> None:
        with atomic_open(path) as f:
            np.savez(f, xy=np.concatenate(xy), region=np.concatenate(region), target=np.concatenate(target),
                     offsets=np.array(offsets, np.int64),
                     image_paths=np.array([[str(v.image_path) for v in cams] for cams in views]),
                     K=np.array([[v.K for v in cams] for cams in views], np.float64),
                     T=np.array([[v.T_cam_from_lidar for v in cams] for cams in views], np.float64),
                     wh=np.array([[(v.width, v.height) for v in cams] for cams in views], np.int64))

    spec = camera_spec(cfg)
    history = fit_with_cache(ctx, cfg, train_loop_per_worker, spec, write_cache,
                             ("student.safetensors", "head.safetensors"))
    write_student_record(ctx.stage_dir, "camera_bev", camera_kwargs(cfg), spec,
                         {"name": f"pillar_bev lidar student of stage {cfg.teacher} (CALICO PRC), frozen"},
                         "calico_rad", task="bev_features")
    epochs = [h["epoch"] + 1 for h in history]
    save_line_plot(ctx.stage_dir / "loss_curve.png", {"RAD": (epochs, [h["loss"] for h in history])},
                   "epoch", "loss", "CALICO RAD: camera BEV student from the frozen PRC lidar student")
    metrics = {"train_scans": len(views), "heldout_scans_unseen": len(split.heldout), "region_points": offsets[-1],
               "region_points_out_of_camera_view": unseen,
               **{f"skipped_{k}": v for k, v in skipped.items()}, "epochs": len(history),
               "loss_first_epoch": history[0]["loss"], "loss_last_epoch": history[-1]["loss"],
               "scans_per_s": history[-1]["scans_per_s"]}
    md = (f"Camera BEV student ({len(cfg.student.cameras)} cameras at {cfg.student.image_hw[1]}x"
          f"{cfg.student.image_hw[0]}, lift heights {list(cfg.student.heights_m)} m) distilled region by region from "
          f"the frozen PRC lidar student of `{cfg.teacher}` on {len(views)} training scans"
          + (f"; skipped: {skipped}" if skipped else "")
          + f". RAD loss {history[0]['loss']:.3f} -> {history[-1]['loss']:.3f} over {len(history)} epochs.\n\n"
          f"![loss]({ctx.name}/loss_curve.png)\n")
    return StageResult(metrics=metrics, report_md=md)
