"""Cartesian and cylindrical voxelization (pure numpy; inputs are never modified).

Frames: points are in the lidar frame, metres. Cylindrical coordinates::

        z (up)
        |
        |     . p
        |    /|
        +---/-|------ x          rho = sqrt(x^2 + y^2)   [m]
         \\ /phi                  phi = atan2(y, x)       [rad, (-pi, pi]], CCW from +x
          y                      z   = z                 [m]

Voxel coordinates are ``floor(coordinate / voxel_size)`` (floored, so negative values
stay distinct from their positive mirror images), as in SLidR (Sautier et al., "Image-to-
Lidar Self-Supervised Distillation for Autonomous Driving Data", CVPR 2022; reference
code valeoai/SLidR): cylindrical voxels of 0.1 m radius, 1 degree azimuth, 0.1 m height,
and each voxel carries the features of the FIRST point that falls into it. "First" is by
original point order, so the result is deterministic; voxels are numbered in the order of
their first point (``first_point_index`` is increasing).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np


def _check_points(points_xyz: np.ndarray) -> np.ndarray:
    pts = np.asarray(points_xyz)
    if pts.ndim != 2 or pts.shape[1] < 3:
        raise ValueError(f"points_xyz: expected (N, >=3), got {pts.shape}")
    xyz = pts[:, :3].astype(np.float64)
    if not np.all(np.isfinite(xyz)):
        raise ValueError("points_xyz: contains NaN or inf; drop non-finite points before voxelizing")
    return xyz


def _check_size(size: Sequence[float], what: str) -> np.ndarray:
    s = np.asarray(size, dtype=np.float64).reshape(-1)
    if s.size == 1:
        s = np.repeat(s, 3)
    if s.shape != (3,) or not np.all(np.isfinite(s)) or np.any(s <= 0):
        raise ValueError(f"{what}: expected 3 positive sizes (or one for all axes), got {size!r}")
    return s


def unique_coords(coords: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Deduplicate integer coordinates, keeping the first occurrence by row order.

    Args:
        coords: (N, D) integer coordinates.

    Returns:
        unique (M, D) int64 in the order of first occurrence, inverse (N,) int64 with
        ``unique[inverse] == coords``, first_index (M,) int64 (increasing) with
        ``coords[first_index] == unique``.
    """
    c = np.asarray(coords, dtype=np.int64)
    if c.ndim != 2:
        raise ValueError(f"coords: expected (N, D), got {c.shape}")
    n = c.shape[0]
    if n == 0:
        return np.zeros((0, c.shape[1]), np.int64), np.zeros(0, np.int64), np.zeros(0, np.int64)
    lo = c.min(axis=0)
    span = c.max(axis=0) - lo + 1
    if np.prod(span.astype(np.float64)) < 2.0**62:
        # Pack each row into one int64 key (row-major over the bounding box).
        key = np.zeros(n, np.int64)
        for d in range(c.shape[1]):
            key = key * span[d] + (c[:, d] - lo[d])
        _, first_sorted, inverse_sorted = np.unique(key, return_index=True, return_inverse=True)
    else:  # astronomically sparse coordinates: fall back to row-wise unique
        _, first_sorted, inverse_sorted = np.unique(c, axis=0, return_index=True, return_inverse=True)
    inverse_sorted = inverse_sorted.reshape(-1)
    # np.unique sorts by key and (stable sort) reports the first occurrence; renumber the
    # voxels by that first occurrence so the numbering follows the point order.
    order = np.argsort(first_sorted, kind="stable")
    rank = np.empty_like(order)
    rank[order] = np.arange(order.size)
    first_index = first_sorted[order].astype(np.int64)
    inverse = rank[inverse_sorted].astype(np.int64)
    return c[first_index], inverse, first_index


