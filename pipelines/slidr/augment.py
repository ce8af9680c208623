"""SLidR augmentations as pure numpy functions of (points, pairs, images) and a Generator.

Pairs (point index, camera index, pixel row/col) are computed BEFORE augmentation, on the
raw scan and full images; each function here returns the transformed data and the pairs
that survive. Parameters follow SLidR (Sautier et al., CVPR 2022; valeoai/SLidR
``utils/transforms.py``): z-rotation in [0, 2pi), x/y flips with p=0.5, one dropped
cuboid of up to 20 % of the scan extent per axis (kept only when every camera still has
>= 1024 pairs), per-image resized crop (area scale 0.3-1.0, aspect 14/9-17/9, output
224x416) retried until > 1024 pairs or > 75 % of the image's pairs survive, and a
horizontal flip with p=0.5.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


def rotate_flip_z(points_xyz: np.ndarray, rng: np.random.Generator, flip_p: float = 0.5) -> np.ndarray:
    """Random rotation about z in [0, 2pi), then negate x and y each with probability ``flip_p``."""
    angle = rng.random() * 2 * np.pi
    c, s = math.cos(angle), math.sin(angle)
    R = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]], dtype=points_xyz.dtype)
    out = points_xyz @ R.T
    for axis in (0, 1):
        if rng.random() < flip_p:
            out[:, axis] = -out[:, axis]
    return out


def drop_cuboid_mask(
    points_xyz: np.ndarray,
    pair_point: np.ndarray,
    pair_camera: np.ndarray,
    num_cameras: int,
    rng: np.random.Generator,
    max_extent_fraction: float = 0.2,
    min_pairs_per_camera: int = 1024,
) -> np.ndarray:
    """(N,) keep-mask of points outside one random cuboid centred on a random point.

    The cuboid's half-size per axis is ``u * max_extent_fraction / 2`` times the scan's
    extent (u ~ U[0, 1)). If any camera would keep fewer than ``min_pairs_per_camera``
    pairs (or fewer than it had, when it had less to begin with) the drop is cancelled
    and every point is kept.
    """
    keep = np.ones(len(points_xyz), dtype=bool)
    if len(points_xyz) == 0:
        return keep
    extent = points_xyz.max(0) - points_xyz.min(0)
    half = extent * (rng.random() * max_extent_fraction / 2.0)
    centre = points_xyz[rng.integers(len(points_xyz))]
    inside = np.all((points_xyz > centre - half) & (points_xyz < centre + half), axis=1)
    keep &= ~inside
    before = np.bincount(pair_camera, minlength=num_cameras)
    after = np.bincount(pair_camera[keep[pair_point]], minlength=num_cameras)
    if np.any(after < np.minimum(before, min_pairs_per_camera)):
        return np.ones(len(points_xyz), dtype=bool)
    return keep


@dataclass(frozen=True)
class CropBox:
    top: int
    left: int
    height: int
    width: int


def random_resized_crop_box(
    rng: np.random.Generator,
    image_hw: tuple[int, int],
    scale: tuple[float, float] = (0.3, 1.0),
    ratio: tuple[float, float] = (14 / 9, 17 / 9),
) -> CropBox:
    """torchvision ``RandomResizedCrop.get_params`` logic, driven by a numpy Generator."""
    H, W = image_hw
    area = H * W
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target = area * rng.uniform(scale[0], scale[1])
        aspect = math.exp(rng.uniform(*log_ratio))
        w = int(round(math.sqrt(target * aspect)))
        h = int(round(math.sqrt(target / aspect)))
        if 0 < w <= W and 0 < h <= H:
            return CropBox(int(rng.integers(0, H - h + 1)), int(rng.integers(0, W - w + 1)), h, w)
    # Fallback: the largest centred crop within the ratio range.
    in_ratio = W / H
    if in_ratio < ratio[0]:
        w, h = W, int(round(W / ratio[0]))
    elif in_ratio > ratio[1]:
        h, w = H, int(round(H * ratio[1]))
    else:
        w, h = W, H
    return CropBox((H - h) // 2, (W - w) // 2, h, w)


def crop_pixels(pixel_rc: np.ndarray, box: CropBox, out_hw: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Map (K, 2) integer (row, col) pixels into the resized crop; returns (rc, inside)."""
    scale = np.array([out_hw[0] / box.height, out_hw[1] / box.width])
    rc = np.round((pixel_rc - np.array([box.top, box.left])) * scale).astype(np.int64)
    inside = (rc[:, 0] >= 0) & (rc[:, 0] < out_hw[0]) & (rc[:, 1] >= 0) & (rc[:, 1] < out_hw[1])
    return rc, inside


def choose_crop(
    rng: np.random.Generator,
    image_hw: tuple[int, int],
    pixel_rc: np.ndarray,
    out_hw: tuple[int, int],
    min_pairs: int = 1024,
    min_fraction: float = 0.75,
    max_tries: int = 50,
    scale: tuple[float, float] = (0.3, 1.0),
    ratio: tuple[float, float] = (14 / 9, 17 / 9),
) -> tuple[CropBox, np.ndarray, np.ndarray, bool]:
    """A random resized crop keeping > ``min_pairs`` pairs or > ``min_fraction`` of them.

    SLidR retries without bound; here after ``max_tries`` the try that kept the most
    pairs is used and the last return value is False, so the caller can count it.
    Returns (box, rc in the crop, inside mask, accepted).
    """
    best = None
    for _ in range(max_tries):
        box = random_resized_crop_box(rng, image_hw, scale, ratio)
        rc, inside = crop_pixels(pixel_rc, box, out_hw)
        kept = int(inside.sum())
        if kept > min_pairs or (len(pixel_rc) and kept / len(pixel_rc) > min_fraction):
            return box, rc, inside, True
        if best is None or kept > best[3]:
            best = (box, rc, inside, kept)
    assert best is not None
    return best[0], best[1], best[2], False
