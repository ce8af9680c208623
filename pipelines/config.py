"""Typed, validated pipeline configuration.

A pipeline config is YAML validated by pydantic models (``extra="forbid"`` everywhere, so a
misspelt key fails at load time with its dotted path)::

    name: demo
    datasets:
      driving: {kind: nuscenes, from_stage: synth, version: v1.0-synthetic, holdout_scenes: 1}
    stages:                      # stage instances in run order, each with its kind (stages.KINDS)
      synth: {kind: synth_driving, scenes: 4}
      superpixels: {kind: superpixels, dataset: driving}
      slidr_range: {kind: slidr, dataset: driving, superpixels: superpixels, student: range_net}

Dotted overrides from the command line (``stages.slidr_range.optim.lr=0.1``) are applied to
the raw mapping before validation; values are parsed as YAML scalars (``3``, ``true``,
``[1, 2]``). References between stages and datasets, and each kind's cross-stage checks
(``StageConfig.check``), are validated at load time too.

Each stage reads only its own section; the runner hands a stage its sub-config and its
dataset spec, never the root. The resolved config is written into the run folder and
beside every stage output.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Union

import yaml
from pydantic import BaseModel, Field, ValidationError, field_validator, model_validator

from .config_base import StrictModel
from .datasets import DatasetSpec
from .stages import KINDS


class ConfigError(ValueError):
    """A config file or override that does not validate; the message names the field."""


class RayConfig(StrictModel):
    # None: use RAY_ADDRESS when set (as under `ray job submit`), else start a local instance.
    address: str | None = None
    # CPUs for a local instance; None lets Ray count them.
    num_cpus: int | None = Field(default=None, ge=1)
    # The dashboard (bound to 127.0.0.1) also serves Ray's state API, which Ray Train's
    # placement-group cleaner polls; without it that cleaner only logs warnings.
    include_dashboard: bool = True


# One stage instance: the model of its kind, chosen by the `kind` key (KINDS in stages.py).
AnyStageConfig = Annotated[Union[tuple(k.config for k in KINDS.values())], Field(discriminator="kind")]
NAME_PATTERN = r"^[A-Za-z0-9_.-]+$"


class PipelineConfig(StrictModel):
    name: str = Field(min_length=1, pattern=NAME_PATTERN)
    # Folder that holds runs/<run_id>/; a shared path on a cluster.
    runs_dir: Path = Path("runs")
    # Defaults to `name`, so re-running the same config resumes the same run.
    run_id: str | None = Field(default=None, pattern=NAME_PATTERN)
    seed: int = 0
    ray: RayConfig = RayConfig()
    # Named data sources; a stage reads one by name (`dataset: driving`).
    datasets: dict[str, DatasetSpec] = {}
    # Stage instances in run order: name -> config with its `kind`.
    stages: dict[str, AnyStageConfig]
    # Run only these stages (the others must have run before: their outputs are read from disk).
    only: list[str] | None = None

    @field_validator("stages")
    @classmethod
    def _stage_names(cls, stages: dict) -> dict:
        if not stages:
            raise ValueError("at least one stage is required")
        bad = [n for n in stages if not re.match(NAME_PATTERN, n)]
        if bad:
            raise ValueError(f"stage names must match {NAME_PATTERN}: {bad}")
        return stages

    @model_validator(mode="after")
    def _references(self) -> "PipelineConfig":
        names = list(self.stages)
        for name in self.only or ():
            if name not in self.stages:
                raise ValueError(f"only: {name!r} is not a stage of this pipeline ({names})")
        for ds_name, ds in self.datasets.items():
            if ds.from_stage is not None:
                writer = self.stages.get(ds.from_stage)
                if writer is None or KINDS[writer.kind].writes_dataset is None:
                    raise ValueError(f"datasets.{ds_name}.from_stage: {ds.from_stage!r} is not a stage of this "
                                     "pipeline that writes a dataset")
        for i, (name, stage) in enumerate(self.stages.items()):
            ds_name = stage.dataset_name()
            if ds_name is not None:
                if ds_name not in self.datasets:
                    raise ValueError(f"stages.{name}.dataset: unknown dataset {ds_name!r}; known: {list(self.datasets)}")
                writer = self.datasets[ds_name].from_stage
                if writer is not None and names.index(writer) > i:
                    raise ValueError(f"stages.{name} reads dataset {ds_name!r}, which stage {writer!r} writes later")
            for upstream in stage.reads():
                if upstream not in self.stages or names.index(upstream) >= i:
                    raise ValueError(f"stages.{name} reads stage {upstream!r}, which must be a stage listed before it"
                                     f" (stages in order: {names})")
            stage.check(name, self)
        return self

    def stage_config(self, name: str):
        if name not in self.stages:
            raise ValueError(f"no stage named {name!r}; stages: {list(self.stages)}")
        return self.stages[name]

    def selected_stages(self) -> list[str]:
        """The stages a run executes, in order."""
        return [n for n in self.stages if self.only is None or n in self.only]

    @property
    def resolved_run_id(self) -> str:
        return self.run_id or self.name

    @property
    def run_dir(self) -> Path:
        return self.runs_dir / self.resolved_run_id

    def with_absolute_paths(self, base: Path | None = None) -> "PipelineConfig":
        """A copy whose file paths (``runs_dir``, dataset roots, weights files, sensor YAMLs) are absolute.

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
# String fields that hold a folder or a URI (``scheme://``); a relative folder is made absolute.
PATH_OR_URI_FIELDS = frozenset({"storage_path"})


def _absolutize(node: Any, base: Path, field: str = "") -> Any:
    if isinstance(node, dict):
        return {k: _absolutize(v, base, k) for k, v in node.items()}
    if isinstance(node, list):
        return [_absolutize(v, base, field) for v in node]
    if isinstance(node, Path):
        return node if node.is_absolute() else base / node
    if isinstance(node, str) and field in PRESET_OR_PATH_FIELDS and Path(node).suffix and not Path(node).is_absolute():
        return str(base / node)
    if isinstance(node, str) and field in PATH_OR_URI_FIELDS and "://" not in node and not Path(node).is_absolute():
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
        parts = list(e["loc"])
        if len(parts) >= 3 and parts[0] == "stages" and parts[2] in KINDS:
            del parts[2]  # the discriminator tag pydantic adds for the stage's kind
        loc = ".".join(str(p) for p in parts) or "<root>"
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
