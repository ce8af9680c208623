"""Stage kind ``video_teacher``: frozen video-teacher embeddings of every aligned clip, computed once (DESIGN 5.2).

COMODO (Chen et al., "COMODO: Cross-Modal Video-to-IMU Distillation for Efficient Egocentric Human
Activity Recognition", 2025; reference https://github.com/Breezelled/COMODO) distils a frozen video
encoder's clip embeddings; the reference caches them and projects them with a randomly initialised,
untrained MLP. Here:

1. clips: window ``k`` = ``[k w, (k + 1) w)`` of each training subject's video (the IMU windows'
   interval), ``frames_per_clip`` frames at exact timestamps (:func:`modalities.video.io.read_clips`,
   one decode pass per file), resized to ``frame_size``;
2. the frozen backbone: an image backbone per frame (EfficientNet-Lite0 ImageNet weights by
   default: the global-average-pooled last feature level, 1280-d; or ``feature_level`` average-pooled
   over a ``spatial_grid`` x ``spatial_grid`` grid), pooled over the frames (``mean``; ``mean_std``:
   mean and standard deviation over time; ``std_absdiff``: standard deviation over time and mean
   absolute frame-to-frame change); or a torchvision video network on the whole clip (Kinetics
   normalisation, classifier removed);
3. per-dimension standardisation on the training clips, then the projection to ``dim``
   (``random_mlp``: Linear-GELU-Linear, default init under the run's seed, never trained;
   ``pca``: whitened PCA; ``none``) and L2 normalisation.

Recordings are split into Ray tasks (each loads the backbone once) with a progress bar; each
recording's features are written to ``features/`` as soon as they are computed, so an
interrupted stage resumes with the recordings it has not done. A video that cannot be decoded
or is shorter than a clip is a counted skip named in the report.

Outputs: ``embeddings.npz`` (``recording``, ``start_s``, ``features`` (N, F) pooled backbone
features, ``embedding`` (N, dim) L2-normalised), ``teacher.json`` (what produced them).
"""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

import numpy as np

from modalities.errors import DataError
from modalities.fileio import atomic_open, atomic_write_json

from ..ray_utils import parallel_map
from ..runner import StageContext, StageResult
from .config import VideoTeacherConfig
from .data import dataset_recordings

KINETICS_MEAN = (0.43216, 0.394666, 0.37645)
KINETICS_STD = (0.22803, 0.22145, 0.216989)
TORCHVISION_VIDEO = "torchvision_video:"


class FrameTeacher:
    """A frozen backbone: clips (B, T, H, W, 3) uint8 -> pooled features (B, F) (numpy in, numpy out)."""

    def __init__(self, backbone: str, weights: str | None, pooling: str, feature_level: int = -1,
                 spatial_grid: int = 1):
        import torch  # noqa: PLC0415

        self.pooling, self.video = pooling, backbone.startswith(TORCHVISION_VIDEO)
        self.feature_level, self.spatial_grid = feature_level, spatial_grid
        if self.video:
            import torchvision  # noqa: PLC0415

            arch = backbone[len(TORCHVISION_VIDEO):]
            net = getattr(torchvision.models.video, arch)(weights=None)
            state = torch.load(weights, map_location="cpu", weights_only=True)
            net.load_state_dict(state.get("state_dict", state) if isinstance(state, dict) else state)
            if hasattr(net, "fc"):
                net.fc = torch.nn.Identity()
            elif hasattr(net, "classifier"):
                net.classifier = torch.nn.Identity()
            elif hasattr(net, "head"):
                net.head = torch.nn.Identity()
            self.net, mean, std = net, KINETICS_MEAN, KINETICS_STD
        else:
            from modalities.camera.teachers import TEACHERS  # noqa: PLC0415

            if backbone not in TEACHERS:
                raise ValueError(f"unknown teacher backbone {backbone!r}; choose one of {sorted(TEACHERS)} "
                                 f"or '{TORCHVISION_VIDEO}<arch>'")
            b = TEACHERS[backbone](weights, False)
            if not -len(b.channels) <= feature_level < len(b.channels):
                raise ValueError(f"feature_level {feature_level}: backbone {backbone!r} has {len(b.channels)} "
                                 f"levels (channels {list(b.channels)})")
            self.net, mean, std = b.module, b.mean, b.std
        self.net.eval().requires_grad_(False)
        self.mean = torch.tensor(mean).view(1, 3, 1, 1)
        self.std = torch.tensor(std).view(1, 3, 1, 1)

    def __call__(self, clips: np.ndarray) -> np.ndarray:
        import torch  # noqa: PLC0415

        return self.embed(torch.from_numpy(clips)).numpy()

    def embed(self, clips):
        """(B, T, H, W, 3) uint8 tensor on the device of ``net``, ``mean`` and ``std`` -> (B, F) float tensor there."""
        import torch  # noqa: PLC0415

        B, T = clips.shape[:2]
        x = clips.float().div_(255.0).permute(0, 1, 4, 2, 3).reshape(B * T, 3, *clips.shape[2:4])
        x = (x - self.mean) / self.std
        with torch.inference_mode():
            if self.video:  # (B, 3, T, H, W) -> (B, F)
                return self.net(x.view(B, T, 3, *x.shape[-2:]).transpose(1, 2)).float()
            level = self.net(x)[self.feature_level]
            cells = torch.nn.functional.adaptive_avg_pool2d(level, self.spatial_grid)  # (B T, C, g, g)
            frames = cells.flatten(1).view(B, T, -1)  # one descriptor per frame
        return pool_frames(frames, self.pooling)


