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

:func:`range_image_input` (``modalities.lidar.range_view``, numpy) is the same function
training uses through ``modalities.lidar.range_net.build_range_input``, so the Jetson
runtime image needs no torch; ``tests/deploy/test_preprocess.py`` checks the two agree.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from modalities.lidar.range_view import RangeInput, range_image_input  # noqa: F401 (re-exported)
from modalities.lidar.sensors import sensor_from_dict  # noqa: F401 (re-exported)

UNKNOWN_LABEL = 255  # label written for a point that has no pixel (outside every beam / range)


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
