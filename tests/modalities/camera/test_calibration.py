"""Calibration: quaternion/pose helpers, the nuScenes chain, projection, KITTI calib files."""

from __future__ import annotations

import contextlib

import numpy as np
import pytest

from modalities.camera.calibration import (
    check_intrinsics,
    invert_transform,
    kitti_camera_intrinsics,
    kitti_T_cam_from_velo,
    load_kitti_calib,
    nuscenes_T_cam_from_lidar,
    pose_matrix,
    project_points,
    quaternion_to_rotation,
    rotation_to_quaternion,
)
from modalities.errors import DataError, MissingDataError

# KITTI object detection, training/calib/000000.txt (values as published).
KITTI_OBJECT_CALIB = """\
P0: 7.070493000000e+02 0.000000000000e+00 6.040814000000e+02 0.000000000000e+00 0.000000000000e+00 7.070493000000e+02 1.805066000000e+02 0.000000000000e+00 0.000000000000e+00 0.000000000000e+00 1.000000000000e+00 0.000000000000e+00
P1: 7.070493000000e+02 0.000000000000e+00 6.040814000000e+02 -3.797842000000e+02 0.000000000000e+00 7.070493000000e+02 1.805066000000e+02 0.000000000000e+00 0.000000000000e+00 0.000000000000e+00 1.000000000000e+00 0.000000000000e+00
P2: 7.070493000000e+02 0.000000000000e+00 6.040814000000e+02 4.575831000000e+01 0.000000000000e+00 7.070493000000e+02 1.805066000000e+02 -3.454157000000e-01 0.000000000000e+00 0.000000000000e+00 1.000000000000e+00 4.981016000000e-03
P3: 7.070493000000e+02 0.000000000000e+00 6.040814000000e+02 -3.341081000000e+02 0.000000000000e+00 7.070493000000e+02 1.805066000000e+02 2.330660000000e+00 0.000000000000e+00 0.000000000000e+00 1.000000000000e+00 3.201153000000e-03
R0_rect: 9.999128000000e-01 1.009263000000e-02 -8.511932000000e-03 -1.012729000000e-02 9.999406000000e-01 -4.037671000000e-03 8.470675000000e-03 4.123522000000e-03 9.999556000000e-01
Tr_velo_to_cam: 6.927964000000e-03 -9.999722000000e-01 -2.757829000000e-03 -2.457729000000e-02 -1.162982000000e-03 2.749836000000e-03 -9.999955000000e-01 -6.127237000000e-02 9.999753000000e-01 6.931141000000e-03 -1.143899000000e-03 -3.321029000000e-01
Tr_imu_to_velo: 9.999976000000e-01 7.553071000000e-04 -2.035826000000e-03 -8.086759000000e-01 -7.854027000000e-04 9.998898000000e-01 -1.482298000000e-02 3.195559000000e-01 2.024406000000e-03 1.482454000000e-02 9.998881000000e-01 -7.997231000000e-01
"""

# SemanticKITTI / KITTI odometry sequences/00/calib.txt: 'Tr', no R0_rect.
KITTI_ODOMETRY_CALIB = """\
P0: 7.188560000000e+02 0.000000000000e+00 6.071928000000e+02 0.000000000000e+00 0.000000000000e+00 7.188560000000e+02 1.852157000000e+02 0.000000000000e+00 0.000000000000e+00 0.000000000000e+00 1.000000000000e+00 0.000000000000e+00
P1: 7.188560000000e+02 0.000000000000e+00 6.071928000000e+02 -3.861448000000e+02 0.000000000000e+00 7.188560000000e+02 1.852157000000e+02 0.000000000000e+00 0.000000000000e+00 0.000000000000e+00 1.000000000000e+00 0.000000000000e+00
P2: 7.188560000000e+02 0.000000000000e+00 6.071928000000e+02 4.538225000000e+01 0.000000000000e+00 7.188560000000e+02 1.852157000000e+02 -1.130887000000e-01 0.000000000000e+00 0.000000000000e+00 1.000000000000e+00 3.779761000000e-03
P3: 7.188560000000e+02 0.000000000000e+00 6.071928000000e+02 -3.372877000000e+02 0.000000000000e+00 7.188560000000e+02 1.852157000000e+02 2.369057000000e+00 0.000000000000e+00 0.000000000000e+00 1.000000000000e+00 4.915215000000e-03
Tr: 4.276802385584e-04 -9.999672484946e-01 -8.084491683471e-03 -1.198459927713e-02 -7.210626507497e-03 8.081198471645e-03 -9.999413164504e-01 -5.403984729748e-02 9.999738645903e-01 4.859485810390e-04 -7.206933692422e-03 -2.921968648686e-01
"""


