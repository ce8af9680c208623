"""Bird's-eye-view (BEV) semantic labels: one class per grid cell around a key frame.

The format is simple on purpose, so that users can provide their own labels (for example
rasterised from the nuScenes map expansion and the annotation boxes) and the evaluation
reads them like the synthetic ones::

    <root>/bev_labels/grid.json            the grid (BevGridSpec.to_dict()) + class names
    <root>/bev_labels/<sample_token>.png   8-bit greyscale PNG, shape (ny, nx), one class id per cell

``<root>`` is the nuScenes data root (next to ``samples/``, ``v1.0-*/``) and
``<sample_token>`` the key frame's ``sample`` token. The grid lives in that key frame's
LIDAR_TOP frame (the frame of its ``.pcd.bin``); pixel (row iy, column ix) is the cell::

        y (lidar)
        ^   cell (ix, iy) covers
        |   [x_min + ix*s, x_min + (ix+1)*s) x [y_min + iy*s, y_min + (iy+1)*s)
        |
        +-------> x (lidar)     image: column = ix, row = iy (row 0 is y_min: the PNG is
                                 the BEV seen from above with y pointing DOWN the image)

This is the pillar / BEV-feature convention of ``modalities.lidar.pillars`` (``scatter_to_bev``
gives (C, ny, nx) with the same (iy, ix) indexing), so a label grid lines up with a BEV
feature map of the same range and cell size without any flip. In nuScenes LIDAR_TOP, x
points to the ego's right and y forward.

Classes (ids are pixel values; 255 = unknown / ignore, not counted by metrics):

    0 drivable_surface    flat.driveable_surface
    1 sidewalk            flat.sidewalk
    2 terrain_vegetation  flat.terrain, static.vegetation (trunks and crowns in the height band)
    3 vehicle             vehicle.* except vehicle.ego (cars, buses, trucks, trailers,
                          construction, emergency, bicycles, motorcycles)
    4 pedestrian          human.pedestrian.* (adults, children, workers, police, strollers,
                          wheelchairs, personal mobility)
    5 static_obstacle     movable_object.* (barrier, traffic cone, debris, pushable/pullable),
                          static_object.bicycle_rack, static.manmade (buildings, walls, poles)
  255 unknown             noise, animal, flat.other, static.other, vehicle.ego, nothing there

``BEV_CLASS_OF_NUSCENES`` is that table by nuScenes(-lidarseg) category name. Where several
classes meet in one cell, ``PRIORITY`` decides (things before stuff): vehicle > pedestrian >
static_obstacle > terrain_vegetation > sidewalk > drivable_surface.
"""

from __future__ import annotations

import io
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np
from PIL import Image

from modalities.errors import DataError, require_file
from modalities.fileio import atomic_write_bytes

FORMAT = "edgedistill-bev-labels/1"
FOLDER = "bev_labels"
GRID_FILE = "grid.json"
FRAME = "LIDAR_TOP"

BEV_CLASSES: tuple[str, ...] = (
    "drivable_surface",
    "sidewalk",
    "terrain_vegetation",
    "vehicle",
    "pedestrian",
    "static_obstacle",
)
DRIVABLE, SIDEWALK, TERRAIN_VEGETATION, VEHICLE, PEDESTRIAN, STATIC_OBSTACLE = range(len(BEV_CLASSES))
IGNORE_ID = 255
VALID_IDS: frozenset[int] = frozenset(range(len(BEV_CLASSES))) | {IGNORE_ID}
# RGB of each class for pictures (BEV_CLASSES order; Cityscapes-like colours); bev_rgb draws IGNORE_ID black.
BEV_PALETTE = np.array([[128, 64, 128], [244, 35, 232], [107, 142, 35], [0, 0, 142], [220, 20, 60], [190, 153, 153]],
                       np.uint8)


def bev_rgb(labels: np.ndarray) -> np.ndarray:
    """(ny, nx) class ids (row iy, column ix) -> (ny, nx, 3) uint8 picture with forward (largest y) at the top;
    ignored cells black."""
    rgb = np.zeros(labels.shape + (3,), np.uint8)
    known = labels < len(BEV_PALETTE)
    rgb[known] = BEV_PALETTE[labels[known]]
    return rgb[::-1]

