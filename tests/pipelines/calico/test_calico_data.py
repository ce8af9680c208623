"""CALICO data helpers: the two PRC views, point sampling, the batch of paired points."""

import numpy as np
import pytest

from pipelines.calico.config import PrcConfig
from pipelines.calico.data import augment_view, in_grid, sample_points
from modalities.bev_labels import BevGridSpec


def _cloud(n=2000, seed=0):
    rng = np.random.default_rng(seed)
    xyz = np.column_stack([rng.uniform(-20, 20, n), rng.uniform(-20, 20, n), rng.uniform(-2, 1, n)]).astype(np.float32)
    region = np.where(rng.random(n) < 0.3, rng.integers(0, 5, n), -1)
    return xyz, rng.uniform(0, 1, n).astype(np.float32), region


def test_augment_view_is_a_global_similarity_about_z():
    xyz, _, _ = _cloud()
    assert np.allclose(augment_view(xyz, np.random.default_rng(0), 0.0, (1.0, 1.0), False), xyz)
    v = augment_view(xyz, np.random.default_rng(1), 90.0, (0.9, 1.1), True)
    ratio = np.linalg.norm(v[:, :2], axis=1) / np.linalg.norm(xyz[:, :2], axis=1)
    assert 0.9 <= ratio[0] <= 1.1 and np.allclose(ratio, ratio[0], rtol=1e-5)  # one scale for the whole scan
    assert np.allclose(v[:, 2], xyz[:, 2] * ratio[0], atol=1e-5)  # global scaling (z too), no rotation of z
    # Pairwise distances scale alike: a rigid motion (+ flip) times one scale, not a per-point jitter.
    d0 = np.linalg.norm(xyz[:50, None, :2] - xyz[None, :50, :2], axis=-1)
    d1 = np.linalg.norm(v[:50, None, :2] - v[None, :50, :2], axis=-1)
    assert np.allclose(d1, d0 * ratio[0], rtol=1e-4, atol=1e-4)
    rotated = [augment_view(xyz[:1], np.random.default_rng(s), 90.0, (1.0, 1.0), False)[0] for s in range(200)]
    angles = np.degrees(np.arctan2([r[1] for r in rotated], [r[0] for r in rotated]) - np.arctan2(xyz[0, 1], xyz[0, 0]))
    angles = (angles + 180) % 360 - 180
    assert angles.min() >= -90.01 and angles.max() <= 90.01 and angles.max() - angles.min() > 150


def test_sample_points_splits_inside_and_outside_without_repeats():
    _, _, region = _cloud()
    candidate = np.ones(len(region), bool)
    candidate[:100] = False
    idx = sample_points(region, candidate, 64, 32, np.random.default_rng(0))
    assert len(idx) == 96 and len(np.unique(idx)) == 96 and (idx >= 100).all()
    assert (region[idx] >= 0).sum() == 64 and (region[idx] < 0).sum() == 32
    few = sample_points(region, candidate & (region >= 0), 10_000, 5, np.random.default_rng(0))
    assert len(few) == int((candidate & (region >= 0)).sum())  # all of them, no repeats, no outside left
    assert len(sample_points(region, candidate, 8, 0, np.random.default_rng(0))) == 8


def test_in_grid_is_half_open():
    grid = BevGridSpec((-2.0, 2.0), (-1.0, 1.0), 0.5)
    xy = np.array([[-2.0, -1.0], [1.999, 0.999], [2.0, 0.0], [0.0, 1.0], [np.nan, 0.0]])
    assert in_grid(xy, grid).tolist() == [True, True, False, False, False]


def _clustered(seed: int):
    """Regions = 5 tight clusters (0.5 m) at least 6 m apart; 'outside' points scattered away from them."""
    rng = np.random.default_rng(seed)
    centres = np.array([[-10, -10], [-10, 8], [0, 0], [9, -9], [10, 10]], float) + rng.uniform(-1, 1, (5, 2))
    inside = np.concatenate([c + rng.uniform(-0.5, 0.5, (80, 2)) for c in centres])
    region_in = np.repeat(np.arange(5), 80)
    far = rng.uniform(-14, 14, (2000, 2))
    far = far[np.min(np.linalg.norm(far[:, None] - centres[None], axis=-1), axis=1) > 3][:300]
    xy = np.concatenate([inside, far])
    xyz = np.column_stack([xy, rng.uniform(-1.5, 0.5, len(xy))]).astype(np.float32)
    region = np.concatenate([region_in, np.full(len(far), -1)])
    perm = rng.permutation(len(xy))
    return xyz[perm], rng.uniform(0, 1, len(xy)).astype(np.float32)[perm], region[perm]


