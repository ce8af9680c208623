"""Label-free lidar regions for CALICO (Chen et al., "CALICO: Self-Supervised Camera-LiDAR
Contrastive Pre-training for BEV Perception", ICLR 2024, Sec. 3.2; no official code).

A region is a group of non-ground points that probably belong to one object, found without
any label: remove the ground, cluster the x-y of what remains with DBSCAN (eps 0.75 m,
5 points), then drop the clusters that are not object-like. All in the lidar frame, metres::

        z (up)        the sensor is the origin; "height" below is the height above the
        |   y         fitted ground under a point (not the lidar z, which is about -1.8 m
        |  /          on the road for a roof-mounted sensor)
        | /
        +------ x     BEV box: centre (x, y, z), length >= width, yaw of the length axis

Ground removal (our choice; the paper says only "plane fitting"): a *piecewise* plane fit.
The lowest point of every ``ground_cell_m`` x-y cell is a ground candidate (under a car the
lowest point seen may be the car's, so candidates are filtered again). Every
``ground_tile_m`` x-y tile gets its own plane, fitted as in Zermas et al.'s ground plane
fitting ("Fast segmentation of 3D point clouds", ICRA 2017): seeds are the tile's candidates
less than ``ground_band_m`` above its lowest ones, then the least-squares plane is refitted
twice to the candidates within ``ground_threshold_m`` of it. A tile with too few candidates,
or whose plane is tilted more than ``ground_max_tilt_deg``, keeps a global plane found by
RANSAC among all candidates, restricted to near-horizontal planes (a building facade, the
largest plane in many urban scans, never wins). A point is ground when it lies less than
``ground_threshold_m`` above its tile's plane. On the synthetic world (flat road at 0 m,
sidewalks on a 0.15 m curb, terrain at 0 m) the 0.25 m threshold takes road, curb and
sidewalk as ground. An open3d ``segment_plane`` alone would too, but it has no tilt
constraint and one plane cannot follow a real road that starts to climb (the tests build
one). Deterministic: RANSAC draws from a fixed seed.

Filters, applied in this order (a dropped cluster is counted under the first that drops it):
``ego`` (a point within ``ego_radius_m`` of the sensor in x-y), ``too_low`` / ``too_high``
(the cluster's top, its highest point above the ground, outside ``[min_top_m, max_top_m]``:
debris and kerb remnants below, buildings, trees and street lights above; also too high: a
cluster floating more than ``max_bottom_m`` above the ground, such as a tree crown), ``thin``
(aspect = width / length of the box < ``min_aspect``: walls and fences seen along their
face), ``small`` / ``large`` (box area outside ``[min_area_m2, max_area_m2]``). Area and
aspect are those of the *oriented* minimum-area x-y rectangle of the cluster's points
(rotating calipers over the convex hull), not of the axis-aligned box, so that a car parked
at 45 degrees is not inflated twofold.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

BOX_FIELDS = ("x", "y", "z", "length", "width", "height", "yaw")  # columns of RegionResult.boxes
FILTERS = ("ego", "too_low", "too_high", "thin", "small", "large")  # drop reasons, in the order applied


@dataclass(frozen=True)
class RegionParams:
    """How regions are found; the defaults are the paper's where it gives them (DESIGN 5.3)."""

    dbscan_eps_m: float = 0.75  # paper; larger merges neighbouring parked cars
    dbscan_min_points: int = 5  # paper
    ego_radius_m: float = 1.5  # paper: drop the cluster of the ego vehicle's own returns
    min_top_m: float = 0.3  # a cluster's top must reach this height above the ground
    max_top_m: float = 4.5  # ... and stay below this one (a bus is ~3.5 m, a truck up to ~4 m)
    # A cluster whose lowest point is higher floats (a tree crown, a lamp arm, a sign); a car
    # hidden up to its bonnet behind another still starts below 1 m.
    max_bottom_m: float = 1.0
    min_aspect: float = 0.1  # paper: width / length of the oriented x-y box
    min_area_m2: float = 0.25  # paper: oriented x-y box area range
    max_area_m2: float = 20.0
    ground_cell_m: float = 2.0  # lowest point per cell = ground candidate; larger than a car's half width
    ground_tile_m: float = 16.0  # one plane per tile (piecewise fit); 0 = a single global plane
    ground_threshold_m: float = 0.25  # above the plane by more than this -> not ground (curbs are ~0.15 m)
    ground_band_m: float = 0.5  # a tile's candidates this close above its lowest ones seed its plane
    ground_max_tilt_deg: float = 15.0  # steeper planes are never ground
    ransac_iterations: int = 200

    def __post_init__(self) -> None:
        positive = ("dbscan_eps_m", "ground_cell_m", "ground_threshold_m", "ground_band_m", "max_area_m2")
        for name in positive:
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        for name in ("ego_radius_m", "ground_tile_m", "min_area_m2", "max_bottom_m"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.dbscan_min_points < 1 or self.ransac_iterations < 1:
            raise ValueError("dbscan_min_points and ransac_iterations must be >= 1")
        if not self.min_top_m < self.max_top_m:
            raise ValueError(f"min_top_m ({self.min_top_m}) must be below max_top_m ({self.max_top_m})")
        if not self.min_area_m2 < self.max_area_m2:
            raise ValueError(f"min_area_m2 ({self.min_area_m2}) must be below max_area_m2 ({self.max_area_m2})")
        if not 0 <= self.min_aspect <= 1:
            raise ValueError(f"min_aspect is width / length, in [0, 1]; got {self.min_aspect}")
        if not 0 < self.ground_max_tilt_deg < 90:
            raise ValueError(f"ground_max_tilt_deg must be in (0, 90), got {self.ground_max_tilt_deg}")

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class RegionResult:
    """Regions of one scan.

    Attributes:
        region_id: (N,) int32 region of each point, 0..R-1; -1 for ground and for points in
            no region (DBSCAN noise, dropped clusters).
        ground: (N,) bool, the point is ground.
        boxes: (R, 7) float32 BEV boxes in the lidar frame, columns :data:`BOX_FIELDS`: centre
            x, y, z (z halfway between the region's lowest and highest point), length >= width
            (the oriented minimum-area x-y rectangle), height (z extent), yaw of the length
            axis from +x, in [-pi/2, pi/2).
        stats: counts: points, ground_points, clusters, dropped_<filter> per :data:`FILTERS`,
            regions, points_in_regions.
    """

    region_id: np.ndarray
    ground: np.ndarray
    boxes: np.ndarray
    stats: dict = field(default_factory=dict)

    @property
    def num_regions(self) -> int:
        return int(self.boxes.shape[0])


# --------------------------------------------------------------------------- ground


def _cell_key(xy: np.ndarray, cell_m: float) -> np.ndarray:
    """(N,) int64 key of each point's ``cell_m`` x-y cell (equal keys = same cell)."""
    ij = np.floor(xy / cell_m).astype(np.int64)
    ij -= ij.min(0)
    return ij[:, 0] * (int(ij[:, 1].max()) + 1) + ij[:, 1]


def _lowest_per_cell(points_xyz: np.ndarray, cell_m: float) -> np.ndarray:
    """Indices of the lowest point of every occupied x-y cell."""
    cell = _cell_key(points_xyz[:, :2], cell_m)
    order = np.lexsort((points_xyz[:, 2], cell))
    first = np.ones(len(order), bool)
    first[1:] = cell[order][1:] != cell[order][:-1]
    return order[first]


def _lstsq_plane(xyz: np.ndarray) -> np.ndarray:
    """(a, b, c) of z = a x + b y + c through ``xyz`` (M >= 3) by least squares."""
    A = np.column_stack([xyz[:, 0], xyz[:, 1], np.ones(len(xyz))])
    coef, *_ = np.linalg.lstsq(A, xyz[:, 2], rcond=None)
    return coef


def _tilt_ok(coef: np.ndarray, max_tilt_deg: float) -> bool:
    # z = a x + b y + c has normal (-a, -b, 1); its tilt from vertical is atan(|(a, b)|).
    return bool(np.degrees(np.arctan(np.hypot(coef[0], coef[1]))) <= max_tilt_deg)


def _ransac_plane(cand: np.ndarray, params: RegionParams) -> np.ndarray:
    """(a, b, c) of the near-horizontal plane with the most candidates within the threshold."""
    rng = np.random.default_rng(0)
    m = len(cand)
    if m < 3:
        return np.array([0.0, 0.0, float(np.median(cand[:, 2]))])
    tri = np.stack([rng.choice(m, 3, replace=False) for _ in range(params.ransac_iterations)])
    p0, p1, p2 = cand[tri[:, 0]], cand[tri[:, 1]], cand[tri[:, 2]]
    normal = np.cross(p1 - p0, p2 - p0)  # (K, 3)
    norm = np.linalg.norm(normal, axis=1)
    cos_tilt = np.abs(normal[:, 2]) / np.maximum(norm, 1e-12)
    valid = (norm > 1e-9) & (cos_tilt >= np.cos(np.radians(params.ground_max_tilt_deg)))
    if not valid.any():
        return np.array([0.0, 0.0, float(np.min(cand[:, 2]))])
    normal, p0 = normal[valid] / norm[valid, None], p0[valid]
    # Distance along z to each plane (the threshold is a height): |n.(p - p0)| / |n_z|, as (K, M).
    dz = np.abs(normal @ cand.T - (normal * p0).sum(1, keepdims=True)) / np.abs(normal[:, 2:3])
    inliers = dz < params.ground_threshold_m
    # Most inliers; ties go to the lowest plane (a flat car park of roofs must not beat the road).
    counts = inliers.sum(1)
    best = np.flatnonzero(counts == counts.max())
    heights = np.array([np.median(cand[inliers[k], 2]) for k in best])
    k = best[int(np.argmin(heights))]
    coef = _lstsq_plane(cand[inliers[k]]) if inliers[k].sum() >= 3 else np.array([0.0, 0.0, p0[k, 2]])
    if not _tilt_ok(coef, params.ground_max_tilt_deg):
        coef = np.array([0.0, 0.0, float(np.median(cand[inliers[k], 2]))])
    return coef


def _tile_plane(cand: np.ndarray, params: RegionParams) -> np.ndarray | None:
    """Ground plane of one tile from its candidates (lowest-point seeds, then refits), or None."""
    z = np.sort(cand[:, 2])
    lowest = float(z[: max(3, len(z) // 5)].mean())  # the "lowest point representative" of GPF
    inliers = cand[:, 2] < lowest + params.ground_band_m
    coef = None
    for _ in range(3):
        if inliers.sum() < 3:
            return coef
        coef = _lstsq_plane(cand[inliers])
        inliers = np.abs(cand[:, 2] - _plane_z(coef, cand)) < params.ground_threshold_m
    return coef if _tilt_ok(coef, params.ground_max_tilt_deg) else None


def _plane_z(coef: np.ndarray, xy: np.ndarray) -> np.ndarray:
    return coef[0] * xy[:, 0] + coef[1] * xy[:, 1] + coef[2]


def height_above_ground(points_xyz: np.ndarray, params: RegionParams = RegionParams()) -> np.ndarray:
    """(N,) height of each point above the piecewise ground fit (the module docstring says how)."""
    pts = np.asarray(points_xyz, np.float64)
    if len(pts) == 0:
        return np.zeros(0)
    cand_idx = _lowest_per_cell(pts, params.ground_cell_m)
    cand = pts[cand_idx]
    ground_z = _plane_z(_ransac_plane(cand, params), pts)
    if params.ground_tile_m > 0:
        tile = _cell_key(pts[:, :2], params.ground_tile_m)
        tile_c = tile[cand_idx]
        min_cand = max(6, int(round((params.ground_tile_m / params.ground_cell_m) ** 2 / 8)))
        for t in np.unique(tile_c):
            in_tile = tile_c == t
            if in_tile.sum() < min_cand:
                continue  # too few cells seen: the global plane stays
            coef = _tile_plane(cand[in_tile], params)
            if coef is not None:
                sel = tile == t
                ground_z[sel] = _plane_z(coef, pts[sel])
    return pts[:, 2] - ground_z


# --------------------------------------------------------------------------- boxes


def oriented_box_xy(xy: np.ndarray) -> tuple[float, float, float, float, float]:
    """Minimum-area rectangle of (M, 2) points: (cx, cy, length, width, yaw), length >= width.

    Rotating calipers: the optimal rectangle has a side along an edge of the convex hull
    (Freeman and Shapira, 1975), so only the hull's edge directions are tried.
    """
    from scipy.spatial import ConvexHull, QhullError

    xy = np.asarray(xy, np.float64)
    try:
        hull = xy[ConvexHull(xy).vertices]
    except (QhullError, ValueError):  # < 3 points or all collinear: the points are their own hull
        hull = xy
    edges = np.diff(np.vstack([hull, hull[:1]]), axis=0)
    angles = np.unique(np.mod(np.arctan2(edges[:, 1], edges[:, 0]), np.pi / 2))
    c, s = np.cos(angles)[:, None], np.sin(angles)[:, None]
    u = hull[:, 0][None] * c + hull[:, 1][None] * s  # (A, H) coordinates along the rotated axes
    v = -hull[:, 0][None] * s + hull[:, 1][None] * c
    du, dv = u.max(1) - u.min(1), v.max(1) - v.min(1)
    k = int(np.argmin(du * dv))
    mu, mv = (u[k].max() + u[k].min()) / 2, (v[k].max() + v[k].min()) / 2
    a = float(angles[k])
    cx, cy = mu * np.cos(a) - mv * np.sin(a), mu * np.sin(a) + mv * np.cos(a)
    length, width, yaw = (du[k], dv[k], a) if du[k] >= dv[k] else (dv[k], du[k], a + np.pi / 2)
    yaw = (yaw + np.pi / 2) % np.pi - np.pi / 2
    return float(cx), float(cy), float(length), float(width), float(yaw)


# --------------------------------------------------------------------------- regions


def compute_regions(points_xyz: np.ndarray, params: RegionParams = RegionParams()) -> RegionResult:
    """Label-free regions of one scan (lidar frame, metres); the module docstring says how.

    Args:
        points_xyz: (N, 3) points in the lidar frame, sensor at the origin, z up.
        params: thresholds; the defaults are DESIGN 5.3's.

    Returns:
        A :class:`RegionResult`; a scan where nothing survives has zero regions (not an error).
    """
    from sklearn.cluster import DBSCAN

    pts = np.asarray(points_xyz, np.float64)
    if pts.ndim != 2 or pts.shape[1] != 3:
        raise ValueError(f"points_xyz must be (N, 3), got {pts.shape}")
    if not np.isfinite(pts).all():
        raise ValueError("points_xyz has NaN/inf values; drop them first (read with drop_nonfinite=True)")
    n = len(pts)
    region_id = np.full(n, -1, np.int32)
    stats = {"points": n, "ground_points": 0, "clusters": 0, **{f"dropped_{f}": 0 for f in FILTERS}}
    height = height_above_ground(pts, params)
    ground = height < params.ground_threshold_m
    stats["ground_points"] = int(ground.sum())
    idx = np.flatnonzero(~ground)
    boxes: list[list[float]] = []
    if len(idx) >= params.dbscan_min_points:
        cluster = DBSCAN(eps=params.dbscan_eps_m, min_samples=params.dbscan_min_points).fit_predict(pts[idx, :2])
        order = np.argsort(cluster, kind="stable")
        labels, starts = np.unique(cluster[order], return_index=True)
        members = np.split(idx[order], starts[1:])
        for label, m in zip(labels, members):
            if label < 0:  # DBSCAN noise
                continue
            stats["clusters"] += 1
            box_xy = oriented_box_xy(pts[m, :2])
            reason = _drop_reason(pts[m], height[m], box_xy, params)
            if reason is not None:
                stats[f"dropped_{reason}"] += 1
                continue
            cx, cy, length, width, yaw = box_xy
            z0, z1 = float(pts[m, 2].min()), float(pts[m, 2].max())
            region_id[m] = len(boxes)
            boxes.append([cx, cy, (z0 + z1) / 2, length, width, z1 - z0, yaw])
    stats["regions"] = len(boxes)
    stats["points_in_regions"] = int((region_id >= 0).sum())
    box_array = np.asarray(boxes, np.float32).reshape(-1, len(BOX_FIELDS))
    return RegionResult(region_id=region_id, ground=ground, boxes=box_array, stats=stats)


def _drop_reason(cluster_xyz: np.ndarray, height: np.ndarray, box_xy: tuple[float, ...],
                 params: RegionParams) -> str | None:
    """The first filter (in :data:`FILTERS` order) that drops this cluster, else None."""
    if params.ego_radius_m > 0 and np.hypot(cluster_xyz[:, 0], cluster_xyz[:, 1]).min() < params.ego_radius_m:
        return "ego"
    top = float(height.max())
    if top < params.min_top_m:
        return "too_low"
    if top > params.max_top_m or float(height.min()) > params.max_bottom_m:
        return "too_high"
    _, _, length, width, _ = box_xy
    if length <= 0 or width / length < params.min_aspect:
        return "thin"
    area = length * width
    if area < params.min_area_m2:
        return "small"
    if area > params.max_area_m2:
        return "large"
    return None


# --------------------------------------------------------------------------- label-free sanity figure


def region_label_stats(region_id: np.ndarray, labels: np.ndarray, ignore: int | None = None
                       ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per region: (majority label, points with that label, labelled points), each (R,) int64.

    ``R = region_id.max() + 1``; points labelled ``ignore`` do not count. A region with no
    labelled point has majority label -1 and zero counts.
    """
    region_id = np.asarray(region_id, np.int64)
    labels = np.asarray(labels, np.int64)
    if region_id.shape != labels.shape:
        raise ValueError(f"region_id {region_id.shape} and labels {labels.shape} must have the same shape")
    r = int(region_id.max()) + 1 if region_id.size else 0
    majority, major_count, labelled = np.full(r, -1, np.int64), np.zeros(r, np.int64), np.zeros(r, np.int64)
    keep = region_id >= 0
    if ignore is not None:
        keep &= labels != ignore
    if not keep.any():
        return majority, major_count, labelled
    if labels[keep].min() < 0:
        raise ValueError("labels must be >= 0")
    span = int(labels[keep].max()) + 1
    key, count = np.unique(region_id[keep] * span + labels[keep], return_counts=True)
    reg, lab = key // span, key % span
    labelled += np.bincount(reg, weights=count, minlength=r).astype(np.int64)
    # Within each region (key is sorted by region), the label with the largest count.
    order = np.lexsort((-count, reg))
    first = np.ones(len(order), bool)
    first[1:] = reg[order][1:] != reg[order][:-1]
    top = order[first]
    majority[reg[top]], major_count[reg[top]] = lab[top], count[top]
    return majority, major_count, labelled


def region_purity(region_id: np.ndarray, labels: np.ndarray, ignore: int | None = None) -> float:
    """Fraction of the labelled region points that carry their region's majority label.

    1.0 when every region is one class; NaN when no region point is labelled. Points with
    ``region_id < 0`` or label ``ignore`` are left out.
    """
    _, major, labelled = region_label_stats(region_id, labels, ignore)
    total = int(labelled.sum())
    return float(major.sum() / total) if total else float("nan")


# --------------------------------------------------------------------------- files


def save_regions(path, result: RegionResult) -> None:
    """Write ``result`` atomically as ``.npz``: region_id int32, ground bool, boxes float32 (R, 7), stats JSON."""
    import json

    from modalities.fileio import atomic_open

    with atomic_open(path, "wb") as f:
        np.savez_compressed(f, region_id=result.region_id.astype(np.int32), ground=result.ground.astype(bool),
                            boxes=result.boxes.astype(np.float32), stats_json=np.array(json.dumps(result.stats)))


def load_regions(path, num_points: int | None = None) -> RegionResult:
    """Read a file of :func:`save_regions`, checking its arrays (and the scan's point count when given).

    Raises:
        DataError: naming the file when it is unreadable or its arrays do not fit together.
    """
    import json
    import zipfile

    from modalities.errors import DataError, require_file

    p = require_file(path, "regions file")
    try:
        with np.load(p) as z:
            region_id, ground, boxes = z["region_id"], z["ground"], z["boxes"]
            stats = json.loads(str(z["stats_json"]))
    except (OSError, KeyError, ValueError, zipfile.BadZipFile) as e:
        raise DataError(p, f"not a readable regions file ({e}); delete it to recompute") from e
    if region_id.ndim != 1 or ground.shape != region_id.shape or boxes.ndim != 2 or boxes.shape[1] != len(BOX_FIELDS):
        raise DataError(p, f"inconsistent shapes: region_id {region_id.shape}, ground {ground.shape}, "
                           f"boxes {boxes.shape}")
    n, r = region_id.shape[0], boxes.shape[0]
    if n and (region_id.min() < -1 or region_id.max() >= r):
        raise DataError(p, f"region ids in [{region_id.min()}, {region_id.max()}] but {r} boxes")
    if num_points is not None and n != num_points:
        raise DataError(p, f"{n} points but the scan has {num_points}; the file belongs to another scan")
    return RegionResult(region_id=region_id.astype(np.int32), ground=ground.astype(bool),
                        boxes=boxes.astype(np.float32), stats=stats)
