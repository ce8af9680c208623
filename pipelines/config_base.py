"""Base classes of every pipeline config model (one place, so every section is strict alike)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict, Field

if TYPE_CHECKING:
    from .config import PipelineConfig


class StrictModel(BaseModel):
    """Unknown keys are errors (a misspelt key fails at load time), assignments are validated."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class StageConfig(StrictModel):
    """The config of one stage instance. Subclasses add ``kind: Literal[...]`` and their options.

    A stage names what it reads: ``dataset`` (a key of the pipeline's ``datasets``, where the
    kind reads one) and the upstream stages returned by :meth:`reads`.
    """

    def dataset_name(self) -> str | None:
        return getattr(self, "dataset", None)

    def reads(self) -> tuple[str, ...]:
        """Names of the upstream stages whose outputs this stage reads."""
        return ()

    def student_kind(self) -> str | None:
        """The student architecture a training stage writes (its student record), else None."""
        return None

    def check(self, name: str, pipeline: "PipelineConfig") -> None:
        """Cross-stage consistency, run at load time; raise ValueError naming the fields."""


class TrainStageConfig(StageConfig):
    """A stage that trains on Ray Train: its workers, their restarts and where checkpoints go."""

    num_workers: int = Field(default=1, ge=1)  # data-parallel Ray Train workers
    use_gpu: bool | None = None  # None: one GPU per worker when Ray sees enough
    max_failures: int = Field(default=2, ge=0)  # worker restarts, each from the last checkpoint
    # Checkpoints go to <storage_path>/<run id>/<stage>: a folder every node sees or a URI Ray Train
    # accepts (s3://, gs://); None: the stage folder.
    storage_path: str | None = None
