"""The range-image spec: serialisation, ring vs elevation, beam-count estimate (real-format files: tests/deploy/test_formats.py)."""

import json

import numpy as np
import pytest

from modalities.lidar.io import PointCloud
from modalities.lidar.range_spec import RangeImageSpec, estimate_beams, project_checked
from modalities.lidar.sensors import load_sensor


def _scan_on_beams(sensor, n=4000, seed=0):
    """Points exactly on the sensor's beams, with their ring index (beam 0 lowest)."""
    rng = np.random.default_rng(seed)
    ring = rng.integers(0, sensor.beams, n)
    el = np.radians(sensor.elevations_deg()[ring])
    az = rng.uniform(-np.pi, np.pi, n)
    r = rng.uniform(3, 40, n)
    xyz = np.stack([r * np.cos(el) * np.cos(az), r * np.cos(el) * np.sin(az), r * np.sin(el)], 1).astype(np.float32)
    return xyz, rng.uniform(0, 1, n).astype(np.float32), ring


def test_round_trip_through_json_and_shape():
    spec = RangeImageSpec(load_sensor("hdl32e"), ("range", "intensity", "mask"), width_multiple=16, height_multiple=4)
    back = RangeImageSpec.from_dict(json.loads(json.dumps(spec.to_dict())))
    assert back == spec and back.image_shape == (3, 32, 1088)
    assert back.means == (12.12, 0.21, 0.0)  # defaults filled in, so the record is explicit
    for bad, msg in (({"kind": "voxels"}, "kind 'voxels'"), ({"version": 9}, "spec version 9"),):
        with pytest.raises(ValueError, match=msg):
            RangeImageSpec.from_dict({**spec.to_dict(), **bad}, "student.json")
    d = spec.to_dict()
    del d["stds"]
    with pytest.raises(ValueError, match="student.json: missing field 'stds'"):
        RangeImageSpec.from_dict(d, "student.json")


def test_ring_and_elevation_agree_on_points_on_the_beams_and_the_layout_matches():
    sensor = load_sensor("vlp16")
    spec = RangeImageSpec(sensor)
    xyz, inten, ring = _scan_on_beams(sensor)
    a, b = spec(xyz, inten, ring), spec(xyz, inten)
    np.testing.assert_array_equal(a.rows, b.rows)
    np.testing.assert_array_equal(a.image, b.image)
    inp, report = project_checked(PointCloud(xyz, inten, ring), spec)
    assert report.matches and report.no_pixel_fraction == 0.0
    # A ring counted from the top (another file convention) puts points on the wrong beams: detected.
    _, flipped = project_checked(PointCloud(xyz, inten, sensor.beams - 1 - ring), spec)
    assert not flipped.matches and "ring column" in flipped.message


def test_estimate_beams_counts_elevation_clusters():
    sensor = load_sensor("vlp16")
    xyz, _, _ = _scan_on_beams(sensor)
    el = np.degrees(np.arcsin(xyz[:, 2] / np.linalg.norm(xyz, axis=1)))
    assert estimate_beams(el) == 16
    assert estimate_beams(np.zeros(0)) == 0