@contextlib.contextmanager
def _raises_naming(path, *fragments, exc=DataError):
    """The block raises ``exc``; its message names ``path`` and contains every fragment."""
    with pytest.raises(exc) as info:
        yield info
    message = str(info.value)
    for needle in (str(path), *fragments):
        assert needle in message, message


def _random_rotation(rng):
    q = rng.normal(size=4)
    return quaternion_to_rotation(q / np.linalg.norm(q))


# --------------------------------------------------------------------------- quaternions / poses


def test_quaternion_round_trip_and_orthonormal():
    rng = np.random.default_rng(0)
    for _ in range(50):
        q = rng.normal(size=4)
        q /= np.linalg.norm(q)
        R = quaternion_to_rotation(q)
        assert np.allclose(R @ R.T, np.eye(3)) and np.isclose(np.linalg.det(R), 1.0)
        q2 = rotation_to_quaternion(R)
        assert np.allclose(q2, q if q[0] >= 0 else -q)


def test_quaternion_matches_pyquaternion():
    pyquaternion = pytest.importorskip("pyquaternion")
    rng = np.random.default_rng(1)
    for _ in range(20):
        q = rng.normal(size=4)
        q /= np.linalg.norm(q)
        assert np.allclose(quaternion_to_rotation(q), pyquaternion.Quaternion(q).rotation_matrix)


def test_quaternion_about_z():
    angle = np.radians(30)
    R = quaternion_to_rotation([np.cos(angle / 2), 0, 0, np.sin(angle / 2)])
    assert np.allclose(R @ [1, 0, 0], [np.cos(angle), np.sin(angle), 0])


def test_bad_quaternion_and_singular_transform():
    with pytest.raises(ValueError, match="unit length"):
        quaternion_to_rotation([2, 0, 0, 0])
    with pytest.raises(ValueError, match="lidar ego_pose"):
        pose_matrix([0, 0], [1, 0, 0, 0], "lidar ego_pose")
    with pytest.raises(ValueError, match="singular"):
        invert_transform(np.diag([1.0, 1.0, 0.0, 1.0]))


def test_nuscenes_chain_matches_explicit_composition():
    rng = np.random.default_rng(2)

    def record():
        q = rng.normal(size=4)
        return {"translation": rng.normal(0, 5, 3).tolist(), "rotation": (q / np.linalg.norm(q)).tolist()}

    lidar_cs, lidar_pose, cam_cs, cam_pose = record(), record(), record(), record()
    T = nuscenes_T_cam_from_lidar(lidar_cs, lidar_pose, cam_cs, cam_pose)
    # Oracle: move points step by step as the nuScenes devkit tutorial does.
    p = rng.normal(0, 10, (100, 3))

    def apply(rec, pts, inverse=False):
        R, t = quaternion_to_rotation(rec["rotation"]), np.asarray(rec["translation"])
        return (pts - t) @ R if inverse else pts @ R.T + t

    expected = apply(cam_cs, apply(cam_pose, apply(lidar_pose, apply(lidar_cs, p)), inverse=True), inverse=True)
    assert np.allclose(p @ T[:3, :3].T + T[:3, 3], expected)


def test_project_points_validity():
    K = np.array([[100.0, 0, 50], [0, 100.0, 40], [0, 0, 1]])
    T = np.eye(4)
    pts = np.array(
        [
            [0.0, 0.0, 10.0],  # principal point
            [0.0, 0.0, 0.5],  # too close
            [0.0, 0.0, -5.0],  # behind
            [-5.05, 0.0, 10.0],  # u = -0.5: outside (strict)
            [-5.0, -4.0, 10.0],  # u = 0, v = 0: inside
            [4.94, 0.0, 10.0],  # u = 99.4 -> rounds to 99 inside (W = 100)
            [4.96, 0.0, 10.0],  # u = 99.6 -> rounds to 100 outside
        ]
    )
    uv, depth, valid = project_points(pts, T, K, (100, 80))
    assert np.allclose(uv[0], [50, 40]) and np.allclose(depth, pts[:, 2])
    assert valid.tolist() == [True, False, False, False, True, True, False]
    with pytest.raises(ValueError, match="pinhole"):
        check_intrinsics(np.zeros((3, 3)))


# --------------------------------------------------------------------------- KITTI


def _homogeneous(p):
    return np.column_stack([p, np.ones(len(p))])


