"""Calibration chains and pinhole projection (pure functions, nothing is modified in place).

Frames (nuScenes conventions)::

    lidar  --(calibrated_sensor)-->  ego(t_lidar) --(ego_pose)--> global
    global --(ego_pose^-1)--> ego(t_cam) --(calibrated_sensor^-1)--> camera --(K)--> pixels

    camera frame: x right, y down, z forward (depth);  pixels: u right, v down,
    pixel centres at integer coordinates, image spans [-0.5, W-0.5) x [-0.5, H-0.5).

KITTI: ``x_cam = R0_rect @ Tr_velo_to_cam @ x_velo`` and ``uv = P2 @ x_cam``.

Matrices are named ``T_<to>_from_<from>``: ``T_cam_from_lidar @ p_lidar = p_cam``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from modalities.errors import DataError, require_file


def _check_matrix(m: np.ndarray, shape: tuple[int, int], what: str) -> np.ndarray:
    m = np.asarray(m, dtype=np.float64)
    if m.shape != shape:
        raise ValueError(f"{what}: expected shape {shape}, got {m.shape}")
    if not np.all(np.isfinite(m)):
        raise ValueError(f"{what}: contains NaN or inf")
    return m


def quaternion_to_rotation(q_wxyz: Sequence[float], what: str = "rotation") -> np.ndarray:
    """(3,3) rotation matrix of a unit quaternion given as (w, x, y, z), nuScenes order."""
    q = np.asarray(q_wxyz, dtype=np.float64)
    if q.shape != (4,) or not np.all(np.isfinite(q)):
        raise ValueError(f"{what}: expected a finite quaternion (w, x, y, z), got {q_wxyz!r}")
    norm = np.linalg.norm(q)
    if not 0.99 < norm < 1.01:
        raise ValueError(f"{what}: quaternion is not unit length (|q| = {norm:.4f})")
    w, x, y, z = q / norm
    return np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
            [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
            [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
        ]
    )


def rotation_to_quaternion(R: np.ndarray) -> np.ndarray:
    """(4,) unit quaternion (w, x, y, z) with w >= 0 of a (3,3) rotation matrix."""
    R = _check_matrix(R, (3, 3), "rotation matrix")
    tr = np.trace(R)
    if tr > 0:
        s = 2.0 * np.sqrt(tr + 1.0)
        q = [0.25 * s, (R[2, 1] - R[1, 2]) / s, (R[0, 2] - R[2, 0]) / s, (R[1, 0] - R[0, 1]) / s]
    elif R[0, 0] > R[1, 1] and R[0, 0] > R[2, 2]:
        s = 2.0 * np.sqrt(1.0 + R[0, 0] - R[1, 1] - R[2, 2])
        q = [(R[2, 1] - R[1, 2]) / s, 0.25 * s, (R[0, 1] + R[1, 0]) / s, (R[0, 2] + R[2, 0]) / s]
    elif R[1, 1] > R[2, 2]:
        s = 2.0 * np.sqrt(1.0 + R[1, 1] - R[0, 0] - R[2, 2])
        q = [(R[0, 2] - R[2, 0]) / s, (R[0, 1] + R[1, 0]) / s, 0.25 * s, (R[1, 2] + R[2, 1]) / s]
    else:
        s = 2.0 * np.sqrt(1.0 + R[2, 2] - R[0, 0] - R[1, 1])
        q = [(R[1, 0] - R[0, 1]) / s, (R[0, 2] + R[2, 0]) / s, (R[1, 2] + R[2, 1]) / s, 0.25 * s]
    q = np.asarray(q)
    q = q / np.linalg.norm(q)
    return q if q[0] >= 0 else -q


def pose_matrix(translation: Sequence[float], rotation_wxyz: Sequence[float], what: str = "pose") -> np.ndarray:
    """(4,4) homogeneous transform of a nuScenes (translation, rotation) record."""
    t = np.asarray(translation, dtype=np.float64)
    if t.shape != (3,) or not np.all(np.isfinite(t)):
        raise ValueError(f"{what}: expected a finite translation (x, y, z), got {translation!r}")
    T = np.eye(4)
    T[:3, :3] = quaternion_to_rotation(rotation_wxyz, what)
    T[:3, 3] = t
    return T


def invert_transform(T: np.ndarray, what: str = "transform") -> np.ndarray:
    """Inverse of a rigid (4,4) transform; raises if it is not invertible."""
    T = _check_matrix(T, (4, 4), what)
    if abs(np.linalg.det(T[:3, :3])) < 1e-9:
        raise ValueError(f"{what}: rotation block is singular (det ~ 0), cannot invert")
    return np.linalg.inv(T)


def nuscenes_T_cam_from_lidar(
    lidar_calibrated_sensor: Mapping,
    lidar_ego_pose: Mapping,
    cam_calibrated_sensor: Mapping,
    cam_ego_pose: Mapping,
) -> np.ndarray:
    """(4,4) lidar -> camera through the global frame, each ego pose at its own timestamp."""
    T_ego_from_lidar = pose_matrix(
        lidar_calibrated_sensor["translation"], lidar_calibrated_sensor["rotation"], "lidar calibrated_sensor"
    )
    T_global_from_ego_l = pose_matrix(lidar_ego_pose["translation"], lidar_ego_pose["rotation"], "lidar ego_pose")
    T_global_from_ego_c = pose_matrix(cam_ego_pose["translation"], cam_ego_pose["rotation"], "camera ego_pose")
    T_ego_from_cam = pose_matrix(
        cam_calibrated_sensor["translation"], cam_calibrated_sensor["rotation"], "camera calibrated_sensor"
    )
    return (
        invert_transform(T_ego_from_cam, "camera calibrated_sensor")
        @ invert_transform(T_global_from_ego_c, "camera ego_pose")
        @ T_global_from_ego_l
        @ T_ego_from_lidar
    )


def check_intrinsics(K: np.ndarray, what: str = "camera intrinsic") -> np.ndarray:
    """Validate a (3,3) pinhole matrix: finite, positive focal lengths, last row (0, 0, 1)."""
    K = _check_matrix(K, (3, 3), what)
    if K[0, 0] <= 0 or K[1, 1] <= 0 or not np.allclose(K[2], [0, 0, 1]):
        raise ValueError(f"{what}: not a pinhole matrix (need fx, fy > 0 and last row 0 0 1), got {K.tolist()}")
    return K


def project_points(
    points_lidar: np.ndarray,
    T_cam_from_lidar: np.ndarray,
    K: np.ndarray,
    image_size_wh: tuple[int, int],
    min_depth_m: float = 1.0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Project lidar points into a pinhole camera.

    Args:
        points_lidar: (N, >=3) points, the first three columns x, y, z in the lidar frame.
        T_cam_from_lidar: (4, 4) rigid transform.
        K: (3, 3) intrinsics.
        image_size_wh: (width, height) in pixels.
        min_depth_m: points at camera depth <= this are invalid (SLidR keeps depth > 1 m).

    Returns:
        uv_pixels (N, 2) float64 sub-pixel coordinates (u right, v down),
        depth_m (N,) camera z, and valid (N,) bool: depth > min_depth_m and the pixel
        strictly inside the image, i.e. the rounded pixel index is in [0, W) x [0, H).
    """
    pts = np.asarray(points_lidar)
    if pts.ndim != 2 or pts.shape[1] < 3:
        raise ValueError(f"points_lidar: expected (N, >=3), got {pts.shape}")
    T = _check_matrix(T_cam_from_lidar, (4, 4), "T_cam_from_lidar")
    K = check_intrinsics(K)
    W, H = image_size_wh
    xyz = pts[:, :3].astype(np.float64)
    cam = xyz @ T[:3, :3].T + T[:3, 3]
    depth_m = cam[:, 2]
    safe = np.where(np.abs(depth_m) < 1e-9, 1e-9, depth_m)
    uv_h = cam @ K.T
    uv_pixels = uv_h[:, :2] / safe[:, None]
    valid = (
        (depth_m > min_depth_m)
        & (uv_pixels[:, 0] > -0.5)
        & (uv_pixels[:, 0] < W - 0.5)
        & (uv_pixels[:, 1] > -0.5)
        & (uv_pixels[:, 1] < H - 0.5)
    )
    return uv_pixels, depth_m, valid


