"""Configuration of the few-label evaluation stage."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from pydantic import Field, model_validator

from ..config_base import StageConfig

if TYPE_CHECKING:
    from ..config import PipelineConfig


class EvaluateConfig(StageConfig):
    kind: Literal["evaluate"] = "evaluate"
    dataset: str  # labelled scans: training split for the labels, held-out scenes for the metric
    students: list[str] = Field(min_length=1)  # training stages whose students are evaluated
    # Fused heads: each entry names >= 2 of those stages; one probe reads their features side by side (both
    # distilled vs both random init). Tasks with a fuse() only (BEV: lidar + camera); frozen-feature protocols only.
    fused: list[list[str]] = []

    # Fractions of the training scans that get labels (at least one scan each). SLidR: 1 %.
    label_fractions: list[float] = Field(default=[0.01, 0.1], min_length=1)
    # linear_probe and svm (StandardScaler + RBF SVM, DESIGN 5.2) on frozen features; finetune: LP-FT.
    protocols: list[Literal["linear_probe", "svm", "finetune"]] = Field(default=["linear_probe", "finetune"],
                                                                        min_length=1)
    # Fine-tuning is the costly protocol: None runs it at every label fraction, a list at those only.
    finetune_label_fractions: list[float] | None = None
    probe_steps: int = Field(default=300, ge=1)
    probe_lr: float = Field(default=1e-2, gt=0)  # Adam, on z-scored frozen features
    svm_c: float = Field(default=1.0, gt=0)  # the RBF SVM's C
    finetune_steps: int = Field(default=200, ge=1)  # optimizer steps (few labels: epochs are tiny)
    finetune_lr: float = Field(default=1e-3, gt=0)  # AdamW, the head's rate; our choice for few-label CPU runs
    # The backbone's rate is finetune_lr x this (SLidR's reference fine-tunes it 100x lower than the head).
    backbone_lr_scale: float = Field(default=0.01, gt=0, le=1)
    warmup_fraction: float = Field(default=0.1, ge=0, lt=1)  # linear warm-up, then cosine decay
    # Paired runs per label fraction: each draws its own labelled subset and seed, shared by both
    # inits; the gain's 95% interval needs at least 2 (more: a narrower interval, more minutes).
    repeats: int = Field(default=5, ge=1)
    finetune_repeats: int = Field(default=3, ge=1)  # the same, for the costly fine-tune
    lovasz_weight: float = Field(default=1.0, ge=0)  # cross-entropy + this x Lovasz-softmax
    batch_scans: int = Field(default=2, ge=1)
    max_test_scans: int | None = Field(default=None, ge=1)  # cap for quick runs

    @model_validator(mode="after")
    def _finetune_fractions_are_label_fractions(self) -> "EvaluateConfig":
        extra = sorted(set(self.finetune_label_fractions or ()) - set(self.label_fractions))
        if extra:
            raise ValueError(f"finetune_label_fractions {extra} are not in label_fractions {self.label_fractions}"
                             " (fine-tuning runs only at label fractions that are evaluated)")
        return self

    @model_validator(mode="after")
    def _fused_entries(self) -> "EvaluateConfig":
        for entry in self.fused:
            if len(set(entry)) < 2 or len(set(entry)) != len(entry):
                raise ValueError(f"fused: {entry} must name at least two different stages")
            missing = [s for s in entry if s not in self.students]
            if missing:
                raise ValueError(f"fused: {missing} are not in students {self.students} (each part is also evaluated "
                                 "alone, the baseline of the fused head)")
        return self

    def reads(self) -> tuple[str, ...]:
        return tuple(self.students)

    def check(self, name: str, pipeline: "PipelineConfig") -> None:
        for student in self.students:
            if pipeline.stage_config(student).student_kind() is None:
                raise ValueError(f"stages.{name}.students: stage {student!r} trains no student")
        for entry in self.fused:
            kinds = [pipeline.stage_config(s).student_kind() for s in entry]
            if any(k not in FUSABLE_STUDENTS for k in kinds):
                raise ValueError(f"stages.{name}.fused: {entry} trains {kinds}; fused heads exist for "
                                 f"{list(FUSABLE_STUDENTS)} students (the BEV task)")
        if self.fused and not set(self.protocols) - {"finetune"}:
            raise ValueError(f"stages.{name}.fused: fused heads are evaluated on frozen features; add linear_probe "
                             "or svm to protocols")

    def saved_models(self, pipeline: "PipelineConfig") -> dict[str, str]:
        """Fine-tuned segmenters this stage saves: name -> student kind (``slidr_range_10pct`` -> ``range_net``)."""
        saved = {segmenter_name(s, f): pipeline.stage_config(s).student_kind()
                 for s in self.students for f in self.finetune_fractions()}
        if "linear_probe" in self.protocols:  # BEV students deploy as the frozen student + its linear probe
            saved |= {segmenter_name(s, f): pipeline.stage_config(s).student_kind() for s in self.students
                      if pipeline.stage_config(s).student_kind() in PROBE_DEPLOYED_STUDENTS for f in self.label_fractions}
        return saved

    def finetune_fractions(self) -> list[float]:
        """The label fractions at which the fine-tune protocol runs (and saves a segmenter)."""
        if "finetune" not in self.protocols:
            return []
        wanted = self.finetune_label_fractions
        return [f for f in self.label_fractions if wanted is None or f in wanted]


# Students whose evaluation task reads features side by side in a fused head (the BEV task's fuse()).
FUSABLE_STUDENTS = ("pillar_bev", "camera_bev")
# Students whose deployable model is saved by the linear-probe protocol (the BEV task's save_probe).
PROBE_DEPLOYED_STUDENTS = ("pillar_bev", "camera_bev")


def segmenter_name(distill_stage: str, label_fraction: float) -> str:
    """Name of the fine-tuned segmenter the evaluate stage saves (``slidr_range_10pct``)."""
    return f"{distill_stage}_{label_fraction * 100:g}pct"
