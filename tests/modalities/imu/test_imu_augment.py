"""IMU augmentations: the rotation is one rigid rotation of both sensors, the time map is monotone and shared."""

from __future__ import annotations

import numpy as np
import pytest

from modalities.imu.augment import (ImuAugmentParams, apply_rotation, augment, jitter, random_rotation,
                                    random_time_map, rotate, scale, time_warp)


def _window(length=500, seed=0):
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((6, length)).astype(np.float32)
    w[2] += 9.81
    return w


def _kabsch(a, b):
    """The rotation R minimising |R a - b| over (3, L) point sets (SVD, proper rotation)."""
    u, _, vt = np.linalg.svd(b @ a.T)
    d = np.sign(np.linalg.det(u @ vt))
    return u @ np.diag([1, 1, d]) @ vt


def test_rotation_preserves_norms_and_is_the_same_rotation_for_acc_and_gyro():
    w = _window()
    out = rotate(w, np.random.default_rng(5), max_deg=180.0)
    for s in (slice(0, 3), slice(3, 6)):
        np.testing.assert_allclose(np.linalg.norm(out[s], axis=0), np.linalg.norm(w[s], axis=0), rtol=1e-5)
    r_acc = _kabsch(w[:3].astype(np.float64), out[:3].astype(np.float64))
    r_gyro = _kabsch(w[3:].astype(np.float64), out[3:].astype(np.float64))
    np.testing.assert_allclose(r_acc, r_gyro, atol=1e-5)
    np.testing.assert_allclose(r_acc, random_rotation(np.random.default_rng(5), 180.0), atol=1e-5)
    assert not np.allclose(r_acc, np.eye(3), atol=1e-2)
    # the cross-product relation between the sensors survives only with one shared rotation
    np.testing.assert_allclose(np.cross(out[:3].T, out[3:].T), (r_acc @ np.cross(w[:3].T, w[3:].T).T).T,
                               rtol=1e-4, atol=1e-3)


def test_random_rotation_is_proper_and_within_max_deg():
    rng = np.random.default_rng(0)
    for max_deg in (5.0, 30.0, 180.0):
        for _ in range(20):
            r = random_rotation(rng, max_deg)
            np.testing.assert_allclose(r @ r.T, np.eye(3), atol=1e-12)
            assert np.linalg.det(r) == pytest.approx(1.0)
            angle = np.degrees(np.arccos(np.clip((np.trace(r) - 1) / 2, -1, 1)))
            assert angle <= max_deg + 1e-6
    np.testing.assert_allclose(apply_rotation(_window(), np.eye(3)), _window(), atol=1e-6)


def test_jitter_adds_noise_of_the_given_std_per_sensor_without_touching_the_input():
    w = _window(20_000)
    before = w.copy()
    out = jitter(w, np.random.default_rng(1), (0.05, 0.005))
    np.testing.assert_array_equal(w, before)
    noise = (out - w).astype(np.float64)
    np.testing.assert_allclose(noise[:3].std(axis=1), 0.05, rtol=0.05)
    np.testing.assert_allclose(noise[3:].std(axis=1), 0.005, rtol=0.05)
    np.testing.assert_allclose(noise.mean(axis=1), 0, atol=1e-3)


def test_scale_multiplies_each_channel_by_its_own_factor():
    w = _window()
    out = scale(w, np.random.default_rng(2), sigma=0.2)
    ratio = out / w
    np.testing.assert_allclose(ratio, ratio[:, :1] * np.ones_like(ratio), rtol=1e-5)  # one factor per channel
    assert np.unique(np.round(ratio[:, 0], 6)).size == 6


def test_time_map_is_monotone_keeps_the_ends_and_is_smooth():
    tau = random_time_map(1000, np.random.default_rng(3), strength=0.5, knots=6)
    assert tau[0] == 0.0 and tau[-1] == pytest.approx(999.0)
    speed = np.diff(tau)
    assert (speed > 0).all()
    assert speed.max() / speed.min() > 1.2  # it does warp
    # C1: the speed changes by ~(speed range) / (knot spacing ~140 samples) per sample; a kink would jump by ~1
    assert np.abs(np.diff(speed)).max() < 0.05
    np.testing.assert_allclose(random_time_map(1000, np.random.default_rng(3), strength=0.0), np.arange(1000.0))


def test_time_warp_applies_one_map_to_every_channel():
    length = 400
    ramp = np.arange(length, dtype=np.float32)
    w = np.stack([ramp * (c + 1) for c in range(6)])
    out = time_warp(w, np.random.default_rng(4), strength=0.4)
    tau = random_time_map(length, np.random.default_rng(4), strength=0.4)
    for c in range(6):
        np.testing.assert_allclose(out[c] / (c + 1), tau, rtol=1e-5, atol=1e-3)
    assert not np.allclose(out, w, atol=1.0)
    np.testing.assert_allclose(time_warp(w, np.random.default_rng(4), strength=0.0), w, atol=1e-3)
    const = np.full((6, length), 3.0, np.float32)
    np.testing.assert_array_equal(time_warp(const, np.random.default_rng(0)), const)


def test_augment_is_reproducible_with_a_seed_and_identity_when_disabled():
    w = _window()
    a = augment(w, np.random.default_rng(7))
    b = augment(w, np.random.default_rng(7))
    np.testing.assert_array_equal(a, b)
    assert a.shape == (6, 500) and a.dtype == np.float32 and not np.allclose(a, w, atol=1e-2)
    off = ImuAugmentParams(jitter_acc=0, jitter_gyro=0, scale_sigma=0, rotate_max_deg=0, time_warp_strength=0)
    np.testing.assert_array_equal(augment(w, np.random.default_rng(7), off), w)
    # only the rotation on: per-sample norms of both sensors kept
    rot = ImuAugmentParams(jitter_acc=0, jitter_gyro=0, scale_sigma=0, rotate_max_deg=90, time_warp_strength=0)
    c = augment(w, np.random.default_rng(7), rot)
    np.testing.assert_allclose(np.linalg.norm(c[3:], axis=0), np.linalg.norm(w[3:], axis=0), rtol=1e-5)


def test_params_validate_and_round_trip():
    p = ImuAugmentParams(rotate_max_deg=180, time_warp_knots=2)
    assert ImuAugmentParams.from_dict(p.to_dict()) == p
    with pytest.raises(ValueError, match="cfg: .*'scale_sigma' = -0.1"):
        ImuAugmentParams.from_dict({"scale_sigma": -0.1}, where="cfg")
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['wobble'\]"):
        ImuAugmentParams.from_dict({"wobble": 1})
    with pytest.raises(ValueError, match="rotate_max_deg"):
        ImuAugmentParams(rotate_max_deg=270)
    with pytest.raises(ValueError, match=r"\(6, L\)"):
        rotate(np.zeros((3, 10)), np.random.default_rng(0))
