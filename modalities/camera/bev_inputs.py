"""The camera BEV student's inputs, numpy only (it runs on the robot): the fixed lift geometry, the frame file.

:class:`CameraBevSpec` is the deployable input of :class:`modalities.camera.bev_lift.CameraBevNet`
(the record's ``input``: camera channels in network order, image size, lift heights, BEV grid).
:func:`camera_bev_feeds` turns a frame (one image per camera plus its calibration) into the
network's three inputs; training (:mod:`pipelines.calico`), evaluation and the deploy adapter all
call it, so they cannot drift apart.

Frame file (``<name>.frame.json``, what ``edgedistill infer`` reads for a camera BEV bundle)::

    {"format": "edgedistill-camera-frame/1",
     "cameras": [{"channel": "CAM_FRONT", "image": "CAM_FRONT.jpg",   # relative to the JSON file
                  "K": [[fx, 0, cx], [0, fy, cy], [0, 0, 1]],          # of the image as stored
                  "T_cam_from_lidar": [[...4 x 4...]]}, ...]}          # LIDAR_TOP frame -> camera

Every channel of the spec must be present, once (other channels are ignored, unchecked); K is
that of the image as stored, whose size is read from the file. The geometry depends only on the calibration: :class:`GeometryCache` keeps the last one,
so a robot with a fixed rig computes it once.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from modalities.bev_labels import BevGridSpec
from modalities.camera.calibration import check_intrinsics, project_points
from modalities.errors import DataError, require_file

MIN_DEPTH_M = 0.5  # a BEV point closer to the camera plane than this is not seen by it
IMAGE_MULTIPLE = 16  # H and W must be multiples of the deepest feature stride used
FRAME_FORMAT = "edgedistill-camera-frame/1"
FRAME_SUFFIX = ".frame.json"


@dataclass(frozen=True)
class CameraBevSpec:
    """Camera channels (network order), the network's image size (H, W), lift heights (m), the BEV grid."""

    cameras: tuple[str, ...]
    image_hw: tuple[int, int]
    heights_m: tuple[float, ...]
    grid: BevGridSpec

    @classmethod
    def from_dict(cls, d: Mapping) -> "CameraBevSpec":
        return cls(tuple(d["cameras"]), (int(d["image_hw"][0]), int(d["image_hw"][1])),
                   tuple(float(h) for h in d["heights_m"]), BevGridSpec.from_dict(d["grid"]))

    def to_dict(self) -> dict:
        return {"cameras": list(self.cameras), "image_hw": list(self.image_hw), "heights_m": list(self.heights_m),
                "grid": self.grid.to_dict()}


@dataclass(frozen=True)
class FrameCamera:
    """One camera of a frame: its image file and calibration (K of the image as stored)."""

    channel: str
    image_path: Path
    K: np.ndarray
    T_cam_from_lidar: np.ndarray


