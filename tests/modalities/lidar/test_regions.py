"""CALICO's label-free regions on hand-built point sets whose right answer is known."""

import numpy as np
import pytest

from modalities.errors import DataError
from modalities.lidar.regions import (
    FILTERS,
    RegionParams,
    compute_regions,
    height_above_ground,
    load_regions,
    oriented_box_xy,
    region_label_stats,
    region_purity,
    save_regions,
)

SENSOR_HEIGHT = 1.84  # the lidar frame's origin is the sensor, so the road is at z = -1.84


def ground(x_range=(-30, 30), y_range=(-30, 30), step=0.4, z=-SENSOR_HEIGHT, slope_x=0.0, seed=0):
    """A grid of road points with 1 cm noise; ``slope_x`` bends the road upward for x > 0."""
    xs, ys = np.meshgrid(np.arange(*x_range, step), np.arange(*y_range, step), indexing="ij")
    xy = np.column_stack([xs.ravel(), ys.ravel()])
    zs = z + slope_x * np.maximum(xy[:, 0], 0) + np.random.default_rng(seed).normal(0, 0.01, len(xy))
    return np.column_stack([xy, zs])


def box_surface(center_xy, lwh, yaw=0.0, base_z=-SENSOR_HEIGHT, step=0.1, clearance=0.3):
    """Points on the four sides and the top of an upright box standing on ``base_z``.

    The sides start ``clearance`` above the ground (a car's body above its wheels), so that
    every point of the box is clearly above the 0.25 m ground threshold.
    """
    l, w, h = lwh
    faces = []
    for u_len, v_off, across in ((l, w / 2, False), (l, -w / 2, False), (w, l / 2, True), (w, -l / 2, True)):
        u, z = np.meshgrid(np.linspace(-u_len / 2, u_len / 2, max(2, int(u_len / step) + 1)),
                           np.linspace(clearance, h, max(2, int((h - clearance) / step) + 1)), indexing="ij")
        u, z = u.ravel(), z.ravel()
        v = np.full_like(u, v_off)
        faces.append(np.column_stack([v, u, z]) if across else np.column_stack([u, v, z]))
    a, b = np.meshgrid(np.linspace(-l / 2, l / 2, max(2, int(l / step) + 1)),
                       np.linspace(-w / 2, w / 2, max(2, int(w / step) + 1)), indexing="ij")
    faces.append(np.column_stack([a.ravel(), b.ravel(), np.full(a.size, h)]))
    pts = np.unique(np.concatenate(faces), axis=0)
    c, s = np.cos(yaw), np.sin(yaw)
    xy = pts[:, :2] @ np.array([[c, s], [-s, c]]) + center_xy
    return np.column_stack([xy, pts[:, 2] + base_z])


def remove_under(points, *objects, margin=0.05):
    """Drop the ground points under the objects' footprints (the lidar cannot see them)."""
    keep = np.ones(len(points), bool)
    for obj in objects:
        lo, hi = obj[:, :2].min(0) - margin, obj[:, :2].max(0) + margin
        keep &= ~((points[:, :2] >= lo) & (points[:, :2] <= hi)).all(1)
    return points[keep]


def scene(objects, slope_x=0.0):
    floor = remove_under(ground(slope_x=slope_x), *objects)
    return np.concatenate([floor, *objects]), [len(floor)] + [len(o) for o in objects]


def segment_of(counts):
    """Object index per point for a scene built by :func:`scene` (-1 ground)."""
    return np.repeat(np.arange(len(counts)) - 1, counts)


# ------------------------------------------------------------------------- exact regions

CAR = dict(center_xy=(10.0, 5.0), lwh=(4.5, 1.8, 1.5), yaw=0.3)
CONE = dict(center_xy=(-8.0, 6.0), lwh=(0.6, 0.6, 0.7))
PERSON = dict(center_xy=(4.0, -12.0), lwh=(0.8, 0.6, 1.7), yaw=-1.0)