def pool_frames(frames, pooling: str):
    """(B, T, F) per-frame descriptors -> (B, F') clip features: ``mean`` (F), ``mean_std`` or ``std_absdiff`` (2 F)."""
    import torch  # noqa: PLC0415

    if pooling == "mean":
        return frames.mean(1)
    if pooling == "mean_std":
        return torch.cat([frames.mean(1), frames.std(1, unbiased=False)], dim=1)
    if pooling == "std_absdiff":
        if frames.shape[1] < 2:
            raise ValueError("pooling std_absdiff needs at least 2 frames per clip")
        return torch.cat([frames.std(1, unbiased=False), frames.diff(dim=1).abs().mean(1)], dim=1)
    raise ValueError(f"unknown pooling {pooling!r}: mean, mean_std or std_absdiff")


def clip_starts(duration_s: float, fps: float, window_s: float) -> list[float]:
    """Starts ``k w`` of every clip inside a video (half a frame of slack at the end)."""
    n = int(np.floor((duration_s + 0.5 / fps) / window_s + 1e-9))
    return [k * window_s for k in range(n)]


def feature_path(stage_dir: Path, name: str) -> Path:
    return stage_dir / "features" / f"{hashlib.sha1(name.encode()).hexdigest()[:16]}.npz"


def _embed_chunk(jobs: list[tuple[str, str, str]], config: dict) -> list[dict]:
    """One Ray task: (recording name, video path, feature file) -> pooled features per clip, cached on disk."""
    import torch  # noqa: PLC0415

    from modalities.video.io import read_clips, video_info  # noqa: PLC0415

    torch.set_num_threads(1)
    cfg = VideoTeacherConfig.model_validate(config)
    teacher, out = None, []
    for name, video, cache in jobs:
        if Path(cache).exists():
            with np.load(cache) as z:
                out.append({"name": name, "starts": z["starts"], "features": z["features"], "seconds": 0.0})
            continue
        t0 = time.perf_counter()
        try:
            info = video_info(video)
            starts = clip_starts(info.duration_s, info.fps, cfg.window_s)
            if not starts:
                raise DataError(video, f"{info.duration_s:.2f} s is shorter than one {cfg.window_s:g} s clip")
            clips = read_clips(video, starts, cfg.window_s, cfg.frames_per_clip, tuple(cfg.frame_size))
        except (DataError, OSError) as err:
            out.append({"name": name, "error": str(err)})
            continue
        if teacher is None:
            teacher = FrameTeacher(cfg.backbone, cfg.weights, cfg.pooling, cfg.feature_level, cfg.spatial_grid)
        features = teacher(np.stack(clips)).astype(np.float32)
        Path(cache).parent.mkdir(parents=True, exist_ok=True)
        with atomic_open(cache) as f:
            np.savez(f, starts=np.asarray(starts, np.float64), features=features)
        out.append({"name": name, "starts": np.asarray(starts), "features": features,
                    "seconds": time.perf_counter() - t0})
    return out


