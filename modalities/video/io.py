"""Read frames of a video at exact timestamps, and write one (PyAV / FFmpeg).

Times are seconds on the *video clock*: the first decoded frame is at t = 0 (a stream whose
first pts is not 0 is shifted so that it is), a frame's time is ``(pts - first_pts) *
time_base``. A clip of ``num_frames`` frames over ``[start_s, start_s + duration_s)`` takes
the frames nearest to the centres of ``num_frames`` equal slots::

    t_i = start_s + (i + 0.5) * duration_s / num_frames,   i = 0 .. num_frames - 1

    slots:  |--t_0--|--t_1--|--t_2--| ...      (ties between two frames go to the earlier one)
    frames: 0   1   2   3   4   5   6 ...      (decoded in order after one seek)

This is the uniform clip sampling of video teachers (e.g. VideoMAE / the COMODO teacher stage,
Chen et al. 2025, "COMODO: Cross-Modal Video-to-IMU Distillation for Efficient Egocentric
Human Activity Recognition", https://github.com/Breezelled/COMODO, which samples a fixed number
of frames per IMU-aligned window); the code here is our own.

The video is taken to cover ``[0, duration_s)`` with ``duration_s`` from the stream (or
``frames / fps``); a clip may end up to half a frame past it. Anything that cannot be opened
or decoded, has no video stream, or is too short raises :class:`modalities.errors.DataError`
naming the file.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np

from modalities.errors import DataError, require_file
from modalities.fileio import atomic_open


@dataclass(frozen=True)
class VideoInfo:
    fps: float  # average frame rate of the video stream
    frames: int  # number of frames (from the container, else counted by demuxing)
    duration_s: float  # the video covers [0, duration_s) on its own clock
    width: int
    height: int


def _av():
    import av  # noqa: PLC0415  (PyAV is heavy; only the video readers need it)

    return av


def _open(path: Path):
    av = _av()
    try:
        container = av.open(str(path), mode="r")
    except av.FFmpegError as e:
        raise DataError(path, f"cannot be opened as a video ({e})") from e
    if not container.streams.video:
        container.close()
        raise DataError(path, "has no video stream")
    return container


def _info(path: Path, container) -> VideoInfo:
    stream = container.streams.video[0]
    rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    if not rate or rate <= 0:
        raise DataError(path, "video stream has no frame rate")
    fps = float(rate)
    frames = int(stream.frames or 0)
    if frames <= 0:  # not in the header (e.g. Matroska): count the packets, no decoding
        frames = sum(1 for p in container.demux(stream) if p.size > 0)
        container.seek(0)
    if stream.duration and stream.time_base:
        duration_s = float(stream.duration * stream.time_base)
    else:
        duration_s = frames / fps
    width, height = stream.codec_context.width, stream.codec_context.height
    if frames <= 0 or width <= 0 or height <= 0:
        raise DataError(path, f"video stream is empty ({frames} frames, {width}x{height})")
    return VideoInfo(fps=fps, frames=frames, duration_s=duration_s, width=int(width), height=int(height))


def video_info(path: str | Path) -> VideoInfo:
    """Frame rate, frame count, duration and size of the first video stream of ``path``."""
    path = require_file(path, "video")
    av = _av()
    container = _open(path)
    try:
        return _info(path, container)
    except av.FFmpegError as e:
        raise DataError(path, f"cannot be read as a video ({e})") from e
    finally:
        container.close()


def clip_times(start_s: float, duration_s: float, num_frames: int) -> np.ndarray:
    """(num_frames,) float64 slot centres ``start_s + (i + 0.5) * duration_s / num_frames``."""
    if num_frames < 1 or duration_s <= 0:
        raise ValueError(f"a clip needs num_frames >= 1 and duration_s > 0, got {num_frames}, {duration_s}")
    return start_s + (np.arange(num_frames) + 0.5) * (duration_s / num_frames)


def _to_rgb(frame, size: tuple[int, int] | None) -> np.ndarray:
    if size is None:
        return frame.to_ndarray(format="rgb24")
    w, h = size
    if (frame.width, frame.height) == (w, h):
        return frame.to_ndarray(format="rgb24")
    import cv2  # noqa: PLC0415

    rgb = frame.to_ndarray(format="rgb24")
    shrink = w < frame.width and h < frame.height
    return cv2.resize(rgb, (w, h), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)


def _decoded(path: Path, container, stream, seek_s: float) -> Iterator[tuple[float, object]]:
    """(time_s on the video clock, av.VideoFrame) in presentation order from a keyframe <= seek_s."""
    tb = stream.time_base
    first = stream.start_time or 0
    if seek_s > 0:
        container.seek(first + int(seek_s / tb), stream=stream, backward=True, any_frame=False)
    for frame in container.decode(stream):
        if frame.pts is None:
            continue
        yield float((frame.pts - first) * tb), frame


def _select(path: Path, frames: Iterable[tuple[float, object]], targets: np.ndarray, size, tol_s: float
            ) -> list[np.ndarray]:
    """Nearest frame to each (ascending) target in one forward pass; ties go to the earlier frame."""
    out: list[np.ndarray | None] = [None] * len(targets)
    k = 0
    prev: tuple[float, object] | None = None
    cache: dict[float, np.ndarray] = {}

    def rgb(item) -> np.ndarray:
        key = item[0]  # the frame's time (object ids are recycled by the decoder)
        if key not in cache:
            cache.clear()  # a frame is only reused by consecutive targets
            cache[key] = _to_rgb(item[1], size)
        return cache[key]

    for t, frame in frames:
        cur = (t, frame)
        while k < len(targets) and t >= targets[k]:
            if prev is not None and targets[k] - prev[0] <= t - targets[k] + 1e-9:
                out[k] = rgb(prev)
            else:
                out[k] = rgb(cur)
            k += 1
        if k == len(targets):
            break
        prev = cur
    if k < len(targets):
        if prev is None:
            raise DataError(path, "no frame could be decoded")
        if targets[-1] - prev[0] > tol_s:
            raise DataError(path, f"decoded frames end at {prev[0]:.3f} s but a clip needs one at "
                                  f"{targets[-1]:.3f} s; the file is truncated")
        for j in range(k, len(targets)):
            out[j] = rgb(prev)
    return out  # type: ignore[return-value]


def read_clips(path: str | Path, starts_s: Sequence[float], duration_s: float, num_frames: int,
               size: tuple[int, int] | None = None) -> list[np.ndarray]:
    """Several clips of one file in one sequential decode (the teacher stage's reader).

    Args:
        path: a video file FFmpeg can decode.
        starts_s: clip starts (s, video clock), any order.
        duration_s: length of every clip (s).
        num_frames: frames per clip, at the slot centres of :func:`clip_times`.
        size: (width, height) to resize to (cv2, INTER_AREA when shrinking), or None.

    Returns:
        one (num_frames, H, W, 3) uint8 RGB array per start, in the order of ``starts_s``.
    """
    path = require_file(path, "video")
    starts = np.asarray(starts_s, dtype=np.float64).reshape(-1)
    if starts.size == 0:
        return []
    if size is not None and (len(size) != 2 or min(size) < 1):
        raise ValueError(f"size must be (width, height) with positive ints, got {size!r}")
    per_clip = [clip_times(float(s), duration_s, num_frames) for s in starts]
    av = _av()
    container = _open(path)
    try:
        info = _info(path, container)
        half = 0.5 / info.fps
        if starts.min() < -1e-9:
            raise ValueError(f"{path}: clip start {starts.min():.3f} s is before the video's start (0 s)")
        end = float(starts.max()) + duration_s
        if end > info.duration_s + half + 1e-9:
            raise DataError(path, f"video is {info.duration_s:.3f} s long ({info.frames} frames at "
                                  f"{info.fps:g} fps) but a clip needs it up to {end:.3f} s")
        targets = np.concatenate(per_clip)
        order = np.argsort(targets, kind="stable")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        seek_s = max(0.0, float(targets[order[0]]) - 1.0 / info.fps)
        frames = _decoded(path, container, stream, seek_s)
        chosen = _select(path, frames, targets[order], size, tol_s=1.0 / info.fps + 1e-6)
    except av.FFmpegError as e:
        raise DataError(path, f"cannot be decoded ({e})") from e
    finally:
        container.close()
    flat: list[np.ndarray | None] = [None] * len(targets)
    for j, i in enumerate(order):
        flat[i] = chosen[j]
    return [np.stack(flat[c * num_frames:(c + 1) * num_frames]) for c in range(len(starts))]  # type: ignore[arg-type]


def read_clip(path: str | Path, start_s: float, duration_s: float, num_frames: int,
              size: tuple[int, int] | None = None) -> np.ndarray:
    """(num_frames, H, W, 3) uint8 RGB frames nearest to :func:`clip_times` (see the module docstring)."""
    return read_clips(path, [start_s], duration_s, num_frames, size)[0]


def write_video(path: str | Path, frames: Iterable[np.ndarray], fps: float, codec: str = "libx264",
                crf: int = 20, preset: str = "fast") -> int:
    """Encode RGB uint8 frames (H, W, 3; H and W even) as a constant-fps MP4, atomically.

    Frame i gets pts i at time base 1/fps, so it is shown at t = i / fps. The encoder runs on
    one thread, so the same frames give the same bytes on any machine (x264 output depends
    on its thread count). Returns the number of frames written.
    """
    av = _av()
    rate = Fraction(fps).limit_denominator(1001)
    n = 0
    with atomic_open(path, "wb") as f:
        container = av.open(f, mode="w", format="mp4")
        try:
            stream = None
            for rgb in frames:
                rgb = np.ascontiguousarray(rgb, dtype=np.uint8)
                if stream is None:
                    h, w = rgb.shape[:2]
                    if rgb.ndim != 3 or rgb.shape[2] != 3 or h % 2 or w % 2:
                        raise ValueError(f"frames must be (H, W, 3) with even H and W, got {rgb.shape}")
                    stream = container.add_stream(codec, rate=rate)
                    stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
                    stream.codec_context.thread_count = 1
                    if codec == "libx264":
                        stream.options = {"crf": str(crf), "preset": preset}
                frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
                frame.pts = n
                frame.time_base = Fraction(1) / rate
                for packet in stream.encode(frame):
                    container.mux(packet)
                n += 1
            if stream is None:
                raise ValueError(f"{path}: no frames to write")
            for packet in stream.encode():
                container.mux(packet)
        finally:
            container.close()
    return n
