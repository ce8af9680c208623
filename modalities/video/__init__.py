"""Video files: decoding clips at exact timestamps, and writing MP4 (PyAV)."""

from modalities.video.io import VideoInfo, clip_times, read_clip, read_clips, video_info, write_video

__all__ = ["VideoInfo", "clip_times", "read_clip", "read_clips", "video_info", "write_video"]
