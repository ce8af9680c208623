"""Typed, validated pipeline configuration.

A pipeline config is YAML validated by pydantic models (``extra="forbid"`` everywhere, so a
misspelt key fails at load time with its dotted path). Dotted overrides from the command
line (``superpixels.method=slic_fast``) are applied to the raw mapping before validation,
and values are parsed as YAML scalars (``3``, ``true``, ``[1, 2]``).

Each stage reads only its own section; the runner hands a stage its sub-config, never the
root. The resolved config is written into the run folder and beside every stage output.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from deploy.sidecar import DEPLOYABLE_STUDENTS
from modalities.camera.superpixels import SUPERPIXEL_METHODS
from modalities.synthetic.config import SynthConfig

from .evaluate.config import EvaluateConfig, segmenter_name
from .slidr.config import DistillConfig


class ConfigError(ValueError):
    """A config file or override that does not validate; the message names the field."""


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class RayConfig(StrictModel):
    # None: use RAY_ADDRESS when set (as under `ray job submit`), else start a local instance.
    address: str | None = None
    # CPUs for a local instance; None lets Ray count them.
    num_cpus: int | None = Field(default=None, ge=1)
    # The dashboard (bound to 127.0.0.1) also serves Ray's state API, which Ray Train's
    # placement-group cleaner polls; without it that cleaner only logs warnings.
    include_dashboard: bool = True


class DatasetConfig(StrictModel):
    # "synthetic": the `synth` stage generates it; "nuscenes": an existing nuScenes root.
    source: Literal["synthetic", "nuscenes"] = "synthetic"
    root: Path | None = None  # required for source=nuscenes
    version: str = "v1.0-synthetic"
    # The last N scenes (in table order) are held out: never distilled on, used for evaluation.
    holdout_scenes: int = Field(default=1, ge=0)
    # Sensor model of the scans (range-view student, evaluation); preset name or YAML path.
    lidar_sensor: str = "hdl32e"

    @model_validator(mode="after")
    def _root_for_real_data(self) -> "DatasetConfig":
        if self.source == "nuscenes" and self.root is None:
            raise ValueError("dataset.root is required when dataset.source is 'nuscenes'")
        return self


MAX_SUPERPIXEL_BUDGET = 65536  # ids are stored as uint16 PNG


class SuperpixelsConfig(StrictModel):
    # "slic" is exactly SLidR's SLIC; "slic_downsampled" runs it on a 2x smaller image:
    # ~3.6x faster at 1600x900, ~1.6 points lower boundary recall (benchmarks/superpixels.py).
    method: str = "slic"
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


class OverlayConfig(StrictModel):
    camera: str = "CAM_FRONT"
    sample_index: int = Field(default=0, ge=0)
    point_radius_px: int = Field(default=1, ge=1, le=10)  # 2 suits 1600x900 images


class DeployConfig(StrictModel):
    # Model of evaluate/models/ to ship (e.g. slidr_range_10pct); None: the run's only range_net model.
    model: str | None = None
    precisions: list[Literal["fp16", "int8"]] = Field(default=["fp16", "int8"])
    bench: bool = True
    bench_batch: int = Field(default=4, ge=1)
    bench_iters: int = Field(default=30, ge=1)
    max_scans: int | None = Field(default=None, ge=1)  # held-out scans for parity/mIoU; None = all


STAGE_NAMES = ("synth", "superpixels", "overlay", "slidr_sparse", "slidr_range", "evaluate", "deploy")
# Distillation stage -> the student it trains.
DISTILL_STUDENTS = {"slidr_sparse": "sparse_unet", "slidr_range": "range_net"}


class PipelineConfig(StrictModel):
    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")
    # Folder that holds runs/<run_id>/; a shared path on a cluster.
    runs_dir: Path = Path("runs")
    # Defaults to `name`, so re-running the same config resumes the same run.
    run_id: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_.-]+$")
    stages: list[str]
    seed: int = 0
    ray: RayConfig = RayConfig()
    dataset: DatasetConfig = DatasetConfig()
    synth: SynthConfig = SynthConfig()
    superpixels: SuperpixelsConfig = SuperpixelsConfig()
    overlay: OverlayConfig = OverlayConfig()
    slidr_sparse: DistillConfig = DistillConfig(student="sparse_unet")
    slidr_range: DistillConfig = DistillConfig(student="range_net")
    evaluate: EvaluateConfig = EvaluateConfig()
    deploy: DeployConfig = DeployConfig()

    @field_validator("stages")
    @classmethod
    def _known_stages(cls, stages: list[str]) -> list[str]:
        unknown = [s for s in stages if s not in STAGE_NAMES]
        if unknown:
            raise ValueError(f"unknown stage(s) {unknown}; known: {list(STAGE_NAMES)}")
        if len(set(stages)) != len(stages):
            raise ValueError(f"a stage is listed twice: {stages}")
        if not stages:
            raise ValueError("at least one stage is required")
        return stages

    @model_validator(mode="after")
    def _data_source_consistent(self) -> "PipelineConfig":
        if "synth" in self.stages and self.dataset.source != "synthetic":
            raise ValueError("stage 'synth' needs dataset.source: synthetic")
        for stage, student in DISTILL_STUDENTS.items():
            if getattr(self, stage).student != student:
                raise ValueError(f"{stage}.student must be {student!r}")
        if "synth" in self.stages and self.dataset.lidar_sensor != self.synth.lidar_sensor:
            raise ValueError(
                f"dataset.lidar_sensor ({self.dataset.lidar_sensor!r}) must equal synth.lidar_sensor"
                f" ({self.synth.lidar_sensor!r})"
            )
        if "synth" in self.stages and self.dataset.version != self.synth.version:
            raise ValueError(
                f"dataset.version ({self.dataset.version!r}) must equal synth.version ({self.synth.version!r})"
            )
        if "synth" not in self.stages and self.dataset.source == "synthetic" and self.dataset.root is None:
            raise ValueError("without the 'synth' stage, set dataset.root to an existing dataset")
        if "deploy" in self.stages:
            self._check_deploy_model()
        return self

    def _check_deploy_model(self) -> None:
        """The model the deploy stage ships must be one that this pipeline's evaluate stage saves."""
        if "evaluate" not in self.stages:
            raise ValueError("stage 'deploy' ships a model fine-tuned by the 'evaluate' stage: add 'evaluate' before it")
        deployable = [s for s, student in DISTILL_STUDENTS.items() if student in DEPLOYABLE_STUDENTS and s in self.stages]
        produced = [segmenter_name(s, f) for s in deployable for f in self.evaluate.finetune_fractions()]
        if self.deploy.model is None and len(produced) != 1:
            raise ValueError(f"deploy.model is not set and the evaluate stage saves {len(produced)} deployable models"
                             f" {produced}: name one")
        if self.deploy.model is not None and self.deploy.model not in produced:
            raise ValueError(f"deploy.model {self.deploy.model!r} is never produced: the evaluate stage saves the "
                             f"deployable models {produced} (fine-tuned range_net students at "
                             "evaluate.finetune_label_fractions)")

    @property
    def resolved_run_id(self) -> str:
        return self.run_id or self.name

    @property
    def run_dir(self) -> Path:
        return self.runs_dir / self.resolved_run_id

    def with_absolute_paths(self, base: Path | None = None) -> "PipelineConfig":
        """A copy whose file paths (``runs_dir``, ``dataset.root``, weights files, sensor YAMLs) are absolute.

        Relative paths are resolved once, against ``base`` (default: the current directory)
        where the run starts, because they cross process boundaries whose working directory
        differs from the driver's: Ray Train V2 moves every training worker into its own
        folder (``WorkingDirectorySetupCallback``), and Ray tasks on a cluster run in the
        job's unpacked working directory. A run folder's saved config then names the same
        files whichever directory it is re-run from.
        """
        base = (base or Path.cwd()).resolve()
        return type(self).model_validate(_absolutize(self.model_dump(mode="python"), base))