# --------------------------------------------------------------------------- KITTI

# Number of values per key in KITTI calib files: object/tracking ``calib/*.txt`` use
# ``Tr_velo_to_cam`` (+ ``R0_rect``); odometry / SemanticKITTI ``calib.txt`` use ``Tr``
# (velodyne -> rectified cam0, no ``R0_rect``). Other keys (``Tr_imu_to_velo``) are kept as read.
_KITTI_SHAPES = {
    "P0": (3, 4),
    "P1": (3, 4),
    "P2": (3, 4),
    "P3": (3, 4),
    "R0_rect": (3, 3),
    "R_rect": (3, 3),
    "Tr_velo_to_cam": (3, 4),
    "Tr_velo_cam": (3, 4),
    "Tr": (3, 4),
    "Tr_imu_to_velo": (3, 4),
    "Tr_imu_velo": (3, 4),
}


@dataclass(frozen=True)
class KittiCalib:
    """A parsed KITTI calibration file.

    Attributes:
        P: camera index -> (3, 4) rectified projection matrix ``P_i = K_i [I | t_i]``.
        R0_rect: (3, 3) rectifying rotation of cam0 (identity for odometry files that have none).
        T_cam0_from_velo: (4, 4) velodyne -> (unrectified) cam0 (``Tr_velo_to_cam`` or ``Tr``).
        source: the file it was read from.
        extra: every other ``key: values`` line, as float64 arrays.
    """

    P: dict[int, np.ndarray]
    R0_rect: np.ndarray
    T_cam0_from_velo: np.ndarray
    source: Path
    extra: dict[str, np.ndarray] = field(default_factory=dict)


def _kitti_error(path: Path, key: str | None, problem: str) -> DataError:
    return DataError(path, problem if key is None else f"key '{key}': {problem}")


