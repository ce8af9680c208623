"""modalities.video.io: frames come back at the right timestamps, and bad files fail with the path."""

from __future__ import annotations

import wave

import numpy as np
import pytest

from modalities.errors import DataError, MissingDataError
from modalities.video.io import clip_times, read_clip, read_clips, video_info, write_video

FPS, N, W, H = 10, 30, 64, 48
STEP = 8  # red level = STEP * frame index: survives H.264 (errors are ~3 levels)


def _frame(i: int) -> np.ndarray:
    img = np.zeros((H, W, 3), np.uint8)
    img[..., 0] = STEP * i
    img[..., 1] = 255 - STEP * i
    img[..., 2] = 200 if i % 2 else 40
    return img


def _index(clip: np.ndarray) -> np.ndarray:
    """Frame index encoded in each frame of a (n, H, W, 3) clip."""
    return np.round(clip[..., 0].reshape(len(clip), -1).mean(1) / STEP).astype(int)


def _nearest(t: np.ndarray, fps: float, n: int) -> np.ndarray:
    """Oracle: the frame k (shown at k / fps) nearest to each time, ties to the earlier frame."""
    k = np.arange(n) / fps
    d = np.abs(t[:, None] - k[None, :])
    return np.argmin(d + 1e-9 * np.arange(n)[None, :], axis=1)


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    path = tmp_path_factory.mktemp("video") / "clip.mp4"
    assert write_video(path, (_frame(i) for i in range(N)), FPS) == N
    return path


def test_video_info(video):
    info = video_info(video)
    assert (info.frames, info.width, info.height) == (N, W, H)
    assert info.fps == pytest.approx(FPS)
    assert info.duration_s == pytest.approx(N / FPS)


def test_clip_times_are_slot_centres():
    np.testing.assert_allclose(clip_times(1.0, 1.0, 4), [1.125, 1.375, 1.625, 1.875])


def test_read_clip_returns_frames_nearest_to_the_slot_centres(video):
    clip = read_clip(video, 1.0, 1.0, 4)
    assert clip.shape == (4, H, W, 3) and clip.dtype == np.uint8
    assert _index(clip).tolist() == [11, 14, 16, 19]
    # colours survive, not only the red code
    np.testing.assert_allclose(clip[0].reshape(-1, 3).mean(0), _frame(11)[0, 0], atol=4)


@pytest.mark.parametrize("start,dur,n", [(0.0, 3.0, 30), (0.0, 3.0, 7), (0.37, 1.9, 5), (2.0, 1.0, 16), (0.05, 0.1, 1)])
def test_read_clip_matches_the_nearest_frame_oracle(video, start, dur, n):
    got = _index(read_clip(video, start, dur, n))
    want = _nearest(clip_times(start, dur, n), FPS, N)
    assert got.tolist() == want.tolist()


def test_read_clip_resizes(video):
    clip = read_clip(video, 0.5, 1.0, 3, size=(32, 24))
    assert clip.shape == (3, 24, 32, 3)
    assert _index(clip).tolist() == [7, 10, 13]  # t = 0.667, 1.0, 1.333 s


def test_read_clips_equals_read_clip_per_start_in_the_given_order(video):
    starts = [2.0, 0.0, 1.0, 0.5]
    clips = read_clips(video, starts, 1.0, 5)
    assert len(clips) == len(starts)
    for s, c in zip(starts, clips):
        np.testing.assert_array_equal(c, read_clip(video, s, 1.0, 5))
    assert read_clips(video, [], 1.0, 5) == []


def test_too_short_raises_naming_the_file(video):
    read_clip(video, 2.0, 1.04, 2)  # within half a frame of the end: allowed
    with pytest.raises(DataError, match=str(video)) as e:
        read_clip(video, 2.0, 1.1, 2)
    assert "3.100 s" in str(e.value)


def test_garbage_and_missing_and_audio_only_files(tmp_path, video):
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"this is not a video" * 100)
    with pytest.raises(DataError, match=str(junk)):
        read_clip(junk, 0.0, 1.0, 2)
    with pytest.raises(DataError, match=str(junk)):
        video_info(junk)
    with pytest.raises(MissingDataError):
        video_info(tmp_path / "absent.mp4")
    wav = tmp_path / "sound.wav"
    with wave.open(str(wav), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(np.zeros(8000, np.int16).tobytes())
    with pytest.raises(DataError, match="no video stream"):
        read_clip(wav, 0.0, 0.5, 2)
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(video.read_bytes()[: video.stat().st_size // 2])
    with pytest.raises(DataError, match=str(cut)):
        read_clip(cut, 0.0, 3.0, 4)


def test_write_video_is_reproducible_and_rejects_odd_sizes(tmp_path):
    a, b = tmp_path / "a.mp4", tmp_path / "b.mp4"
    write_video(a, [_frame(i) for i in range(5)], FPS)
    write_video(b, [_frame(i) for i in range(5)], FPS)
    assert a.read_bytes() == b.read_bytes()
    with pytest.raises(ValueError, match="even"):
        write_video(tmp_path / "odd.mp4", [np.zeros((5, 8, 3), np.uint8)], FPS)
    assert not (tmp_path / "odd.mp4").exists()
