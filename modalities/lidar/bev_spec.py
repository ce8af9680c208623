"""The deployable input of the pillar BEV student (:mod:`modalities.lidar.bev_net`): the spec and its feeds.

Numpy only, so that the robot-side deploy adapter (:mod:`deploy.tasks.bev_segmentation`) imports it
without torch. See :mod:`modalities.lidar.bev_net` for the network and the grid convention.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any, Mapping

import numpy as np

from modalities.bev_labels import BevGridSpec
from modalities.lidar.pillars import DECORATION_NAMES, pillarize

# Per stored point: x, y, z (lidar frame, m), intensity, then the 5 PointPillars decorations
# (offsets to the pillar's point mean and to its x-y centre; ``pillars.DECORATION_NAMES``).
POINT_FEATURE_NAMES = ("x", "y", "z", "intensity", *DECORATION_NAMES)
NUM_POINT_FEATURES = len(POINT_FEATURE_NAMES)  # 9


@dataclass(frozen=True)
class PillarBevSpec:
    """The deployable input of :class:`PillarBevNet`: the BEV grid (one pillar per cell) and the buffers.

    Ranges are half-open [min, max), lidar frame, metres.
    """

    x_range_m: tuple[float, float] = (-32.0, 32.0)
    y_range_m: tuple[float, float] = (-32.0, 32.0)
    cell_size_m: float = 0.5  # = the BEV label grid's cell; PointPillars uses 0.16 for detection
    z_range_m: tuple[float, float] = (-5.0, 3.0)  # nuScenes LIDAR_TOP sits ~1.8 m above the road
    max_points_per_pillar: int = 16  # a 32-beam scan has < 16 points in most 0.5 m cells; dropped ones are counted
    max_pillars: int = 12000  # of 16384 cells at the defaults; raise for 64/128-beam sensors

    def __post_init__(self) -> None:
        grid = self.grid  # validates the x/y ranges and the cell size (BevGridSpec's messages name the field)
        for name in ("x_range_m", "y_range_m", "cell_size_m"):
            object.__setattr__(self, name, getattr(grid, name))
        z = self.z_range_m
        if (not isinstance(z, (tuple, list)) or len(z) != 2
                or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in z)
                or not z[0] < z[1]):
            raise ValueError(f"z_range_m must be (min, max) in metres with min < max, got {z!r}")
        object.__setattr__(self, "z_range_m", (float(z[0]), float(z[1])))
        for name in ("max_points_per_pillar", "max_pillars"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
                raise ValueError(f"{name} must be a positive integer, got {v!r}")
            object.__setattr__(self, name, int(v))

    @property
    def grid(self) -> BevGridSpec:
        return BevGridSpec(self.x_range_m, self.y_range_m, self.cell_size_m)

    @property
    def ny(self) -> int:
        return self.grid.ny

    @property
    def nx(self) -> int:
        return self.grid.nx

    def to_dict(self) -> dict:
        return {
            "x_range_m": list(self.x_range_m),
            "y_range_m": list(self.y_range_m),
            "cell_size_m": self.cell_size_m,
            "z_range_m": list(self.z_range_m),
            "max_points_per_pillar": self.max_points_per_pillar,
            "max_pillars": self.max_pillars,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "PillarBevSpec":
        """Inverse of ``to_dict``; ``ValueError`` names a missing, unknown or bad field."""
        names = tuple(f.name for f in fields(cls))
        if not isinstance(d, Mapping):
            raise ValueError(f"a pillar BEV spec must be a mapping with {list(names)}, got {type(d).__name__}")
        missing = [f for f in names if f not in d]
        unknown = sorted(set(d) - set(names))
        if missing or unknown:
            raise ValueError(f"pillar BEV spec: missing fields {missing}, unknown fields {unknown}; "
                             f"expected {list(names)}")
        kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in d.items()}
        return cls(**kwargs)


def pillar_inputs(
    points_xyz: np.ndarray, intensity: np.ndarray, spec: PillarBevSpec
) -> tuple[dict[str, np.ndarray], dict]:
    """The network feeds of one scan (no batch dimension), numpy only.

    Args:
        points_xyz: (N, 3) points, lidar frame, metres.
        intensity: (N,) intensity on the scale the network is trained with (callers pass [0, 1]).
        spec: the grid and buffer sizes.

    Returns:
        feeds: ``"pillar_points"`` (max_pillars, max_points_per_pillar, 9) float32
            (``POINT_FEATURE_NAMES``; zero in empty slots), ``"pillar_mask"`` (max_pillars,
            max_points_per_pillar) float32, 1 where a slot holds a point, ``"cell_index"``
            (ny*nx,) int64: for BEV cell iy*nx + ix the pillar row holding it, ``max_pillars``
            (the zero row the network appends) where the cell is empty or its pillar was dropped.
        stats: ``points_out_of_range`` (outside x/y/z range), ``points_dropped`` (in range, not
            stored: pillar full or over budget), ``pillars_dropped``, ``num_pillars`` (ints),
            and ``point_to_pillar`` (N,) int64 pillar row of each point, -1 if not stored.
    """
    xyz = np.asarray(points_xyz)
    inten = np.asarray(intensity)
    if xyz.ndim != 2 or xyz.shape[1] != 3:
        raise ValueError(f"points_xyz: expected (N, 3), got {xyz.shape}")
    if inten.shape != (xyz.shape[0],):
        raise ValueError(f"intensity: expected ({xyz.shape[0]},), got {inten.shape}")
    s = spec.cell_size_m
    pillars = pillarize(
        xyz,
        np.column_stack([xyz.astype(np.float32), inten.astype(np.float32)]),
        spec.x_range_m,
        spec.y_range_m,
        (s, s),
        spec.max_points_per_pillar,
        spec.max_pillars,
        z_range=spec.z_range_m,
        decorate=True,
    )
    mask = np.arange(spec.max_points_per_pillar)[None, :] < pillars.num_points[:, None]
    cell_index = np.full(spec.ny * spec.nx, spec.max_pillars, np.int64)
    k = pillars.num_pillars
    ix, iy = pillars.coords[:k, 0].astype(np.int64), pillars.coords[:k, 1].astype(np.int64)
    cell_index[iy * spec.nx + ix] = np.arange(k)
    feeds = {
        "pillar_points": pillars.features,
        "pillar_mask": mask.astype(np.float32),
        "cell_index": cell_index,
    }
    stats = {
        "points_out_of_range": pillars.points_out_of_range,
        "points_dropped": pillars.points_dropped,
        "pillars_dropped": pillars.pillars_dropped,
        "num_pillars": k,
        "point_to_pillar": pillars.point_to_pillar,
    }
    return feeds, stats