# String fields that hold either a preset name or a file path (a path has a suffix).
PRESET_OR_PATH_FIELDS = frozenset({"lidar_sensor"})


def _absolutize(node: Any, base: Path, field: str = "") -> Any:
    if isinstance(node, dict):
        return {k: _absolutize(v, base, k) for k, v in node.items()}
    if isinstance(node, list):
        return [_absolutize(v, base, field) for v in node]
    if isinstance(node, Path):
        return node if node.is_absolute() else base / node
    if isinstance(node, str) and field in PRESET_OR_PATH_FIELDS and Path(node).suffix and not Path(node).is_absolute():
        return str(base / node)
    return node


def parse_override(text: str) -> tuple[list[str], Any]:
    """``a.b.c=value`` -> (["a", "b", "c"], parsed YAML value)."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} must look like key.sub=value")
    key, raw = text.split("=", 1)
    parts = key.strip().split(".")
    if not all(parts):
        raise ConfigError(f"override {text!r} has an empty key part")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as e:
        raise ConfigError(f"override {text!r}: value is not valid YAML: {e}") from e
    return parts, value


def apply_overrides(raw: dict, overrides: list[str]) -> dict:
    """Return a copy of ``raw`` with each dotted override set (intermediate maps created)."""
    import copy

    out = copy.deepcopy(raw)
    for text in overrides:
        parts, value = parse_override(text)
        node = out
        for i, p in enumerate(parts[:-1]):
            child = node.get(p)
            if child is None:
                child = node[p] = {}
            if not isinstance(child, dict):
                raise ConfigError(f"override {text!r}: '{'.'.join(parts[: i + 1])}' is not a section")
            node = child
        node[parts[-1]] = value
    return out


def _format_validation_error(source: str, err: ValidationError) -> str:
    lines = [f"invalid config {source}:"]
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"]) or "<root>"
        msg = e["msg"]
        if e["type"] == "extra_forbidden":
            msg = "unknown key (check the spelling; `edgedistill config show` lists the keys)"
        lines.append(f"  {loc}: {msg}")
    return "\n".join(lines)


def load_raw(path: str | Path) -> dict:
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"config file not found: {path}")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from e
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the top level must be a mapping")
    return raw


def validate(raw: dict, source: str = "<dict>") -> PipelineConfig:
    try:
        return PipelineConfig.model_validate(raw)
    except ValidationError as e:
        raise ConfigError(_format_validation_error(source, e)) from None


def load_config(path: str | Path, overrides: list[str] | None = None) -> PipelineConfig:
    """Load, override and validate a pipeline YAML; raises ConfigError naming the field."""
    return validate(apply_overrides(load_raw(path), overrides or []), str(path))


def to_yaml(cfg: BaseModel) -> str:
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)
