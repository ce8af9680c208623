"""Lidar points projected into every camera land on their own class at the rendered depth.

Checked twice: through the official devkit's calibration chain (pyquaternion +
``LidarPointCloud``, as ``NuScenesExplorer.map_pointcloud_to_image``) and through our
``NuScenesTables`` + ``project_points``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from modalities.camera.calibration import project_points
from modalities.nuscenes_tables import NuScenesTables

MIN_AGREEMENT = 0.98


def gt_paths(root: Path, image_filename: str) -> tuple[Path, Path]:
    channel = Path(image_filename).parent.name
    stem = Path(image_filename).stem
    return (root / "groundtruth" / channel / f"{stem}_semantic.png", root / "groundtruth" / channel / f"{stem}_depth.npy")


def projection_agreement(uv: np.ndarray, depth_m: np.ndarray, labels: np.ndarray,
                         semantic: np.ndarray, gt_depth: np.ndarray) -> tuple[float, float, int]:
    """Fractions of projected points whose class and depth agree with the camera ground truth.

    Only points in front of the camera (> 1 m), inside the image, whose 5x5 pixel
    neighbourhood has one class (away from object boundaries) are checked. Points that the
    camera cannot see because something is clearly in front of them (the roof lidar looks
    over a parked car that hides the scene from a 1.5 m high camera: real parallax, as in
    nuScenes) are counted separately and excluded, their number is returned. Depth is
    compared with the inverse depth interpolated bilinearly between the four pixel centres
    around the sub-pixel position (exact for planar surfaces), with 0.05 m + 1 % tolerance.
    """
    H, W = semantic.shape
    u, v = uv[:, 0], uv[:, 1]
    ui, vi = np.round(u).astype(int), np.round(v).astype(int)
    ok = (depth_m > 1.0) & (ui >= 2) & (ui < W - 2) & (vi >= 2) & (vi < H - 2)
    idx = np.flatnonzero(ok)
    offsets = np.arange(-2, 3)
    patch = semantic[vi[idx, None, None] + offsets[None, :, None], ui[idx, None, None] + offsets[None, None, :]]
    uniform = np.all(patch == patch[:, :1, :1], axis=(1, 2))
    idx = idx[uniform]
    g = gt_depth[vi[idx], ui[idx]]
    occluded = (g > 0) & (g < depth_m[idx] - (0.5 + 0.05 * depth_m[idx]))
    n_occluded = int(occluded.sum())
    idx = idx[~occluded]
    class_ok = semantic[vi[idx], ui[idx]] == labels[idx]
    u0 = np.clip(np.floor(u[idx]).astype(int), 0, W - 2)
    v0 = np.clip(np.floor(v[idx]).astype(int), 0, H - 2)
    fu, fv = u[idx] - u0, v[idx] - v0
    inv = 1.0 / np.where(gt_depth > 0, gt_depth, np.inf)
    inv_i = ((1 - fu) * (1 - fv) * inv[v0, u0] + fu * (1 - fv) * inv[v0, u0 + 1]
             + (1 - fu) * fv * inv[v0 + 1, u0] + fu * fv * inv[v0 + 1, u0 + 1])
    gt = 1.0 / np.maximum(inv_i, 1e-9)
    depth_ok = np.abs(depth_m[idx] - gt) < 0.05 + 0.01 * depth_m[idx]
    return float(class_ok.mean()), float(depth_ok.mean()), len(idx), n_occluded


def _check(root: Path, image_filename: str, uv, depth_m, labels, stats: list) -> None:
    sem_path, depth_path = gt_paths(root, image_filename)
    semantic = np.asarray(Image.open(sem_path))
    gt_depth = np.load(depth_path)
    stats.append(projection_agreement(uv, depth_m, labels, semantic, gt_depth))


def _assert_agree(stats: list) -> None:
    n = sum(s[2] for s in stats)
    assert n > 2000, f"too few checkable points ({n})"
    occluded = sum(s[3] for s in stats) / (n + sum(s[3] for s in stats))
    assert occluded < 0.08, f"{occluded:.3f} of the points are hidden from the cameras: calibration is off"
    class_frac = sum(s[0] * s[2] for s in stats) / n
    depth_frac = sum(s[1] * s[2] for s in stats) / n
    assert class_frac >= MIN_AGREEMENT, f"class agreement {class_frac:.4f} over {n} points"
    assert depth_frac >= MIN_AGREEMENT, f"depth agreement {depth_frac:.4f} over {n} points"
    for c, d, k, _ in stats:  # no single camera may be badly off either
        if k > 200:
            assert c >= 0.9 and d >= 0.9, stats


def test_projection_through_devkit_chain(synth_set):
    pytest.importorskip("nuscenes")
    from nuscenes.nuscenes import NuScenes
    from nuscenes.utils.data_classes import LidarPointCloud
    from nuscenes.utils.geometry_utils import view_points
    from pyquaternion import Quaternion

    root, cfg, _ = synth_set
    nusc = NuScenes(version=cfg.version, dataroot=str(root), verbose=False)
    stats: list = []
    for sample in nusc.sample:
        lidar_sd = nusc.get("sample_data", sample["data"]["LIDAR_TOP"])
        labels = np.fromfile(root / nusc.get("lidarseg", lidar_sd["token"])["filename"], dtype=np.uint8)
        for channel, token in sample["data"].items():
            cam_sd = nusc.get("sample_data", token)
            if cam_sd["sensor_modality"] != "camera":
                continue
            pc = LidarPointCloud.from_file(str(root / lidar_sd["filename"]))
            cs = nusc.get("calibrated_sensor", lidar_sd["calibrated_sensor_token"])
            pc.rotate(Quaternion(cs["rotation"]).rotation_matrix)
            pc.translate(np.array(cs["translation"]))
            pose = nusc.get("ego_pose", lidar_sd["ego_pose_token"])
            pc.rotate(Quaternion(pose["rotation"]).rotation_matrix)
            pc.translate(np.array(pose["translation"]))
            pose = nusc.get("ego_pose", cam_sd["ego_pose_token"])
            pc.translate(-np.array(pose["translation"]))
            pc.rotate(Quaternion(pose["rotation"]).rotation_matrix.T)
            cs = nusc.get("calibrated_sensor", cam_sd["calibrated_sensor_token"])
            pc.translate(-np.array(cs["translation"]))
            pc.rotate(Quaternion(cs["rotation"]).rotation_matrix.T)
            depth = pc.points[2, :]
            uv = view_points(pc.points[:3, :], np.array(cs["camera_intrinsic"]), normalize=True)[:2].T
            _check(root, cam_sd["filename"], uv, depth, labels, stats)
    _assert_agree(stats)


def test_projection_through_our_tables(synth_set):
    root, cfg, _ = synth_set
    tables = NuScenesTables(root, cfg.version)
    stats: list = []
    for sample in tables.samples():
        points = tables.load_points(sample)
        labels = tables.load_lidarseg(sample, len(points))
        views = tables.cameras(sample)
        assert sorted(v.channel for v in views) == sorted(
            ["CAM_FRONT", "CAM_FRONT_RIGHT", "CAM_BACK_RIGHT", "CAM_BACK", "CAM_BACK_LEFT", "CAM_FRONT_LEFT"])
        for view in views:
            uv, depth, valid = project_points(points, view.T_cam_from_lidar, view.K, (view.width, view.height))
            assert valid.any()
            _check(root, str(view.image_path.relative_to(root)), uv, depth, labels, stats)
    _assert_agree(stats)


def test_camera_ego_pose_is_needed(synth_set):
    """Using the lidar's ego pose for the camera (a classic bug) breaks the depth agreement."""
    from modalities.camera.calibration import nuscenes_T_cam_from_lidar

    root, cfg, _ = synth_set
    tables = NuScenesTables(root, cfg.version)
    sample = next(iter(tables.samples()))
    points = tables.load_points(sample)
    labels = tables.load_lidarseg(sample, len(points))
    lidar_sd = tables.get("sample_data", sample.lidar_sample_data_token)
    lidar_cs = tables.get("calibrated_sensor", lidar_sd["calibrated_sensor_token"])
    lidar_pose = tables.get("ego_pose", lidar_sd["ego_pose_token"])
    good, bad = [], []
    for view in tables.cameras(sample):
        cam_sd = tables.get("sample_data", view.sample_data_token)
        cam_cs = tables.get("calibrated_sensor", cam_sd["calibrated_sensor_token"])
        T_wrong = nuscenes_T_cam_from_lidar(lidar_cs, lidar_pose, cam_cs, lidar_pose)
        for T, out in ((view.T_cam_from_lidar, good), (T_wrong, bad)):
            uv, depth, _ = project_points(points, T, view.K, (view.width, view.height))
            _check(root, str(view.image_path.relative_to(root)), uv, depth, labels, out)
    n_good, n_bad = sum(s[2] for s in good), sum(s[2] for s in bad)
    depth_good = sum(s[1] * s[2] for s in good) / n_good
    depth_bad = sum(s[1] * s[2] for s in bad) / n_bad
    assert depth_bad < MIN_AGREEMENT <= depth_good, (depth_good, depth_bad)
