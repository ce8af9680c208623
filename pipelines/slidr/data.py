"""SLidR data: scans with their cameras and superpixels, point-pixel pairs, augmented batches.

One item is one lidar scan with its 6 camera images. Pairs are computed on the raw scan
and full-size images (DESIGN 5.1): a point pairs with a pixel of a camera when its camera
depth is > 1 m and its rounded pixel lies strictly inside the image. Augmentations then
move the points (rotation, flips, a dropped cuboid) and crop/flip each image; the pairs
follow. Superpixel ids are made global in the batch as ``(image index) * budget + id``, so
the ids of two images can never merge.

Degenerate data is counted, not hidden: a scan with no pair in any camera is skipped and
counted (``skipped_no_pairs``), an image with no paired point contributes only negatives
and is counted (``images_without_pairs``); both reach the run report.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from modalities.camera.calibration import project_points
from modalities.camera.io import read_image
from modalities.camera.superpixels import load_superpixels
from modalities.lidar.io import read_nuscenes_pcd_bin
from modalities.lidar.range_spec import RangeImageSpec
from modalities.nuscenes_tables import CameraView, NuScenesTables

from ..data.superpixels_stage import superpixel_path
from ..student_inputs import StudentInput, make_student_input
from .augment import choose_crop, drop_cuboid_mask, rotate_flip_z
from .config import AugmentConfig

@dataclass(frozen=True)
class ScanRef:
    """Everything needed to load one scan; picklable (Ray / DataLoader workers)."""

    token: str
    scene_token: str
    lidar_path: Path
    lidarseg_path: Path | None
    cameras: tuple[CameraView, ...]
    superpixel_paths: tuple[Path, ...]


def list_scans(dataset_root: Path, version: str, superpixels_dir: Path | None) -> list[ScanRef]:
    """Key-frame scans in dataset order (scene by scene, in time)."""
    tables = NuScenesTables(dataset_root, version)
    scans = []
    for s in tables.samples():
        cams = tuple(tables.cameras(s))
        sp = tuple(superpixel_path(superpixels_dir, c.channel, c.image_path) for c in cams) if superpixels_dir else ()
        scans.append(ScanRef(s.token, s.scene_token, s.lidar_path, s.lidarseg_path, cams, sp))
    return scans


def split_by_scene(scans: list[ScanRef], holdout_scenes: int) -> tuple[list[ScanRef], list[ScanRef]]:
    """(train, held-out): the last ``holdout_scenes`` scenes are held out for evaluation."""
    scenes = list(dict.fromkeys(s.scene_token for s in scans))
    if holdout_scenes >= len(scenes):
        raise ValueError(
            f"the dataset's holdout_scenes={holdout_scenes} leaves no training scene (the dataset has {len(scenes)});"
            " generate more scenes or hold out fewer"
        )
    held = set(scenes[len(scenes) - holdout_scenes:]) if holdout_scenes else set()
    return [s for s in scans if s.scene_token not in held], [s for s in scans if s.scene_token in held]


def scan_pairs(points_xyz: np.ndarray, cameras: tuple[CameraView, ...], min_depth_m: float = 1.0):
    """Point-pixel pairs of a raw scan: (point index (K,), camera index (K,), pixel (row, col) (K, 2))."""
    pp, pc, prc = [], [], []
    for i, cam in enumerate(cameras):
        uv, _, valid = project_points(points_xyz, cam.T_cam_from_lidar, cam.K, (cam.width, cam.height), min_depth_m)
        idx = np.flatnonzero(valid)
        rc = np.rint(uv[idx][:, ::-1]).astype(np.int64)
        pp.append(idx)
        pc.append(np.full(len(idx), i, dtype=np.int64))
        prc.append(rc)
    return np.concatenate(pp), np.concatenate(pc), np.concatenate(prc).reshape(-1, 2)


def _crop_resize(array: np.ndarray, box, out_hw: tuple[int, int], resample: int) -> np.ndarray:
    img = Image.fromarray(array)
    region = (box.left, box.top, box.left + box.width, box.top + box.height)
    return np.asarray(img.resize((out_hw[1], out_hw[0]), resample=resample, box=region))


@dataclass
class ScanItem:
    """One augmented scan, numpy arrays (collated into a :class:`SlidrBatch`)."""

    token: str
    points_xyz: np.ndarray  # (N, 3) augmented
    intensity: np.ndarray  # (N,) in [0, 1]
    ring: np.ndarray  # (N,) beam index from the file
    images: np.ndarray  # (C, h, w, 3) uint8 crops
    superpixels: np.ndarray  # (C, h, w) int64 per-image ids in [0, budget)
    pair_point: np.ndarray  # (K,) index into points
    pair_camera: np.ndarray  # (K,)
    pair_rc: np.ndarray  # (K, 2) pixel in the crop
    crops_below_min_pairs: int = 0


class SlidrDataset(torch.utils.data.Dataset):
    """Augmented scans with their pairs, image crops and superpixel crops.

    Randomness comes from ``(seed, epoch, index)``, so an epoch replays identically after a
    resume and does not depend on DataLoader worker scheduling.
    """

    def __init__(self, scans: list[ScanRef], aug: AugmentConfig, budget: int, seed: int):
        self.scans, self.aug, self.budget, self.seed = scans, aug, budget, seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.scans)

    def __getitem__(self, index: int) -> ScanItem | None:
        scan = self.scans[index]
        rng = np.random.default_rng([self.seed, self.epoch, index])
        cloud = read_nuscenes_pcd_bin(scan.lidar_path)
        xyz, intensity, ring = cloud.points_xyz.copy(), cloud.unit_intensity(), cloud.ring
        pair_point, pair_camera, pair_rc = scan_pairs(xyz, scan.cameras)
        if len(pair_point) == 0:
            return None  # counted as skipped_no_pairs by collate
        xyz = rotate_flip_z(xyz, rng, self.aug.flip_p)
        if self.aug.drop_cuboids:
            keep = drop_cuboid_mask(xyz, pair_point, pair_camera, len(scan.cameras), rng,
                                    min_pairs_per_camera=self.aug.min_pairs_per_image)
            if not keep.all():
                new_index = np.cumsum(keep) - 1
                paired = keep[pair_point]
                pair_point, pair_camera, pair_rc = new_index[pair_point[paired]], pair_camera[paired], pair_rc[paired]
                xyz, intensity, ring = xyz[keep], intensity[keep], ring[keep]
        h, w = self.aug.crop_hw
        images = np.empty((len(scan.cameras), h, w, 3), dtype=np.uint8)
        sps = np.empty((len(scan.cameras), h, w), dtype=np.int64)
        keep_pairs = np.zeros(len(pair_point), dtype=bool)
        out_rc = np.zeros_like(pair_rc)
        below = 0
        for c, cam in enumerate(scan.cameras):
            image = read_image(cam.image_path)
            sp = load_superpixels(scan.superpixel_paths[c], budget=self.budget, expected_hw=(cam.height, cam.width))
            sel = np.flatnonzero(pair_camera == c)
            box, rc, inside, accepted = choose_crop(
                rng, (cam.height, cam.width), pair_rc[sel], (h, w), self.aug.min_pairs_per_image,
                scale=self.aug.crop_scale, ratio=self.aug.crop_ratio,
            )
            below += not accepted
            img = _crop_resize(image, box, (h, w), Image.BILINEAR)
            spc = _crop_resize(sp.astype(np.int32), box, (h, w), Image.NEAREST)
            if rng.random() < self.aug.flip_p:
                img, spc = img[:, ::-1], spc[:, ::-1]
                rc = rc.copy()
                rc[:, 1] = w - 1 - rc[:, 1]
            images[c], sps[c] = img, spc
            keep_pairs[sel[inside]] = True
            out_rc[sel] = rc
        return ScanItem(
            token=scan.token, points_xyz=xyz.astype(np.float32), intensity=intensity.astype(np.float32), ring=ring,
            images=images, superpixels=sps, pair_point=pair_point[keep_pairs], pair_camera=pair_camera[keep_pairs],
            pair_rc=out_rc[keep_pairs], crops_below_min_pairs=below,
        )


@dataclass
class SlidrBatch:
    """A collated batch; tensors on CPU until :meth:`to`."""

    images: torch.Tensor  # (I, 3, h, w) float in [0, 1], I = scans x cameras
    superpixels: torch.Tensor  # (I, h, w) int64 global ids
    pair_superpixel: torch.Tensor  # (K,) global superpixel id of each pair
    pair_point: torch.Tensor  # (K,) row in the batch's concatenated points
    num_superpixels: int
    student_input: StudentInput
    stats: dict[str, int] = field(default_factory=dict)
    tokens: list[str] = field(default_factory=list)

    def to(self, device: torch.device | str) -> "SlidrBatch":
        self.images = self.images.to(device, non_blocking=True)
        self.superpixels = self.superpixels.to(device, non_blocking=True)
        self.pair_superpixel = self.pair_superpixel.to(device, non_blocking=True)
        self.pair_point = self.pair_point.to(device, non_blocking=True)
        self.student_input = self.student_input.to(device)
        return self


class Collate:
    """Picklable collate function: global superpixel ids and the student's input."""

    def __init__(self, student: str, budget: int, voxel_size=(0.1, 1.0, 0.1), range_spec: RangeImageSpec | None = None):
        self.student, self.budget, self.voxel_size, self.range_spec = student, budget, tuple(voxel_size), range_spec

    def __call__(self, items: list[ScanItem | None]) -> SlidrBatch | None:
        skipped = sum(it is None for it in items)
        items = [it for it in items if it is not None]
        if not items:
            return None  # every scan of the batch lacked pairs: the caller counts and skips it
        C = items[0].images.shape[0]
        images = torch.from_numpy(np.concatenate([it.images for it in items])).permute(0, 3, 1, 2).float().div_(255.0)
        offsets = (np.arange(len(items) * C) * self.budget).reshape(len(items), C)
        sps = np.concatenate([it.superpixels + offsets[b][:, None, None] for b, it in enumerate(items)])
        point_offsets = np.cumsum([0] + [len(it.points_xyz) for it in items])
        pair_sp = np.concatenate([
            it.superpixels[it.pair_camera, it.pair_rc[:, 0], it.pair_rc[:, 1]] + offsets[b][it.pair_camera]
            for b, it in enumerate(items)
        ])
        pair_point = np.concatenate([it.pair_point + point_offsets[b] for b, it in enumerate(items)])
        inp = make_student_input(
            self.student, [it.points_xyz for it in items], [it.intensity for it in items], self.voxel_size,
            self.range_spec, [it.ring for it in items],
        )
        # Pairs whose point has no student feature (outside every range-image beam) are dropped.
        has_feature = inp.point_valid.numpy()[pair_point]
        return SlidrBatch(
            images=images.contiguous(),
            superpixels=torch.from_numpy(sps),
            pair_superpixel=torch.from_numpy(pair_sp[has_feature]),
            pair_point=torch.from_numpy(pair_point[has_feature]),
            num_superpixels=len(items) * C * self.budget,
            student_input=inp,
            stats={
                "scans": len(items),
                "skipped_no_pairs": skipped,
                "images_without_pairs": int(sum((np.bincount(it.pair_camera, minlength=C) == 0).sum() for it in items)),
                "crops_below_min_pairs": int(sum(it.crops_below_min_pairs for it in items)),
                "pairs": int(has_feature.sum()),
                "pairs_without_student_feature": int((~has_feature).sum()),
            },
            tokens=[it.token for it in items],
        )