def lift_geometry(
    cameras: Sequence[tuple[np.ndarray, np.ndarray, int, int]],
    grid: BevGridSpec,
    image_hw: tuple[int, int],
    heights_m: Sequence[float],
) -> tuple[np.ndarray, np.ndarray]:
    """Where every BEV cell centre, at every height, falls in every camera; numpy only.

    Args:
        cameras: per camera (K (3, 3), T_cam_from_lidar (4, 4), width, height), K of an image of that
            size (the image as stored, before the network's resize).
        grid: the BEV grid (cell centres from ``grid.cell_centers_lidar()``).
        image_hw: (H, W) the network's input size; every image is resized to it edge to edge
            (edges to edges, as PIL, OpenCV and ``F.interpolate(align_corners=False)`` resize:
            :mod:`modalities.camera.bev_lift` explains why). The result does not depend on it;
            it is checked (positive, multiples of ``IMAGE_MULTIPLE``) so that a geometry is
            never paired with a size the network rejects.
        heights_m: the Z sampling heights, lidar-frame z in metres (LIDAR_TOP is ~1.8 m
            above the road in nuScenes: e.g. (-1.5, -0.5, 0.5)).

    Returns:
        sample_grid: (n_cams, Z*ny, nx, 2) float32 ``F.grid_sample`` coordinates (x, y) for
            ``align_corners=False``, row z*ny + iy, column ix; ``x = 2 (u + 0.5) / width - 1``
            with u the projected pixel of the original image (likewise y with v, height);
            0 where not valid.
        valid: (n_cams, Z, ny, nx) float32, 1 where the point is more than ``MIN_DEPTH_M``
            in front of the camera and inside the image (rounded pixel in [0, w) x [0, h),
            as ``calibration.project_points``), else 0.
    """
    if len(cameras) < 1:
        raise ValueError("cameras: need at least one (K, T_cam_from_lidar, width, height)")
    heights = np.asarray(heights_m, dtype=np.float64).reshape(-1)
    if heights.size < 1 or not np.all(np.isfinite(heights)):
        raise ValueError(f"heights_m: need at least one finite height in metres, got {heights_m!r}")
    H, W = image_hw
    if H < 1 or W < 1 or H % IMAGE_MULTIPLE or W % IMAGE_MULTIPLE:
        raise ValueError(f"image_hw: (H, W) must be positive multiples of {IMAGE_MULTIPLE}, got {image_hw}")
    ny, nx = grid.shape
    z_count = heights.size
    centers = grid.cell_centers_lidar().reshape(-1, 2)  # (ny*nx, 2), row-major (iy, ix)
    points = np.concatenate(
        [np.column_stack([centers, np.full(len(centers), z)]) for z in heights]
    )  # (Z*ny*nx, 3), order (z, iy, ix)
    sample_grid = np.zeros((len(cameras), z_count * ny, nx, 2), np.float32)
    valid = np.zeros((len(cameras), z_count, ny, nx), np.float32)
    for c, (K, T_cam_from_lidar, width, height) in enumerate(cameras):
        K = check_intrinsics(K, f"camera {c} K")
        if int(width) < 1 or int(height) < 1:
            raise ValueError(f"camera {c}: width and height must be positive, got {width}, {height}")
        uv_pixels, _, ok = project_points(points, T_cam_from_lidar, K, (int(width), int(height)), MIN_DEPTH_M)
        xy = 2.0 * (uv_pixels + 0.5) / np.array([width, height], np.float64) - 1.0
        xy[~ok] = 0.0
        sample_grid[c] = xy.reshape(z_count * ny, nx, 2)
        valid[c] = ok.reshape(z_count, ny, nx)
    return sample_grid, valid


def read_resized(path: str | Path, image_hw: tuple[int, int]) -> tuple[np.ndarray, tuple[int, int]]:
    """((H, W, 3) uint8 RGB resized edge to edge (bilinear) to ``image_hw``, (width, height) as stored); errors name
    the file."""
    from PIL import Image  # noqa: PLC0415

    from modalities.camera.io import read_image  # noqa: PLC0415

    h, w = image_hw
    rgb = read_image(path)
    return np.asarray(Image.fromarray(rgb).resize((w, h), Image.BILINEAR)), (rgb.shape[1], rgb.shape[0])


class GeometryCache:
    """The last frame's lift geometry, reused while the calibration and image sizes stay the same."""

    def __init__(self):
        self._key: bytes | None = None
        self._value: tuple[np.ndarray, np.ndarray] | None = None

    def __call__(self, cameras, grid: BevGridSpec, image_hw, heights_m) -> tuple[np.ndarray, np.ndarray]:
        key = b"".join(np.asarray(K, np.float64).tobytes() + np.asarray(T, np.float64).tobytes()
                       + np.asarray([w, h], np.int64).tobytes() for K, T, w, h in cameras)
        key += repr((grid.to_dict(), tuple(image_hw), tuple(heights_m))).encode()
        if key != self._key:
            self._value, self._key = lift_geometry(cameras, grid, image_hw, heights_m), key
        return self._value


