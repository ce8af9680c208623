"""Training augmentations for ONE raw (un-normalised) IMU window (6, L): acc xyz (m/s^2), gyro xyz (rad/s).

Each is a small pure function: it never modifies its input and draws all randomness from the
``numpy.random.Generator`` it is given, so a seeded generator replays the same augmentation. Apply
them before :meth:`modalities.imu.spec.ImuWindowSpec.normalize` (the rotation needs the raw frame).

Jitter, per-channel scaling, rotation and time warping follow Um et al., "Data augmentation of
wearable sensor data for Parkinson's disease monitoring using convolutional neural networks",
ICMI 2017 (arXiv:1706.00527). The rotation changes the sensor's mounting orientation, so one
rotation R acts on both 3-vectors: acc' = R acc and gyro' = R gyro (a rigid body's specific force
and angular rate are both vectors in the same sensor frame). COMODO (Chen et al. 2025,
https://github.com/Breezelled/COMODO) trains its IMU students on windows like these; the
magnitudes below are our defaults, not the paper's.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from modalities.field_checks import construct, expect_dict, reject_unknown

ACC = slice(0, 3)
GYRO = slice(3, 6)


def _check_window(w: np.ndarray, name: str) -> np.ndarray:
    x = np.asarray(w, np.float32)
    if x.ndim != 2 or x.shape[0] != 6 or x.shape[1] < 2:
        raise ValueError(f"{name}: expected one (6, L) window with L >= 2, got shape {x.shape}")
    return x


def jitter(w: np.ndarray, rng: np.random.Generator, sigma: float | tuple[float, float] = (0.05, 0.005)) -> np.ndarray:
    """Add i.i.d. Gaussian noise: N(0, sigma_acc) m/s^2 on acc, N(0, sigma_gyro) rad/s on gyro.

    ``sigma``: one value for all channels or (acc, gyro).
    """
    x = _check_window(w, "jitter")
    s_acc, s_gyro = (sigma, sigma) if np.isscalar(sigma) else sigma
    scale = np.array([s_acc] * 3 + [s_gyro] * 3, np.float64)[:, None]
    return (x + rng.standard_normal(x.shape) * scale).astype(np.float32)


def scale(w: np.ndarray, rng: np.random.Generator, sigma: float = 0.1) -> np.ndarray:
    """Multiply each channel by its own factor ~ N(1, sigma) (a per-axis gain error)."""
    x = _check_window(w, "scale")
    factors = 1.0 + sigma * rng.standard_normal((6, 1))
    return (x * factors).astype(np.float32)


def random_rotation(rng: np.random.Generator, max_deg: float = 180.0) -> np.ndarray:
    """(3, 3) float64 rotation by an angle ~ U(0, max_deg) about a uniformly random unit axis (Rodrigues)."""
    axis = rng.standard_normal(3)
    axis /= np.linalg.norm(axis)
    angle = math.radians(rng.uniform(0.0, max_deg))
    k = np.array([[0.0, -axis[2], axis[1]], [axis[2], 0.0, -axis[0]], [-axis[1], axis[0], 0.0]])
    return np.eye(3) + math.sin(angle) * k + (1.0 - math.cos(angle)) * (k @ k)


def apply_rotation(w: np.ndarray, r: np.ndarray) -> np.ndarray:
    """acc' = R acc and gyro' = R gyro for every sample of a (6, L) window."""
    x = _check_window(w, "apply_rotation")
    r = np.asarray(r, np.float64)
    out = np.empty_like(x)
    out[ACC] = r @ x[ACC].astype(np.float64)
    out[GYRO] = r @ x[GYRO].astype(np.float64)
    return out


def rotate(w: np.ndarray, rng: np.random.Generator, max_deg: float = 30.0) -> np.ndarray:
    """Rotate the sensor frame: one :func:`random_rotation` applied to acc and gyro alike."""
    return apply_rotation(w, random_rotation(rng, max_deg))


def random_time_map(length: int, rng: np.random.Generator, strength: float = 0.2, knots: int = 4) -> np.ndarray:
    """(L,) float64 strictly increasing map from output sample i to input time tau(i), tau(0)=0, tau(L-1)=L-1.

    The local speed dtau/di is exp(strength * z) at ``knots + 2`` evenly spaced points (z ~ N(0, 1)),
    linearly interpolated between them; tau is its integral (trapezoid), rescaled to span the
    window. Speed > 0 everywhere, so the map is monotone, and it is C1 (smooth, no kinks).
    """
    if length < 2:
        raise ValueError(f"random_time_map: length must be >= 2, got {length}")
    knot_pos = np.linspace(0.0, length - 1, knots + 2)
    speed = np.interp(np.arange(length), knot_pos, np.exp(strength * rng.standard_normal(knots + 2)))
    tau = np.concatenate([[0.0], np.cumsum(0.5 * (speed[1:] + speed[:-1]))])
    return tau * ((length - 1) / tau[-1])


def time_warp(w: np.ndarray, rng: np.random.Generator, strength: float = 0.2, knots: int = 4) -> np.ndarray:
    """Resample every channel at the same :func:`random_time_map` times (linear interpolation).

    The window keeps its length and end points; parts of it play faster, others slower.
    """
    x = _check_window(w, "time_warp")
    length = x.shape[1]
    tau = random_time_map(length, rng, strength, knots)
    grid = np.arange(length, dtype=np.float64)
    return np.stack([np.interp(tau, grid, x[c].astype(np.float64)) for c in range(6)]).astype(np.float32)


@dataclass(frozen=True)
class ImuAugmentParams:
    """Magnitudes of the training augmentations; 0 disables one. Units are the raw window's.

    Attributes:
        jitter_acc: noise std on acc, m/s^2 (a phone accelerometer's noise is ~0.01-0.05).
        jitter_gyro: noise std on gyro, rad/s.
        scale_sigma: std of the per-channel gain factor around 1.
        rotate_max_deg: largest sensor-frame rotation; raise it toward 180 when the device may be
            worn in any orientation, lower it when mounting is fixed.
        time_warp_strength: std of the log speed of the time map (0.2: local speed ~ x0.8-x1.2).
        time_warp_knots: interior knots of the speed curve (more = faster-varying warps).
    """

    jitter_acc: float = 0.05
    jitter_gyro: float = 0.005
    scale_sigma: float = 0.1
    rotate_max_deg: float = 30.0
    time_warp_strength: float = 0.2
    time_warp_knots: int = 4

    def __post_init__(self) -> None:
        for name in ("jitter_acc", "jitter_gyro", "scale_sigma", "rotate_max_deg", "time_warp_strength"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
                raise ValueError(f"IMU augment params: field '{name}' = {value!r} must be a finite number >= 0")
        if not 0 <= self.rotate_max_deg <= 180:
            raise ValueError(f"IMU augment params: field 'rotate_max_deg' = {self.rotate_max_deg!r} "
                             "must be in [0, 180]")
        if not (isinstance(self.time_warp_knots, int) and self.time_warp_knots >= 0):
            raise ValueError(f"IMU augment params: field 'time_warp_knots' = {self.time_warp_knots!r} must be an "
                             "integer >= 0")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict, where: str = "IMU augment params") -> "ImuAugmentParams":
        """Inverse of :meth:`to_dict` (missing keys take the defaults); ValueError naming ``where``."""
        expect_dict(d, where)
        reject_unknown(d, asdict(cls()), where)
        return construct(cls, d, where)


def augment(w: np.ndarray, rng: np.random.Generator, params: ImuAugmentParams = ImuAugmentParams()) -> np.ndarray:
    """time_warp -> rotate -> scale -> jitter (each skipped when its magnitude is 0); (6, L) float32 out."""
    x = _check_window(w, "augment").copy()
    if params.time_warp_strength > 0:
        x = time_warp(x, rng, params.time_warp_strength, params.time_warp_knots)
    if params.rotate_max_deg > 0:
        x = rotate(x, rng, params.rotate_max_deg)
    if params.scale_sigma > 0:
        x = scale(x, rng, params.scale_sigma)
    if params.jitter_acc > 0 or params.jitter_gyro > 0:
        x = jitter(x, rng, (params.jitter_acc, params.jitter_gyro))
    return x