def project(features: np.ndarray, method: str, dim: int, seed: int) -> tuple[np.ndarray, dict]:
    """Standardise per dimension, project to ``dim`` (``random_mlp`` / ``pca`` / ``none``), L2-normalise."""
    import torch  # noqa: PLC0415

    mean, std = features.mean(0), features.std(0)
    z = (features - mean) / np.maximum(std, 1e-6 * max(float(std.max()), 1e-12))
    info = {"method": method, "in_dim": int(features.shape[1])}
    if method == "random_mlp":
        torch.manual_seed(seed)
        mlp = torch.nn.Sequential(torch.nn.Linear(z.shape[1], 2 * dim), torch.nn.GELU(), torch.nn.Linear(2 * dim, dim))
        with torch.no_grad():
            z = mlp(torch.from_numpy(z.astype(np.float32))).numpy()
        info["seed"] = seed
    elif method == "pca":
        from sklearn.decomposition import PCA  # noqa: PLC0415

        k = min(dim, z.shape[1], len(z) - 1)
        pca = PCA(n_components=k, whiten=True, random_state=seed).fit(z)
        z = pca.transform(z)
        info["explained_variance"] = float(pca.explained_variance_ratio_.sum())
    z = z / np.maximum(np.linalg.norm(z, axis=1, keepdims=True), 1e-12)
    info["out_dim"] = int(z.shape[1])
    return z.astype(np.float32), info


def run_video_teacher(ctx: StageContext) -> StageResult:
    cfg: VideoTeacherConfig = ctx.config  # type: ignore[assignment]
    root = Path(ctx.inputs["dataset"])
    train, _ = dataset_recordings(root, ctx.dataset)
    with_video = [r for r in train if r.video is not None]
    if not with_video:
        raise DataError(root / ctx.dataset.manifest, "no training recording has a video: distillation needs them")
    jobs = [(r.name, str(r.video), str(feature_path(ctx.stage_dir, r.name))) for r in with_video]
    chunks = [jobs[i:i + cfg.recordings_per_task] for i in range(0, len(jobs), cfg.recordings_per_task)]
    ctx.log.info("%d training videos in %d task(s): %s, %d frames per %g s clip at %dx%d", len(jobs), len(chunks),
                 cfg.backbone, cfg.frames_per_clip, cfg.window_s, *cfg.frame_size)
    t0 = time.perf_counter()
    results = [r for chunk in parallel_map(_embed_chunk, chunks, desc="video teacher",
                                           config=cfg.model_dump(mode="json")) for r in chunk]
    wall = time.perf_counter() - t0
    errors = [r["error"] for r in results if "error" in r]
    for e in errors:
        ctx.log.warning("skipped video: %s", e)
    done = [r for r in results if "error" not in r]
    if not done:
        raise DataError(root, f"no training video could be embedded ({len(errors)} failed; first: {errors[0]})")
    names = np.array([r["name"] for r in done for _ in r["starts"]])
    starts = np.concatenate([np.asarray(r["starts"], np.float64) for r in done])
    features = np.concatenate([r["features"] for r in done])
    embedding, proj = project(features, cfg.projection, cfg.dim, ctx.seed)
    with atomic_open(ctx.stage_dir / "embeddings.npz") as f:
        np.savez(f, recording=names, start_s=starts, features=features, embedding=embedding)
    computed = [r["seconds"] for r in done if r["seconds"] > 0]
    clips_computed = sum(len(r["starts"]) for r in done if r["seconds"] > 0)
    atomic_write_json(ctx.stage_dir / "teacher.json", {"backbone": cfg.backbone, "weights": cfg.weights,
                                                       "pooling": cfg.pooling, "feature_level": cfg.feature_level,
                                                       "spatial_grid": cfg.spatial_grid, "projection": proj,
                                                       "frames_per_clip": cfg.frames_per_clip,
                                                       "frame_size": list(cfg.frame_size), "window_s": cfg.window_s})
    metrics = {"recordings": len(done), "clips": int(len(names)), "skipped_videos": len(errors),
               "feature_dim": int(features.shape[1]), "embedding_dim": int(embedding.shape[1]),
               "clips_per_s": round(clips_computed / wall, 2) if computed else None,
               "recordings_reused": len(done) - len(computed), **({"projection_explained_variance": round(
                   proj["explained_variance"], 3)} if "explained_variance" in proj else {})}
    md = (f"Frozen teacher `{cfg.backbone}` ({cfg.pooling} over {cfg.frames_per_clip} frames per {cfg.window_s:g} s "
          f"clip, projection `{cfg.projection}` to {embedding.shape[1]} dimensions): {len(names)} clips of "
          f"{len(done)} training videos"
          + (f", {clips_computed / wall:.1f} clips/s on this machine" if computed else " (all reused)")
          + (f"; {len(errors)} video(s) skipped: " + "; ".join(errors[:5]) if errors else "") + ".\n")
    return StageResult(metrics=metrics, report_md=md)
