"""The synthetic egocentric generator: layout, determinism, IMU physics, and video that shows the activity."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from modalities.synthetic.egocentric import (
    EgocentricConfig,
    Trajectory,
    generate_egocentric,
    make_subjects,
)
from modalities.video.io import read_clip, video_info

ACTS = ("standing", "walking", "turning_left", "stairs_up", "typing")
TINY = dict(subjects=2, recordings_per_activity=1, duration_s=4.0, fps=10.0, width=64, height=48,
            imu_rate_hz=100.0, activities=ACTS, seed=5)
G = 9.81


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("ego")
    calls = []
    meta = generate_egocentric(root, EgocentricConfig(**TINY), progress=lambda d, t: calls.append((d, t)))
    return root, meta, calls


def _imu(root, rel):
    lines = (root / rel).read_text().splitlines()
    assert lines[0] == "t,ax,ay,az,gx,gy,gz"
    a = np.loadtxt(lines[1:], delimiter=",")
    return a[:, 0], a[:, 1:4], a[:, 4:7]


def _meta(root, subject, activity):
    return json.loads((root / subject / f"{activity}_0" / "meta.json").read_text())


def _frames(root, subject, activity):
    return read_clip(root / subject / f"{activity}_0" / "video.mp4", 0.0, TINY["duration_s"], 40).astype(np.float32)


def test_layout_labels_and_progress(dataset):
    root, meta, calls = dataset
    with open(root / "labels.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["recording", "label", "subject", "video"]
    assert len(rows) == 2 * len(ACTS)
    assert {(r["subject"], r["label"]) for r in rows} == {(s, a) for s in ("s00", "s01") for a in ACTS}
    for r in rows:
        assert r["recording"].startswith(r["subject"] + "/") and (root / r["recording"]).is_file()
        assert r["video"].startswith(r["subject"] + "/") and (root / r["video"]).is_file()
    ds = json.loads((root / "dataset.json").read_text())
    assert ds["complete"] and ds["kind"] == "egocentric" and ds["config"] == EgocentricConfig(**TINY).to_dict()
    assert set(ds["subjects"]) == {"s00", "s01"} and ds["activities"] == list(ACTS)
    assert calls[0] == (0, 10) and calls[-1] == (10, 10) and [d for d, _ in calls] == sorted(d for d, _ in calls)
    assert not [p for p in root.rglob(".*")]  # no temporary folders left behind
    t, acc, gyro = _imu(root, rows[0]["recording"])
    assert len(t) == 401 and acc.shape == gyro.shape == (401, 3)
    np.testing.assert_allclose(t, np.arange(401) / 100.0)


def test_video_decodes_with_the_expected_frames(dataset):
    root = dataset[0]
    info = video_info(root / "s01" / "walking_0" / "video.mp4")
    assert (info.frames, info.width, info.height) == (40, 64, 48)
    assert info.fps == pytest.approx(10.0) and info.duration_s == pytest.approx(4.0)
    assert read_clip(root / "s01" / "walking_0" / "video.mp4", 2.0, 2.0, 8).shape == (8, 48, 64, 3)


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path):
    cfg = dict(TINY, subjects=1, activities=("walking",), duration_s=1.0)
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    generate_egocentric(a, EgocentricConfig(**cfg))
    generate_egocentric(b, EgocentricConfig(**cfg))
    generate_egocentric(c, EgocentricConfig(**dict(cfg, seed=6)))
    for name in ("imu.csv", "video.mp4", "meta.json"):
        assert (a / "s00/walking_0" / name).read_bytes() == (b / "s00/walking_0" / name).read_bytes()
    assert (a / "s00/walking_0/imu.csv").read_bytes() != (c / "s00/walking_0/imu.csv").read_bytes()


@pytest.mark.slow  # spawns two processes that import open3d: ~5-12 s on a busy 2-core machine
def test_workers_do_not_change_the_files(tmp_path):
    cfg = EgocentricConfig(**dict(TINY, subjects=1, activities=("standing", "waving"), duration_s=0.5))
    generate_egocentric(tmp_path / "one", cfg, workers=1)
    generate_egocentric(tmp_path / "two", cfg, workers=2)
    for rel in ("s00/standing_0/imu.csv", "s00/waving_0/video.mp4", "labels.csv"):
        assert (tmp_path / "one" / rel).read_bytes() == (tmp_path / "two" / rel).read_bytes()


def test_rerun_keeps_finished_recordings_and_refuses_another_config(dataset):
    root = dataset[0]
    before = (root / "s00/walking_0/imu.csv").stat().st_mtime_ns
    again = generate_egocentric(root, EgocentricConfig(**TINY))
    assert again["written_now"] == 0
    assert (root / "s00/walking_0/imu.csv").stat().st_mtime_ns == before
    with pytest.raises(ValueError, match="another config"):
        generate_egocentric(root, EgocentricConfig(**dict(TINY, seed=9)))


def test_standing_reads_gravity_and_no_rotation(dataset):
    root = dataset[0]
    for s in ("s00", "s01"):
        _, acc, gyro = _imu(root, f"{s}/standing_0/imu.csv")
        assert np.linalg.norm(acc, axis=1).mean() == pytest.approx(G, abs=0.15)
        assert acc[:, 2].mean() > 9.3  # z up: a resting head reads +g on z (pitch habit is small)
        assert np.abs(gyro.mean(0)).max() < 0.03 and gyro.std(0).max() < 0.02


def test_turning_left_has_the_expected_positive_yaw_rate(dataset):
    root = dataset[0]
    for s in ("s00", "s01"):
        _, _, gyro = _imu(root, f"{s}/turning_left_0/imu.csv")
        m = _meta(root, s, "turning_left")
        pitch = json.loads((root / "dataset.json").read_text())["subjects"][s]["head_pitch_rad"]
        expected = m["motion"]["w"] * np.cos(pitch)  # body z picks up cos(pitch) of the world yaw rate
        assert 0.3 < expected < 1.3
        assert gyro[:, 2].mean() == pytest.approx(expected, rel=0.12)


def test_walking_bobs_at_the_subjects_step_frequency(dataset):
    root = dataset[0]
    for s in ("s00", "s01"):
        t, acc, _ = _imu(root, f"{s}/walking_0/imu.csv")
        f_step = _meta(root, s, "walking")["motion"]["f"]
        subj = json.loads((root / "dataset.json").read_text())["subjects"][s]
        assert f_step == pytest.approx(subj["step_hz"], rel=0.06)
        z = acc[:, 2] - acc[:, 2].mean()

        def amplitude(f):  # least-squares sinusoid amplitude at f
            X = np.column_stack([np.sin(2 * np.pi * f * t), np.cos(2 * np.pi * f * t)])
            return np.linalg.norm(np.linalg.lstsq(X, z, rcond=None)[0])

        at_step = amplitude(f_step)
        assert at_step > 1.0  # m/s^2: bob (2 pi f)^2
        for f in (0.5 * f_step, 0.7 * f_step, 1.4 * f_step, 2.5 * f_step):
            assert at_step > 4 * amplitude(f), f


def test_imu_matches_closed_form_rotation():
    """Oracle: a head pitched by theta turning with yaw(t) reads gyro = Ry(theta)^T (0, 0, yaw')
    and acc = Ry(theta)^T (0, 0, g)."""
    s = make_subjects(1, 0)[0]
    q = dict(phi=0.0, yaw_amp=0.8, f1=0.25, pitch_amp=0.0, f2=0.1, drift_amp=np.zeros((6, 3)),
             drift_hz=np.ones((6, 3)), drift_phase=np.zeros((6, 3)))
    traj = Trajectory("looking_around", s, q, np.array([1.0, 2.0, 0.0]), 0.3)
    t = np.linspace(0.0, 4.0, 101)
    acc, gyro = traj.imu(t)
    w = 2 * np.pi * 0.25
    yaw_rate = 0.8 * (w * np.cos(w * t) + 0.35 * 1.7 * w * np.cos(1.7 * w * t))
    th = s.head_pitch_rad
    np.testing.assert_allclose(gyro, np.column_stack([-np.sin(th) * yaw_rate, 0 * t, np.cos(th) * yaw_rate]), atol=1e-5)
    np.testing.assert_allclose(acc, np.tile([-G * np.sin(th), 0.0, G * np.cos(th)], (len(t), 1)), atol=1e-4)
    p, R = traj.pose(t)
    np.testing.assert_allclose(p[:, 2], s.eye_height_m)
    np.testing.assert_allclose(np.einsum("nij,nkj->nik", R, R), np.tile(np.eye(3), (len(t), 1, 1)), atol=1e-12)


def test_activities_look_different_on_video(dataset):
    root = dataset[0]
    for s in ("s00", "s01"):
        motion = {a: np.abs(np.diff(_frames(root, s, a), axis=0)).mean() for a in ACTS}
        assert motion["turning_left"] > 3 * motion["standing"], motion
        assert motion["walking"] > 2 * motion["standing"], motion
        # typing looks down at a table: no sky in view; standing looks ahead: sky or far walls in the top rows
        typing, standing = _frames(root, s, "typing"), _frames(root, s, "standing")
        assert np.abs(typing.mean(0) - standing.mean(0)).mean() > 15


def test_config_validation_names_the_field():
    with pytest.raises(ValueError, match="'width'"):
        EgocentricConfig(width=127)
    with pytest.raises(ValueError, match="'activities'"):
        EgocentricConfig(activities=("walking", "flying"))
    cfg = EgocentricConfig(**TINY)
    assert EgocentricConfig.from_dict(cfg.to_dict()) == cfg


def test_ray_box_intersection_oracle():
    from modalities.synthetic.egocentric import _axis_box, _ray_boxes

    dirs = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [-1.0, 0.0, 0.0]], np.float32)
    t, n, which = _ray_boxes(np.zeros(3), dirs, [_axis_box((2.0, 0.0, 0.0), (0.5, 0.5, 0.5), 0)])
    assert t[0] == pytest.approx(1.5) and np.isinf(t[1:]).all() and which.tolist() == [0, -1, -1]
    np.testing.assert_allclose(n[0], [-1.0, 0.0, 0.0], atol=1e-6)
    t, n, _ = _ray_boxes(np.zeros(3), dirs[:1], [_axis_box((2.0, 0.0, 0.0), (0.5, 0.5, 0.5), 0, yaw=np.pi / 4)])
    assert t[0] == pytest.approx(2.0 - 0.5 * np.sqrt(2.0), abs=1e-5)  # a corner faces the ray
    near, far = _axis_box((1.0, 0.0, 0.0), (0.1, 0.1, 0.1), 0), _axis_box((3.0, 0.0, 0.0), (0.1, 0.1, 0.1), 1)
    t, _, which = _ray_boxes(np.zeros(3), dirs[:1], [far, near])
    assert t[0] == pytest.approx(0.9) and which[0] == 1  # the nearer box wins whatever the order


def test_hands_are_drawn_in_hand_activities():
    from modalities.synthetic.egocentric import EgoRenderer, build_scene, make_trajectory

    s = make_subjects(1, 0)[0]
    for activity in ("waving", "typing", "stirring"):
        rng = np.random.default_rng(1)
        traj = make_trajectory(activity, s, rng, 2.0)
        scene = build_scene(activity, s, traj.q, traj, rng, 2.0)
        p, R = traj.pose(np.array([0.5]))
        with_hands = EgoRenderer(scene, 64, 48, 90.0).render(p[0], R[0], 0.5)
        scene.boxes_at = lambda t: []
        without = EgoRenderer(scene, 64, 48, 90.0).render(p[0], R[0], 0.5)
        changed = np.any(with_hands != without, axis=2).mean()
        assert 0.03 < changed < 0.6, (activity, changed)
