"""Egocentric manifests, the split by subject and aligned IMU windows (pipelines.comodo.data)."""

import numpy as np
import pytest

from modalities.errors import DataError
from modalities.imu.spec import ImuWindowSpec
from pipelines.comodo.data import clip_key, read_recordings, read_windows, split_by_subject
from pipelines.comodo.teacher import clip_starts, project


def _imu_csv(path, seconds: float, rate: float = 100.0, gap: tuple[float, float] | None = None, freq: float = 1.0):
    t = np.arange(0, seconds, 1 / rate)
    if gap:
        t = t[(t < gap[0]) | (t > gap[1])]
    data = np.stack([np.sin(2 * np.pi * freq * t)] * 3 + [np.cos(2 * np.pi * freq * t)] * 3, 1)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        f.write("t,ax,ay,az,gx,gy,gz\n")
        for ti, row in zip(t, data):
            f.write(f"{ti:.4f}," + ",".join(f"{v:.5f}" for v in row) + "\n")


def _manifest(root, rows, header="recording,label,subject,video"):
    (root / "labels.csv").write_text(header + "\n" + "\n".join(rows) + "\n")


def test_manifest_and_subject_split(tmp_path):
    _manifest(tmp_path, ["a/imu.csv,walk,s1,a/video.mp4", "b/imu.csv,sit,s2,", "c/imu.csv,walk,s3,",
                         "d/imu.csv,sit,s3,"])
    recs = read_recordings(tmp_path)
    assert [r.subject for r in recs] == ["s1", "s2", "s3", "s3"]
    assert recs[0].video == tmp_path / "a/video.mp4" and recs[1].video is None
    train, test = split_by_subject(recs, None, 1, tmp_path)
    assert {r.subject for r in test} == {"s3"} and {r.subject for r in train} == {"s1", "s2"}
    train, test = split_by_subject(recs, ["s1"], 1, tmp_path)
    assert [r.name for r in test] == ["a/imu.csv"]
    with pytest.raises(DataError, match="do not occur"):
        split_by_subject(recs, ["s9"], 1, tmp_path)
    with pytest.raises(DataError, match="leaves no training subject"):
        split_by_subject(recs, None, 3, tmp_path)


def test_manifest_without_subject_column_makes_each_recording_its_own_subject(tmp_path):
    _manifest(tmp_path, ["a.csv,walk", "b.csv,sit"], header="recording,label")
    assert [r.subject for r in read_recordings(tmp_path)] == ["a.csv", "b.csv"]


@pytest.mark.parametrize("header, rows, message", [
    ("recording,subject", ["a.csv,s1"], r"missing column\(s\) \['label'\]"),
    ("recording,label", ["a.csv,walk", "a.csv,sit"], "row 3: recording 'a.csv' is listed twice"),
    ("recording,label", ["a.csv,"], "row 2: empty recording or label"),
    ("recording,label", [], "lists no recording"),
])
def test_bad_manifests_name_file_and_row(tmp_path, header, rows, message):
    _manifest(tmp_path, rows, header=header)
    with pytest.raises(DataError, match=message) as err:
        read_recordings(tmp_path)
    assert str(tmp_path / "labels.csv") in str(err.value)


def test_read_windows_counts_skips_and_keeps_alignment(tmp_path):
    _imu_csv(tmp_path / "ok.csv", 10.5, freq=1.0)  # windows at 0 and 5
    _imu_csv(tmp_path / "gap.csv", 10.5, gap=(6.0, 7.0))  # the second window crosses a 1 s gap
    (tmp_path / "bad.csv").write_text("t,ax,ay,az,gx,gy,gz\n0,1,2,3,4,5,nan\n0.01,1,2,3,4,5,6\n")
    _manifest(tmp_path, ["ok.csv,walk,s1,", "gap.csv,sit,s1,", "bad.csv,walk,s2,"])
    recs = read_recordings(tmp_path)
    spec = ImuWindowSpec(rate_hz=200.0, window_s=5.0)
    ws = read_windows(recs, spec)
    assert ws.windows.shape == (3, 6, 1000)
    assert ws.recording.tolist() == [0, 0, 1] and ws.starts.tolist() == [0.0, 5.0, 0.0]
    assert ws.skipped_windows == 1
    assert len(ws.skipped_recordings) == 1 and "bad.csv" in ws.skipped_recordings[0]
    # window 2 of ok.csv starts at t = 5 s: ax = sin(2 pi t) on the 200 Hz grid
    t = 5.0 + np.arange(1000) / 200.0
    assert np.allclose(ws.windows[1, 0], np.sin(2 * np.pi * t), atol=2e-3)
    # only the requested starts (the teacher's clips), an unknown start is a counted skip
    ws = read_windows(recs[:1], spec, {"ok.csv": [5.0, 15.0]})
    assert ws.starts.tolist() == [5.0] and ws.skipped_windows == 1
    assert clip_key("ok.csv", 5.0) == "ok.csv@5000"


def test_clip_starts_cover_whole_clips_only():
    assert clip_starts(10.0, 10, 5.0) == [0.0, 5.0]
    assert clip_starts(9.97, 10, 5.0) == [0.0, 5.0]  # within half a frame of the end
    assert clip_starts(9.8, 10, 5.0) == [0.0]
    assert clip_starts(4.0, 10, 5.0) == []


@pytest.mark.parametrize("method", ["random_mlp", "pca", "none"])
def test_projection_is_unit_norm_and_seeded(method):
    rng = np.random.default_rng(0)
    feats = rng.normal(size=(40, 32)).astype(np.float32) * rng.uniform(0.1, 100, size=32)
    a, info = project(feats, method, 16, seed=3)
    b, _ = project(feats, method, 16, seed=3)
    assert np.allclose(np.linalg.norm(a, axis=1), 1, atol=1e-5) and np.array_equal(a, b)
    assert a.shape == (40, 32 if method == "none" else 16) and info["out_dim"] == a.shape[1]
    assert np.abs(a @ a.T - np.eye(40)).max() > 0.05  # not a degenerate (all-equal / all-orthogonal) output
    if method == "random_mlp":
        c, _ = project(feats, method, 16, seed=4)
        assert not np.allclose(a, c)  # the seed picks the random projection
