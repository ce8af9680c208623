"""Stage ``synth``: a synthetic nuScenes-format driving dataset, one Ray task per scene.

Each finished scene leaves a ``.scenes/scene_XXXX.json`` record (written atomically), so a
stage killed mid-way resumes with the scenes it has not finished; the JSON tables are
written last from all scene records. Generation is deterministic in (config, seed), so a
resumed stage produces the same bytes as an uninterrupted one.
"""

from __future__ import annotations

import json
from pathlib import Path

from modalities.fileio import atomic_write_json
from modalities.synthetic.nuscenes_writer import generate_scene, write_tables

from ..ray_utils import parallel_map
from ..runner import StageContext, StageResult
from .config import SynthDrivingConfig


def _scene_task(scene_index: int, out_dir: str, cfg, record_dir: str):
    record_path = Path(record_dir) / f"scene_{scene_index:04d}.json"
    if record_path.exists():
        return json.loads(record_path.read_text())
    record = generate_scene(Path(out_dir), cfg, scene_index)
    atomic_write_json(record_path, record)
    # Round-trip through JSON so a fresh and a resumed run hand write_tables identical data.
    return json.loads(record_path.read_text())


def run_synth(ctx: StageContext) -> StageResult:
    stage_cfg: SynthDrivingConfig = ctx.config  # type: ignore[assignment]
    cfg = stage_cfg.generator_config()
    out_dir = ctx.stage_dir / "nuscenes"
    record_dir = ctx.stage_dir / ".scenes"
    record_dir.mkdir(parents=True, exist_ok=True)
    done = len(list(record_dir.glob("scene_*.json")))
    if done:
        ctx.log.info("%d of %d scenes already generated", done, cfg.scenes)
    records = parallel_map(
        _scene_task, list(range(cfg.scenes)), desc="synth scenes",
        out_dir=str(out_dir), cfg=cfg, record_dir=str(record_dir),
    )
    rows = write_tables(out_dir, cfg, records)
    formats = [sd["fileformat"] for rec in records for sd in rec["sample_data"]]
    return StageResult(
        metrics={
            "scenes": rows["scene"],
            "samples": rows["sample"],
            "lidar_scans": formats.count("pcd"),  # key frames and sweeps
            "camera_images": formats.count("jpg"),
            "annotations": rows["sample_annotation"],
            "lidar_sensor": cfg.lidar_sensor,
            "image_size": f"{cfg.image_width}x{cfg.image_height}",
        }
    )
