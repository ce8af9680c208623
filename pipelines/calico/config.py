"""Configs of the CALICO stages (DESIGN 5.3)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from pydantic import Field, model_validator

from modalities.lidar.regions import RegionParams

from ..config_base import StageConfig

if TYPE_CHECKING:
    from ..config import PipelineConfig

_R = RegionParams()  # the defaults, documented in modalities/lidar/regions.py


class RegionsConfig(StageConfig):
    """Stage kind ``regions``: label-free regions of every key-frame lidar scan of a nuScenes-format set.

    The region fields are :class:`modalities.lidar.regions.RegionParams`; the paper gives
    eps, min points, the ego radius, the aspect and the area range, the rest are ours.
    """

    kind: Literal["regions"] = "regions"
    dataset: str
    dbscan_eps_m: float = Field(default=_R.dbscan_eps_m, gt=0)  # paper; larger merges neighbouring cars
    dbscan_min_points: int = Field(default=_R.dbscan_min_points, ge=1)  # paper
    ego_radius_m: float = Field(default=_R.ego_radius_m, ge=0)  # paper; 0 keeps a cluster at the sensor
    min_top_m: float = _R.min_top_m  # a region's top above the ground: at least this ...
    max_top_m: float = _R.max_top_m  # ... at most this (drops buildings, trees, street lights)
    max_bottom_m: float = Field(default=_R.max_bottom_m, ge=0)  # its lowest point at most this (drops crowns)
    min_aspect: float = Field(default=_R.min_aspect, ge=0, le=1)  # paper; width / length of the x-y box
    min_area_m2: float = Field(default=_R.min_area_m2, ge=0)  # paper; oriented x-y box area range
    max_area_m2: float = Field(default=_R.max_area_m2, gt=0)
    ground_cell_m: float = Field(default=_R.ground_cell_m, gt=0)
    ground_tile_m: float = Field(default=_R.ground_tile_m, ge=0)  # 0: one plane for the whole scan
    ground_threshold_m: float = Field(default=_R.ground_threshold_m, gt=0)  # raise for tall curbs
    ground_band_m: float = Field(default=_R.ground_band_m, gt=0)
    ground_max_tilt_deg: float = Field(default=_R.ground_max_tilt_deg, gt=0, lt=90)
    ransac_iterations: int = Field(default=_R.ransac_iterations, ge=1)
    # Scans per Ray task: a scan takes ~0.1-0.5 s, so a few per task amortise the task overhead.
    scans_per_task: int = Field(default=8, ge=1)

    def region_params(self) -> RegionParams:
        return RegionParams(**{name: getattr(self, name) for name in RegionParams.__dataclass_fields__})

    @model_validator(mode="after")
    def _params_valid(self) -> "RegionsConfig":
        self.region_params()  # RegionParams names the field in its ValueError
        return self

    def check(self, name: str, pipeline: "PipelineConfig") -> None:
        kind = pipeline.datasets[self.dataset].kind
        if kind != "nuscenes":
            raise ValueError(f"stages.{name}.dataset: {self.dataset!r} is a {kind!r} dataset; regions need a "
                             "nuScenes-format one (kind: nuscenes)")
