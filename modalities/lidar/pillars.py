"""PointPillars-style pillarization into fixed-size buffers (pure numpy).

Lang et al., "PointPillars: Fast Encoders for Object Detection from Point Clouds",
CVPR 2019. The x-y plane is cut into a grid of vertical columns (pillars); each non-empty
pillar holds up to ``max_points_per_pillar`` points and at most ``max_pillars`` pillars are
kept, so that the dense network (and a TensorRT engine) sees fixed shapes::

        y
        ^   grid cell (ix, iy) covers
        |   [x_min + ix*sx, x_min + (ix+1)*sx) x [y_min + iy*sy, y_min + (iy+1)*sy)
        |
        +-------> x          BEV image: column = ix, row = iy (shape ny x nx)

Truncation is deterministic (the paper samples at random): pillars are kept in the order
of their first point and points in their original order, so the first
``max_pillars`` pillars and the first ``max_points_per_pillar`` points of each survive.
How many points and pillars were dropped is returned, never hidden.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from modalities.lidar.voxelize import unique_coords

# Appended by ``decorate=True``: offsets to the pillar's point mean and to its centre (paper Sec. 2.1).
DECORATION_NAMES = ("dx_mean", "dy_mean", "dz_mean", "dx_center", "dy_center")


@dataclass(frozen=True)
class Pillars:
    """Fixed-size pillar buffers.

    Attributes:
        features: (max_pillars, max_points_per_pillar, F') float32, zero padded.
        coords: (max_pillars, 2) int32 grid index (ix, iy) of each pillar; -1 for padding rows.
        num_points: (max_pillars,) int32 points stored per pillar; 0 for padding rows.
        num_pillars: how many leading rows of the buffers are real pillars.
        point_to_pillar: (N,) int64 pillar row of each input point; -1 when the point was not stored.
        points_out_of_range: input points outside the x/y (and z) range.
        points_dropped: in-range points not stored (pillar full, or pillar over ``max_pillars``).
        pillars_dropped: non-empty pillars beyond ``max_pillars``.
        grid_size: (nx, ny) cells along x and y.
    """

    features: np.ndarray
    coords: np.ndarray
    num_points: np.ndarray
    num_pillars: int
    point_to_pillar: np.ndarray
    points_out_of_range: int
    points_dropped: int
    pillars_dropped: int
    grid_size: tuple[int, int]


def grid_shape(x_range: tuple[float, float], y_range: tuple[float, float], pillar_size_m: tuple[float, float]) -> tuple[int, int]:
    """(nx, ny) number of pillars along x and y (ranges rounded to whole pillars)."""
    (x0, x1), (y0, y1) = x_range, y_range
    sx, sy = pillar_size_m
    if not (x1 > x0 and y1 > y0 and sx > 0 and sy > 0):
        raise ValueError(f"need x_range/y_range as (min, max) with min < max and positive pillar_size_m, got {x_range}, {y_range}, {pillar_size_m}")
    return int(round((x1 - x0) / sx)), int(round((y1 - y0) / sy))


def pillarize(
    points_xyz: np.ndarray,
    features: np.ndarray,
    x_range: tuple[float, float],
    y_range: tuple[float, float],
    pillar_size_m: tuple[float, float],
    max_points_per_pillar: int,
    max_pillars: int,
    z_range: tuple[float, float] | None = None,
    decorate: bool = False,
) -> Pillars:
    """Group points into pillars with fixed-size, zero-padded outputs.

    Args:
        points_xyz: (N, 3) points, lidar frame, metres.
        features: (N, F) per-point features stored in the pillars (e.g. x, y, z, intensity).
        x_range, y_range: (min, max) metres, half-open [min, max).
        pillar_size_m: (sx, sy) metres (PointPillars: 0.16, 0.16).
        max_points_per_pillar: P_max (PointPillars: 32).
        max_pillars: pillar budget (PointPillars: 12000 for KITTI).
        z_range: optional (min, max) metres; points outside are out of range.
        decorate: append the paper's 5 decorations (offsets to the mean of the STORED points
            of the pillar and to the pillar's x-y centre; see ``DECORATION_NAMES``), F' = F + 5.

    Returns:
        :class:`Pillars`.
    """
    xyz = np.asarray(points_xyz, dtype=np.float64)
    feats = np.asarray(features)
    if xyz.ndim != 2 or xyz.shape[1] != 3:
        raise ValueError(f"points_xyz: expected (N, 3), got {xyz.shape}")
    if feats.ndim != 2 or feats.shape[0] != xyz.shape[0]:
        raise ValueError(f"features: expected ({xyz.shape[0]}, F), got {feats.shape}")
    if max_points_per_pillar < 1 or max_pillars < 1:
        raise ValueError(f"max_points_per_pillar and max_pillars must be >= 1, got {max_points_per_pillar}, {max_pillars}")
    nx, ny = grid_shape(x_range, y_range, pillar_size_m)
    n = xyz.shape[0]
    x0, y0 = x_range[0], y_range[0]
    sx, sy = pillar_size_m

    with np.errstate(invalid="ignore"):
        ix = np.floor((xyz[:, 0] - x0) / sx)
        iy = np.floor((xyz[:, 1] - y0) / sy)
    inside = np.isfinite(ix) & np.isfinite(iy) & (ix >= 0) & (ix < nx) & (iy >= 0) & (iy < ny)
    if z_range is not None:
        inside &= (xyz[:, 2] >= z_range[0]) & (xyz[:, 2] < z_range[1])
    in_idx = np.flatnonzero(inside)
    cells = np.stack([ix[in_idx], iy[in_idx]], axis=1).astype(np.int64)

    # Pillars numbered by first point (original order); slot of each point within its pillar.
    pillar_coords, inverse, _ = unique_coords(cells)
    n_nonempty = pillar_coords.shape[0]
    order = np.argsort(inverse, kind="stable")  # groups points by pillar, original order inside
    counts = np.bincount(inverse, minlength=n_nonempty)
    starts = np.cumsum(counts) - counts
    slot = np.empty(in_idx.size, np.int64)
    slot[order] = np.arange(in_idx.size) - np.repeat(starts, counts)
    stored = (inverse < max_pillars) & (slot < max_points_per_pillar)

    f_out = feats.shape[1] + (len(DECORATION_NAMES) if decorate else 0)
    out_feats = np.zeros((max_pillars, max_points_per_pillar, f_out), np.float32)
    out_coords = np.full((max_pillars, 2), -1, np.int32)
    out_counts = np.zeros(max_pillars, np.int32)
    kept = min(n_nonempty, max_pillars)
    out_coords[:kept] = pillar_coords[:kept]
    out_counts[:kept] = np.minimum(counts[:kept], max_points_per_pillar)

    s_pt = in_idx[stored]
    s_pillar, s_slot = inverse[stored], slot[stored]
    out_feats[s_pillar, s_slot, : feats.shape[1]] = feats[s_pt]
    if decorate and s_pt.size:
        sums = np.zeros((max_pillars, 3))
        np.add.at(sums, s_pillar, xyz[s_pt])
        mean = sums[s_pillar] / out_counts[s_pillar, None]
        center_x = x0 + (pillar_coords[s_pillar, 0] + 0.5) * sx
        center_y = y0 + (pillar_coords[s_pillar, 1] + 0.5) * sy
        deco = np.column_stack([xyz[s_pt] - mean, xyz[s_pt, 0] - center_x, xyz[s_pt, 1] - center_y])
        out_feats[s_pillar, s_slot, feats.shape[1] :] = deco

    point_to_pillar = np.full(n, -1, np.int64)
    point_to_pillar[s_pt] = s_pillar
    return Pillars(
        features=out_feats,
        coords=out_coords,
        num_points=out_counts,
        num_pillars=int(kept),
        point_to_pillar=point_to_pillar,
        points_out_of_range=int(n - in_idx.size),
        points_dropped=int(in_idx.size - s_pt.size),
        pillars_dropped=int(n_nonempty - kept),
        grid_size=(nx, ny),
    )


def scatter_to_bev(pillar_features: np.ndarray, pillars: Pillars) -> np.ndarray:
    """Scatter per-pillar vectors (max_pillars, C) to a dense BEV image (C, ny, nx); empty cells are 0.

    The PointPillars "pseudo-image" (paper Sec. 2.1); padding rows are ignored.
    """
    f = np.asarray(pillar_features)
    if f.ndim != 2 or f.shape[0] != pillars.coords.shape[0]:
        raise ValueError(f"pillar_features: expected ({pillars.coords.shape[0]}, C), got {f.shape}")
    nx, ny = pillars.grid_size
    bev = np.zeros((f.shape[1], ny, nx), dtype=np.result_type(f.dtype, np.float32))
    k = pillars.num_pillars
    bev[:, pillars.coords[:k, 1], pillars.coords[:k, 0]] = f[:k].T
    return bev
