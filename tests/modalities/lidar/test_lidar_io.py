"""Lidar readers: round trips through every on-disk format, and one test per kind of bad input.

Every bad-input test asserts that the message names the file.
"""

from __future__ import annotations

import contextlib
import importlib.util

import numpy as np
import pytest

from modalities.errors import DataError, MissingDataError
from modalities.lidar.io import (
    PointCloud,
    read_kitti_bin,
    read_nuscenes_pcd_bin,
    read_open3d_cloud,
    read_points,
    read_semantickitti,
    read_semantickitti_label,
    semantickitti_label_path,
    write_kitti_bin,
    write_nuscenes_pcd_bin,
    write_semantickitti_label,
)


@pytest.fixture
def scan():
    rng = np.random.default_rng(0)
    xyz = rng.normal(0, 10, (257, 3)).astype(np.float32)
    intensity = rng.random(257).astype(np.float32)
    ring = rng.integers(0, 32, 257)
    return xyz, intensity, ring


def test_kitti_bin_round_trip(tmp_path, scan):
    xyz, intensity, _ = scan
    path = tmp_path / "000000.bin"
    write_kitti_bin(path, xyz, intensity)
    # The KITTI layout, written independently of our writer.
    assert np.array_equal(np.fromfile(path, np.float32).reshape(-1, 4), np.column_stack([xyz, intensity]))
    cloud = read_points(path)
    assert isinstance(cloud, PointCloud)
    assert cloud.points_xyz.dtype == np.float32 and cloud.points_xyz.shape == (257, 3)
    assert np.array_equal(cloud.points_xyz, xyz) and np.array_equal(cloud.intensity, intensity)
    assert cloud.ring is None and cloud.labels is None and cloud.source == path
    assert len(cloud) == 257 and cloud.num_dropped_nonfinite == 0


def test_nuscenes_pcd_bin_round_trip(tmp_path, scan):
    xyz, intensity, ring = scan
    path = tmp_path / "n015-2018__LIDAR_TOP__1533151603547590.pcd.bin"
    write_nuscenes_pcd_bin(path, xyz, intensity * 255, ring)
    cloud = read_points(path)
    assert np.array_equal(cloud.points_xyz, xyz)
    assert np.allclose(cloud.intensity, intensity * 255)
    assert cloud.ring.dtype == np.int64 and np.array_equal(cloud.ring, ring)


@pytest.mark.skipif(importlib.util.find_spec("nuscenes") is None, reason="nuscenes-devkit not installed")
def test_nuscenes_reader_agrees_with_devkit(tmp_path, scan):
    from nuscenes.utils.data_classes import LidarPointCloud

    xyz, intensity, ring = scan
    path = tmp_path / "x.pcd.bin"
    write_nuscenes_pcd_bin(path, xyz, intensity, ring)
    ref = LidarPointCloud.from_file(str(path)).points  # (4, N): x, y, z, intensity
    cloud = read_nuscenes_pcd_bin(path)
    assert np.array_equal(ref[:3].T, cloud.points_xyz) and np.array_equal(ref[3], cloud.intensity)


def test_semantickitti_labels(tmp_path, scan):
    xyz, intensity, _ = scan
    seq = tmp_path / "sequences" / "08"
    scan_path = seq / "velodyne" / "000123.bin"
    write_kitti_bin(scan_path, xyz, intensity)
    rng = np.random.default_rng(1)
    semantic = rng.integers(0, 260, 257)
    instance = rng.integers(0, 2**16, 257)
    label_path = semantickitti_label_path(scan_path)
    assert label_path == seq / "labels" / "000123.label"
    write_semantickitti_label(label_path, semantic, instance)
    raw = np.fromfile(label_path, np.uint32)
    assert np.array_equal(raw & 0xFFFF, semantic) and np.array_equal(raw >> 16, instance)

    cloud = read_semantickitti(scan_path)
    assert np.array_equal(cloud.labels, semantic) and np.array_equal(cloud.instance_ids, instance)
    assert np.array_equal(cloud.points_xyz, xyz)