# Highest first: the class a cell gets when several are present in its column.
PRIORITY: tuple[int, ...] = (VEHICLE, PEDESTRIAN, STATIC_OBSTACLE, TERRAIN_VEGETATION, SIDEWALK, DRIVABLE)

# nuScenes-lidarseg category name -> BEV class id (the 32 categories of the devkit's category.json).
BEV_CLASS_OF_NUSCENES: dict[str, int] = {
    "noise": IGNORE_ID,
    "animal": IGNORE_ID,
    **{f"human.pedestrian.{k}": PEDESTRIAN for k in (
        "adult", "child", "construction_worker", "personal_mobility", "police_officer", "stroller", "wheelchair")},
    "movable_object.barrier": STATIC_OBSTACLE,
    "movable_object.debris": STATIC_OBSTACLE,
    "movable_object.pushable_pullable": STATIC_OBSTACLE,
    "movable_object.trafficcone": STATIC_OBSTACLE,
    "static_object.bicycle_rack": STATIC_OBSTACLE,
    **{f"vehicle.{k}": VEHICLE for k in (
        "bicycle", "bus.bendy", "bus.rigid", "car", "construction", "emergency.ambulance", "emergency.police",
        "motorcycle", "trailer", "truck")},
    "flat.driveable_surface": DRIVABLE,
    "flat.other": IGNORE_ID,  # traffic islands, rail tracks: neither road nor sidewalk
    "flat.sidewalk": SIDEWALK,
    "flat.terrain": TERRAIN_VEGETATION,
    "static.manmade": STATIC_OBSTACLE,
    "static.other": IGNORE_ID,  # "background points that are not distinguishable"
    "static.vegetation": TERRAIN_VEGETATION,
    "vehicle.ego": IGNORE_ID,
}


def category_lut(names_by_index: Mapping[int, str]) -> np.ndarray:
    """(256,) uint8 lookup: category index (e.g. a lidarseg label) -> BEV class id.

    Indices not in ``names_by_index`` map to ``IGNORE_ID``; a name missing from
    ``BEV_CLASS_OF_NUSCENES`` raises ``ValueError`` (add it to the table instead of guessing).
    """
    lut = np.full(256, IGNORE_ID, dtype=np.uint8)
    for index, name in names_by_index.items():
        if not 0 <= int(index) < 256:
            raise ValueError(f"category index {index} ({name!r}) is outside 0..255")
        if name not in BEV_CLASS_OF_NUSCENES:
            raise ValueError(f"category {name!r} has no BEV class; add it to BEV_CLASS_OF_NUSCENES")
        lut[int(index)] = BEV_CLASS_OF_NUSCENES[name]
    return lut


def highest_priority(ray_ids: np.ndarray, bev_ids: np.ndarray, n_rays: int) -> np.ndarray:
    """(n_rays,) uint8: per ray, the ``PRIORITY``-highest BEV class among its hits; 255 where none.

    Args:
        ray_ids: (M,) int ray index of each hit.
        bev_ids: (M,) uint8 BEV class of each hit (``IGNORE_ID`` hits never win over a class).
    """
    rank_of = np.zeros(256, dtype=np.int64)  # 0 = no class
    for r, c in enumerate(reversed(PRIORITY), start=1):
        rank_of[c] = r
    best = np.zeros(n_rays, dtype=np.int64)
    np.maximum.at(best, np.asarray(ray_ids, dtype=np.int64), rank_of[np.asarray(bev_ids, dtype=np.int64)])
    class_of_rank = np.array([IGNORE_ID, *reversed(PRIORITY)], dtype=np.uint8)
    return class_of_rank[best]


# ---------------------------------------------------------------- the grid


