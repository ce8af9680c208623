"""The sensor rig of the synthetic ego vehicle, laid out like the nuScenes car.

Ego frame: x forward, y left, z up, origin on the ground under the rear axle. LIDAR_TOP
is rotated -90 deg about z as in nuScenes (lidar x points to the ego's right, y forward).
Cameras: x right, y down, z forward; yaws and mounting positions follow the nuScenes
calibration (Caesar et al., "nuScenes: A multimodal dataset for autonomous driving",
CVPR 2020, Fig. 4). Each scene gets a few centimetres / tenths of a degree of
calibration jitter so that readers must really use ``calibrated_sensor``.
"""

from __future__ import annotations

import numpy as np

from modalities.synthetic.scene import rot_z

LIDAR_CHANNEL = "LIDAR_TOP"
LIDAR_MOUNT = (0.943, 0.0, 1.84)

# channel, yaw (deg, counter-clockwise from ego +x), mounting position in the ego frame (m)
CAMERAS: tuple[tuple[str, float, tuple[float, float, float]], ...] = (
    ("CAM_FRONT", 0.0, (1.70, 0.02, 1.51)),
    ("CAM_FRONT_RIGHT", -55.0, (1.55, -0.49, 1.50)),
    ("CAM_BACK_RIGHT", -110.0, (1.03, -0.48, 1.56)),
    ("CAM_BACK", 180.0, (0.03, 0.0, 1.57)),
    ("CAM_BACK_LEFT", 110.0, (1.04, 0.48, 1.57)),
    ("CAM_FRONT_LEFT", 55.0, (1.52, 0.49, 1.51)),
)
CAMERA_CHANNELS = tuple(c for c, _, _ in CAMERAS)

# camera axes (x right, y down, z forward) expressed in a forward-looking ego frame
R_EGO_FROM_CAM_BASE = np.array([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])


def rot_x(a: float) -> np.ndarray:
    c, s = np.cos(a), np.sin(a)
    return np.array([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]])


def rot_y(a: float) -> np.ndarray:
    c, s = np.cos(a), np.sin(a)
    return np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])


def _T(R: np.ndarray, t) -> np.ndarray:
    T = np.eye(4)
    T[:3, :3] = R
    T[:3, 3] = t
    return T


def lidar_extrinsic(rng: np.random.Generator) -> np.ndarray:
    """(4, 4) T_ego_from_lidar with calibration jitter."""
    j = np.deg2rad(rng.normal(0.0, 0.2, size=3))
    R = rot_z(-np.pi / 2 + j[2]) @ rot_y(j[1]) @ rot_x(j[0])
    return _T(R, np.asarray(LIDAR_MOUNT) + rng.normal(0.0, 0.01, size=3))


def camera_extrinsic(yaw_deg: float, position, rng: np.random.Generator) -> np.ndarray:
    """(4, 4) T_ego_from_cam: yaw about ego z, a small pitch/roll jitter, then the axis swap."""
    j = np.deg2rad(rng.normal(0.0, 0.3, size=3))
    R = rot_z(np.deg2rad(yaw_deg) + j[2]) @ rot_y(j[1]) @ rot_x(j[0]) @ R_EGO_FROM_CAM_BASE
    return _T(R, np.asarray(position) + rng.normal(0.0, 0.01, size=3))


def intrinsics(width: int, height: int, hfov_deg: float) -> np.ndarray:
    """(3, 3) pinhole K with square pixels and the principal point at the image centre.

    Pixel centres sit at integer coordinates, so the centre of a W-wide image is (W-1)/2.
    """
    f = (width / 2.0) / np.tan(np.deg2rad(hfov_deg) / 2.0)
    return np.array([[f, 0.0, (width - 1) / 2.0], [0.0, f, (height - 1) / 2.0], [0.0, 0.0, 1.0]])


def camera_time_offset_us(yaw_deg: float, rotation_hz: float) -> int:
    """Cameras fire when the spinning lidar sweeps across their view, as in nuScenes.

    The lidar's timestamp is taken when it faces backwards; it spins clockwise seen from
    above, so CAM_FRONT fires half a turn later and CAM_BACK with the lidar.
    """
    turn = ((180.0 - yaw_deg) % 360.0) / 360.0
    return int(round(turn * 1e6 / rotation_hz))
