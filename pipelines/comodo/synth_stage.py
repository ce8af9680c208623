"""Stage kind ``synth_egocentric``: synthetic egocentric video + IMU recordings (:mod:`modalities.synthetic.egocentric`).

Writes ``egocentric/`` in the stage folder (``labels.csv``, ``dataset.json``, one folder per
recording with ``video.mp4`` and ``imu.csv``). The same config and seed give the same files.
"""

from __future__ import annotations

from ..runner import StageContext, StageResult
from .config import SynthEgocentricConfig


def run_synth_egocentric(ctx: StageContext) -> StageResult:
    from modalities.synthetic.egocentric import EgocentricConfig, generate_egocentric  # noqa: PLC0415

    cfg: SynthEgocentricConfig = ctx.config  # type: ignore[assignment]
    extra = {"activities": tuple(cfg.activities)} if cfg.activities else {}
    gen = EgocentricConfig(subjects=cfg.subjects, recordings_per_activity=cfg.recordings_per_activity,
                           duration_s=cfg.duration_s, fps=cfg.fps, width=cfg.width, height=cfg.height,
                           imu_rate_hz=cfg.imu_rate_hz, seed=ctx.seed, **extra)
    from tqdm import tqdm  # noqa: PLC0415

    with tqdm(desc="egocentric recordings", unit="rec", dynamic_ncols=True) as bar:
        def progress(done: int, total: int) -> None:
            bar.total = total
            bar.n = done
            bar.refresh()

        meta = generate_egocentric(ctx.stage_dir / "egocentric", gen, progress=progress, workers=cfg.workers)
    return StageResult(metrics={**meta["counts"], "activities": len(meta["activities"]),
                                "written_now": meta["written_now"],
                                "seconds_per_recording": round(meta["seconds_per_recording"], 3)})
