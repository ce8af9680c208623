"""Range-image projection: a loop oracle, exact round trips on beam rays, ring handling."""

from __future__ import annotations

import math

import numpy as np
import pytest

from modalities.lidar.range_view import (
    azimuth_column,
    gather_to_range_image,
    project_point_cloud,
    project_to_range_image,
    unproject_range_image,
)
from modalities.lidar.io import PointCloud
from modalities.lidar.sensors import LidarSensor, load_sensor

SMALL = LidarSensor(
    name="small", beams=8, vertical_fov_deg=(-20.0, 5.0), columns=64, min_range_m=0.5, max_range_m=60.0
)


def _loop_project(points, sensor, empty=-1.0):
    """Oracle: per point, nearest beam by elevation and azimuth bin; per pixel, min range then min index."""
    el = sensor.elevations_deg()
    tol = 0.5 * max(np.diff(el))
    H, W = sensor.beams, sensor.columns
    rng_img = np.full((H, W), empty, np.float32)
    idx_img = np.full((H, W), -1, np.int64)
    best = {}
    for i, (x, y, z) in enumerate(points):
        r = math.sqrt(x * x + y * y + z * z)
        if not (sensor.min_range_m <= r <= sensor.max_range_m):
            continue
        e = math.degrees(math.asin(z / r))
        beam = min(range(H), key=lambda b: (abs(e - el[b]), b))
        if abs(e - el[beam]) > tol:
            continue
        row = H - 1 - beam
        col = int(math.floor((math.atan2(y, x) + math.pi) / (2 * math.pi) * W)) % W
        if (row, col) not in best or (r, i) < best[(row, col)]:
            best[(row, col)] = (r, i)
    for (row, col), (r, i) in best.items():
        rng_img[row, col] = r
        idx_img[row, col] = i
    return rng_img, idx_img


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_projection_matches_loop(seed):
    rng = np.random.default_rng(seed)
    # Many collisions per pixel (small image) and some points outside range/FOV.
    points = rng.normal(0, 1, (1500, 3)) * np.array([20, 20, 4])
    points[:10] *= 0.001  # closer than min range
    before = points.copy()
    proj = project_to_range_image(points, SMALL)
    assert np.array_equal(points, before)
    rng_img, idx_img = _loop_project(points, SMALL)
    assert np.array_equal(proj.index_image, idx_img)
    assert np.allclose(proj.range_image, rng_img, atol=1e-5)
    assert not proj.valid[:10].any()


def test_projection_fields_consistent():
    rng = np.random.default_rng(3)
    points = rng.normal(0, 15, (4000, 3)) * np.array([1, 1, 0.15])
    proj = project_to_range_image(points, load_sensor("hdl32e"))
    v = proj.valid
    assert proj.range_image.dtype == np.float32 and proj.index_image.dtype == np.int64
    assert np.all(proj.row[~v] == -1) and np.all(proj.col[~v] == -1)
    # Each winner sits in its own pixel and is the closest point that landed there.
    rows, cols = np.nonzero(proj.index_image >= 0)
    winners = proj.index_image[rows, cols]
    assert np.array_equal(proj.row[winners], rows) and np.array_equal(proj.col[winners], cols)
    ranges = np.linalg.norm(points, axis=1)
    for i in np.flatnonzero(v)[:500]:
        assert ranges[i] >= proj.range_image[proj.row[i], proj.col[i]] - 1e-4


def test_ties_go_to_lower_index():
    p = np.array([[10.0, 0.0, 0.0], [10.0, 0.0, 0.0], [10.0, 0.0, 0.0]])
    sensor = LidarSensor("one", 1, (-1.0, 1.0), 16, 0.1, 100.0)
    proj = project_to_range_image(p[::-1].copy(), sensor)
    assert (proj.index_image >= 0).sum() == 1 and proj.index_image.max() == 0


