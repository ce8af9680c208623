"""Config of the ``deploy`` stage kind (the stage itself: :mod:`pipelines.deploy_stage`)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from pydantic import Field

from deploy.sidecar import DEPLOYABLE_STUDENTS

from .config_base import StageConfig

if TYPE_CHECKING:
    from .config import PipelineConfig


class DeployConfig(StageConfig):
    kind: Literal["deploy"] = "deploy"
    evaluate: str = "evaluate"  # the evaluate stage whose fine-tuned model is shipped
    # Model of <evaluate>/models/ to ship (e.g. slidr_range_10pct); None: that stage's only deployable model.
    model: str | None = None
    precisions: list[Literal["fp16", "int8"]] = Field(default=["fp16", "int8"])
    bench: bool = True
    bench_batch: int = Field(default=4, ge=1)
    bench_iters: int = Field(default=30, ge=1)
    max_scans: int | None = Field(default=None, ge=1)  # held-out scans for parity/mIoU; None = all

    def reads(self) -> tuple[str, ...]:
        return (self.evaluate,)

    def check(self, name: str, pipeline: "PipelineConfig") -> None:
        """The model shipped must be one that the named evaluate stage saves."""
        evaluate = pipeline.stage_config(self.evaluate)
        if getattr(evaluate, "kind", None) != "evaluate":
            raise ValueError(f"stages.{name}.evaluate: {self.evaluate!r} is not an evaluate stage")
        produced = [m for m, student in evaluate.saved_models(pipeline).items() if student in DEPLOYABLE_STUDENTS]
        if self.model is None and len(produced) != 1:
            raise ValueError(f"stages.{name}.model is not set and stage {self.evaluate!r} saves {len(produced)} "
                             f"deployable models {produced}: name one")
        if self.model is not None and self.model not in produced:
            raise ValueError(f"stages.{name}.model {self.model!r} is never produced: stage {self.evaluate!r} saves the "
                             f"deployable models {produced} (fine-tuned {'/'.join(DEPLOYABLE_STUDENTS)} students at "
                             "its finetune_label_fractions)")
