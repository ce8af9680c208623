"""Stage kind ``synth_keywords``: the espeak-ng keyword dataset (:mod:`modalities.audio.keywords`).

Writes ``keywords/`` in the stage folder. The generator keeps finished clips, so a stage
killed mid-way resumes with the clips it has not written; the same config and seed give
byte-identical files (for one espeak-ng version, recorded in ``dataset.json``).
"""

from __future__ import annotations

from modalities.audio.keywords import generate_keyword_dataset

from ..runner import StageContext, StageResult
from .config import SynthKeywordsConfig


def run_synth_keywords(ctx: StageContext) -> StageResult:
    cfg: SynthKeywordsConfig = ctx.config  # type: ignore[assignment]
    meta = generate_keyword_dataset(ctx.stage_dir / "keywords", cfg.generator_config(ctx.seed), workers=cfg.workers)
    return StageResult(metrics={"clips": meta["counts"], "espeak_ng": meta["espeak_ng"],
                                "voices": {k: len(v) for k, v in meta["voices"].items()}})
