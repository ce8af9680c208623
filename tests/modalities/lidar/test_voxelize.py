"""Voxelization: vectorised functions against plain-Python loops, and the SLidR conventions."""

from __future__ import annotations

import math

import numpy as np
import pytest

from modalities.lidar.voxelize import (
    from_cylindrical,
    nonnegative_shift,
    shift_to_nonnegative,
    to_cylindrical,
    unique_coords,
    voxelize_cartesian,
    voxelize_cylindrical,
)


def _loop_voxelize(keys):
    """Oracle: walk the points in order; a new key opens a new voxel, its first point is kept."""
    voxel_of_key: dict[tuple, int] = {}
    coords, first, inverse = [], [], []
    for i, key in enumerate(keys):
        if key not in voxel_of_key:
            voxel_of_key[key] = len(coords)
            coords.append(key)
            first.append(i)
        inverse.append(voxel_of_key[key])
    return np.array(coords).reshape(-1, 3), np.array(inverse), np.array(first)


def _assert_same(result, oracle):
    coords, inverse, first = result
    o_coords, o_inverse, o_first = oracle
    assert coords.dtype == np.int32 and inverse.dtype == np.int64
    assert np.array_equal(coords, o_coords)
    assert np.array_equal(inverse, o_inverse)
    assert np.array_equal(first, o_first)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_cartesian_matches_loop(seed):
    rng = np.random.default_rng(seed)
    points = rng.normal(0, 3, (2000, 4))  # 4th column (intensity) is ignored
    size = (0.5, 0.25, 1.0)
    keys = [tuple(math.floor(p[d] / size[d]) for d in range(3)) for p in points]
    _assert_same(voxelize_cartesian(points, size), _loop_voxelize(keys))


def test_cartesian_is_floored_not_truncated():
    coords, _, _ = voxelize_cartesian(np.array([[-0.05, 0.05, -1e-6]]), 0.1)
    assert coords.tolist() == [[-1, 0, -1]]


def test_cartesian_origin_and_inputs_untouched():
    points = np.array([[1.05, 2.0, 3.0], [1.0, 2.0, 3.0]])
    before = points.copy()
    coords, inverse, first = voxelize_cartesian(points, (0.1, 0.1, 0.1), origin_m=(1.0, 2.0, 3.0))
    assert np.array_equal(points, before)
    assert coords.tolist() == [[0, 0, 0]] and inverse.tolist() == [0, 0] and first.tolist() == [0]


@pytest.mark.parametrize("seed", [0, 1])
def test_cylindrical_matches_loop(seed):
    rng = np.random.default_rng(seed)
    points = rng.normal(0, 8, (3000, 3))
    keys = []
    for x, y, z in points:
        rho = math.sqrt(x * x + y * y)
        phi_deg = math.degrees(math.atan2(y, x))
        keys.append((math.floor(rho / 0.1), math.floor(phi_deg / 1.0), math.floor(z / 0.1)))
    _assert_same(voxelize_cylindrical(points), _loop_voxelize(keys))


def test_cylindrical_bins_are_one_degree():
    # Two points 0.6 deg apart in the same 1-degree bin, a third in the next bin.
    az = np.radians([10.2, 10.8, 11.3])
    points = np.stack([20 * np.cos(az), 20 * np.sin(az), np.zeros(3)], axis=1)
    coords, inverse, _ = voxelize_cylindrical(points)
    assert inverse.tolist() == [0, 0, 1]
    assert coords[:, 1].tolist() == [10, 11]


def test_cylindrical_round_trip():
    rng = np.random.default_rng(3)
    points = rng.normal(0, 10, (500, 3))
    assert np.allclose(from_cylindrical(*to_cylindrical(points)), points)
    rho, phi, _ = to_cylindrical(points)
    assert np.all(rho >= 0) and np.all(np.abs(phi) <= np.pi)


def test_first_point_feature_is_kept():
    # SLidR: the voxel feature is the intensity of the first point in it.
    points = np.array([[0.01, 0.0, 0.0], [0.02, 0.0, 0.0], [5.0, 0.0, 0.0], [0.03, 0.0, 0.0]])
    intensity = np.array([0.1, 0.2, 0.3, 0.4])
    coords, inverse, first = voxelize_cartesian(points, 0.1)
    assert intensity[first].tolist() == [0.1, 0.3]
    assert inverse.tolist() == [0, 0, 1, 0]


def test_unique_coords_invariants_wide_range():
    rng = np.random.default_rng(4)
    # Spans big enough to force the row-wise fallback path.
    coords = rng.integers(-(2**40), 2**40, (300, 3))
    coords = np.concatenate([coords, coords[::3]])
    unique, inverse, first = unique_coords(coords)
    assert unique.dtype == np.int64 and np.array_equal(unique[inverse], coords)
    assert np.array_equal(coords[first], unique)
    assert unique.shape[0] == 300 and np.all(np.diff(first) > 0)
    assert np.array_equal(inverse[300:], np.arange(0, 300, 3))


def test_empty_input():
    coords, inverse, first = voxelize_cylindrical(np.zeros((0, 3)))
    assert coords.shape == (0, 3) and inverse.shape == (0,) and first.shape == (0,)


def test_int32_overflow_rejected():
    with pytest.raises(ValueError, match="int32"):
        voxelize_cartesian(np.array([[1e9, 0, 0]]), 1e-3)


def test_nonfinite_and_bad_sizes_rejected():
    with pytest.raises(ValueError, match="NaN"):
        voxelize_cartesian(np.array([[np.nan, 0, 0]]), 0.1)
    with pytest.raises(ValueError, match="positive"):
        voxelize_cartesian(np.zeros((1, 3)), (0.1, 0.0, 0.1))
    with pytest.raises(ValueError, match="expected"):
        voxelize_cartesian(np.zeros((4,)), 0.1)


def test_shift_to_nonnegative_by_multiple_of_16():
    coords = np.array([[-1, 5, -17], [3, 40, 0], [-16, 6, -33]], dtype=np.int32)
    before = coords.copy()
    shift = nonnegative_shift(coords)
    shifted = shift_to_nonnegative(coords)
    assert np.array_equal(coords, before)
    assert shift.tolist() == [16, 0, 48]
    assert shifted.dtype == np.int32 and shifted.min() >= 0
    assert np.array_equal(shifted, coords + shift)
    # Parent cells at every one of 4 stride-2 levels are preserved by the shift.
    for level in range(1, 5):
        parent = coords.astype(np.int64) // 2**level
        assert np.array_equal(shifted // 2**level, parent + shift // 2**level)


def test_shift_oracle_random():
    rng = np.random.default_rng(5)
    for _ in range(20):
        coords = rng.integers(-100, 100, (50, 3))
        shift = nonnegative_shift(coords, 16)
        for d in range(3):
            lo = coords[:, d].min()
            expected = 0 if lo >= 0 else min(k for k in range(0, 400, 16) if lo + k >= 0)
            assert shift[d] == expected
