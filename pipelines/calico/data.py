"""CALICO data: key-frame scans with their regions and cameras, the two PRC views, the network inputs.

A :class:`CalicoScan` is one key frame of a nuScenes-format set: its lidar file, the regions file
of a ``regions`` stage and its cameras. Everything here is numpy and picklable (Ray workers);
the network inputs come from the deployable specs: :func:`modalities.lidar.bev_net.pillar_inputs`
for the lidar student, :func:`camera_inputs` (images resized to the student's input, the fixed
lift geometry: :func:`modalities.camera.bev_inputs.camera_bev_feeds`) for the camera student.

Skips are counted by the callers: a scan whose regions stage found no region (or could not read
it), and, for the camera student, a scan that lacks one of the configured cameras.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from modalities.lidar.io import read_nuscenes_pcd_bin
from modalities.lidar.regions import load_regions
from modalities.nuscenes_tables import CameraView

from ..slidr.data import list_scans, split_by_scene
from .regions_stage import regions_path, scan_stem


@dataclass(frozen=True)
class CalicoScan:
    token: str
    scene_token: str
    lidar_path: Path
    regions_path: Path
    cameras: tuple[CameraView, ...]


@dataclass(frozen=True)
class ScanSplit:
    train: list[CalicoScan]
    heldout: list[CalicoScan]
    skipped: dict[str, list[str]]  # reason -> scan stems (training split only)


def calico_scans(dataset_root: Path, version: str, regions_dir: Path, holdout_scenes: int) -> ScanSplit:
    """The training scans that have regions (the held-out scenes are never trained on), and the held-out ones.

    A training scan is skipped (and listed under its reason) when the regions stage marked it
    ``no_regions`` or ``unreadable``, or left no file for it.
    """
    status = {}
    listing = Path(regions_dir) / "scans.json"
    if listing.is_file():
        status = {r["stem"]: r["status"] for r in json.loads(listing.read_text())}
    refs = list_scans(Path(dataset_root), version, None)
    train_refs, held_refs = split_by_scene(refs, holdout_scenes)
    skipped: dict[str, list[str]] = {}
    train = []
    for r in train_refs:
        path = regions_path(Path(regions_dir), r.lidar_path)
        stem = scan_stem(r.lidar_path)
        reason = status.get(stem, "ok" if path.is_file() else "missing")
        if reason != "ok" or not path.is_file():
            skipped.setdefault(reason if reason != "ok" else "missing", []).append(stem)
            continue
        train.append(CalicoScan(r.token, r.scene_token, Path(r.lidar_path), path, r.cameras))
    held = [CalicoScan(r.token, r.scene_token, Path(r.lidar_path), regions_path(Path(regions_dir), r.lidar_path),
                       r.cameras) for r in held_refs]
    return ScanSplit(train, held, skipped)


def read_points(lidar_path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """(xyz (N, 3) float32, intensity in [0, 1] (N,) float32) of a nuScenes ``.pcd.bin``."""
    cloud = read_nuscenes_pcd_bin(lidar_path)
    return cloud.points_xyz.astype(np.float32), cloud.unit_intensity().astype(np.float32)


def read_scan(lidar_path: str | Path, regions_file: str | Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(xyz, intensity, region id (N,) int64, -1 outside every region) of one scan."""
    xyz, intensity = read_points(lidar_path)
    region = load_regions(regions_file, num_points=len(xyz)).region_id.astype(np.int64)
    return xyz, intensity, region


def augment_view(xyz: np.ndarray, rng: np.random.Generator, rotation_deg: float, scale: tuple[float, float],
                 flip: bool) -> np.ndarray:
    """One random view of a scan: rotation about z in [-r, r] degrees, flips of x and y, and one global scale
    of all three axes (the usual global scaling of lidar detectors)."""
    a = np.deg2rad(rng.uniform(-rotation_deg, rotation_deg))
    c, s = np.cos(a), np.sin(a)
    m = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]]) * rng.uniform(*scale)
    if flip:
        m = np.diag([rng.choice([-1.0, 1.0]), rng.choice([-1.0, 1.0]), 1.0]) @ m
    return (xyz.astype(np.float64) @ m.T).astype(np.float32)


