"""The video-teacher stage's per-task work: pooled clip features, the on-disk cache, counted bad videos."""

import numpy as np

from modalities.video.io import write_video
from pipelines.comodo.config import VideoTeacherConfig
from pipelines.comodo.teacher import FrameTeacher, _embed_chunk


def _video(path, seconds: float, fps: int = 4, moving: bool = True):
    rng = np.random.default_rng(0)
    base = rng.integers(0, 255, size=(48, 128, 3), dtype=np.uint8)
    frames = [np.roll(base, 8 * i if moving else 0, axis=1)[:, :64] for i in range(int(seconds * fps))]
    write_video(path, frames, fps)


def test_embed_chunk_features_cache_and_bad_videos(tmp_path):
    _video(tmp_path / "ok.mp4", 10)
    _video(tmp_path / "still.mp4", 10, moving=False)
    _video(tmp_path / "short.mp4", 3)
    (tmp_path / "garbage.mp4").write_bytes(b"not a video at all")
    cfg = VideoTeacherConfig(dataset="d", frames_per_clip=3, frame_size=(64, 48)).model_dump(mode="json")
    jobs = [(n, str(tmp_path / f"{n}.mp4"), str(tmp_path / "cache" / f"{n}.npz"))
            for n in ("ok", "still", "short", "garbage")]
    out = {r["name"]: r for r in _embed_chunk(jobs, cfg)}
    assert out["ok"]["starts"].tolist() == [0.0, 5.0] and out["ok"]["features"].shape == (2, 2 * 1280)
    f = out["ok"]["features"]
    assert np.isfinite(f).all() and not np.allclose(f[0], f[1])  # the two clips see different frames
    # mean_std: the std half is ~0 for a still camera and not for a moving one
    assert np.abs(out["still"]["features"][:, 1280:]).max() < 1e-3 < np.abs(f[:, 1280:]).max()
    assert "short.mp4" in out["short"]["error"] and "shorter than one 5 s clip" in out["short"]["error"]
    assert "garbage.mp4" in out["garbage"]["error"]
    assert not (tmp_path / "cache" / "garbage.npz").exists()
    again = {r["name"]: r for r in _embed_chunk(jobs[:1], cfg)}  # read back from the cache, not recomputed
    assert again["ok"]["seconds"] == 0.0 and np.array_equal(again["ok"]["features"], f)


def test_mean_pooling_is_the_frame_average():
    teacher = FrameTeacher("efficientnet_lite0", None, "mean")
    clips = np.random.default_rng(1).integers(0, 255, size=(1, 3, 32, 32, 3), dtype=np.uint8)
    pooled = teacher(clips)
    per_frame = np.concatenate([teacher(clips[:, i:i + 1]) for i in range(3)])
    assert pooled.shape == (1, 1280) and np.allclose(pooled[0], per_frame.mean(0), atol=1e-5)


def test_std_absdiff_pooling_sees_motion_only():
    import torch

    from pipelines.comodo.teacher import pool_frames

    frames = torch.tensor([[[1.0, 5.0], [3.0, 5.0], [2.0, 5.0]]])  # (B=1, T=3, F=2); feature 1 never changes
    out = pool_frames(frames, "std_absdiff")
    # std over time (population) of [1, 3, 2] and of [5, 5, 5]; mean |diff| of [2, -1] and of [0, 0]
    assert torch.allclose(out, torch.tensor([[float(np.std([1, 3, 2])), 0.0, 1.5, 0.0]]))
    assert torch.allclose(pool_frames(frames, "mean"), torch.tensor([[2.0, 5.0]]))
    assert pool_frames(frames, "mean_std").shape == (1, 4)


def test_spatial_grid_sees_a_translated_view_that_the_global_average_hardly_does():
    rng = np.random.default_rng(2)
    base = rng.integers(0, 255, size=(64, 256, 3), dtype=np.uint8)
    clips = np.stack([base[:, 0:96], base[:, 48:144]])[:, None]  # two frames, the second a view 48 px to the right
    clips = np.concatenate([clips, clips], axis=1)  # (2 clips, 2 frames, 64, 96, 3)
    level = -2
    glob = FrameTeacher("efficientnet_lite0", None, "mean", feature_level=level)(clips)
    grid = FrameTeacher("efficientnet_lite0", None, "mean", feature_level=level, spatial_grid=2)(clips)
    assert glob.shape == (2, 112) and grid.shape == (2, 4 * 112)

    def rel(a):
        return np.linalg.norm(a[0] - a[1]) / np.linalg.norm(a[0])

    assert rel(grid) > 1.3 * rel(glob)  # cells move with the view; the global mean mostly does not


def test_teacher_options_are_validated():
    import pytest

    with pytest.raises(ValueError, match="frames_per_clip >= 2"):
        VideoTeacherConfig(dataset="d", pooling="std_absdiff", frames_per_clip=1)
    with pytest.raises(ValueError, match="image backbones"):
        VideoTeacherConfig(dataset="d", backbone="torchvision_video:r3d_18", weights="w.pt", spatial_grid=2)
    with pytest.raises(ValueError, match="has 4 levels"):
        FrameTeacher("efficientnet_lite0", None, "mean", feature_level=4)
