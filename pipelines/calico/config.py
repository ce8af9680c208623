"""Configs of the CALICO stages (DESIGN 5.3)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from pydantic import Field, model_validator

from modalities.lidar.regions import RegionParams

from ..config_base import StageConfig, StrictModel, TrainStageConfig

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


class BevGridConfig(StrictModel):
    """The BEV grid of a student, in the key frame's LIDAR_TOP frame (``modalities.bev_labels.BevGridSpec``).

    The default is the grid of the synthetic BEV labels (128 x 128 cells of 0.5 m); the evaluation
    samples a student's map at the label grid's cell centres, so the two need not be the same.
    """

    x_range_m: tuple[float, float] = (-32.0, 32.0)
    y_range_m: tuple[float, float] = (-32.0, 32.0)
    cell_size_m: float = Field(default=0.5, gt=0)

    @model_validator(mode="after")
    def _valid(self) -> "BevGridConfig":
        self.spec()  # BevGridSpec names the field in its ValueError
        return self

    def spec(self):
        from modalities.bev_labels import BevGridSpec  # noqa: PLC0415

        return BevGridSpec(self.x_range_m, self.y_range_m, self.cell_size_m)


class CalicoOptimConfig(StrictModel):
    """AdamW with a linear warm-up then linear decay. The authors' prototype: AdamW 1e-4, wd 0.01, 20 epochs
    (DESIGN 5.3); our default rate is higher because our students are small and trained from scratch."""

    epochs: int = Field(default=20, ge=1)
    lr: float = Field(default=1e-3, gt=0)
    weight_decay: float = Field(default=0.01, ge=0)
    warmup_fraction: float = Field(default=0.1, ge=0, lt=1)


class PrcAugmentConfig(StrictModel):
    """The two views of a scan (DESIGN 5.3): rotation about z, scaling, flips of x and y."""

    rotation_deg: float = Field(default=90.0, ge=0, le=180)  # uniform in [-r, r]
    scale: tuple[float, float] = (0.9, 1.1)
    flip: bool = True  # each of x and y flipped with probability 0.5


class PillarNetConfig(StrictModel):
    """The lidar BEV student (:class:`modalities.lidar.bev_net.PillarBevNet`) and its pillar buffers."""

    pillar_channels: int = Field(default=32, ge=1)
    widths: tuple[int, ...] = (32, 64, 128)
    out_channels: int = Field(default=64, ge=1)
    z_range_m: tuple[float, float] = (-5.0, 3.0)
    max_points_per_pillar: int = Field(default=16, ge=1)
    # The encoder runs on every buffer row, so the budget is its cost: a 32-beam scan fills ~2,000 of the
    # 16,384 cells of the default grid. Pillars over the budget are dropped and counted in the stage report.
    max_pillars: int = Field(default=6000, ge=1)


class _CalicoTrainConfig(TrainStageConfig):
    dataset: str
    regions: str  # the regions stage
    grid: BevGridConfig = BevGridConfig()
    head_dim: int = Field(default=64, ge=1)  # projection head output (training only; OURS)
    batch_scans: int = Field(default=2, ge=1)
    optim: CalicoOptimConfig = CalicoOptimConfig()
    max_grad_norm: float | None = Field(default=5.0, gt=0)

    def reads(self) -> tuple[str, ...]:
        return (self.regions,)

    def check(self, name: str, pipeline: "PipelineConfig") -> None:
        regions = pipeline.stage_config(self.regions)
        if regions.kind != "regions":
            raise ValueError(f"stages.{name}.regions: {self.regions!r} is not a regions stage")
        if regions.dataset != self.dataset:
            raise ValueError(f"stages.{name}: dataset {self.dataset!r} differs from its regions stage's "
                             f"({regions.dataset!r})")


class PrcConfig(_CalicoTrainConfig):
    """Stage kind ``calico_prc``: point-region contrast (PLRC + RAPC) pre-training of the pillar BEV lidar student.

    ``PRC = alpha * PLRC + (1 - alpha) * RAPC`` (:func:`pipelines.losses.calico.prc_loss`) on two
    augmented views of every training scan; ``points_inside`` points in regions and ``points_outside``
    others (extra negatives) per scan, read from the BEV maps bilinearly. The temperatures and the
    projection head are not public: ours, exposed here.
    """

    kind: Literal["calico_prc"] = "calico_prc"
    student: PillarNetConfig = PillarNetConfig()
    alpha: float = Field(default=0.5, ge=0, le=1)
    plrc_temperature: float = Field(default=0.1, gt=0)
    rapc_temperature: float = Field(default=0.1, gt=0)
    points_inside: int = Field(default=1024, ge=1)
    points_outside: int = Field(default=1024, ge=0)
    augment: PrcAugmentConfig = PrcAugmentConfig()

    def student_kind(self) -> str:
        return "pillar_bev"


class CameraNetConfig(StrictModel):
    """The camera BEV student (:class:`modalities.camera.bev_lift.CameraBevNet`) and its fixed lift geometry."""

    cameras: list[str] = ["CAM_FRONT", "CAM_FRONT_RIGHT", "CAM_BACK_RIGHT", "CAM_BACK", "CAM_BACK_LEFT",
                          "CAM_FRONT_LEFT"]
    image_hw: tuple[int, int] = (176, 320)  # every image is resized to this before the network
    heights_m: tuple[float, ...] = (-1.5, -0.5, 0.5)  # lidar-frame z of the lifted planes (ground ~ -1.8 m)
    pretrained: bool = True  # ImageNet EfficientNet-Lite0 (both inits of the evaluation start from it)
    lift_channels: int = Field(default=64, ge=1)
    widths: tuple[int, ...] = (64, 128)
    out_channels: int = Field(default=64, ge=1)


class RadConfig(_CalicoTrainConfig):
    """Stage kind ``calico_rad``: region-aware distillation of the frozen PRC lidar student into the camera BEV student.

    For every training scan the teacher (the ``teacher`` stage's pillar BEV network, frozen, on the
    un-augmented scan) gives features at up to ``points_per_scan`` region points; the camera
    student's BEV map is read at the same points, and :func:`pipelines.losses.calico.rad_loss`
    pulls each region's pooled student embedding to the teacher's, against the other regions
    (temperature and ``normalize_pooled`` are ours).
    """

    kind: Literal["calico_rad"] = "calico_rad"
    teacher: str  # the calico_prc stage
    student: CameraNetConfig = CameraNetConfig()
    temperature: float = Field(default=0.1, gt=0)
    normalize_pooled: bool = True
    points_per_scan: int = Field(default=2048, ge=1)

    def reads(self) -> tuple[str, ...]:
        return (self.regions, self.teacher)

    def student_kind(self) -> str:
        return "camera_bev"

    def check(self, name: str, pipeline: "PipelineConfig") -> None:
        super().check(name, pipeline)
        teacher = pipeline.stage_config(self.teacher)
        if teacher.kind != "calico_prc":
            raise ValueError(f"stages.{name}.teacher: {self.teacher!r} is not a calico_prc stage")
        if teacher.dataset != self.dataset:
            raise ValueError(f"stages.{name}: dataset {self.dataset!r} differs from its teacher's ({teacher.dataset!r})")
