"""Stage kinds: kind -> (config model, stage function, what it depends on). One explicit dict.

A pipeline config names stage instances in run order, each with a ``kind`` from
:data:`KINDS`; two instances may share a kind (``slidr_sparse`` and ``slidr_range`` are both
``slidr``). A new method adds its config model and stage function and one entry here.

Stage functions are named as ``"module:function"`` and imported when the stage runs, so
that loading and validating a config stays fast and torch-free.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

from pydantic import BaseModel

from .audio.config import DinoConfig, SynthKeywordsConfig, UnfusedConfig
from .calico.config import PrcConfig, RadConfig, RegionsConfig
from .comodo.config import ComodoConfig, SynthEgocentricConfig, VideoTeacherConfig
from .data.config import OverlayConfig, SuperpixelsConfig, SynthDrivingConfig
from .deploy_config import DeployConfig
from .evaluate.config import EvaluateConfig
from .slidr.config import DistillConfig


@dataclass(frozen=True)
class StageKind:
    config: type[BaseModel]
    run: str  # "module:function", the function takes a StageContext and returns a StageResult
    # Fields of the stage's dataset spec that its results depend on (beyond the dataset's files).
    dataset_fields: tuple[str, ...] = ()
    # The stage writes a dataset into this folder of its stage folder (a dataset's `from_stage`).
    writes_dataset: str | None = None

    def function(self):
        module, name = self.run.split(":")
        return getattr(importlib.import_module(module), name)


KINDS: dict[str, StageKind] = {
    "synth_driving": StageKind(SynthDrivingConfig, "pipelines.data.synth_stage:run_synth", writes_dataset="nuscenes"),
    "superpixels": StageKind(SuperpixelsConfig, "pipelines.data.superpixels_stage:run_superpixels",
                             dataset_fields=("version",)),
    "regions": StageKind(RegionsConfig, "pipelines.calico.regions_stage:run_regions", dataset_fields=("version",)),
    "calico_prc": StageKind(PrcConfig, "pipelines.calico.prc:run_prc", dataset_fields=("version", "holdout_scenes")),
    "calico_rad": StageKind(RadConfig, "pipelines.calico.rad:run_rad", dataset_fields=("version", "holdout_scenes")),
    "overlay": StageKind(OverlayConfig, "pipelines.data.overlay_stage:run_overlay", dataset_fields=("version",)),
    "slidr": StageKind(DistillConfig, "pipelines.slidr.stage:run_distill",
                       dataset_fields=("version", "holdout_scenes", "lidar_sensor")),
    "synth_keywords": StageKind(SynthKeywordsConfig, "pipelines.audio.synth_stage:run_synth_keywords",
                                writes_dataset="keywords"),
    "dino_audio": StageKind(DinoConfig, "pipelines.audio.dino:run_dino", dataset_fields=("train", "test", "pool")),
    "unfused": StageKind(UnfusedConfig, "pipelines.audio.unfused:run_unfused", dataset_fields=("train", "test", "pool")),
    "synth_egocentric": StageKind(SynthEgocentricConfig, "pipelines.comodo.synth_stage:run_synth_egocentric",
                                  writes_dataset="egocentric"),
    "video_teacher": StageKind(VideoTeacherConfig, "pipelines.comodo.teacher:run_video_teacher",
                               dataset_fields=("manifest", "test_subjects", "holdout_subjects")),
    "comodo": StageKind(ComodoConfig, "pipelines.comodo.train:run_comodo",
                        dataset_fields=("manifest", "test_subjects", "holdout_subjects", "imu")),
    "evaluate": StageKind(EvaluateConfig, "pipelines.evaluate.stage:run_evaluate",
                          dataset_fields=("version", "holdout_scenes", "lidar_sensor", "train", "test", "pool",
                                          "manifest", "test_subjects", "holdout_subjects", "imu")),
    "deploy": StageKind(DeployConfig, "pipelines.deploy_stage:run_deploy"),
}
