"""Configs of the data stages: synthetic driving data, superpixels, the projection overlay."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from pydantic import Field, field_validator

from modalities.camera.superpixels import SUPERPIXEL_METHODS
from modalities.synthetic.config import SynthConfig

from ..config_base import StageConfig

if TYPE_CHECKING:
    from ..config import PipelineConfig

MAX_SUPERPIXEL_BUDGET = 65536  # ids are stored as uint16 PNG


class SynthDrivingConfig(SynthConfig):
    """Stage kind ``synth_driving``: the synthetic generator's options (writes a nuScenes-format dataset).

    A dataset with ``from_stage: <this stage>`` reads what it writes; its ``version`` and
    ``lidar_sensor`` must equal the generator's. ``bev_labels: true`` adds BEV semantic ground
    truth (``nuscenes/bev_labels/``, format in ``modalities.bev_labels``).
    """

    kind: Literal["synth_driving"] = "synth_driving"

    def generator_config(self) -> SynthConfig:
        return SynthConfig.model_validate(self.model_dump(exclude={"kind"}))

    # The methods of StageConfig (SynthConfig is frozen and lives in modalities, so no mixin).
    def dataset_name(self) -> None:
        return None

    def reads(self) -> tuple[str, ...]:
        return ()

    def check(self, name: str, pipeline: "PipelineConfig") -> None:
        for ds_name, ds in pipeline.datasets.items():
            if ds.from_stage != name:
                continue
            for field in ("version", "lidar_sensor"):
                if getattr(ds, field) != getattr(self, field):
                    raise ValueError(f"datasets.{ds_name}.{field} ({getattr(ds, field)!r}) must equal "
                                     f"stages.{name}.{field} ({getattr(self, field)!r}), the stage that writes it")


class SuperpixelsConfig(StageConfig):
    kind: Literal["superpixels"] = "superpixels"
    dataset: str
    # "seeds" (OpenCV SEEDS at ~400x225 px; needs opencv-contrib-python-headless) is ~70x
    # faster than "slic" at 1600x900 with better quality at a similar segment count: boundary
    # recall@2px 0.763 vs 0.725, undersegmentation error 0.191 vs 0.259, 84 vs 79-97 segments
    # (benchmarks/superpixels.py, 4 textured scenes, 2-core CPU; 30 ms vs 2.3-6 s per image).
    # "slic" is exactly SLidR's SLIC (choose it to reproduce the paper); "slic_downsampled"
    # runs it on a 2x smaller image: ~3.6x faster, ~1.6 points lower boundary recall.
    method: str = "seeds"
    # Ids per image must stay below this; SLIC(n_segments=150) gives well under 256.
    budget: int = Field(default=256, ge=2, le=MAX_SUPERPIXEL_BUDGET)
    # Images per Ray task: larger chunks amortise task overhead, smaller ones balance load.
    images_per_task: int = Field(default=8, ge=1)

    @field_validator("method")
    @classmethod
    def _known_method(cls, v: str) -> str:
        if v not in SUPERPIXEL_METHODS:
            raise ValueError(f"unknown superpixel method {v!r}; known: {sorted(SUPERPIXEL_METHODS)}")
        return v


class OverlayConfig(StageConfig):
    kind: Literal["overlay"] = "overlay"
    dataset: str
    superpixels: str | None = None  # a superpixels stage: its boundaries are drawn too
    camera: str = "CAM_FRONT"
    sample_index: int = Field(default=0, ge=0)
    point_radius_px: int = Field(default=1, ge=1, le=10)  # 2 suits 1600x900 images

    def reads(self) -> tuple[str, ...]:
        return (self.superpixels,) if self.superpixels else ()