def in_grid(xy: np.ndarray, grid) -> np.ndarray:
    """(N,) bool: the points lie in the half-open x-y extent of ``grid`` (a ``BevGridSpec``)."""
    return ((xy[:, 0] >= grid.x_range_m[0]) & (xy[:, 0] < grid.x_range_m[1])
            & (xy[:, 1] >= grid.y_range_m[0]) & (xy[:, 1] < grid.y_range_m[1]))


def sample_points(region: np.ndarray, candidate: np.ndarray, inside: int, outside: int,
                  rng: np.random.Generator) -> np.ndarray:
    """Sorted indices of up to ``inside`` candidate points in regions and ``outside`` candidates in none, no repeats."""
    cand = np.flatnonzero(candidate)
    pick_in = cand[region[cand] >= 0]
    pick_out = cand[region[cand] < 0]
    pick_in = rng.choice(pick_in, min(inside, len(pick_in)), replace=False) if len(pick_in) else pick_in
    pick_out = rng.choice(pick_out, min(outside, len(pick_out)), replace=False) if len(pick_out) and outside else pick_out[:0]
    return np.sort(np.concatenate([pick_in, pick_out]))


# --------------------------------------------------------------------------- camera student inputs


def camera_views(cameras: tuple[CameraView, ...], channels: list[str] | tuple[str, ...]) -> list[CameraView] | None:
    """A key frame's ``cameras`` in the order of ``channels``; None when one is missing."""
    by_channel = {c.channel: c for c in cameras}
    if any(ch not in by_channel for ch in channels):
        return None
    return [by_channel[ch] for ch in channels]


def camera_inputs(views: list[CameraView], grid, image_hw: tuple[int, int], heights_m) -> dict[str, np.ndarray]:
    """The camera student's feeds of one key frame, without the batch dimension: the deployed pre-processing,
    :func:`modalities.camera.bev_inputs.camera_bev_feeds`, with this frame's calibration (the lidar-to-camera
    transforms change slightly from frame to frame)."""
    from modalities.camera.bev_inputs import CameraBevSpec, camera_bev_feeds  # noqa: PLC0415

    spec = CameraBevSpec(tuple(v.channel for v in views), tuple(image_hw), tuple(heights_m), grid)
    return camera_bev_feeds([v.image_path for v in views], [(v.K, v.T_cam_from_lidar) for v in views], spec,
                            calibrated_sizes=[(v.width, v.height) for v in views])


def student_feeds(kind: str, input_spec: dict, lidar_path: str | Path, cameras: tuple[CameraView, ...],
                  where: str) -> dict[str, np.ndarray]:
    """The feeds (no batch dimension) of a BEV student of ``kind`` for one key frame, from its record's input spec.

    Raises:
        DataError: naming the frame when a camera student's cameras are not all there.
    """
    from modalities.bev_labels import BevGridSpec  # noqa: PLC0415
    from modalities.errors import DataError  # noqa: PLC0415

    if kind == "pillar_bev":
        from modalities.lidar.bev_net import PillarBevSpec, pillar_inputs  # noqa: PLC0415

        return pillar_inputs(*read_points(lidar_path), PillarBevSpec.from_dict(input_spec))[0]
    if kind == "camera_bev":
        views = camera_views(cameras, input_spec["cameras"])
        if views is None:
            raise DataError(lidar_path, f"{where}: the key frame lacks one of the cameras {input_spec['cameras']} "
                                        f"(it has {[c.channel for c in cameras]})")
        return camera_inputs(views, BevGridSpec.from_dict(input_spec["grid"]), tuple(input_spec["image_hw"]),
                             input_spec["heights_m"])
    raise ValueError(f"{where}: unknown BEV student kind {kind!r}")