@dataclass(frozen=True)
class BevGridSpec:
    """A square-celled BEV grid in the key frame's LIDAR_TOP frame; ranges are half-open [min, max)."""

    x_range_m: tuple[float, float] = (-32.0, 32.0)
    y_range_m: tuple[float, float] = (-32.0, 32.0)
    cell_size_m: float = 0.5  # the usual BEV map-segmentation resolution; 0.25 for small objects

    def __post_init__(self) -> None:
        for name in ("x_range_m", "y_range_m"):
            v = getattr(self, name)
            if (not isinstance(v, (tuple, list)) or len(v) != 2
                    or not all(isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) for x in v)):
                raise ValueError(f"{name} must be (min, max) in metres, got {v!r}")
            if not v[0] < v[1]:
                raise ValueError(f"{name} must have min < max, got {tuple(v)}")
            object.__setattr__(self, name, (float(v[0]), float(v[1])))
        s = self.cell_size_m
        if isinstance(s, bool) or not isinstance(s, (int, float)) or not math.isfinite(s) or s <= 0:
            raise ValueError(f"cell_size_m must be a positive number of metres, got {s!r}")
        object.__setattr__(self, "cell_size_m", float(s))
        for name in ("x_range_m", "y_range_m"):
            lo, hi = getattr(self, name)
            n = (hi - lo) / self.cell_size_m
            if abs(n - round(n)) > 1e-6 * max(1.0, n):
                raise ValueError(f"{name} {lo, hi} is not a whole number of {self.cell_size_m} m cells ({n:.4f})")
            if not 1 <= round(n) <= 8192:
                raise ValueError(f"{name} {lo, hi} at {self.cell_size_m} m gives {round(n)} cells; keep 1..8192")

    @property
    def nx(self) -> int:
        return int(round((self.x_range_m[1] - self.x_range_m[0]) / self.cell_size_m))

    @property
    def ny(self) -> int:
        return int(round((self.y_range_m[1] - self.y_range_m[0]) / self.cell_size_m))

    @property
    def shape(self) -> tuple[int, int]:
        """(ny, nx): the label image's (rows, columns)."""
        return self.ny, self.nx

    def cell_centers_lidar(self) -> np.ndarray:
        """(ny, nx, 2) float64 x, y of every cell centre, lidar frame, metres."""
        s = self.cell_size_m
        x = self.x_range_m[0] + (np.arange(self.nx) + 0.5) * s
        y = self.y_range_m[0] + (np.arange(self.ny) + 0.5) * s
        xx, yy = np.meshgrid(x, y)  # (ny, nx): row iy, column ix
        return np.stack([xx, yy], axis=-1)

    def cell_of(self, points_xy_lidar: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(ix, iy, inside) of (N, 2) lidar-frame points; ix/iy are only meaningful where inside."""
        p = np.asarray(points_xy_lidar, dtype=np.float64)
        ix = np.floor((p[:, 0] - self.x_range_m[0]) / self.cell_size_m).astype(np.int64)
        iy = np.floor((p[:, 1] - self.y_range_m[0]) / self.cell_size_m).astype(np.int64)
        inside = (ix >= 0) & (ix < self.nx) & (iy >= 0) & (iy < self.ny)
        return ix, iy, inside

    def to_dict(self) -> dict:
        return {"x_range_m": list(self.x_range_m), "y_range_m": list(self.y_range_m), "cell_size_m": self.cell_size_m}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "BevGridSpec":
        """Inverse of ``to_dict``; ``ValueError`` names a missing, unknown or bad field."""
        if not isinstance(d, Mapping):
            raise ValueError(f"a BEV grid must be a mapping with x_range_m, y_range_m, cell_size_m, got {type(d).__name__}")
        fields = ("x_range_m", "y_range_m", "cell_size_m")
        missing = [f for f in fields if f not in d]
        unknown = sorted(set(d) - set(fields))
        if missing or unknown:
            raise ValueError(f"BEV grid: missing fields {missing}, unknown fields {unknown}; expected {list(fields)}")
        ranges = {}
        for f in ("x_range_m", "y_range_m"):
            v = d[f]
            ranges[f] = tuple(v) if isinstance(v, (list, tuple)) else v
        return cls(ranges["x_range_m"], ranges["y_range_m"], d["cell_size_m"])


def grid_document(spec: BevGridSpec) -> dict:
    """The content of ``bev_labels/grid.json``."""
    return {
        "format": FORMAT,
        "frame": FRAME,
        "layout": "PNG row iy, column ix; cell (ix, iy) covers [x_min + ix*s, x_min + (ix+1)*s) x"
                  " [y_min + iy*s, y_min + (iy+1)*s) in the key frame's LIDAR_TOP frame",
        "grid": spec.to_dict(),
        "classes": {str(i): name for i, name in enumerate(BEV_CLASSES)} | {str(IGNORE_ID): "unknown"},
    }


def read_grid(folder: str | Path) -> BevGridSpec:
    """The grid of a ``bev_labels`` folder; ``DataError`` naming ``grid.json`` if it is malformed
    or its classes are not ours (remap your labels to ``BEV_CLASSES`` first)."""
    path = require_file(Path(folder) / GRID_FILE, "BEV label grid")
    try:
        doc = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DataError(path, f"not valid JSON ({e})") from None
    if not isinstance(doc, dict) or "grid" not in doc:
        raise DataError(path, "expected an object with 'grid' (x_range_m, y_range_m, cell_size_m) and 'classes'")
    try:
        spec = BevGridSpec.from_dict(doc["grid"])
    except ValueError as e:
        raise DataError(path, str(e)) from None
    expected = grid_document(spec)["classes"]
    if doc.get("classes") != expected:
        raise DataError(path, f"classes {doc.get('classes')!r} differ from ours {expected!r}; remap the labels")
    if doc.get("frame", FRAME) != FRAME:
        raise DataError(path, f"frame {doc.get('frame')!r}: only {FRAME!r} is supported")
    return spec


def bev_label_path(root: str | Path, sample_token: str) -> Path:
    return Path(root) / FOLDER / f"{sample_token}.png"


# ---------------------------------------------------------------- write / read


def write_bev_labels(path: str | Path, labels: np.ndarray, spec: BevGridSpec) -> None:
    """Write one label grid as ``path`` (PNG) and the folder's ``grid.json`` (both atomically).

    ``grid.json`` is written when missing; an existing one must describe the same grid, since
    one folder holds one grid (``DataError`` otherwise).
    """
    path = Path(path)
    labels = np.asarray(labels)
    if labels.dtype != np.uint8 or labels.shape != spec.shape:
        raise ValueError(f"labels must be uint8 of shape {spec.shape} (ny, nx), got {labels.dtype} {labels.shape}")
    bad = sorted(set(np.unique(labels).tolist()) - VALID_IDS)
    if bad:
        raise ValueError(f"labels contain ids {bad} that are not BEV classes (0..{len(BEV_CLASSES) - 1}, {IGNORE_ID})")
    grid_path = path.parent / GRID_FILE
    doc = (json.dumps(grid_document(spec), indent=1) + "\n").encode()
    if grid_path.exists():
        if read_grid(path.parent) != spec:
            raise DataError(grid_path, f"describes another grid than {spec.to_dict()}; one folder holds one grid")
    else:
        atomic_write_bytes(grid_path, doc)
    buf = io.BytesIO()
    Image.fromarray(labels).save(buf, format="PNG", optimize=False, compress_level=6)
    atomic_write_bytes(path, buf.getvalue())


def read_bev_labels(path: str | Path, spec: BevGridSpec) -> np.ndarray:
    """(ny, nx) uint8 class ids of one label PNG; ``DataError`` naming the file when it is not a
    single-channel 8-bit image of the grid's shape or holds ids that are not BEV classes."""
    path = require_file(path, "BEV label image")
    try:
        with Image.open(path) as im:
            mode = im.mode
            labels = np.asarray(im)
    except (OSError, SyntaxError) as e:
        raise DataError(path, f"not a readable image ({e})") from None
    if mode not in ("L", "P") or labels.dtype != np.uint8 or labels.ndim != 2:
        raise DataError(path, f"expected an 8-bit single-channel PNG of class ids, got mode {mode!r}")
    if labels.shape != spec.shape:
        raise DataError(path, f"shape {labels.shape} (rows, cols) does not match the grid's {spec.shape} (ny, nx)"
                              f" for {spec.to_dict()}")
    bad = sorted(set(np.unique(labels).tolist()) - VALID_IDS)
    if bad:
        raise DataError(path, f"unknown class ids {bad}; valid: 0..{len(BEV_CLASSES) - 1} {list(BEV_CLASSES)}"
                              f" and {IGNORE_ID} (unknown)")
    return labels
