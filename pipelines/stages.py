"""Stage name -> implementation. Grep-able, explicit, no import-time registration."""

from __future__ import annotations

from .data.overlay_stage import run_overlay
from .data.superpixels_stage import run_superpixels
from .data.synth_stage import run_synth
from .deploy_stage import run_deploy
from .evaluate.stage import run_evaluate
from .runner import Stage
from .slidr.stage import run_distill

STAGES: dict[str, Stage] = {
    "synth": Stage(run_synth, section="synth"),
    "superpixels": Stage(run_superpixels, section="superpixels", needs=("dataset",)),
    "overlay": Stage(run_overlay, section="overlay", needs=("dataset", "superpixels")),
    "slidr_sparse": Stage(run_distill, section="slidr_sparse", needs=("dataset", "superpixels")),
    "slidr_range": Stage(run_distill, section="slidr_range", needs=("dataset", "superpixels")),
    # "?" marks an optional input: used when that stage is part of the pipeline.
    "evaluate": Stage(run_evaluate, section="evaluate", needs=("dataset", "slidr_sparse?", "slidr_range?")),
    "deploy": Stage(run_deploy, section="deploy", needs=("evaluate",)),
}