@pytest.mark.parametrize("suffix", [".pcd", ".ply"])
def test_open3d_formats_keep_intensity(tmp_path, scan, suffix):
    import open3d as o3d

    xyz, intensity, _ = scan
    pcd = o3d.t.geometry.PointCloud()
    pcd.point["positions"] = o3d.core.Tensor(xyz)
    pcd.point["intensity"] = o3d.core.Tensor(intensity[:, None])
    path = tmp_path / f"scan{suffix}"
    o3d.t.io.write_point_cloud(str(path), pcd)
    cloud = read_points(path)
    assert np.allclose(cloud.points_xyz, xyz) and np.allclose(cloud.intensity, intensity)


def test_open3d_without_intensity_gives_zeros(tmp_path, scan):
    import open3d as o3d

    xyz = scan[0]
    pcd = o3d.t.geometry.PointCloud()
    pcd.point["positions"] = o3d.core.Tensor(xyz)
    path = tmp_path / "plain.ply"
    o3d.t.io.write_point_cloud(str(path), pcd)
    cloud = read_open3d_cloud(path)
    assert np.allclose(cloud.points_xyz, xyz) and not cloud.intensity.any()


@pytest.mark.parametrize("fmt", ["kitti", "nuscenes"])
def test_reader_does_not_modify_or_alias_file_buffer(tmp_path, scan, fmt):
    """Writing into the returned arrays changes neither the file, nor the other arrays, nor a later read."""
    xyz, intensity, ring = scan
    if fmt == "kitti":
        path, read = tmp_path / "a.bin", read_kitti_bin
        write_kitti_bin(path, xyz, intensity)
    else:
        path, read = tmp_path / "a.pcd.bin", read_nuscenes_pcd_bin
        write_nuscenes_pcd_bin(path, xyz, intensity, ring)
    on_disk = path.read_bytes()
    cloud = read(path)
    assert cloud.points_xyz.flags.c_contiguous and cloud.intensity.flags.c_contiguous
    arrays = {"points_xyz": cloud.points_xyz, "intensity": cloud.intensity}
    if fmt == "nuscenes":
        arrays["ring"] = cloud.ring
    before = {name: a.copy() for name, a in arrays.items()}
    for name, a in arrays.items():
        assert a.flags.writeable, name
        a[...] = -7  # every element of this one array
        for other, b in arrays.items():
            if other != name:
                np.testing.assert_array_equal(b, before[other], err_msg=f"writing {name} changed {other}")
        assert path.read_bytes() == on_disk, f"writing {name} changed the file"
        again = read(path)
        np.testing.assert_array_equal(getattr(again, name), before[name], err_msg=f"a new read sees the write to {name}")
        a[...] = before[name]


# --------------------------------------------------------------------------- bad input


@contextlib.contextmanager
def _raises_naming(path, exc=DataError, match=None):
    """The block raises ``exc`` and its message names ``path`` (and contains ``match``)."""
    with pytest.raises(exc) as info:
        yield info
    message = str(info.value)
    assert str(path) in message, message
    assert match is None or match in message, message


def test_missing_file(tmp_path):
    path = tmp_path / "nope.bin"
    with _raises_naming(path, MissingDataError, "not found"):
        read_points(path)
    with pytest.raises(FileNotFoundError):  # also catchable as the builtin
        read_points(path)


def test_empty_file(tmp_path):
    path = tmp_path / "empty.bin"
    path.write_bytes(b"")
    with _raises_naming(path, match="empty"):
        read_points(path)


@pytest.mark.parametrize("name,nbytes", [("cut.bin", 16 * 10 + 7), ("cut.pcd.bin", 20 * 3 + 4)])
def test_truncated_file(tmp_path, name, nbytes):
    path = tmp_path / name
    path.write_bytes(np.zeros(nbytes, np.uint8).tobytes())
    with _raises_naming(path, match="not a multiple"):
        read_points(path)