def test_boxes_on_a_flat_road_are_exactly_the_regions():
    objects = [box_surface(**CAR), box_surface(**CONE), box_surface(**PERSON)]
    curb = ground(x_range=(-30, 30), y_range=(14, 17), z=-SENSOR_HEIGHT + 0.15)  # a sidewalk on a 15 cm curb
    floor = remove_under(ground(), *objects)
    floor = floor[~((floor[:, 1] >= 14) & (floor[:, 1] < 17))]
    pts = np.concatenate([floor, curb, *objects])
    truth = np.repeat([-1, -1, 0, 1, 2], [len(floor), len(curb)] + [len(o) for o in objects])

    res = compute_regions(pts, RegionParams())

    assert res.num_regions == 3 and res.stats["regions"] == 3
    assert res.ground[truth < 0].all() and not res.ground[truth >= 0].any()  # road and sidewalk are ground
    assert (res.region_id[truth < 0] == -1).all()
    for k in range(3):  # each region is exactly one object's points
        ids = np.unique(res.region_id[truth == k])
        assert len(ids) == 1 and ids[0] >= 0 and (truth[res.region_id == ids[0]] == k).all()
    car = res.boxes[res.region_id[truth == 0][0]]
    np.testing.assert_allclose(car[[0, 1]], CAR["center_xy"], atol=0.02)
    np.testing.assert_allclose(car[[3, 4]], CAR["lwh"][:2], atol=0.02)
    np.testing.assert_allclose(car[5], CAR["lwh"][2] - 0.3, atol=0.02)  # height: the z extent of the points
    np.testing.assert_allclose(car[2], -SENSOR_HEIGHT + (CAR["lwh"][2] + 0.3) / 2, atol=0.02)
    np.testing.assert_allclose(car[6], CAR["yaw"], atol=0.01)
    assert res.stats["points_in_regions"] == int((truth >= 0).sum())
    assert region_purity(res.region_id, truth + 1) == 1.0


def test_piecewise_ground_follows_a_road_that_starts_to_climb():
    """A 5% grade from x = 0: one plane would call the far uphill road an object, the tiles do not."""
    slope = 0.05
    car = box_surface((20.0, 3.0), (4.5, 1.8, 1.5), base_z=-SENSOR_HEIGHT + slope * 20.0, clearance=0.5)
    pts, counts = scene([car], slope_x=slope)
    truth = segment_of(counts)
    res = compute_regions(pts, RegionParams())
    assert res.num_regions == 1
    assert (res.region_id[truth == 0] == 0).all() and (res.region_id[truth < 0] == -1).all()
    single = compute_regions(pts, RegionParams(ground_tile_m=0))  # the global plane alone
    assert not single.ground[truth < 0].all()


def test_height_above_ground_is_zero_on_the_road():
    h = height_above_ground(ground())
    assert np.abs(h).max() < 0.06


# ------------------------------------------------------------------------- filters


@pytest.mark.parametrize(
    "name, obj, params, reason",
    [
        ("ego returns", box_surface((0.8, 0.0), (1.0, 1.0, 0.5)), RegionParams(), "ego"),
        ("a low slab", box_surface((8.0, 10.0), (2.0, 2.0, 0.5)), RegionParams(min_top_m=0.6), "too_low"),
        ("a building", box_surface((15.0, -15.0), (6.0, 6.0, 10.0)), RegionParams(), "too_high"),
        ("a tree crown", box_surface((-6.0, -14.0), (2.0, 2.0, 3.0), clearance=1.5), RegionParams(), "too_high"),
        ("a thin wall", box_surface((-10.0, -10.0), (10.0, 0.3, 2.0)), RegionParams(), "thin"),
        ("a pole", box_surface((6.0, -6.0), (0.2, 0.2, 3.0), step=0.05), RegionParams(), "small"),
        ("a too-large shed", box_surface((-15.0, 12.0), (8.0, 4.0, 2.5)), RegionParams(), "large"),
        ("a too-large long wall", box_surface((0.0, 20.0), (25.0, 1.0, 3.0)), RegionParams(min_aspect=0.0), "large"),
    ],
)
def test_each_filter_drops_its_cluster_and_keeps_the_car(name, obj, params, reason):
    car = box_surface(**CAR)
    pts, counts = scene([car, obj])
    truth = segment_of(counts)
    res = compute_regions(pts, params)
    assert res.num_regions == 1, name
    assert (res.region_id[truth == 0] == 0).all() and (res.region_id[truth == 1] == -1).all(), name
    assert res.stats[f"dropped_{reason}"] == 1, (name, res.stats)
    assert sum(res.stats[f"dropped_{f}"] for f in FILTERS) == 1, (name, res.stats)
    assert res.stats["clusters"] == 2


