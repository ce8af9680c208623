"""Configs of the audio stages (DESIGN 5.4): the keyword generator, DINO pre-training, UnFuSeD."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from pydantic import Field

from ..config_base import StageConfig, StrictModel, TrainStageConfig

if TYPE_CHECKING:
    from ..config import PipelineConfig


class SynthKeywordsConfig(StageConfig):
    """Stage kind ``synth_keywords``: an espeak-ng keyword dataset (:mod:`modalities.audio.keywords`).

    Writes ``keywords/`` (train / test class folders and manifests, the unlabelled pool); a
    dataset ``{kind: keywords, from_stage: <this stage>}`` reads it. Split by voice.
    """

    kind: Literal["synth_keywords"] = "synth_keywords"
    words: list[str] | None = None  # None: the 20 keywords of DESIGN 5.4
    train_voices: int = Field(default=8, ge=1)
    test_voices: int = Field(default=3, ge=1)
    takes: int = Field(default=2, ge=1)  # clips per (voice, word)
    pool_voices: int = Field(default=4, ge=0)  # pool-only voices (plus the training voices)
    pool_takes: int = Field(default=1, ge=0)
    snr_db: tuple[float, float] = (5.0, 30.0)
    workers: int = Field(default=2, ge=1)  # espeak-ng processes at once (the files do not depend on it)

    def generator_config(self, seed: int):
        from modalities.audio.keywords import AcousticsConfig, KeywordDatasetConfig  # noqa: PLC0415

        extra = {"words": tuple(self.words)} if self.words else {}
        return KeywordDatasetConfig(train_voices=self.train_voices, test_voices=self.test_voices, takes=self.takes,
                                    pool_voices=self.pool_voices, pool_takes=self.pool_takes, seed=seed,
                                    acoustics=AcousticsConfig(snr_db=tuple(self.snr_db)), **extra)

    def dataset_name(self) -> None:
        return None


class AudioNetConfig(StrictModel):
    """An :class:`modalities.audio.students.AudioCNN` (``ds_cnn``)."""

    widths: tuple[int, int, int, int] = (32, 64, 64, 96)
    blocks: tuple[int, int, int, int] = (1, 1, 1, 1)

    def kwargs(self) -> dict:
        return {"widths": list(self.widths), "blocks": list(self.blocks)}


class AudioOptimConfig(StrictModel):
    epochs: int = Field(default=30, ge=1)
    lr: float = Field(default=1e-3, gt=0)  # AdamW peak rate, after a linear warm-up
    weight_decay: float = Field(default=0.04, ge=0)
    warmup_epochs: int = Field(default=2, ge=0)


class MultiCropConfig(StrictModel):
    """DINO's views on the log-mel: time crops (frames at 10 ms) plus SpecAugment masks."""

    global_frames: int = Field(default=96, ge=8)
    local_crops: int = Field(default=4, ge=0)
    local_frames: int = Field(default=40, ge=4)
    freq_mask: int = Field(default=8, ge=0)  # max width of each of 2 frequency masks (mel bins)
    time_mask: int = Field(default=10, ge=0)  # max width of each of 2 time masks (frames)
    gain_db: float = Field(default=6.0, ge=0)  # random gain in +-gain_db (a shift of the log-mel)
    noise_mix: float = Field(default=0.5, ge=0, le=1)  # probability of mixing another clip in at -10..-20 dB
    # Crops start where the window is at least as loud as the median window (pipelines.audio.data.crop_frames):
    # a short crop of a mostly silent clip then still holds speech.
    focus: bool = True
    # Per-view acoustics (pipelines.audio.data module docstring): without them every view of a clip shares its
    # noise colour, level, room and voice, which DINO can agree on instead of the word.
    time_stretch: float = Field(default=0.0, ge=0, lt=1)  # rate in [1/(1+s), 1+s]
    freq_warp: float = Field(default=0.0, ge=0, lt=1)  # mel-axis warp factor in [1/(1+w), 1+w]
    tilt_db: float = Field(default=0.0, ge=0)  # equaliser: tilt +-tilt_db across the band plus a smooth curve
    noise_prob: float = Field(default=0.0, ge=0, le=1)  # probability of synthetic coloured noise
    noise_snr_db: tuple[float, float] = (0.0, 20.0)


class DinoConfig(TrainStageConfig):
    """Stage kind ``dino_audio``: DINO pre-training of an audio backbone on unlabelled clips (DESIGN 5.4).

    Reads the dataset's training clips (audio only, no labels) and its unlabelled pool.
    Writes the EMA teacher's backbone as the stage's student record (task ``clip_features``).
    """

    kind: Literal["dino_audio"] = "dino_audio"
    dataset: str
    backbone: AudioNetConfig = AudioNetConfig(widths=(64, 128, 128, 192))
    out_dim: int = Field(default=1024, ge=2)  # K of the weight-normed last layer
    hidden_dim: int = Field(default=512, ge=1)
    bottleneck_dim: int = Field(default=256, ge=1)
    student_temp: float = Field(default=0.1, gt=0)
    teacher_temp: float = Field(default=0.04, gt=0)  # warmed up linearly to teacher_temp_final
    teacher_temp_final: float = Field(default=0.07, gt=0)
    teacher_temp_warmup_epochs: int = Field(default=10, ge=0)
    center_momentum: float = Field(default=0.9, ge=0, lt=1)
    ema_momentum: float = Field(default=0.996, ge=0, le=1)  # cosine to 1 over the training
    crops: MultiCropConfig = MultiCropConfig()
    optim: AudioOptimConfig = AudioOptimConfig()
    batch_clips: int = Field(default=64, ge=2)
    use_pool: bool = True  # pre-train on the pool as well as the training clips' audio
    max_grad_norm: float | None = Field(default=3.0, gt=0)

    def student_kind(self) -> str:
        return "ds_cnn"


class UnfusedConfig(TrainStageConfig):
    """Stage kind ``unfused``: pseudo-labels from a DINO teacher, layered self-distillation into a compact student.

    DESIGN 5.4: embed the dataset's training clips (no labels) with the teacher of ``teacher``
    (a ``dino_audio`` stage), PCA-whiten, k-means -> pseudo-labels; train a randomly
    initialised student with CE on them from heads on stages 1-3 and the final classifier,
    KL of each head to the final classifier and a feature MSE
    (:func:`pipelines.losses.unfused.unfused_loss`). Fine-tuning on labels is the evaluate stage's.
    """

    kind: Literal["unfused"] = "unfused"
    dataset: str
    teacher: str  # the dino_audio stage
    student: AudioNetConfig = AudioNetConfig()
    clusters: int = Field(default=32, ge=2)
    pca_dim: int = Field(default=64, ge=2)
    use_pool: bool = True  # cluster and train on the pool too (unlabelled target data)
    alpha: float = Field(default=0.7, ge=0)
    beta: float = Field(default=0.3, ge=0)
    gamma: float = Field(default=0.003, ge=0)
    kl_temperature: float = Field(default=1.0, gt=0)
    optim: AudioOptimConfig = AudioOptimConfig(epochs=20, lr=3e-3, weight_decay=1e-2, warmup_epochs=1)
    batch_clips: int = Field(default=64, ge=2)

    def reads(self) -> tuple[str, ...]:
        return (self.teacher,)

    def student_kind(self) -> str:
        return "ds_cnn"

    def check(self, name: str, pipeline: "PipelineConfig") -> None:
        if pipeline.stage_config(self.teacher).kind != "dino_audio":
            raise ValueError(f"stages.{name}.teacher: {self.teacher!r} is not a dino_audio stage")

