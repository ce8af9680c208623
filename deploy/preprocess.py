"""Pre- and post-processing of the deployed range-view segmenter, numpy only (no torch).

The deployed network sees a fixed-size range image; the point <-> pixel bookkeeping, whose
sizes depend on the scan, stays here, outside the engine (DESIGN.md section 6)::

    scan file (N, 5) x y z intensity ring
      -> intensity / intensity_scale
      -> range projection (modalities.lidar.range_view, nearest beam by elevation)
      -> channels (range, x, y, z, intensity, mask), (v - mean) / std, empty pixels 0
      -> pad W (and H) on the right (bottom) to the net's input multiple
      -> image (C, H, W) float32                        [engine]  -> logits (K, H, W)
      -> per point: logits[:, row, col] -> argmax -> label, 255 where the point has no pixel

:func:`range_image_input` reproduces ``modalities.lidar.range_net.build_range_input``
(which returns torch tensors) operation for operation, so the Jetson runtime image needs
no torch; ``tests/deploy/test_preprocess.py`` checks the two agree bit for bit.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from modalities.lidar.range_view import gather_to_range_image, project_to_range_image
from modalities.lidar.sensors import LidarSensor

UNKNOWN_LABEL = 255  # label written for a point that has no pixel (outside every beam / range)


@dataclass(frozen=True)
class RangeInput:
    """One scan on the range image.

    Attributes:
        image: (C, H, W) float32 network input.
        rows, cols: (N,) int64 pixel of each point, -1 where ``valid`` is False.
        valid: (N,) bool: the point has a pixel (a valid point may share it with a closer one).
    """

    image: np.ndarray
    rows: np.ndarray
    cols: np.ndarray
    valid: np.ndarray


def sensor_from_dict(d: dict) -> LidarSensor:
    """``LidarSensor(**d)`` of a ``LidarSensor.to_dict()`` read back from JSON (lists -> tuples)."""
    d = dict(d)
    d["vertical_fov_deg"] = tuple(float(v) for v in d["vertical_fov_deg"])
    d["beam_elevations_deg"] = tuple(float(v) for v in d.get("beam_elevations_deg", ()))
    return LidarSensor(**d)


def range_image_input(
    points: np.ndarray,
    sensor: LidarSensor,
    channels: Sequence[str],
    means: Sequence[float],
    stds: Sequence[float],
    width_multiple: int,
    height_multiple: int,
) -> RangeInput:
    """Range-image input of one scan (numpy twin of ``build_range_input``).

    Args:
        points: (N, >=4) x, y, z (metres, lidar frame), intensity already scaled to [0, 1].
        sensor: the sensor model used in training (H = beams, W = columns before padding).
        channels: names among range, x, y, z, intensity, mask, in input order.
        means, stds: per-channel normalisation constants (``(v - mean) / std``).
        width_multiple, height_multiple: pad W / H with empty pixels to these multiples.
    """
    pts = np.asarray(points)
    if pts.ndim != 2 or pts.shape[1] < 4:
        raise ValueError(f"points: expected (N, >=4) x, y, z, intensity, got {pts.shape}")
    if not (len(channels) == len(means) == len(stds)):
        raise ValueError(f"channels/means/stds: need equal lengths, got {len(channels)}/{len(means)}/{len(stds)}")
    proj = project_to_range_image(pts[:, :3], sensor)
    per_point = {
        "x": pts[:, 0], "y": pts[:, 1], "z": pts[:, 2], "intensity": pts[:, 3],
        "range": np.linalg.norm(pts[:, :3].astype(np.float64), axis=1),
        "mask": np.ones(pts.shape[0]),
    }
    unknown = [c for c in channels if c not in per_point]
    if unknown:
        raise ValueError(f"channels: unknown {unknown}; choose from {sorted(per_point)}")
    values = np.stack([per_point[c] for c in channels], axis=1).astype(np.float32)  # (N, C)
    img = gather_to_range_image(values, proj, fill=0.0)  # (H, W, C)
    hit = proj.index_image >= 0
    img = (img - np.asarray(means, np.float32)) / np.asarray(stds, np.float32)
    img = np.where(hit[..., None], img, 0.0).astype(np.float32)
    H, W = hit.shape
    H_pad = -(-H // height_multiple) * height_multiple
    W_pad = -(-W // width_multiple) * width_multiple
    img = np.pad(img, ((0, H_pad - H), (0, W_pad - W), (0, 0)))
    image = np.ascontiguousarray(img.transpose(2, 0, 1))
    return RangeInput(image=image, rows=proj.row, cols=proj.col, valid=proj.valid)


def read_scan(path: str | Path) -> np.ndarray:
    """(N, >=4) float32 points of a raw scan: nuScenes ``.pcd.bin`` (5 columns) or KITTI ``.bin`` (4).

    Intensities are returned as stored (nuScenes 0..255); divide by the bundle's
    ``intensity_scale`` before :func:`range_image_input`.
    """
    from modalities.lidar.io import read_points  # noqa: PLC0415 (numpy-only reader)

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"scan file not found: {path}")
    if path.name.endswith(".pcd.bin"):
        from modalities.nuscenes_tables import load_points  # noqa: PLC0415

        return load_points(path)
    cloud = read_points(path)
    if cloud.intensity is None:
        raise ValueError(f"{path}: the scan has no intensity column; the range-view model needs one")
    return np.concatenate([cloud.points_xyz, cloud.intensity[:, None]], axis=1).astype(np.float32)


def point_labels(logits: np.ndarray, rows: np.ndarray, cols: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """(N,) uint8 label of each point: argmax of its pixel's logits, :data:`UNKNOWN_LABEL` without a pixel.

    Args:
        logits: (K, H, W) scores of one scan.
        rows, cols, valid: from :class:`RangeInput`.
    """
    if logits.ndim != 3:
        raise ValueError(f"logits: expected (K, H, W), got {logits.shape}")
    labels = np.full(rows.shape, UNKNOWN_LABEL, np.uint8)
    pred = logits.argmax(axis=0)  # (H, W)
    labels[valid] = pred[rows[valid], cols[valid]].astype(np.uint8)
    return labels


def point_logits(logits: np.ndarray, rows: np.ndarray, cols: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """(P, K) logits of the ``valid`` points (in point order), gathered from (K, H, W)."""
    return logits[:, rows[valid], cols[valid]].T