def test_prc_batch_pairs_the_same_points_in_both_views():
    from pipelines.calico.prc import pillar_spec, prc_batch

    cfg = PrcConfig(dataset="d", regions="r", grid={"x_range_m": [-16, 16], "y_range_m": [-16, 16]},
                    points_inside=100, points_outside=50)
    spec = pillar_spec(cfg)
    scans = [_clustered(s) for s in range(2)]
    feeds, points = prc_batch(scans, cfg, spec, np.random.default_rng(0))
    assert next(iter(feeds.values())).shape[0] == 4  # view 1 of both scans, then view 2
    for xy1, xy2, reg in points:
        assert (reg >= 0).sum() == 100 and (reg < 0).sum() == 50
        assert in_grid(xy1, spec.grid).all() and in_grid(xy2, spec.grid).all()
        # Row i of both views is the same physical point: the two point sets differ by one similarity.
        d1 = np.linalg.norm(xy1[:, None] - xy1[None], axis=-1)
        d2 = np.linalg.norm(xy2[:, None] - xy2[None], axis=-1)
        ratio = d2[d1 > 1] / d1[d1 > 1]
        assert np.allclose(ratio, ratio[0], rtol=1e-4)
        # The region ids travel with their points: same region = same 0.5 m cluster, others far apart.
        same = (reg[:, None] == reg[None]) & (reg[:, None] >= 0)
        other = (reg[:, None] != reg[None]) & (reg[:, None] >= 0) & (reg[None] >= 0)
        assert d1[same].max() < 1.6 and d1[other].min() > 3.0


def test_prc_batch_samples_only_points_that_stay_in_the_z_range_of_both_scaled_views():
    """A region just under the pillar z ceiling leaves it in both views when every view scales by 1.05: none of its
    points may be sampled (their cells would not hold them); the regions well inside the range are."""
    from pipelines.calico.prc import pillar_spec, prc_batch

    cfg = PrcConfig(dataset="d", regions="r", grid={"x_range_m": [-16, 16], "y_range_m": [-16, 16]},
                    points_inside=10_000, points_outside=0, augment={"scale": [1.05, 1.05]})
    spec = pillar_spec(cfg)
    xyz, intensity, region = _clustered(0)
    top = xyz[region == 0].copy()
    top[:, 2] = spec.z_range_m[1] - 0.05  # inside the raw range, above it once scaled
    scan = (np.concatenate([xyz, top]), np.concatenate([intensity, intensity[region == 0]]),
            np.concatenate([region, np.full(len(top), 99)]))
    _, points = prc_batch([scan], cfg, spec, np.random.default_rng(0))
    sampled = points[0][2]
    assert 99 not in sampled and len(np.unique(sampled)) == len(np.unique(region[region >= 0]))


def test_points_in_view_follow_the_calibration():
    """A forward camera sees cells ahead of it, not behind; a calibration pointing it at the sky sees none
    (the RAD stage then skips the scan, counted)."""
    from modalities.bev_labels import BevGridSpec
    from modalities.nuscenes_tables import CameraView
    from pipelines.calico.rad import points_in_view
    from tests.modalities.camera.test_bev_lift import FRONT, R_CAM_FROM_LIDAR_FRONT, camera_T

    grid = BevGridSpec(x_range_m=(-8.0, 8.0), y_range_m=(-16.0, 16.0), cell_size_m=0.5)

    def cam(T):
        return CameraView("CAM_FRONT", None, FRONT[0], FRONT[2], FRONT[3], T, 0, "")

    xy = np.array([[0.0, 10.0], [1.0, 14.0], [0.0, -10.0], [0.0, 40.0]])  # ahead, ahead, behind, outside the grid
    assert points_in_view(xy, [cam(FRONT[1])], grid, (176, 320), (-1.5, 0.5)).tolist() == [True, True, False, False]
    up = np.array([[1.0, 0, 0], [0, 1, 0], [0, 0, 1]]) @ np.array([[1.0, 0, 0], [0, 0, 1], [0, -1, 0]])
    sky = camera_T(up @ R_CAM_FROM_LIDAR_FRONT, np.array([0.0, 0.0, 1.5]))  # optical axis along lidar +z
    assert not points_in_view(xy, [cam(sky)], grid, (176, 320), (-1.5, 0.5)).any()