@pytest.mark.parametrize("preset", ["vlp16", "hdl32e", "hdl64e", "os1_64"])
def test_round_trip_on_beam_rays(preset):
    sensor = load_sensor(preset)
    rng = np.random.default_rng(4)
    n = 3000
    pixel = rng.choice(sensor.beams * sensor.columns, n, replace=False)  # one point per pixel at most
    beam, col = pixel // sensor.columns, pixel % sensor.columns
    range_m = rng.uniform(sensor.min_range_m + 0.5, sensor.max_range_m - 0.5, n)
    el = np.radians(sensor.elevations_deg()[beam])
    az = sensor.azimuths_rad()[col]
    points = np.stack([range_m * np.cos(el) * np.cos(az), range_m * np.cos(el) * np.sin(az), range_m * np.sin(el)], 1)

    proj = project_to_range_image(points, sensor)
    assert proj.valid.all()
    assert np.array_equal(proj.row, sensor.beams - 1 - beam) and np.array_equal(proj.col, col)
    back = unproject_range_image(proj.range_image, sensor)
    # unproject returns row-major pixel order: match through the index image.
    order = proj.index_image[proj.index_image >= 0]
    assert back.shape == (n, 3)
    assert np.max(np.abs(back - points[order])) < 1e-3


def test_ring_column_overrides_elevation():
    sensor = load_sensor("hdl32e")
    points = np.array([[10.0, 0.0, 0.0], [10.0, 1.0, 0.0]])
    proj = project_to_range_image(points, sensor, ring=np.array([0, 31]))
    assert proj.row.tolist() == [31, 0]
    flipped = project_to_range_image(points, sensor, ring=np.array([0, 31]), ring_zero_is_lowest=False)
    assert flipped.row.tolist() == [0, 31]
    cloud = PointCloud(points.astype(np.float32), np.zeros(2, np.float32), ring=np.array([0, 31]))
    assert project_point_cloud(cloud, sensor).row.tolist() == [31, 0]
    with pytest.raises(ValueError, match=r"\[0, 32\)"):
        project_to_range_image(points, sensor, ring=np.array([0, 32]))


def test_outside_vertical_fov_is_invalid():
    sensor = load_sensor("vlp16")  # +-15 deg
    el = np.radians([14.9, 16.5, 45.0, -80.0])
    points = np.stack([10 * np.cos(el), np.zeros(4), 10 * np.sin(el)], 1)
    assert project_to_range_image(points, sensor).valid.tolist() == [True, False, False, False]


def test_nonfinite_points_are_invalid_not_fatal():
    points = np.array([[np.nan, 0, 0], [10.0, 0, 0]])
    proj = project_to_range_image(points, load_sensor("vlp16"))
    assert proj.valid.tolist() == [False, True]


def test_azimuth_columns_match_sensor_centres():
    sensor = load_sensor("os1_64")
    assert np.array_equal(azimuth_column(sensor.azimuths_rad(), sensor.columns), np.arange(sensor.columns))
    assert azimuth_column(np.array([np.pi, -np.pi]), 8).tolist() == [0, 0]


def test_gather_channels_and_empty_value():
    sensor = load_sensor("vlp16")
    points = np.array([[10.0, 0, 0], [0, 5.0, 0]])
    proj = project_to_range_image(points, sensor, empty_value=0.0)
    assert (proj.range_image == 0).sum() == sensor.beams * sensor.columns - 2
    img = gather_to_range_image(np.column_stack([points, [0.3, 0.7]]), proj)
    assert img.shape == (sensor.beams, sensor.columns, 4)
    assert np.allclose(img[proj.row[1], proj.col[1]], [0, 5, 0, 0.7])
    assert np.allclose(unproject_range_image(proj.range_image, sensor), points[[0, 1]][np.argsort(proj.col)], atol=0.2)


def test_unproject_shape_check():
    with pytest.raises(ValueError, match="vlp16"):
        unproject_range_image(np.zeros((4, 4)), load_sensor("vlp16"))
