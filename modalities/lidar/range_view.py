"""Spherical (range-image) projection of a spinning-lidar scan and its inverse.

Following RangeNet++ (Milioto et al., "RangeNet++: Fast and Accurate LiDAR Semantic
Segmentation", IROS 2019), each point goes to the pixel of its beam (row) and firing
azimuth (column), and each pixel keeps the closest point. The rows and columns come from
the sensor model (:class:`modalities.lidar.sensors.LidarSensor`), never from constants::

        z (up)                         range image (H = beams, W = columns)
        |   y                          row 0     = highest beam  (top of the image)
        |  /                           row H-1   = lowest beam   (beam 0)
        | /  elevation = asin(z / r)   column c  = azimuth bin  [-pi + c*2pi/W, -pi + (c+1)*2pi/W)
        +------ x                      column c centre = sensor.azimuths_rad()[c]
                azimuth = atan2(y, x), counter-clockwise from +x, in [-pi, pi)

Differences from RangeNet++: the row is the NEAREST beam of the sensor's (possibly
non-uniform) elevation table rather than a linear map of the FOV, or the stored ring
index when the file has one (nuScenes); the column grows with azimuth as in
``LidarSensor.azimuths_rad`` (RangeNet++ flips it so that the image reads left to right
from behind the car). Beams are assumed to start at the sensor origin (no per-beam
offsets), so ``unproject_range_image`` is exact for points lying on beam rays.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from modalities.lidar.io import PointCloud
from modalities.lidar.sensors import LidarSensor


@dataclass(frozen=True)
class RangeProjection:
    """Result of :func:`project_to_range_image`.

    Attributes:
        range_image: (H, W) float32 range in metres of the closest point, ``empty_value`` where none.
        index_image: (H, W) int64 index into the input points of that closest point, -1 where none.
        row: (N,) int64 image row of each point, -1 where not valid.
        col: (N,) int64 image column of each point, -1 where not valid.
        valid: (N,) bool: finite, inside [min_range_m, max_range_m] and near a beam. A valid
            point may still lose its pixel to a closer one (``index_image[row, col] != i``).
    """

    range_image: np.ndarray
    index_image: np.ndarray
    row: np.ndarray
    col: np.ndarray
    valid: np.ndarray


def _beam_of_elevation(
    elevation_deg: np.ndarray, beam_elevations_deg: np.ndarray, tolerance_deg: float
) -> tuple[np.ndarray, np.ndarray]:
    """Nearest beam (ties go to the lower beam) and whether it is within ``tolerance_deg``."""
    el = beam_elevations_deg
    j = np.clip(np.searchsorted(el, elevation_deg, side="left"), 1, max(el.size - 1, 1))
    if el.size == 1:
        beam = np.zeros(elevation_deg.shape, np.int64)
    else:
        lower, upper = el[j - 1], el[j]
        beam = np.where(elevation_deg - lower <= upper - elevation_deg, j - 1, j).astype(np.int64)
    return beam, np.abs(elevation_deg - el[beam]) <= tolerance_deg


def default_elevation_tolerance_deg(sensor: LidarSensor) -> float:
    """Half the widest gap between adjacent beams (half the FOV for a one-beam sensor)."""
    el = sensor.elevations_deg()
    if el.size == 1:
        lo, hi = sensor.vertical_fov_deg
        return 0.5 * (hi - lo)
    return 0.5 * float(np.max(np.diff(el)))


def azimuth_column(azimuth_rad: np.ndarray, columns: int) -> np.ndarray:
    """(N,) int64 column of each azimuth: ``floor((az + pi) / (2 pi / W)) mod W``."""
    col = np.floor((np.asarray(azimuth_rad, np.float64) + np.pi) * (columns / (2 * np.pi))).astype(np.int64)
    return np.mod(col, columns)


def project_to_range_image(
    points_xyz: np.ndarray,
    sensor: LidarSensor,
    ring: np.ndarray | None = None,
    empty_value: float = -1.0,
    elevation_tolerance_deg: float | None = None,
    ring_zero_is_lowest: bool = True,
) -> RangeProjection:
    """Project lidar points to a (beams x columns) range image; the closest point wins each pixel.

    Args:
        points_xyz: (N, >=3) points, lidar frame, metres.
        sensor: the sensor model (beam elevations, columns, range limits).
        ring: optional (N,) beam index per point, as stored by nuScenes; used instead of
            the elevation when given.
        ring_zero_is_lowest: ring 0 is the lowest beam (the Velodyne
            ROS driver convention); set False for files that count from the top.
        empty_value: range written to pixels with no point (RangeNet++ uses -1; some use 0).
        elevation_tolerance_deg: a point farther than this from its nearest beam's elevation is
            not valid (default: half the widest beam gap). Ignored when ``ring`` is given.

    Returns:
        A :class:`RangeProjection`. Ties in range go to the lower point index, so the
        result does not depend on anything but the input.
    """
    pts = np.asarray(points_xyz)
    if pts.ndim != 2 or pts.shape[1] < 3:
        raise ValueError(f"points_xyz: expected (N, >=3), got {pts.shape}")
    n = pts.shape[0]
    H, W = sensor.beams, sensor.columns
    xyz = pts[:, :3].astype(np.float64)
    finite = np.all(np.isfinite(xyz), axis=1)
    xyz = np.where(finite[:, None], xyz, 0.0)
    range_m = np.linalg.norm(xyz, axis=1)
    valid = finite & (range_m >= sensor.min_range_m) & (range_m <= sensor.max_range_m) & (range_m > 0)

    if ring is not None:
        beam = np.asarray(ring).astype(np.int64).reshape(-1)
        if beam.shape != (n,):
            raise ValueError(f"ring: expected ({n},) to match points_xyz, got {beam.shape}")
        bad = valid & ((beam < 0) | (beam >= H))
        if bad.any():
            raise ValueError(
                f"ring: values must be in [0, {H}) for sensor '{sensor.name}' ({H} beams), "
                f"got {int(bad.sum())} points outside (e.g. {int(beam[bad][0])})"
            )
        if not ring_zero_is_lowest:
            beam = H - 1 - beam
    else:
        tol = default_elevation_tolerance_deg(sensor) if elevation_tolerance_deg is None else elevation_tolerance_deg
        safe_r = np.where(range_m > 0, range_m, 1.0)
        elevation_deg = np.degrees(np.arcsin(np.clip(xyz[:, 2] / safe_r, -1.0, 1.0)))
        beam, near = _beam_of_elevation(elevation_deg, sensor.elevations_deg(), tol)
        valid &= near

    row = np.where(valid, H - 1 - beam, -1).astype(np.int64)
    col = np.where(valid, azimuth_column(np.arctan2(xyz[:, 1], xyz[:, 0]), W), -1).astype(np.int64)

    range_image = np.full((H, W), empty_value, np.float32)
    index_image = np.full((H, W), -1, np.int64)
    idx = np.flatnonzero(valid)
    if idx.size:
        pix = row[idx] * W + col[idx]
        # Sort by pixel, then range, then point index; the first of each pixel run wins.
        order = np.lexsort((idx, range_m[idx], pix))
        pix_sorted = pix[order]
        first = np.ones(order.size, bool)
        first[1:] = pix_sorted[1:] != pix_sorted[:-1]
        winners = idx[order[first]]
        flat_pix = pix_sorted[first]
        range_image.reshape(-1)[flat_pix] = range_m[winners].astype(np.float32)
        index_image.reshape(-1)[flat_pix] = winners
    return RangeProjection(range_image=range_image, index_image=index_image, row=row, col=col, valid=valid)


def project_point_cloud(cloud: PointCloud, sensor: LidarSensor, **kwargs) -> RangeProjection:
    """:func:`project_to_range_image` of a :class:`PointCloud`, using its ``ring`` column when present."""
    return project_to_range_image(cloud.points_xyz, sensor, ring=cloud.ring, **kwargs)


def gather_to_range_image(values: np.ndarray, projection: RangeProjection, fill: float = 0.0) -> np.ndarray:
    """Per-point values (N,) or (N, C) laid out on the range image: (H, W) or (H, W, C).

    E.g. the five RangeNet++ input channels are ``range, x, y, z, remission`` gathered with
    the same ``projection``. Empty pixels get ``fill``.
    """
    v = np.asarray(values)
    idx = projection.index_image
    out = np.full(idx.shape + v.shape[1:], fill, dtype=np.result_type(v.dtype, np.float32))
    hit = idx >= 0
    out[hit] = v[idx[hit]]
    return out


def unproject_range_image(range_image: np.ndarray, sensor: LidarSensor, empty_max_m: float = 0.0) -> np.ndarray:
    """Points (M, 3) float32, lidar frame, from the non-empty pixels of a range image.

    Each pixel with range > ``empty_max_m`` becomes a point at its beam elevation and its
    column's centre azimuth (``sensor.azimuths_rad()``), in row-major pixel order.
    Empty pixels (0 or -1, or anything <= ``empty_max_m``) are skipped.
    """
    r = np.asarray(range_image)
    if r.shape != (sensor.beams, sensor.columns):
        raise ValueError(
            f"range_image: expected ({sensor.beams}, {sensor.columns}) for sensor '{sensor.name}', got {r.shape}"
        )
    rows, cols = np.nonzero(np.isfinite(r) & (r > empty_max_m))
    range_m = r[rows, cols].astype(np.float64)
    elevation = np.radians(sensor.elevations_deg()[sensor.beams - 1 - rows])
    azimuth = sensor.azimuths_rad()[cols]
    xy = range_m * np.cos(elevation)
    return np.stack([xy * np.cos(azimuth), xy * np.sin(azimuth), range_m * np.sin(elevation)], axis=1).astype(
        np.float32
    )


RANGE_CHANNELS = ("range", "x", "y", "z", "intensity", "mask")

# (mean, std) per channel. range/x/y/z/intensity: RangeNet++'s SemanticKITTI statistics
# (lidar-bonnetal arch_cfg img_means/img_stds; HDL-64E, remission in [0, 1]). Replace them
# with statistics of your own sensor's data: e.g. nuScenes intensity is in [0, 255], so
# pass intensity (mean, std) of that scale or rescale the intensities to [0, 1] first.
# The mask is left as 0/1.
DEFAULT_CHANNEL_STATS: dict[str, tuple[float, float]] = {
    "range": (12.12, 12.32),
    "x": (10.88, 11.47),
    "y": (0.23, 6.91),
    "z": (-1.04, 0.86),
    "intensity": (0.21, 0.16),
    "mask": (0.0, 1.0),
}


@dataclass(frozen=True)
class RangeInput:
    """One scan as a range-view network input.

    Attributes:
        image: (C, H, W) float32 network input.
        rows, cols: (N,) int64 pixel of each point, -1 where ``valid`` is False.
        valid: (N,) bool: the point has a pixel (a valid point may share it with a closer one
            and then reads that pixel's features).
    """

    image: np.ndarray
    rows: np.ndarray
    cols: np.ndarray
    valid: np.ndarray


def range_image_input(
    points: np.ndarray,
    sensor: LidarSensor,
    channels: Sequence[str] = RANGE_CHANNELS,
    means: Sequence[float] | None = None,
    stds: Sequence[float] | None = None,
    width_multiple: int = 16,
    height_multiple: int = 1,
    ring: np.ndarray | None = None,
) -> RangeInput:
    """Range-image network input of one scan (numpy only: training and the robot share it).

    Following RangeNet++, each channel is normalised as ``(v - mean) / std`` and empty
    pixels are then set to 0 in every channel.

    Args:
        points: (N, >=4) x, y, z (metres, lidar frame), intensity.
        sensor: sensor model (beams -> H, columns -> W before padding).
        channels: names from :data:`RANGE_CHANNELS`, in the order of the input tensor.
        means, stds: per-channel constants, same length as ``channels``; default
            :data:`DEFAULT_CHANNEL_STATS` (KITTI statistics; see there).
        width_multiple, height_multiple: pad W (H) on the right (bottom) with empty pixels
            to a multiple of these (a network's total stride).
        ring: optional (N,) beam index per point (nuScenes), passed to the projection.
    """
    pts = np.asarray(points)
    if pts.ndim != 2 or pts.shape[1] < 4:
        raise ValueError(f"points: expected (N, >=4) x, y, z, intensity, got {pts.shape}")
    unknown = [c for c in channels if c not in DEFAULT_CHANNEL_STATS]
    if unknown or not channels:
        raise ValueError(f"channels: unknown {unknown} (or empty); choose from {list(RANGE_CHANNELS)}")
    means = [DEFAULT_CHANNEL_STATS[c][0] for c in channels] if means is None else list(means)
    stds = [DEFAULT_CHANNEL_STATS[c][1] for c in channels] if stds is None else list(stds)
    if len(means) != len(channels) or len(stds) != len(channels):
        raise ValueError(f"means/stds: need {len(channels)} values (one per channel), got {len(means)}/{len(stds)}")
    if any(s <= 0 for s in stds):
        raise ValueError(f"stds must be > 0, got {stds}")
    if width_multiple < 1 or height_multiple < 1:
        raise ValueError(f"width_multiple/height_multiple must be >= 1, got {width_multiple}/{height_multiple}")

    proj = project_to_range_image(pts[:, :3], sensor, ring=ring)
    per_point = {
        "x": pts[:, 0], "y": pts[:, 1], "z": pts[:, 2], "intensity": pts[:, 3],
        "range": np.linalg.norm(pts[:, :3].astype(np.float64), axis=1),
        "mask": np.ones(pts.shape[0]),
    }
    values = np.stack([per_point[c] for c in channels], axis=1).astype(np.float32)  # (N, C)
    img = gather_to_range_image(values, proj, fill=0.0)  # (H, W, C)
    hit = proj.index_image >= 0
    img = (img - np.asarray(means, np.float32)) / np.asarray(stds, np.float32)
    img = np.where(hit[..., None], img, 0.0).astype(np.float32)
    H, W = hit.shape
    H_pad = -(-H // height_multiple) * height_multiple
    W_pad = -(-W // width_multiple) * width_multiple
    img = np.pad(img, ((0, H_pad - H), (0, W_pad - W), (0, 0)))
    return RangeInput(np.ascontiguousarray(img.transpose(2, 0, 1)), proj.row, proj.col, proj.valid)