@pytest.mark.parametrize("camera", [0, 1, 2, 3])
def test_kitti_object_calib_matches_devkit_projection(tmp_path, camera):
    path = tmp_path / "000000.txt"
    path.write_text(KITTI_OBJECT_CALIB)
    calib = load_kitti_calib(path)
    assert sorted(calib.P) == [0, 1, 2, 3] and "Tr_imu_to_velo" in calib.extra
    rng = np.random.default_rng(3)
    velo = np.column_stack([rng.uniform(5, 40, 500), rng.uniform(-10, 10, 500), rng.uniform(-2, 1, 500)])
    # KITTI devkit: uv ~ P_i @ R0_rect(4x4) @ Tr_velo_to_cam(4x4) @ x
    R0 = np.eye(4)
    R0[:3, :3] = calib.R0_rect
    uvw = (calib.P[camera] @ R0 @ calib.T_cam0_from_velo @ _homogeneous(velo).T).T
    expected_uv = uvw[:, :2] / uvw[:, 2:]
    T = kitti_T_cam_from_velo(calib, camera)
    K = kitti_camera_intrinsics(calib, camera)
    uv, depth, valid = project_points(velo, T, K, (1242, 375))
    assert np.allclose(uv, expected_uv, atol=1e-6)
    assert np.allclose(depth, uvw[:, 2], atol=1e-6)  # P's third row carries depth + t_z
    assert valid.any()
    # Points straight ahead of the car are in front of the camera.
    assert np.all(depth > 0)


def test_kitti_odometry_calib_tr_without_r0(tmp_path):
    path = tmp_path / "calib.txt"
    path.write_text(KITTI_ODOMETRY_CALIB)
    calib = load_kitti_calib(path)
    assert np.array_equal(calib.R0_rect, np.eye(3))
    assert np.isclose(calib.T_cam0_from_velo[2, 3], -2.921968648686e-01)
    T = kitti_T_cam_from_velo(calib, 2)
    x = np.array([[10.0, 0.0, 0.0]])
    uvw = calib.P[2] @ calib.T_cam0_from_velo @ _homogeneous(x).T
    uv, _, _ = project_points(x, T, kitti_camera_intrinsics(calib, 2), (1241, 376))
    assert np.allclose(uv[0], uvw[:2, 0] / uvw[2, 0])


def test_kitti_calib_without_colons_and_with_text_lines(tmp_path):
    text = KITTI_ODOMETRY_CALIB.replace(": ", " ") + "calib_time: 09-Jan-2012 13:57:47\n\n"
    path = tmp_path / "calib.txt"
    path.write_text(text)
    calib = load_kitti_calib(path)
    assert sorted(calib.P) == [0, 1, 2, 3] and "calib_time" not in calib.extra


def test_kitti_missing_file(tmp_path):
    with _raises_naming(tmp_path / "calib.txt", "not found", exc=MissingDataError):
        load_kitti_calib(tmp_path / "calib.txt")


@pytest.mark.parametrize(
    "edit,fragments",
    [
        (lambda t: t.replace("Tr_velo_to_cam:", "Tr_other:"), ["Tr_velo_to_cam", "missing"]),
        (lambda t: "\n".join(l for l in t.splitlines() if not l.startswith("P")), ["P0..P3"]),
        (lambda t: t.replace("-3.454157000000e-01 ", ""), ["'P2'", "expected 12 values", "got 11"]),
        (lambda t: t.replace("4.575831000000e+01", "4.57x"), ["'P2'", "non-numeric"]),
        (lambda t: t.replace("9.999556000000e-01", "nan"), ["'R0_rect'", "NaN"]),
        (
            lambda t: t.replace(
                "R0_rect: 9.999128000000e-01 1.009263000000e-02 -8.511932000000e-03",
                "R0_rect: 0 0 0",
            ).replace("-1.012729000000e-02 9.999406000000e-01 -4.037671000000e-03", "0 0 0"),
            ["'R0_rect'", "singular"],
        ),
        (
            lambda t: t.replace(
                "Tr_velo_to_cam: 6.927964000000e-03 -9.999722000000e-01 -2.757829000000e-03",
                "Tr_velo_to_cam: 0 0 0",
            ),
            ["'Tr_velo_to_cam'", "not invertible"],
        ),
        (lambda t: t.replace("P3: 7.070493000000e+02", "P3: -7.070493000000e+02"), ["'P3'", "pinhole"]),
    ],
    ids=["no-Tr", "no-P", "short-P2", "text-in-P2", "nan-R0", "singular-R0", "singular-Tr", "negative-fx"],
)
def test_kitti_bad_calib_names_file_and_key(tmp_path, edit, fragments):
    path = tmp_path / "000042.txt"
    path.write_text(edit(KITTI_OBJECT_CALIB))
    with _raises_naming(path, *fragments):
        load_kitti_calib(path)


def test_kitti_camera_not_in_file(tmp_path):
    path = tmp_path / "calib.txt"
    path.write_text("\n".join(l for l in KITTI_OBJECT_CALIB.splitlines() if not l.startswith("P3")))
    calib = load_kitti_calib(path)
    with _raises_naming(path, "'P3'", "camera 3 not in file"):
        kitti_T_cam_from_velo(calib, 3)