def camera_bev_feeds(image_paths: Sequence[str | Path], calibrations: Sequence[tuple[np.ndarray, np.ndarray]],
                     spec: CameraBevSpec, geometry: GeometryCache | None = None,
                     calibrated_sizes: Sequence[tuple[int, int]] | None = None) -> dict[str, np.ndarray]:
    """The camera student's feeds of one frame, without the batch dimension.

    Args:
        image_paths: one image per camera, in the order of ``spec.cameras``.
        calibrations: (K (3, 3) of the image as stored, T_cam_from_lidar (4, 4)) per camera, same order.
        spec: the student's input spec.
        geometry: a cache to reuse the lift geometry of a fixed rig (None: computed for this frame).
        calibrated_sizes: (width, height) each K was calibrated at (a nuScenes table's), checked against the
            stored image (a DataError naming the file otherwise: K at the wrong size projects to the wrong
            pixels without another symptom). None: K is taken to be that of the image as stored (frame files).

    Returns:
        ``images`` (n, 3, H, W) float32 in [0, 1] (each image resized edge to edge to ``spec.image_hw``),
        ``sample_grid`` (n, Z*ny, nx, 2) and ``valid`` (n, Z, ny, nx) of :func:`lift_geometry`.
    """
    if len(image_paths) != len(spec.cameras) or len(calibrations) != len(spec.cameras):
        raise ValueError(f"need one image and one calibration per camera {list(spec.cameras)}, got "
                         f"{len(image_paths)} images and {len(calibrations)} calibrations")
    resized = [read_resized(p, spec.image_hw) for p in image_paths]
    for p, (_, stored), calibrated in zip(image_paths, resized, calibrated_sizes or [None] * len(resized)):
        if calibrated is not None and tuple(stored) != tuple(int(v) for v in calibrated):
            raise DataError(p, f"image is {stored[0]} x {stored[1]} pixels but its calibration is for "
                               f"{calibrated[0]} x {calibrated[1]}")
    images = np.stack([rgb for rgb, _ in resized]).astype(np.float32) / np.float32(255.0)
    cams = [(K, T, w, h) for (K, T), (_, (w, h)) in zip(calibrations, resized)]
    sample_grid, valid = (geometry or lift_geometry)(cams, spec.grid, spec.image_hw, spec.heights_m)
    return {"images": np.ascontiguousarray(images.transpose(0, 3, 1, 2)), "sample_grid": sample_grid, "valid": valid}


def read_frame(path: str | Path, channels: Sequence[str]) -> list[FrameCamera]:
    """The cameras of a frame file (format in the module docstring) in the order of ``channels``; errors name the
    file and the problem."""
    p = require_file(path, "camera frame file")
    try:
        doc = json.loads(p.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DataError(p, f"not a JSON camera frame file: {e}") from e
    if not isinstance(doc, dict) or doc.get("format") != FRAME_FORMAT or not isinstance(doc.get("cameras"), list):
        raise DataError(p, f'not a camera frame file: expected {{"format": "{FRAME_FORMAT}", "cameras": [...]}}')
    entries = doc["cameras"]
    names = [str(c.get("channel")) if isinstance(c, dict) else None for c in entries]
    duplicated = sorted({n for n in names if n is not None and names.count(n) > 1})
    if duplicated:
        raise DataError(p, f"cameras {duplicated} appear more than once")
    missing = [c for c in channels if c not in names]
    if missing:
        raise DataError(p, f"missing cameras {missing}: the model needs {list(channels)}, the frame has "
                           f"{sorted(n for n in names if n is not None)}")
    by_channel = {}
    for ch in channels:  # only the cameras the model reads are checked; others are ignored
        i = names.index(ch)
        cam = entries[i]
        try:
            K = check_intrinsics(np.asarray(cam["K"], np.float64), f"cameras[{i}].K")
            T = np.asarray(cam["T_cam_from_lidar"], np.float64)
            image = p.parent / str(cam["image"])
        except (KeyError, TypeError, ValueError) as e:
            raise DataError(p, f"cameras[{i}]: {e!r} (each camera needs channel, image, K 3x3, "
                               "T_cam_from_lidar 4x4)") from e
        if T.shape != (4, 4) or not np.all(np.isfinite(T)):
            raise DataError(p, f"{ch}: T_cam_from_lidar must be a finite 4x4 matrix")
        by_channel[ch] = FrameCamera(ch, image, K, T)
    return [by_channel[c] for c in channels]


def write_frame(path: str | Path, cameras: Sequence[tuple[str, str, np.ndarray, np.ndarray]]) -> Path:
    """Write a frame file (atomically): per camera (channel, image path relative to the file, K, T_cam_from_lidar)."""
    from modalities.fileio import atomic_write_json  # noqa: PLC0415

    path = Path(path)
    atomic_write_json(path, {"format": FRAME_FORMAT, "cameras": [
        {"channel": ch, "image": image, "K": np.asarray(K, float).tolist(),
         "T_cam_from_lidar": np.asarray(T, float).tolist()} for ch, image, K, T in cameras]})
    return path