def test_kitti_file_read_as_nuscenes_is_rejected(tmp_path):
    # 20 KITTI records = 80 floats = 16 nuScenes records: the size check alone cannot tell.
    rng = np.random.default_rng(2)
    path = tmp_path / "wrong.pcd.bin"
    write_kitti_bin(path, rng.normal(0, 5, (20, 3)), rng.random(20))
    with _raises_naming(path, match="ring"):
        read_points(path)


def test_nonfinite_points_error_by_default_and_drop_on_request(tmp_path, scan):
    xyz, intensity, _ = scan
    xyz = xyz.copy()
    intensity = intensity.copy()
    xyz[5, 1] = np.nan
    xyz[17, 2] = np.inf
    intensity[30] = np.nan
    path = tmp_path / "nan.bin"
    write_kitti_bin(path, xyz, intensity)
    with _raises_naming(path, match="3 of 257"):
        read_points(path)
    cloud = read_points(path, drop_nonfinite=True)
    keep = np.setdiff1d(np.arange(257), [5, 17, 30])
    assert cloud.num_dropped_nonfinite == 3
    assert np.array_equal(cloud.points_xyz, xyz[keep]) and np.array_equal(cloud.intensity, intensity[keep])


def test_nonfinite_drop_keeps_labels_aligned(tmp_path, scan):
    xyz, intensity, _ = scan
    xyz = xyz.copy()
    xyz[0] = np.nan
    scan_path = tmp_path / "velodyne" / "000000.bin"
    write_kitti_bin(scan_path, xyz, intensity)
    labels = np.arange(257) % 100
    write_semantickitti_label(semantickitti_label_path(scan_path), labels)
    cloud = read_semantickitti(scan_path, drop_nonfinite=True)
    assert np.array_equal(cloud.labels, labels[1:]) and cloud.num_dropped_nonfinite == 1


def test_label_count_mismatch(tmp_path, scan):
    xyz, intensity, _ = scan
    scan_path = tmp_path / "velodyne" / "000000.bin"
    write_kitti_bin(scan_path, xyz, intensity)
    label_path = semantickitti_label_path(scan_path)
    write_semantickitti_label(label_path, np.zeros(256, np.int64))
    with _raises_naming(label_path, match="256 labels but the scan has 257"):
        read_semantickitti(scan_path)
    with _raises_naming(label_path):
        read_semantickitti_label(label_path, num_points=100)


def test_missing_label_file(tmp_path, scan):
    xyz, intensity, _ = scan
    scan_path = tmp_path / "velodyne" / "000000.bin"
    write_kitti_bin(scan_path, xyz, intensity)
    with _raises_naming(semantickitti_label_path(scan_path), MissingDataError):
        read_semantickitti(scan_path)


def test_truncated_label_file(tmp_path):
    path = tmp_path / "000000.label"
    path.write_bytes(b"\x00" * 10)
    with _raises_naming(path, match="not a multiple"):
        read_semantickitti_label(path)


@pytest.mark.parametrize("name", ["corrupt.pcd", "corrupt.ply"])
def test_corrupt_open3d_file(tmp_path, name):
    path = tmp_path / name
    path.write_bytes(b"this is not a point cloud\n\x00\x01")
    with _raises_naming(path):
        read_points(path)


def test_unknown_suffix(tmp_path):
    path = tmp_path / "scan.xyz"
    path.write_text("1 2 3\n")
    with _raises_naming(path, match="unknown point cloud format"):
        read_points(path)


def test_label_writer_rejects_out_of_range_ids(tmp_path):
    with pytest.raises(ValueError, match="16 bits"):
        write_semantickitti_label(tmp_path / "x.label", np.array([70000]))
