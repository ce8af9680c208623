"""Pillarization: the vectorised function against a plain loop, truncation counts, decorations."""

from __future__ import annotations

import math

import numpy as np
import pytest

from modalities.lidar.pillars import DECORATION_NAMES, pillarize, scatter_to_bev

X_RANGE, Y_RANGE, SIZE = (-4.0, 4.0), (-2.0, 6.0), (0.5, 0.5)


def _loop_pillarize(points, feats, max_points, max_pillars, z_range=None):
    """Oracle: walk points in order, open pillars in order of first point, fill slots in order."""
    nx, ny = 16, 16
    rows: dict[tuple[int, int], list[int]] = {}
    out_of_range = 0
    for i, (x, y, z) in enumerate(points):
        ix, iy = math.floor((x - X_RANGE[0]) / SIZE[0]), math.floor((y - Y_RANGE[0]) / SIZE[1])
        if not (0 <= ix < nx and 0 <= iy < ny) or (z_range and not z_range[0] <= z < z_range[1]):
            out_of_range += 1
            continue
        rows.setdefault((ix, iy), []).append(i)
    F = feats.shape[1]
    out = np.zeros((max_pillars, max_points, F), np.float32)
    coords = np.full((max_pillars, 2), -1, np.int32)
    counts = np.zeros(max_pillars, np.int32)
    stored = 0
    for p, (cell, members) in enumerate(rows.items()):  # dicts keep insertion order
        if p >= max_pillars:
            break
        coords[p] = cell
        for s, i in enumerate(members[:max_points]):
            out[p, s] = feats[i]
        counts[p] = min(len(members), max_points)
        stored += counts[p]
    in_range = len(points) - out_of_range
    return out, coords, counts, out_of_range, in_range - stored, max(0, len(rows) - max_pillars)


@pytest.mark.parametrize("seed,max_points,max_pillars", [(0, 4, 40), (1, 32, 500), (2, 2, 10)])
def test_pillarize_matches_loop(seed, max_points, max_pillars):
    rng = np.random.default_rng(seed)
    points = rng.normal(0, 1, (1200, 3)) * np.array([3, 3, 1]) + np.array([0, 2, 0])
    feats = np.column_stack([points, rng.random(1200)]).astype(np.float32)
    before = points.copy()
    result = pillarize(points, feats, X_RANGE, Y_RANGE, SIZE, max_points, max_pillars, z_range=(-1.5, 1.5))
    assert np.array_equal(points, before)
    out, coords, counts, oor, dropped, pdropped = _loop_pillarize(points, feats, max_points, max_pillars, (-1.5, 1.5))
    assert result.features.shape == (max_pillars, max_points, 4) and result.features.dtype == np.float32
    assert np.array_equal(result.features, out)
    assert np.array_equal(result.coords, coords)
    assert np.array_equal(result.num_points, counts)
    assert (result.points_out_of_range, result.points_dropped, result.pillars_dropped) == (oor, dropped, pdropped)
    assert result.num_pillars == int((counts > 0).sum()) and result.grid_size == (16, 16)
    # Bookkeeping adds up, and point_to_pillar agrees with the stored counts.
    stored = (result.point_to_pillar >= 0).sum()
    assert stored + result.points_dropped + result.points_out_of_range == len(points)
    assert np.array_equal(np.bincount(result.point_to_pillar[result.point_to_pillar >= 0], minlength=max_pillars), counts)


def test_truncation_is_deterministic_first_points_win():
    # 5 points in one pillar with room for 3: the first 3 in input order are kept.
    points = np.array([[0.1, 0.1, 0.0]] * 5) + np.arange(5)[:, None] * 0.01
    feats = np.arange(5, dtype=np.float32)[:, None]
    r = pillarize(points, feats, X_RANGE, Y_RANGE, SIZE, max_points_per_pillar=3, max_pillars=2)
    assert r.features[0, :, 0].tolist() == [0, 1, 2]
    assert r.points_dropped == 2 and r.pillars_dropped == 0 and r.num_pillars == 1
    assert r.coords[1].tolist() == [-1, -1] and r.num_points.tolist() == [3, 0]


def test_decorations_follow_the_paper():
    points = np.array([[0.1, 0.1, 1.0], [0.3, 0.2, 2.0], [3.9, 5.9, 0.0]])
    r = pillarize(points, points, X_RANGE, Y_RANGE, SIZE, 4, 4, decorate=True)
    assert r.features.shape[-1] == 3 + len(DECORATION_NAMES)
    mean = points[:2].mean(axis=0)
    centre = np.array([0.25, 0.25])  # cell (8, 4): x in [0, 0.5), y in [0, 0.5)
    assert r.coords[0].tolist() == [8, 4]
    assert np.allclose(r.features[0, :2, 3:6], points[:2] - mean)
    assert np.allclose(r.features[0, :2, 6:8], points[:2, :2] - centre)
    assert np.allclose(r.features[1, 0, 6:8], points[2, :2] - [3.75, 5.75])
    assert not r.features[0, 2:].any()  # padding stays zero


def test_scatter_to_bev():
    points = np.array([[0.1, 0.1, 0.0], [-3.9, 5.9, 0.0]])
    r = pillarize(points, points, X_RANGE, Y_RANGE, SIZE, 2, 5)
    vec = np.zeros((5, 2), np.float32)
    vec[:2] = [[1, 2], [3, 4]]
    bev = scatter_to_bev(vec, r)
    assert bev.shape == (2, 16, 16)
    assert bev[:, 4, 8].tolist() == [1, 2] and bev[:, 15, 0].tolist() == [3, 4]
    assert bev.sum() == 10


def test_empty_and_bad_input():
    r = pillarize(np.zeros((0, 3)), np.zeros((0, 2)), X_RANGE, Y_RANGE, SIZE, 4, 3)
    assert r.num_pillars == 0 and r.features.shape == (3, 4, 2) and not r.features.any()
    with pytest.raises(ValueError, match="features"):
        pillarize(np.zeros((3, 3)), np.zeros((2, 2)), X_RANGE, Y_RANGE, SIZE, 4, 3)
    with pytest.raises(ValueError, match="min < max"):
        pillarize(np.zeros((3, 3)), np.zeros((3, 2)), (1.0, 0.0), Y_RANGE, SIZE, 4, 3)
