"""Stage ``superpixels``: SLIC (SLidR parameters) for every key-frame camera image.

Images are split into chunks, one Ray task per chunk. Each superpixel map is written
atomically to ``<stage>/<CAM_CHANNEL>/<image stem>.png`` as soon as it is done, and a
map already on disk is reused, so an interrupted stage resumes where it stopped. Every
map is validated against the per-image id budget when it is written and when it is read.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from modalities.camera.io import read_image
from modalities.camera.superpixels import compute_superpixels, load_superpixels, save_superpixels
from modalities.nuscenes_tables import NuScenesTables

from ..ray_utils import parallel_map
from ..runner import StageContext, StageResult
from .config import SuperpixelsConfig


def superpixel_path(stage_dir: Path, channel: str, image_path: Path) -> Path:
    """Where the superpixel map of a camera image lives inside the stage folder."""
    return stage_dir / channel / f"{Path(image_path).name.split('.')[0]}.png"


def _chunk_task(jobs: list[tuple[str, str, int, int]], method: str, budget: int) -> list[dict]:
    out = []
    for image_path, sp_path, width, height in jobs:
        if Path(sp_path).exists():
            ids = load_superpixels(sp_path, budget=budget, expected_hw=(height, width))
            out.append({"segments": int(ids.max()) + 1, "seconds": 0.0, "cached": True})
            continue
        image = read_image(image_path)
        t0 = time.perf_counter()
        ids = compute_superpixels(image, method=method, budget=budget)
        seconds = time.perf_counter() - t0
        save_superpixels(sp_path, ids)
        out.append({"segments": int(ids.max()) + 1, "seconds": seconds, "cached": False})
    return out


def list_camera_jobs(dataset: Path, version: str, stage_dir: Path) -> list[tuple[str, str, int, int]]:
    tables = NuScenesTables(dataset, version)
    jobs = []
    for sample in tables.samples():
        for cam in tables.cameras(sample):
            jobs.append(
                (str(cam.image_path), str(superpixel_path(stage_dir, cam.channel, cam.image_path)), cam.width, cam.height)
            )
    return jobs


def run_superpixels(ctx: StageContext) -> StageResult:
    cfg: SuperpixelsConfig = ctx.config  # type: ignore[assignment]
    jobs = list_camera_jobs(ctx.inputs["dataset"], ctx.dataset.version, ctx.stage_dir)
    if not jobs:
        raise ValueError(f"no key-frame camera images found in {ctx.inputs['dataset']}")
    chunks = [jobs[i : i + cfg.images_per_task] for i in range(0, len(jobs), cfg.images_per_task)]
    ctx.log.info("%d images in %d task(s), method=%s, budget=%d", len(jobs), len(chunks), cfg.method, cfg.budget)
    per_chunk = parallel_map(_chunk_task, chunks, desc="superpixels", method=cfg.method, budget=cfg.budget)
    stats = [s for chunk in per_chunk for s in chunk]
    segments = np.array([s["segments"] for s in stats])
    computed = [s["seconds"] for s in stats if not s["cached"]]
    return StageResult(
        metrics={
            "images": len(stats),
            "computed": len(computed),
            "reused": len(stats) - len(computed),
            "segments_mean": float(segments.mean()),
            "segments_max": int(segments.max()),
            "budget": cfg.budget,
            "seconds_per_image": float(np.mean(computed)) if computed else 0.0,
        }
    )