def load_kitti_calib(path: str | Path) -> KittiCalib:
    """Parse a KITTI object/tracking ``calib/*.txt`` or an odometry/SemanticKITTI ``calib.txt``.

    Lines are ``KEY: v1 v2 ...`` (odometry files may omit the colon). Needs ``P0``..``P3``
    (at least the one you project with) and ``Tr_velo_to_cam`` or ``Tr``. Errors name the
    file and the key: missing keys, non-numeric values, wrong value counts, non-finite or
    singular matrices.
    """
    p = require_file(path, "KITTI calibration file")
    try:
        text = p.read_text()
    except UnicodeDecodeError as e:
        raise DataError(p, f"not a text calibration file ({e})") from e
    values: dict[str, np.ndarray] = {}
    for lineno, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line:
            continue
        key, sep, rest = line.partition(":")
        if not sep:
            key, _, rest = line.partition(" ")
        key = key.strip()
        try:
            nums = np.array([float(v) for v in rest.split()], dtype=np.float64)
        except ValueError:
            if key in _KITTI_SHAPES:
                raise _kitti_error(p, key, f"line {lineno} has non-numeric values: {rest.strip()[:60]!r}") from None
            continue  # e.g. 'calib_time: 09-Jan-2012 13:57:47' in raw KITTI files
        if key in _KITTI_SHAPES:
            shape = _KITTI_SHAPES[key]
            if nums.size != shape[0] * shape[1]:
                raise _kitti_error(p, key, f"expected {shape[0] * shape[1]} values for a {shape} matrix, got {nums.size}")
            if not np.all(np.isfinite(nums)):
                raise _kitti_error(p, key, "contains NaN or inf")
            nums = nums.reshape(shape)
        values[key] = nums

    P = {int(k[1]): values.pop(k) for k in ("P0", "P1", "P2", "P3") if k in values}
    if not P:
        raise _kitti_error(p, None, "no camera projection matrices (P0..P3) found")
    for i, Pi in P.items():
        if abs(np.linalg.det(Pi[:, :3])) < 1e-9:
            raise _kitti_error(p, f"P{i}", "left 3x3 block is singular; not a projection matrix")
        if Pi[0, 0] <= 0 or Pi[1, 1] <= 0 or not np.allclose(Pi[2, :3], [0, 0, 1]):
            raise _kitti_error(p, f"P{i}", "not a rectified pinhole projection (need fx, fy > 0, last row 0 0 1 t)")
    rect_key = next((k for k in ("R0_rect", "R_rect") if k in values), None)
    R0 = np.eye(3) if rect_key is None else values.pop(rect_key)
    if rect_key is not None and abs(np.linalg.det(R0)) < 1e-9:
        raise _kitti_error(p, rect_key, "rotation is singular (det ~ 0)")
    tr_key = next((k for k in ("Tr_velo_to_cam", "Tr_velo_cam", "Tr") if k in values), None)
    if tr_key is None:
        raise _kitti_error(p, None, "missing the velodyne->camera transform (key 'Tr_velo_to_cam' or 'Tr')")
    Tr = np.eye(4)
    Tr[:3] = values.pop(tr_key)
    if abs(np.linalg.det(Tr[:3, :3])) < 1e-9:
        raise _kitti_error(p, tr_key, "rotation block is singular (det ~ 0), the transform is not invertible")
    return KittiCalib(P=P, R0_rect=R0, T_cam0_from_velo=Tr, source=p, extra=values)


def _kitti_P(calib: KittiCalib, camera: int) -> np.ndarray:
    if camera not in calib.P:
        raise _kitti_error(calib.source, f"P{camera}", f"camera {camera} not in file (has {sorted(calib.P)})")
    return calib.P[camera]


def kitti_camera_intrinsics(calib: KittiCalib, camera: int = 2) -> np.ndarray:
    """(3, 3) intrinsics ``K`` of rectified camera ``camera`` (left 3x3 block of ``P_camera``)."""
    return check_intrinsics(_kitti_P(calib, camera)[:, :3].copy(), f"{calib.source}: P{camera}")


def kitti_T_cam_from_velo(calib: KittiCalib, camera: int = 2) -> np.ndarray:
    """(4, 4) velodyne -> rectified camera ``camera`` frame, for use with :func:`project_points`.

    KITTI projects with ``uv ~ P_i @ R0_rect @ Tr_velo_to_cam @ x_velo``. Writing
    ``P_i = K_i [I | t_i]`` (``t_i = K_i^-1 P_i[:, 3]``, the stereo baseline offset) gives
    ``T_cami_from_velo = [I | t_i] @ R0_rect @ Tr_velo_to_cam``, so that
    ``project_points(x_velo, kitti_T_cam_from_velo(c, i), kitti_camera_intrinsics(c, i), ...)``
    reproduces the KITTI devkit projection exactly.
    """
    P = _kitti_P(calib, camera)
    K = P[:, :3]
    T_cam_from_rect0 = np.eye(4)
    T_cam_from_rect0[:3, 3] = np.linalg.solve(K, P[:, 3])
    R0 = np.eye(4)
    R0[:3, :3] = calib.R0_rect
    return T_cam_from_rect0 @ R0 @ calib.T_cam0_from_velo
