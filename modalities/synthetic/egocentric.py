"""Synthetic egocentric recordings: a head-mounted camera + IMU doing one activity each.

The stand-in for Ego4D-style (video, head IMU) pairs in COMODO (Chen et al. 2025, "COMODO:
Cross-Modal Video-to-IMU Distillation for Efficient Egocentric Human Activity Recognition",
https://github.com/Breezelled/COMODO): a frozen *video* teacher must be able to see the
activity, and the IMU student must be able to feel it, so both come from ONE smooth head
trajectory ``p(t)`` (position, m) and ``R(t)`` (head-to-world rotation)::

    world: x along the corridor, y left, z up, ground at z = 0
    head (= IMU) frame: x forward, y left, z up;  R = Rz(yaw) Ry(pitch) Rx(roll), pitch > 0 looks down
    camera (on the head, at the IMU): x right, y down, z forward (R_head_from_cam = rig.R_EGO_FROM_CAM_BASE)

    gyro(t)  = vee(R^T dR/dt)                  body angular rate, rad/s
    acc(t)   = R^T (d2p/dt2 - g), g = (0, 0, -9.81)   specific force: a resting head reads +9.81 on z
    derivatives by central differences (h = 1 ms) of the analytic trajectory

Each recording: one subject, one activity, ``duration_s`` seconds. The video (H.264 MP4, frame i
at t = i / fps) is ray-cast with open3d's RaycastingScene in a procedural textured world (the
photographic tri-planar textures of ``modalities.synthetic.textures``): a corridor with textured
walls, posters, crates and sometimes a table; a stairwell for ``stairs_up``; a table with a
keyboard or a pot, and the subject's hands (analytic boxes, ray-slab intersection) for the hand
activities. What the frames show per activity (what a frame-based teacher can pick up):

    standing        level view, tiny sway             walking / running   forward flow, head bob (running: more, faster)
    turning_l/r     continuous yaw sweep, one way      stairs_up           steps ahead, rising viewpoint, pitched down
    sitting_down    viewpoint drops ~0.4 m, leans       looking_around      yaw/pitch sweeps back and forth
    waving          a hand swinging in front            typing / stirring   looking down at a table: keyboard + two
                                                                          hands / a pot + a circling hand and spoon

The IMU clock is the video clock plus a per-recording offset in [0, max_time_offset_s]: the
sample stamped ``t`` in imu.csv measured the head at video time ``t - offset``. Samples at
``k / imu_rate_hz`` for k = 0 .. round(duration_s * imu_rate_hz) (both ends included), with a
per-recording bias and white noise per sample.

Subjects (``s00``, ``s01``, ...) have their own body height (eye height 0.936 x height, seated
0.45 + 0.44 x height), cadence, walking / running speed, head bob and sway, habitual head
pitch, turning rate and hand-motion rates; each recording jitters them by a few percent.

Layout under ``root`` (the ``egocentric`` kind of the COMODO issue)::

    root/labels.csv                       recording,label,subject,video (paths relative to root)
    root/dataset.json                     config, activities, subjects with their parameters, counts
    root/<subject>/<activity>_<take>/imu.csv     t,ax,ay,az,gx,gy,gz (s, m/s^2, rad/s)
    root/<subject>/<activity>_<take>/video.mp4   H.264 (libx264), constant fps, first frame at t = 0
    root/<subject>/<activity>_<take>/meta.json   ground truth: time offset, biases, motion parameters

Deterministic: a recording draws from its own generator seeded by (seed, crc32 of
subject/activity/take), a subject from (seed, subject index), so the same config gives the same
bytes whatever ``workers`` is. A recording is written into a temporary folder and renamed into
place; a re-run into the same root (same config) keeps the finished recordings and writes the
rest; a different config is refused.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import io
import json
import os
import shutil
import time
import zlib
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, fields
from multiprocessing import get_context
from pathlib import Path
from typing import Any, Callable

import numpy as np
import open3d as o3d

from modalities.fileio import atomic_write_json, atomic_write_text
from modalities.synthetic.render import AMBIENT, SKY_HORIZON, SKY_ZENITH
from modalities.synthetic.rig import R_EGO_FROM_CAM_BASE, intrinsics
from modalities.synthetic.scene import box, cylinder
from modalities.synthetic.textures import TEX, Material, sample_albedo

ACTIVITIES: tuple[str, ...] = (
    "standing", "walking", "running", "turning_left", "turning_right", "stairs_up", "sitting_down",
    "looking_around", "waving", "typing", "stirring",
)
GRAVITY = np.array([0.0, 0.0, -9.81])
GENERATOR_VERSION = 1
R_HEAD_FROM_CAM = R_EGO_FROM_CAM_BASE  # camera x right, y down, z forward -> head x fwd, y left, z up


@dataclass(frozen=True)
class EgocentricConfig:
    """What :func:`generate_egocentric` writes: subjects x activities x recordings_per_activity recordings."""

    subjects: int = 8
    recordings_per_activity: int = 2  # per (subject, activity)
    duration_s: float = 10.0  # two 5 s windows each
    fps: float = 10.0  # video frame rate
    width: int = 128  # video size (even numbers, yuv420p); rendering cost grows with width x height
    height: int = 96
    hfov_deg: float = 90.0  # a wide egocentric camera (Aria RGB ~110 deg)
    imu_rate_hz: float = 100.0
    activities: tuple[str, ...] = ACTIVITIES
    seed: int = 0
    acc_noise_std: float = 0.04  # m/s^2 per sample (white)
    gyro_noise_std: float = 0.004  # rad/s per sample
    acc_bias_std: float = 0.05  # m/s^2, drawn per recording and axis
    gyro_bias_std: float = 0.005  # rad/s
    max_time_offset_s: float = 0.03  # IMU clock = video clock + U(0, this)
    pixel_noise_std: float = 1.5  # camera sensor noise, 8-bit levels
    crf: int = 20  # x264 quality (lower = better, bigger files)

    def __post_init__(self) -> None:
        def bad(name: str, why: str) -> None:
            raise ValueError(f"egocentric config: field '{name}' = {getattr(self, name)!r}: {why}")

        for name in ("subjects", "recordings_per_activity"):
            if getattr(self, name) < 1:
                bad(name, "must be >= 1")
        for name in ("duration_s", "fps", "imu_rate_hz"):
            if getattr(self, name) <= 0:
                bad(name, "must be > 0")
        for name in ("width", "height"):
            v = getattr(self, name)
            if v < 16 or v % 2:
                bad(name, "must be an even number >= 16 (H.264 yuv420p)")
        if not 20 <= self.hfov_deg <= 150:
            bad("hfov_deg", "must be in [20, 150]")
        unknown = [a for a in self.activities if a not in ACTIVITIES]
        if not self.activities or unknown or len(set(self.activities)) != len(self.activities):
            bad("activities", f"choose distinct names from {list(ACTIVITIES)}")
        for name in ("acc_noise_std", "gyro_noise_std", "acc_bias_std", "gyro_bias_std", "max_time_offset_s",
                     "pixel_noise_std"):
            if getattr(self, name) < 0:
                bad(name, "must be >= 0")
        if round(self.duration_s * self.fps) < 1:
            bad("duration_s", "gives no video frame at this fps")

    def to_dict(self) -> dict[str, Any]:
        return json.loads(json.dumps(asdict(self)))

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "EgocentricConfig":
        unknown = set(d) - {f.name for f in fields(cls)}
        if unknown:
            raise ValueError(f"egocentric config: unknown field(s) {sorted(unknown)}")
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})


# ---------------------------------------------------------------- subjects


@dataclass(frozen=True)
class Subject:
    id: str
    height_m: float
    step_hz: float  # walking cadence, steps per second (the head bobs once per step)
    walk_speed_mps: float
    run_step_hz: float
    run_speed_mps: float
    bob_m: float  # walking vertical head bob amplitude
    run_bob_m: float
    sway_m: float  # lateral sway amplitude, at half the cadence (once per stride)
    head_pitch_rad: float  # habitual pitch (> 0 looks down)
    turn_rate_rps: float  # turning-in-place yaw rate, rad/s
    wave_hz: float
    type_hz: float
    stir_hz: float

    @property
    def eye_height_m(self) -> float:
        return 0.936 * self.height_m

    @property
    def seated_eye_height_m(self) -> float:
        return 0.45 + 0.44 * self.height_m


def make_subjects(n: int, seed: int) -> list[Subject]:
    """``n`` subjects with their own gait and habits, each from its own generator."""
    out = []
    for i in range(n):
        r = np.random.default_rng([seed, 0x5375626A, i])  # "Subj"
        height = r.uniform(1.55, 1.92)
        out.append(Subject(
            id=f"s{i:02d}", height_m=height,
            step_hz=r.uniform(1.6, 2.1), walk_speed_mps=r.uniform(1.0, 1.5) * height / 1.75,
            run_step_hz=r.uniform(2.5, 3.0), run_speed_mps=r.uniform(2.4, 3.4),
            bob_m=r.uniform(0.015, 0.03), run_bob_m=r.uniform(0.04, 0.07), sway_m=r.uniform(0.01, 0.03),
            head_pitch_rad=np.deg2rad(r.uniform(-4.0, 12.0)), turn_rate_rps=np.deg2rad(r.uniform(35.0, 70.0)),
            wave_hz=r.uniform(2.0, 3.0), type_hz=r.uniform(4.0, 7.0), stir_hz=r.uniform(1.0, 1.6),
        ))
    return out


# ---------------------------------------------------------------- head trajectories
# Each motion maps times (N,) to a position (N, 3) and (yaw, pitch, roll) (N, 3) in the *local*
# frame of the recording: origin on the ground under the eyes at t = 0, x = the initial heading.
# All are C2-smooth (sums of sinusoids, quintic smoothsteps) so accelerations are well defined.

TAU = 2 * np.pi


def _smootherstep(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0.0, 1.0)
    return x * x * x * (x * (6 * x - 15) + 10)


def _drift(t: np.ndarray, q: dict) -> tuple[np.ndarray, np.ndarray]:
    """Slow physiological head drift: 3 sinusoids per degree of freedom (position, angles)."""
    amp, freq, phase = q["drift_amp"], q["drift_hz"], q["drift_phase"]  # (6, 3) each
    x = np.sum(amp[None] * np.sin(TAU * freq[None] * t[:, None, None] + phase[None]), axis=2)  # (N, 6)
    return x[:, :3], x[:, 3:]


def _standing(t, s: Subject, q):
    z = np.full_like(t, s.eye_height_m)
    y = 0.01 * np.sin(TAU * 0.2 * t + q["phi"])  # weight shift
    return np.stack([np.zeros_like(t), y, z], 1), np.stack([0 * t, s.head_pitch_rad + 0 * t, 0 * t], 1)


def _gait(t, s: Subject, q, f, v, bob, sway, pitch, ang):
    phi = q["phi"]
    x = v * t + (0.04 * v / (TAU * f)) * np.sin(TAU * f * t + phi)  # speed surges once per step
    y = sway * np.sin(np.pi * f * t + phi)
    z = q["eye"] - bob * np.cos(TAU * f * t + phi) + q.get("climb", 0.0) * (x / q.get("tread", 1.0) + 1.0)
    yaw = ang * np.sin(np.pi * f * t + phi + 0.5)
    pit = s.head_pitch_rad + pitch + 0.5 * ang * np.sin(TAU * f * t + phi + 1.0)
    roll = ang * np.sin(np.pi * f * t + phi)
    return np.stack([x, y, z], 1), np.stack([yaw, pit, roll], 1)


def _walking(t, s, q):
    return _gait(t, s, q, q["f"], q["v"], q["bob"], s.sway_m, 0.05, 0.025)


def _running(t, s, q):
    return _gait(t, s, q, q["f"], q["v"], q["bob"], 1.3 * s.sway_m, 0.10, 0.04)


def _stairs_up(t, s, q):
    return _gait(t, s, q, q["f"], q["v"], q["bob"], 0.6 * s.sway_m, q["look_down"], 0.02)


def _turning(sign):
    def motion(t, s: Subject, q):
        w, fm = q["w"], q["fm"]
        yaw = sign * (w * t + (0.2 * w / (TAU * fm)) * (1 - np.cos(TAU * fm * t)))  # rate w (1 + 0.2 sin)
        r = 0.08  # the eyes are in front of the neck's vertical axis
        x, y = r * (np.cos(yaw) - 1), r * np.sin(yaw)
        f = 0.8 * s.step_hz  # small steps in place
        z = s.eye_height_m - 0.4 * s.bob_m * np.cos(TAU * f * t + q["phi"])
        roll = 0.015 * np.sin(np.pi * f * t + q["phi"])
        return np.stack([x, y, z], 1), np.stack([yaw, s.head_pitch_rad + 0 * t, roll], 1)
    return motion


def _sitting_down(t, s: Subject, q):
    u = _smootherstep((t - q["t_sit"]) / q["sit_s"])
    bump = np.sin(np.pi * u)
    x = -0.2 * u + 0.12 * bump
    z = s.eye_height_m - (s.eye_height_m - s.seated_eye_height_m) * u
    pitch = s.head_pitch_rad + q["lean"] * bump + q["seated_pitch"] * u
    return np.stack([x, 0 * t, z], 1), np.stack([0 * t, pitch, 0 * t], 1)


def _looking_around(t, s: Subject, q):
    yaw = q["yaw_amp"] * (np.sin(TAU * q["f1"] * t + q["phi"]) + 0.35 * np.sin(TAU * 1.7 * q["f1"] * t + 2 * q["phi"]))
    pitch = s.head_pitch_rad + q["pitch_amp"] * np.sin(TAU * q["f2"] * t + 3 * q["phi"])
    z = np.full_like(t, s.eye_height_m)
    return np.stack([0 * t, 0 * t, z], 1), np.stack([yaw, pitch, 0 * t], 1)


def _waving(t, s: Subject, q):
    a = TAU * q["f"] * t + q["phi"]
    p = np.stack([0 * t, 0.003 * np.sin(a), s.eye_height_m + 0.0015 * np.sin(2 * a)], 1)
    return p, np.stack([0.006 * np.sin(a), 0.5 * s.head_pitch_rad + 0 * t, 0.012 * np.sin(a + 0.3)], 1)


def _typing(t, s: Subject, q):
    a = TAU * q["f"] * t + q["phi"]
    p = np.stack([0 * t, 0 * t, s.seated_eye_height_m + 0.0003 * np.sin(a)], 1)
    pitch = s.head_pitch_rad + q["look_down"] + 0.004 * np.sin(a + 0.7) + 0.05 * np.sin(TAU * 0.1 * t + q["phi"])
    return p, np.stack([0.03 * np.sin(TAU * 0.13 * t + 2 * q["phi"]), pitch, 0.002 * np.sin(a)], 1)


def _stirring(t, s: Subject, q):
    a = TAU * q["f"] * t + q["phi"]
    p = np.stack([0.003 * np.cos(a), 0.003 * np.sin(a), s.eye_height_m + 0 * t], 1)
    return p, np.stack([0.01 * np.sin(a), s.head_pitch_rad + q["look_down"] + 0.005 * np.cos(a), 0.01 * np.cos(a)], 1)


MOTIONS: dict[str, Callable] = {
    "standing": _standing, "walking": _walking, "running": _running, "turning_left": _turning(+1.0),
    "turning_right": _turning(-1.0), "stairs_up": _stairs_up, "sitting_down": _sitting_down,
    "looking_around": _looking_around, "waving": _waving, "typing": _typing, "stirring": _stirring,
}
LOCOMOTION = ("walking", "running", "stairs_up")


def _draw_params(activity: str, s: Subject, rng: np.random.Generator, duration_s: float) -> dict:
    """Per-recording motion parameters (subject's habits jittered by a few percent)."""
    j = lambda: rng.uniform(0.95, 1.05)  # noqa: E731
    q: dict[str, Any] = {"phi": rng.uniform(0, TAU), "eye": s.eye_height_m,
                         "drift_amp": np.concatenate([np.full((3, 3), 0.0015), np.full((3, 3), 0.002)])
                         * rng.uniform(0.5, 1.5, (6, 3)),
                         "drift_hz": rng.uniform(0.05, 0.4, (6, 3)), "drift_phase": rng.uniform(0, TAU, (6, 3))}
    if activity == "walking":
        q.update(f=s.step_hz * j(), v=s.walk_speed_mps * j(), bob=s.bob_m * j())
    elif activity == "running":
        q.update(f=s.run_step_hz * j(), v=s.run_speed_mps * j(), bob=s.run_bob_m * j())
    elif activity == "stairs_up":
        tread, rise = rng.uniform(0.27, 0.31), rng.uniform(0.15, 0.18)
        f = 0.85 * s.step_hz * j()
        q.update(f=f, v=f * tread, bob=0.7 * s.bob_m * j(), tread=tread, rise=rise, climb=rise,
                 look_down=rng.uniform(0.2, 0.35))
    elif activity in ("turning_left", "turning_right"):
        q.update(w=s.turn_rate_rps * j(), fm=rng.uniform(0.3, 0.6))
    elif activity == "sitting_down":
        q.update(t_sit=rng.uniform(0.15, 0.3) * duration_s, sit_s=rng.uniform(1.2, 1.8),
                 lean=rng.uniform(0.3, 0.5), seated_pitch=rng.uniform(0.05, 0.2))
    elif activity == "looking_around":
        q.update(yaw_amp=rng.uniform(0.6, 1.0), f1=rng.uniform(0.15, 0.3), pitch_amp=rng.uniform(0.12, 0.25),
                 f2=rng.uniform(0.1, 0.25))
    elif activity == "waving":
        q.update(f=s.wave_hz * j())
    elif activity == "typing":
        q.update(f=s.type_hz * j(), look_down=rng.uniform(0.55, 0.8))
    elif activity == "stirring":
        q.update(f=s.stir_hz * j(), look_down=rng.uniform(0.6, 0.85), stir_r=rng.uniform(0.04, 0.06))
    return q


def _rot_zyx(ypr: np.ndarray) -> np.ndarray:
    """(N, 3) yaw, pitch, roll -> (N, 3, 3) Rz(yaw) @ Ry(pitch) @ Rx(roll)."""
    cy, sy = np.cos(ypr[:, 0]), np.sin(ypr[:, 0])
    cp, sp = np.cos(ypr[:, 1]), np.sin(ypr[:, 1])
    cr, sr = np.cos(ypr[:, 2]), np.sin(ypr[:, 2])
    R = np.empty((len(ypr), 3, 3))
    R[:, 0, 0], R[:, 0, 1], R[:, 0, 2] = cy * cp, cy * sp * sr - sy * cr, cy * sp * cr + sy * sr
    R[:, 1, 0], R[:, 1, 1], R[:, 1, 2] = sy * cp, sy * sp * sr + cy * cr, sy * sp * cr - cy * sr
    R[:, 2, 0], R[:, 2, 1], R[:, 2, 2] = -sp, cp * sr, cp * cr
    return R


@dataclass
class Trajectory:
    """The head pose of one recording in the world frame."""

    activity: str
    subject: Subject
    q: dict
    origin: np.ndarray  # (3,) local origin in the world
    yaw0: float  # local x heading in the world

    def pose(self, t_s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(N,) times -> positions (N, 3) and head-to-world rotations (N, 3, 3), world frame."""
        t = np.atleast_1d(np.asarray(t_s, dtype=np.float64))
        p, ypr = MOTIONS[self.activity](t, self.subject, self.q)
        dp, dang = _drift(t, self.q)
        p = p + dp
        ypr = ypr + dang
        c, s = np.cos(self.yaw0), np.sin(self.yaw0)
        Rz = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
        ypr = ypr + np.array([self.yaw0, 0.0, 0.0])
        return p @ Rz.T + self.origin, _rot_zyx(ypr)

    def imu(self, t_s: np.ndarray, h: float = 1e-3) -> tuple[np.ndarray, np.ndarray]:
        """Noise-free (acc (N, 3) m/s^2, gyro (N, 3) rad/s) in the head frame at times ``t_s``."""
        t = np.asarray(t_s, dtype=np.float64)
        p0, R0 = self.pose(t)
        pm, Rm = self.pose(t - h)
        pp, Rp = self.pose(t + h)
        a = (pp - 2 * p0 + pm) / (h * h)
        acc = np.einsum("nji,nj->ni", R0, a - GRAVITY)  # R^T (a - g)
        W = np.einsum("nji,njk->nik", R0, (Rp - Rm) / (2 * h))  # R^T dR/dt, skew-symmetric
        gyro = 0.5 * np.stack([W[:, 2, 1] - W[:, 1, 2], W[:, 0, 2] - W[:, 2, 0], W[:, 1, 0] - W[:, 0, 1]], 1)
        return acc, gyro


# ---------------------------------------------------------------- worlds


@dataclass
class _Box:
    """An oriented box drawn analytically (hands, forearms, spoon): centre, box-to-world R, half sizes."""

    center: np.ndarray
    R: np.ndarray
    half: np.ndarray
    material: int  # index into the renderer's dynamic materials


def _segment(a, b, half_thick: float, material: int) -> _Box:
    """A box from point a to point b (its local x along b - a)."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    x = b - a
    length = float(np.linalg.norm(x))
    x = x / length
    helper = np.array([0.0, 0.0, 1.0]) if abs(x[2]) < 0.9 else np.array([0.0, 1.0, 0.0])
    y = np.cross(helper, x)
    y /= np.linalg.norm(y)
    z = np.cross(x, y)
    return _Box((a + b) / 2, np.stack([x, y, z], 1), np.array([length / 2, half_thick, half_thick]), material)


def _axis_box(center, half, material, yaw=0.0, roll=0.0) -> _Box:
    return _Box(np.asarray(center, float), _rot_zyx(np.array([[yaw, 0.0, roll]]))[0], np.asarray(half, float),
                material)


class _WorldBuilder:
    def __init__(self, rng: np.random.Generator, origin: np.ndarray, yaw0: float):
        self.rng = rng
        self.meshes: list[tuple[np.ndarray, np.ndarray, Material]] = []
        c, s = np.cos(yaw0), np.sin(yaw0)
        self.R_local = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
        self.origin = origin

    def add(self, part, material: Material, local: bool = False) -> None:
        v, f = part
        if local:
            v = v @ self.R_local.T + self.origin
        self.meshes.append((v.astype(np.float32), f, material))

    def material(self, names, lo=0.5, hi=1.0, mix=0.9, scale=(1.0, 3.0)) -> Material:
        r = self.rng
        tint = tuple(float(x) for x in r.uniform(lo, hi, 3))
        return Material(TEX[str(r.choice(names))], tint, mix, float(r.uniform(*scale)))


WALL_TEXTURES = ("brick", "brick", "camera", "moon", "coffee", "gravel")
POSTER_TEXTURES = ("astronaut", "chelsea", "rocket", "coffee", "coins", "immunohistochemistry", "camera")


def _corridor(b: _WorldBuilder, x0: float, x1: float, half_w: float, wall_h: float) -> None:
    r = b.rng
    b.add(box((x1 - x0 + 60, 2 * half_w + 60, 0.02), ((x0 + x1) / 2, 0.0, -0.01)),
          b.material(("gravel", "brick", "grass", "moon"), 0.45, 0.95, 1.0, (0.8, 2.5)))
    for side in (-1.0, 1.0):  # side walls in segments of different materials, posters and crates
        x = x0
        while x < x1:
            seg = r.uniform(3.0, 7.0)
            b.add(box((seg, 0.2, wall_h), (x + seg / 2, side * (half_w + 0.1), wall_h / 2)),
                  b.material(WALL_TEXTURES, 0.45, 1.0, 0.9, (1.0, 4.0)))
            if r.random() < 0.6:
                pw, ph = r.uniform(0.6, 1.6), r.uniform(0.6, 1.4)
                b.add(box((pw, 0.04, ph), (x + r.uniform(pw / 2, max(pw / 2, seg - pw / 2)), side * (half_w - 0.02),
                                           r.uniform(0.9, 1.9))),
                      Material(TEX[str(r.choice(POSTER_TEXTURES))], (1.0, 1.0, 1.0), 1.0, float(max(pw, ph))))
            if r.random() < 0.5:
                sz = r.uniform(0.3, 1.0, 3)
                b.add(box(tuple(sz), (x + r.uniform(0, seg), side * (half_w - sz[1] / 2 - r.uniform(0, 0.3)),
                                      sz[2] / 2)), b.material(("coffee", "moon", "camera", "rocket"), 0.3, 1.0))
            x += seg
    for xe in (x0, x1):  # end walls
        b.add(box((0.2, 2 * half_w + 0.4, wall_h), (xe, 0.0, wall_h / 2)), b.material(WALL_TEXTURES, 0.45, 1.0))
        b.add(box((0.04, r.uniform(0.8, 1.6), r.uniform(0.6, 1.2)),
                  (xe + (0.12 if xe == x0 else -0.12), r.uniform(-half_w / 2, half_w / 2), r.uniform(1.0, 1.8))),
              Material(TEX[str(r.choice(POSTER_TEXTURES))], (1.0, 1.0, 1.0), 1.0, 1.5))


def _table(b: _WorldBuilder, front_x: float, top_z: float, clutter: bool) -> None:
    """A table in the local frame with its near edge ``front_x`` ahead, top at ``top_z``."""
    r = b.rng
    depth, width = r.uniform(0.7, 0.9), r.uniform(1.0, 1.5)
    wood = b.material(("moon", "brick", "coffee"), 0.35, 0.8, 0.6, (0.4, 1.0))
    cx = front_x + depth / 2
    b.add(box((depth, width, 0.04), (cx, 0.0, top_z - 0.02)), wood, local=True)
    for sx in (-1, 1):
        for sy in (-1, 1):
            b.add(box((0.05, 0.05, top_z - 0.04), (cx + sx * (depth / 2 - 0.05), sy * (width / 2 - 0.05),
                                                   (top_z - 0.04) / 2)), wood, local=True)
    if clutter:
        for _ in range(int(r.integers(1, 4))):
            sz = r.uniform(0.06, 0.3, 3) * (1, 1, 0.5)
            b.add(box(tuple(sz), (cx + r.uniform(-depth / 3, depth / 3), r.uniform(-width / 3, width / 3),
                                  top_z + sz[2] / 2)), b.material(POSTER_TEXTURES, 0.6, 1.0, 1.0, (0.2, 0.5)),
                  local=True)


def _stairwell(b: _WorldBuilder, q: dict, duration_s: float) -> None:
    """Straight stairs up along local +x; the subject starts on the first step (x = 0)."""
    r = b.rng
    tread, rise = q["tread"], q["rise"]
    xs = -0.5 * tread
    n = int(np.ceil((q["v"] * duration_s * 1.1 + 1.0) / tread)) + 6
    half_w = r.uniform(0.7, 1.1)
    step = b.material(("brick", "gravel", "moon", "camera"), 0.5, 1.0, 0.8, (0.5, 1.5))
    nose = b.material(("moon",), 0.15, 0.4, 0.3)  # dark step edges, as anti-slip strips
    b.add(box((40.0, 40.0, 0.02), (0.0, 0.0, -0.01)), b.material(("gravel", "moon"), 0.4, 0.8), local=True)
    for k in range(n):
        top = (k + 1) * rise
        b.add(box((tread, 2 * half_w, top), (xs + (k + 0.5) * tread, 0.0, top / 2)), step, local=True)
        b.add(box((0.04, 2 * half_w, 0.02), (xs + k * tread + 0.02, 0.0, top + 0.005)), nose, local=True)
    x_end = xs + n * tread
    b.add(box((6.0, 2 * half_w, n * rise), (x_end + 3.0, 0.0, n * rise / 2)), step, local=True)
    wall_h = n * rise + 3.0
    for side in (-1.0, 1.0):
        x = -4.0
        while x < x_end + 6.0:
            seg = r.uniform(2.0, 5.0)
            b.add(box((seg, 0.2, wall_h), (x + seg / 2, side * (half_w + 0.1), wall_h / 2)),
                  b.material(WALL_TEXTURES, 0.45, 1.0, 0.9, (1.0, 3.0)), local=True)
            x += seg
    b.add(box((0.2, 2 * half_w + 0.4, wall_h), (x_end + 6.0, 0.0, wall_h / 2)), b.material(WALL_TEXTURES),
          local=True)
    b.add(box((0.2, 2 * half_w + 0.4, wall_h), (-4.0, 0.0, wall_h / 2)), b.material(WALL_TEXTURES), local=True)


@dataclass
class Scene:
    """A recording's world: static meshes (ray-cast by open3d) + a function giving the moving boxes."""

    meshes: list[tuple[np.ndarray, np.ndarray, Material]]
    dynamic_materials: list[Material]
    boxes_at: Callable[[float], list[_Box]]
    sun_dir: np.ndarray


def build_scene(activity: str, s: Subject, q: dict, traj: Trajectory, rng: np.random.Generator,
                duration_s: float) -> Scene:
    """The world for one recording, built around the trajectory's local frame."""
    b = _WorldBuilder(rng, traj.origin, traj.yaw0)
    if activity == "stairs_up":
        _stairwell(b, q, duration_s)
    else:
        half_w = rng.uniform(2.0, 3.5)
        travel = q.get("v", 0.0) * duration_s
        x0 = traj.origin[0] - rng.uniform(6.0, 10.0)
        x1 = traj.origin[0] + max(12.0, travel + rng.uniform(8.0, 15.0))
        _corridor(b, x0, x1, half_w, rng.uniform(2.6, 4.0))
    skin = Material(TEX["chelsea"], tuple(float(x) for x in rng.uniform([0.75, 0.5, 0.35], [1.0, 0.75, 0.6])), 0.15,
                    0.3)
    sleeve = b.material(("moon", "camera", "brick"), 0.1, 0.9, 0.5, (0.3, 0.8))
    dyn = [skin, sleeve, Material(TEX["moon"], (0.75, 0.75, 0.78), 0.2, 0.3)]  # skin, sleeve, metal
    eye, seat_eye = s.eye_height_m, s.seated_eye_height_m
    R_l, o = b.R_local, traj.origin
    to_world = lambda p: R_l @ np.asarray(p, float) + o  # noqa: E731

    def no_boxes(t: float) -> list[_Box]:
        return []

    boxes_at: Callable[[float], list[_Box]] = no_boxes
    if activity == "waving":
        f, phi = q["f"], q["phi"]
        elbow = to_world((0.25, -0.3, eye - 0.45))

        def waving_boxes(t: float) -> list[_Box]:
            a = TAU * f * t + phi
            hand = to_world((0.42, -0.12 + 0.14 * np.sin(a), eye - 0.03))
            wrist = hand - R_l @ np.array([0.0, 0.0, 0.09])
            return [_Box(hand, R_l @ _rot_zyx(np.array([[0.0, 0.0, 0.35 * np.sin(a)]]))[0],
                         np.array([0.015, 0.045, 0.09]), 0),
                    _segment(elbow, wrist, 0.035, 1)]
        boxes_at = waving_boxes
    elif activity == "typing":
        top = seat_eye - rng.uniform(0.48, 0.56)
        front = rng.uniform(0.22, 0.32)
        _table(b, front, top, clutter=rng.random() < 0.5)
        b.add(box((0.15, 0.44, 0.025), (front + 0.2, 0.0, top + 0.0125)),
              Material(TEX["coins"], (0.45, 0.45, 0.5), 0.8, 0.12), local=True)
        f, phi = q["f"], q["phi"]

        def typing_boxes(t: float) -> list[_Box]:
            out = []
            for side, ph in ((1.0, 0.0), (-1.0, 2.1)):
                drift = 0.012 * np.sin(TAU * 0.3 * t + phi + ph)
                hand = to_world((front + 0.17, side * 0.11 + drift, top + 0.045 + 0.006 * np.sin(TAU * f * t + ph)))
                elbow = to_world((front - 0.2, side * 0.26, top + 0.03))
                out += [_axis_box(hand, (0.05, 0.04, 0.015), 0, yaw=traj.yaw0 - side * 0.25),
                        _segment(elbow, hand - R_l @ np.array([0.04, 0.0, 0.0]), 0.032, 1)]
            return out
        boxes_at = typing_boxes
    elif activity == "stirring":
        top = eye - rng.uniform(0.68, 0.8)
        front = rng.uniform(0.18, 0.28)
        _table(b, front, top, clutter=rng.random() < 0.5)
        pot_r, pot_h = rng.uniform(0.1, 0.12), rng.uniform(0.12, 0.15)
        pot_c = np.array([front + 0.22, -0.04])
        b.add(cylinder(pot_r, pot_h, (pot_c[0], pot_c[1], top), resolution=16),
              b.material(("moon", "camera"), 0.4, 0.9, 0.4, (0.3, 0.6)), local=True)
        f, phi, rad = q["f"], q["phi"], q["stir_r"]
        elbow = to_world((front - 0.05, -0.27, top + 0.22))

        def stirring_boxes(t: float) -> list[_Box]:
            a = TAU * f * t + phi
            ring = np.array([np.cos(a), np.sin(a)])
            hand_l = np.array([*(pot_c + rad * ring), top + pot_h + 0.1])
            tip_l = np.array([*(pot_c + 0.8 * rad * ring), top + 0.03])
            hand = to_world(hand_l)
            return [_axis_box(hand, (0.045, 0.035, 0.02), 0, yaw=traj.yaw0 + 0.3 * np.sin(a)),
                    _segment(to_world(hand_l - (0, 0, 0.015)), to_world(tip_l), 0.006, 2),
                    _segment(elbow, hand, 0.032, 1)]
        boxes_at = stirring_boxes
    elif activity == "sitting_down" and rng.random() < 0.6:
        _table(b, rng.uniform(0.35, 0.5), seat_eye - rng.uniform(0.45, 0.55), clutter=True)
    elif activity in ("standing", "looking_around") and rng.random() < 0.3:
        _table(b, rng.uniform(0.5, 1.2), rng.uniform(0.72, 0.92), clutter=True)
    sun = np.array([rng.uniform(-0.6, 0.6), rng.uniform(-0.6, 0.6), 1.0])
    return Scene(b.meshes, dyn, boxes_at, sun / np.linalg.norm(sun))


# ---------------------------------------------------------------- rendering


def _ray_boxes(origin: np.ndarray, dirs: np.ndarray, boxes: list[_Box]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Nearest hit of rays from ``origin`` with oriented boxes (slab test).

    Args:
        origin: (3,) ray origin; dirs: (N, 3) unit directions; boxes: the boxes.

    Returns:
        t (N,) distance, inf where no box is hit; normal (N, 3) of the entry face; box index (N,), -1 where none.
    """
    n = len(dirs)
    t_best = np.full(n, np.inf, dtype=np.float32)
    normal = np.zeros((n, 3), dtype=np.float32)
    which = np.full(n, -1, dtype=np.int64)
    for i, bx in enumerate(boxes):
        rel = bx.center - origin
        radius = float(np.linalg.norm(bx.half))
        along = dirs @ rel.astype(np.float32)  # bounding-sphere test first: only those rays get the slab test
        cand = np.flatnonzero((along > 0) & (float(rel @ rel) - along * along <= radius * radius))
        if cand.size == 0:
            continue
        o = (-rel) @ bx.R  # the origin in box coordinates
        d = dirs[cand].astype(np.float64) @ bx.R
        d = np.where(np.abs(d) < 1e-12, 1e-12, d)
        t1, t2 = (-bx.half - o) / d, (bx.half - o) / d
        lo, hi = np.minimum(t1, t2), np.maximum(t1, t2)
        t_in, t_out = lo.max(axis=1), hi.min(axis=1)
        hit = (t_in <= t_out) & (t_in > 1e-4) & (t_in < t_best[cand])
        if not hit.any():
            continue
        rows = cand[hit]
        axis = lo[hit].argmax(axis=1)
        sign = -np.sign(d[hit, axis])
        normal[rows] = bx.R[:, axis].T * sign[:, None]
        t_best[rows] = t_in[hit]
        which[rows] = i
    return t_best, normal, which


class EgoRenderer:
    """Ray-casts one Scene from head poses: a pinhole camera on the head (see the module docstring)."""

    def __init__(self, scene: Scene, width: int, height: int, hfov_deg: float):
        self.scene = scene
        self.width, self.height = width, height
        self.K = intrinsics(width, height, hfov_deg)
        u, v = np.meshgrid(np.arange(width, dtype=np.float64), np.arange(height, dtype=np.float64))
        dirs_cam = np.stack([(u - self.K[0, 2]) / self.K[0, 0], (v - self.K[1, 2]) / self.K[1, 1],
                             np.ones_like(u)], -1).reshape(-1, 3)
        dirs_cam /= np.linalg.norm(dirs_cam, axis=1, keepdims=True)  # unit rays: t_hit is the distance
        self.unit_head = (dirs_cam @ R_HEAD_FROM_CAM.T).astype(np.float32)
        self.rc = o3d.t.geometry.RaycastingScene()
        for v_, f_, _ in scene.meshes:
            self.rc.add_triangles(o3d.core.Tensor(v_), o3d.core.Tensor(f_.astype(np.uint32)))
        mats = [m for _, _, m in scene.meshes] + list(scene.dynamic_materials)
        self.n_static = len(scene.meshes)
        self.texture = np.array([m.texture for m in mats], dtype=np.int64)
        self.tint = np.array([m.tint_rgb for m in mats], dtype=np.float32)
        self.mix = np.array([m.mix for m in mats], dtype=np.float32)
        self.scale = np.array([m.scale_m for m in mats], dtype=np.float32)
        self.sun = scene.sun_dir.astype(np.float32)

    def render(self, p_world: np.ndarray, R_world_from_head: np.ndarray, t_s: float) -> np.ndarray:
        """(H, W, 3) uint8 RGB seen from the head pose at time ``t_s`` (which poses the moving boxes)."""
        dirs = self.unit_head @ R_world_from_head.T.astype(np.float32)
        rays = np.empty((len(dirs), 6), dtype=np.float32)
        rays[:, :3] = p_world
        rays[:, 3:] = dirs
        out = self.rc.cast_rays(o3d.core.Tensor(rays), nthreads=1)
        t_hit = out["t_hit"].numpy()
        gid = out["geometry_ids"].numpy().astype(np.int64)
        normal = out["primitive_normals"].numpy()
        boxes = self.scene.boxes_at(t_s)
        if boxes:
            tb, nb, wb = _ray_boxes(np.asarray(p_world, dtype=np.float64), dirs, boxes)
            closer = tb < t_hit
            if closer.any():
                t_hit = np.where(closer, tb, t_hit)
                normal[closer] = nb[closer]
                gid[closer] = self.n_static + np.array([b.material for b in boxes])[wb[closer]]
        ok = np.isfinite(t_hit)
        if ok.all():  # indoors-like views: shade every ray, no masking
            d, th, n, g = dirs, t_hit, normal, gid
        else:
            d, th, n, g = dirs[ok], t_hit[ok], normal[ok], gid[ok]
        p = p_world.astype(np.float32) + d * th[:, None]
        flip = np.einsum("ij,ij->i", n, d) > 0
        n[flip] *= -1.0  # face the viewer
        albedo = sample_albedo(p, n, self.texture[g], self.tint[g], self.mix[g], self.scale[g])
        shade = AMBIENT + (1 - AMBIENT) * np.clip(n @ self.sun, 0.0, 1.0)
        lit = np.minimum(albedo * shade[:, None], 1.0)
        if ok.all():
            rgb = lit
        else:
            rgb = np.empty((len(dirs), 3), dtype=np.float32)
            up = np.clip(dirs[~ok, 2], 0.0, 1.0)[:, None]
            rgb[~ok] = SKY_HORIZON * (1 - up) + SKY_ZENITH * up
            rgb[ok] = lit
        return (rgb * 255 + 0.5).astype(np.uint8).reshape(self.height, self.width, 3)


# ---------------------------------------------------------------- one recording


def _rec_rng(seed: int, key: str) -> np.random.Generator:
    return np.random.default_rng([seed, zlib.crc32(key.encode("utf-8"))])


def make_trajectory(activity: str, s: Subject, rng: np.random.Generator, duration_s: float) -> Trajectory:
    q = _draw_params(activity, s, rng, duration_s)
    if activity in LOCOMOTION:
        origin, yaw0 = np.array([0.0, rng.uniform(-0.3, 0.3), 0.0]), rng.uniform(-0.04, 0.04)
    else:
        origin, yaw0 = np.array([rng.uniform(0.0, 4.0), 0.0, 0.0]), rng.uniform(-np.pi, np.pi)
    return Trajectory(activity, s, q, origin, float(yaw0))


def _imu_csv(t: np.ndarray, acc: np.ndarray, gyro: np.ndarray) -> str:
    buf = io.StringIO()
    buf.write("t,ax,ay,az,gx,gy,gz\n")
    np.savetxt(buf, np.column_stack([t, acc, gyro]), fmt=["%.5f"] + ["%.5f"] * 3 + ["%.6f"] * 3, delimiter=",")
    return buf.getvalue()


def render_recording(activity: str, s: Subject, take: int, cfg: EgocentricConfig
                     ) -> tuple[list[np.ndarray], str, dict[str, Any]]:
    """Frames, imu.csv text and ground-truth metadata of one recording (nothing written)."""
    rng = _rec_rng(cfg.seed, f"{s.id}/{activity}/{take}")
    traj = make_trajectory(activity, s, rng, cfg.duration_s)
    scene = build_scene(activity, s, traj.q, traj, rng, cfg.duration_s)
    renderer = EgoRenderer(scene, cfg.width, cfg.height, cfg.hfov_deg)
    n_frames = int(round(cfg.duration_s * cfg.fps))
    t_frames = np.arange(n_frames) / cfg.fps
    P, R = traj.pose(t_frames)
    frames = []
    for i, t in enumerate(t_frames):
        img = renderer.render(P[i], R[i], float(t))
        if cfg.pixel_noise_std > 0:
            noise = rng.standard_normal(img.shape, dtype=np.float32) * np.float32(cfg.pixel_noise_std)
            img = np.clip(img + noise + 0.5, 0, 255).astype(np.uint8)
        frames.append(img)

    offset = float(rng.uniform(0.0, cfg.max_time_offset_s))
    n_imu = int(round(cfg.duration_s * cfg.imu_rate_hz)) + 1
    t_imu = np.arange(n_imu) / cfg.imu_rate_hz
    acc, gyro = traj.imu(t_imu - offset)  # the sample stamped t measured the head at video time t - offset
    acc_bias = rng.normal(0.0, cfg.acc_bias_std, 3)
    gyro_bias = rng.normal(0.0, cfg.gyro_bias_std, 3)
    acc = acc + acc_bias + rng.normal(0.0, cfg.acc_noise_std, acc.shape)
    gyro = gyro + gyro_bias + rng.normal(0.0, cfg.gyro_noise_std, gyro.shape)
    q = traj.q
    meta = {
        "activity": activity, "subject": s.id, "take": take, "time_offset_s": offset,
        "acc_bias": acc_bias.tolist(), "gyro_bias": gyro_bias.tolist(), "frames": n_frames, "fps": cfg.fps,
        "imu_samples": n_imu, "imu_rate_hz": cfg.imu_rate_hz, "origin": traj.origin.tolist(), "yaw0": traj.yaw0,
        "motion": {k: float(v) for k, v in q.items() if np.ndim(v) == 0},
        "R_head_from_cam": R_HEAD_FROM_CAM.tolist(), "K": renderer.K.tolist(),
    }
    return frames, _imu_csv(t_imu, acc, gyro), meta


@dataclass(frozen=True)
class _Job:
    root: str
    subject: Subject
    activity: str
    take: int
    cfg: EgocentricConfig

    @property
    def rel_dir(self) -> str:
        return f"{self.subject.id}/{self.activity}_{self.take}"


def _write_recording(job: _Job) -> float:
    """Render and write one recording into a temporary folder, then rename it into place; returns seconds."""
    from modalities.video.io import write_video  # noqa: PLC0415

    t0 = time.perf_counter()
    final = Path(job.root) / job.rel_dir
    tmp = final.parent / f".{final.name}.tmp-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    try:
        frames, imu_text, meta = render_recording(job.activity, job.subject, job.take, job.cfg)
        write_video(tmp / "video.mp4", frames, job.cfg.fps, crf=job.cfg.crf)
        atomic_write_text(tmp / "imu.csv", imu_text)
        atomic_write_json(tmp / "meta.json", meta)
        os.replace(tmp, final)
    except BaseException:
        with contextlib.suppress(OSError):
            shutil.rmtree(tmp)
        raise
    return time.perf_counter() - t0


def _done(root: Path, job: _Job) -> bool:
    d = root / job.rel_dir
    return (d / "imu.csv").is_file() and (d / "video.mp4").is_file()


def generate_egocentric(out_dir: str | Path, cfg: EgocentricConfig | None = None,
                        progress: Callable[[int, int], None] | None = None, workers: int = 1) -> dict[str, Any]:
    """Write (or finish writing) an egocentric dataset under ``out_dir``; returns the dataset.json content.

    ``progress(done, total)`` is called after every recording. ``workers`` > 1 renders in that
    many processes (the files do not depend on it). Raises ValueError when ``out_dir`` holds a
    dataset generated with another config.
    """
    cfg = cfg or EgocentricConfig()
    root = Path(out_dir)
    meta_path = root / "dataset.json"
    if meta_path.is_file():
        previous = json.loads(meta_path.read_text())
        if previous.get("config") != cfg.to_dict():
            raise ValueError(f"{meta_path}: this folder was generated with another config; "
                             "generate into a new folder (or delete this one)")
    subjects = make_subjects(cfg.subjects, cfg.seed)
    meta: dict[str, Any] = {
        "generator": "modalities.synthetic.egocentric", "generator_version": GENERATOR_VERSION, "kind": "egocentric",
        "config": cfg.to_dict(), "activities": list(cfg.activities),
        "subjects": {s.id: {**asdict(s), "eye_height_m": s.eye_height_m,
                            "seated_eye_height_m": s.seated_eye_height_m} for s in subjects},
        "imu": {"columns": ["t", "ax", "ay", "az", "gx", "gy", "gz"], "acc_unit": "m/s^2", "gyro_unit": "rad/s",
                "frame": "head: x forward, y left, z up", "rate_hz": cfg.imu_rate_hz},
        "video": {"codec": "libx264", "fps": cfg.fps, "width": cfg.width, "height": cfg.height,
                  "hfov_deg": cfg.hfov_deg, "R_head_from_cam": R_HEAD_FROM_CAM.tolist()},
        "complete": False,
    }
    root.mkdir(parents=True, exist_ok=True)
    atomic_write_json(meta_path, meta)
    jobs = [_Job(str(root), s, a, k, cfg) for s in subjects for a in cfg.activities
            for k in range(cfg.recordings_per_activity)]
    todo = [j for j in jobs if not _done(root, j)]
    done = len(jobs) - len(todo)
    if progress:
        progress(done, len(jobs))
    seconds: list[float] = []
    if workers > 1 and len(todo) > 1:
        with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as ex:
            for sec in ex.map(_write_recording, todo):
                seconds.append(sec)
                done += 1
                if progress:
                    progress(done, len(jobs))
    else:
        for job in todo:
            seconds.append(_write_recording(job))
            done += 1
            if progress:
                progress(done, len(jobs))
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["recording", "label", "subject", "video"])
    for j in jobs:
        w.writerow([f"{j.rel_dir}/imu.csv", j.activity, j.subject.id, f"{j.rel_dir}/video.mp4"])
    atomic_write_text(root / "labels.csv", buf.getvalue())
    meta.update(complete=True, counts={"recordings": len(jobs), "subjects": len(subjects),
                                       "per_activity": cfg.subjects * cfg.recordings_per_activity})
    atomic_write_json(meta_path, meta)
    return {**meta, "written_now": len(todo), "seconds_per_recording": float(np.mean(seconds)) if seconds else 0.0}


def main(argv: list[str] | None = None) -> None:
    """``python -m modalities.synthetic.egocentric ROOT [--subjects N] [--recordings-per-activity K] ...``"""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("root", type=Path)
    ap.add_argument("--subjects", type=int, default=EgocentricConfig.subjects)
    ap.add_argument("--recordings-per-activity", type=int, default=EgocentricConfig.recordings_per_activity)
    ap.add_argument("--duration-s", type=float, default=EgocentricConfig.duration_s)
    ap.add_argument("--fps", type=float, default=EgocentricConfig.fps)
    ap.add_argument("--width", type=int, default=EgocentricConfig.width)
    ap.add_argument("--height", type=int, default=EgocentricConfig.height)
    ap.add_argument("--imu-rate-hz", type=float, default=EgocentricConfig.imu_rate_hz)
    ap.add_argument("--activities", nargs="+", default=list(ACTIVITIES))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workers", type=int, default=1)
    a = ap.parse_args(argv)
    cfg = EgocentricConfig(subjects=a.subjects, recordings_per_activity=a.recordings_per_activity,
                           duration_s=a.duration_s, fps=a.fps, width=a.width, height=a.height,
                           imu_rate_hz=a.imu_rate_hz, activities=tuple(a.activities), seed=a.seed)
    t0 = time.perf_counter()
    meta = generate_egocentric(a.root, cfg, workers=a.workers)
    print(json.dumps({"root": str(a.root), "counts": meta["counts"], "written_now": meta["written_now"],
                      "seconds": round(time.perf_counter() - t0, 2),
                      "seconds_per_recording": round(meta["seconds_per_recording"], 3)}))


if __name__ == "__main__":
    main()