def _voxelize(coords: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    if coords.size and (coords.min() < np.iinfo(np.int32).min or coords.max() > np.iinfo(np.int32).max):
        raise ValueError("voxel indices overflow int32: the voxel size is too small for the extent of the points")
    unique, inverse, first = unique_coords(coords)
    return unique.astype(np.int32), inverse, first


def voxelize_cartesian(
    points_xyz: np.ndarray,
    voxel_size_m: float | Sequence[float],
    origin_m: Sequence[float] = (0.0, 0.0, 0.0),
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Floor points into axis-aligned voxels.

    Args:
        points_xyz: (N, >=3) points, lidar frame, metres (extra columns ignored).
        voxel_size_m: (3,) voxel edge lengths in x, y, z (or one number for cubes).
        origin_m: (3,) corner of voxel (0, 0, 0).

    Returns:
        coords (M, 3) int32 voxel indices ``floor((p - origin) / size)``, inverse (N,) int64
        point -> voxel, first_point_index (M,) int64 the first point of each voxel.
    """
    xyz = _check_points(points_xyz)
    size = _check_size(voxel_size_m, "voxel_size_m")
    origin = np.asarray(origin_m, dtype=np.float64).reshape(3)
    return _voxelize(np.floor((xyz - origin) / size).astype(np.int64))


def to_cylindrical(points_xyz: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(rho_m, phi_rad, z_m), each (N,) float64: radius in the x-y plane, azimuth atan2(y, x), height."""
    xyz = _check_points(points_xyz)
    rho_m = np.hypot(xyz[:, 0], xyz[:, 1])
    phi_rad = np.arctan2(xyz[:, 1], xyz[:, 0])
    return rho_m, phi_rad, xyz[:, 2].copy()


def from_cylindrical(rho_m: np.ndarray, phi_rad: np.ndarray, z_m: np.ndarray) -> np.ndarray:
    """(N, 3) float64 cartesian points from cylindrical coordinates (inverse of :func:`to_cylindrical`)."""
    rho_m, phi_rad, z_m = (np.asarray(a, dtype=np.float64) for a in (rho_m, phi_rad, z_m))
    return np.stack([rho_m * np.cos(phi_rad), rho_m * np.sin(phi_rad), z_m], axis=1)


def voxelize_cylindrical(
    points_xyz: np.ndarray,
    voxel_size: tuple[float, float, float] = (0.1, 1.0, 0.1),
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Floor points into cylindrical voxels (SLidR, CVPR 2022; valeoai/SLidR).

    Args:
        points_xyz: (N, >=3) points, lidar frame, metres.
        voxel_size: (radius m, azimuth DEGREES, z m); SLidR uses (0.1, 1, 0.1).

    Returns:
        coords (M, 3) int32 ``(floor(rho / s_rho), floor(phi_deg / s_phi), floor(z / s_z))``
        (the azimuth index is negative for y < 0: shift with :func:`shift_to_nonnegative`),
        inverse (N,) int64 point -> voxel, first_point_index (M,) int64.
    """
    size = _check_size(voxel_size, "voxel_size (radius m, azimuth deg, z m)")
    rho_m, phi_rad, z_m = to_cylindrical(points_xyz)
    cyl = np.stack([rho_m, np.degrees(phi_rad), z_m], axis=1)
    return _voxelize(np.floor(cyl / size).astype(np.int64))


def nonnegative_shift(coords: np.ndarray, multiple: int = 16) -> np.ndarray:
    """(D,) int64 per-axis offset, a multiple of ``multiple``, that makes every coordinate >= 0.

    Axes that are already non-negative get 0. The offset is a multiple of 16 for a network
    with 4 stride-2 levels, so that voxels land in the same parent cells at every level
    as they would without the shift (parity is preserved at each level).
    """
    c = np.asarray(coords, dtype=np.int64)
    if multiple < 1:
        raise ValueError(f"multiple must be >= 1, got {multiple}")
    if c.ndim != 2:
        raise ValueError(f"coords: expected (M, D), got {c.shape}")
    if c.shape[0] == 0:
        return np.zeros(c.shape[1], np.int64)
    lo = c.min(axis=0)
    return np.where(lo < 0, -(lo // multiple) * multiple, 0).astype(np.int64)


def shift_to_nonnegative(coords: np.ndarray, multiple: int = 16) -> np.ndarray:
    """``coords + nonnegative_shift(coords, multiple)``: a copy with all indices >= 0, same dtype."""
    c = np.asarray(coords)
    return (c.astype(np.int64) + nonnegative_shift(c, multiple)).astype(c.dtype if c.dtype.kind == "i" else np.int64)