def test_a_scan_of_only_ground_has_no_region():
    res = compute_regions(ground(), RegionParams())
    assert res.num_regions == 0 and res.boxes.shape == (0, 7) and (res.region_id == -1).all()
    empty = compute_regions(np.zeros((0, 3)), RegionParams())
    assert empty.num_regions == 0 and empty.region_id.shape == (0,)


def test_bad_input_and_bad_params_name_the_problem():
    with pytest.raises(ValueError, match="NaN"):
        compute_regions(np.array([[0.0, 0.0, np.nan]]))
    with pytest.raises(ValueError, match=r"\(N, 3\)"):
        compute_regions(np.zeros((4, 2)))
    with pytest.raises(ValueError, match="min_area_m2"):
        RegionParams(min_area_m2=30.0)
    with pytest.raises(ValueError, match="min_top_m"):
        RegionParams(min_top_m=5.0)
    assert RegionParams().to_dict()["dbscan_eps_m"] == 0.75


# ------------------------------------------------------------------------- boxes, purity, files


def test_oriented_box_is_the_minimum_area_rectangle():
    rng = np.random.default_rng(0)
    uv = rng.uniform([-2.0, -0.5], [2.0, 0.5], size=(500, 2))
    uv = np.vstack([uv, [[-2, -0.5], [2, -0.5], [2, 0.5], [-2, 0.5]]])  # the corners, so the extent is exact
    yaw = np.radians(120.0)  # the same rectangle as yaw -60 deg
    c, s = np.cos(yaw), np.sin(yaw)
    xy = uv @ np.array([[c, s], [-s, c]]) + [3.0, -1.0]
    cx, cy, length, width, got_yaw = oriented_box_xy(xy)
    np.testing.assert_allclose([cx, cy, length, width, got_yaw], [3.0, -1.0, 4.0, 1.0, np.radians(-60.0)], atol=1e-6)
    # Degenerate sets do not raise: collinear points, one point.
    assert oriented_box_xy(np.array([[0.0, 0.0], [1.0, 1.0], [2.0, 2.0]]))[3] == pytest.approx(0.0, abs=1e-9)
    assert oriented_box_xy(np.array([[1.0, 2.0]]))[2:4] == (0.0, 0.0)


def test_region_purity_on_a_hand_made_example():
    region_id = np.array([0, 0, 0, 1, 1, -1, -1])
    labels = np.array([3, 3, 5, 7, 7, 9, 9])
    assert region_purity(region_id, labels) == pytest.approx(4 / 5)  # region 0: 2 of 3, region 1: 2 of 2
    majority, major, labelled = region_label_stats(region_id, labels)
    assert majority.tolist() == [3, 7] and major.tolist() == [2, 2] and labelled.tolist() == [3, 2]
    labels_ign = np.array([3, 3, 255, 7, 7, 9, 9])
    assert region_purity(region_id, labels_ign, ignore=255) == 1.0
    assert np.isnan(region_purity(np.full(3, -1), np.zeros(3, int)))
    with pytest.raises(ValueError, match="same shape"):
        region_purity(region_id, labels[:3])


def test_save_and_load_round_trip(tmp_path):
    pts, _ = scene([box_surface(**CAR)])
    res = compute_regions(pts)
    save_regions(tmp_path / "r.npz", res)
    back = load_regions(tmp_path / "r.npz", num_points=len(pts))
    np.testing.assert_array_equal(back.region_id, res.region_id)
    np.testing.assert_array_equal(back.ground, res.ground)
    np.testing.assert_array_equal(back.boxes, res.boxes)
    assert back.stats == res.stats
    with pytest.raises(DataError, match="another scan"):
        load_regions(tmp_path / "r.npz", num_points=len(pts) + 1)
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    with pytest.raises(DataError, match="bad.npz"):
        load_regions(tmp_path / "bad.npz")
