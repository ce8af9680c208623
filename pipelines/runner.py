"""Resumable stage runner.

A pipeline is an ordered list of stages. Stage ``s`` of run ``r`` writes only into
``<runs_dir>/<r>/<s>/`` and finishes by writing ``manifest.json`` (atomically, last):
config hash, input hashes (the output digests of the upstream stages it reads, and its
dataset's files plus the spec fields its kind depends on, ``StageKind.dataset_fields``),
every output with its size and sha256, metrics, library versions and wall time. On a re-run:

- a stage whose manifest matches (same config hash, same input hashes, every output
  present with its recorded size) is skipped;
- a stage folder without a manifest but with the same ``.stage_key`` is a stage that was
  killed: its completed (atomically written) files are kept and the stage function
  resumes, skipping work that is already on disk;
- anything else is wiped and run from scratch, and so is every stage downstream of it,
  since its input hash changes.

``report.json`` (machine-readable metrics of every stage) and ``report.md`` are rewritten at
the run root after every stage.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from pydantic import BaseModel

from modalities.fileio import atomic_write_json, atomic_write_text, sha256_file, sha256_json
from modalities.versions import library_versions

from .config import PipelineConfig, to_yaml
from .datasets import DatasetSpec, dataset_key
from .stages import KINDS
from .report import write_run_report

log = logging.getLogger("edgedistill")

MANIFEST = "manifest.json"
STAGE_KEY = ".stage_key"


@dataclass
class StageContext:
    """What a stage function sees: its own folder and sub-config, its inputs, a logger."""

    name: str
    stage_dir: Path
    run_dir: Path
    config: BaseModel
    seed: int
    dataset: DatasetSpec | None  # the spec of the dataset the stage reads (split, version, sensor), if any
    inputs: dict[str, Path]  # upstream stage name -> its folder; "dataset" -> the dataset's root
    log: logging.Logger


@dataclass
class StageResult:
    metrics: dict[str, Any] = field(default_factory=dict)
    # Markdown for the run report; image links are relative to the run folder.
    report_md: str = ""


StageFn = Callable[[StageContext], StageResult]


def output_files(stage_dir: Path) -> list[Path]:
    """Every file a stage produced: all files except the manifest and hidden bookkeeping."""
    return sorted(
        p
        for p in stage_dir.rglob("*")
        if p.is_file() and p.name != MANIFEST and not any(part.startswith(".") for part in p.relative_to(stage_dir).parts)
    )


def read_manifest(stage_dir: Path) -> dict | None:
    path = stage_dir / MANIFEST
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError:
        log.warning("%s is corrupt; the stage will run again", path)
        return None


def manifest_matches(manifest: dict | None, stage_dir: Path, key: dict) -> bool:
    if manifest is None or manifest.get("key") != key:
        return False
    for rel, entry in manifest.get("outputs", {}).items():
        p = stage_dir / rel
        if not p.is_file() or p.stat().st_size != entry["size"]:
            return False
    return True


def outputs_digest(manifest: dict) -> str:
    """The input hash a downstream stage records for this stage."""
    return sha256_json({rel: e["sha256"] for rel, e in manifest["outputs"].items()})


class Runner:
    """Runs the stages of one pipeline config into ``runs_dir/run_id``.

    ``functions`` (kind -> stage function) replaces the functions of :data:`KINDS`, for tests.
    """

    def __init__(self, cfg: PipelineConfig, force: tuple[str, ...] = (),
                 functions: dict[str, StageFn] | None = None):
        self.cfg = cfg.with_absolute_paths()  # paths handed to Ray workers never depend on their cwd
        self.force = set(force)
        self.functions = functions or {}
        self.run_dir = self.cfg.run_dir
        self.digests: dict[str, str] = {}
        self.report: dict[str, dict] = {}

    def run(self) -> dict[str, dict]:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.run_dir / "config.yaml", to_yaml(self.cfg))
        for name in self.cfg.selected_stages():
            self._run_stage(name)
        write_run_report(self.run_dir, self.cfg, self.report)
        return self.report

    def _digest(self, name: str) -> str:
        """Output digest of an upstream stage: run in this call, or (not selected by `only`) on disk."""
        if name not in self.digests:
            manifest = read_manifest(self.run_dir / name)
            if manifest is None:
                raise ValueError(f"stage {name!r} has no finished output in {self.run_dir} and is not selected by"
                                 " `only`: run it first (or add it to `only`)")
            self.digests[name] = outputs_digest(manifest)
        return self.digests[name]

    def _dataset(self, name: str) -> tuple[Path, str]:
        """(root, files digest) of a named dataset."""
        spec = self.cfg.datasets[name]
        if spec.from_stage is not None:
            writer = self.cfg.stages[spec.from_stage]
            return self.run_dir / spec.from_stage / KINDS[writer.kind].writes_dataset, self._digest(spec.from_stage)
        assert spec.root is not None
        return spec.root, spec.files_digest(spec.root)

    def _inputs(self, section) -> tuple[DatasetSpec | None, dict[str, Path], dict[str, str]]:
        paths, hashes, spec = {}, {}, None
        ds_name = section.dataset_name()
        if ds_name is not None:
            spec = self.cfg.datasets[ds_name]
            paths["dataset"], files = self._dataset(ds_name)
            hashes[f"dataset:{ds_name}"] = dataset_key(spec, files, KINDS[section.kind].dataset_fields)
        for upstream in section.reads():
            paths[upstream] = self.run_dir / upstream
            hashes[upstream] = self._digest(upstream)
        return spec, paths, hashes

    def _run_stage(self, name: str) -> None:
        section = self.cfg.stages[name]
        spec, input_paths, input_hashes = self._inputs(section)
        key = {
            "config_hash": sha256_json({"stage": name, "config": section.model_dump(mode="json"), "seed": self.cfg.seed}),
            "inputs": input_hashes,
        }
        stage_dir = self.run_dir / name
        manifest = read_manifest(stage_dir)
        if name not in self.force and manifest_matches(manifest, stage_dir, key):
            log.info("[%s] up to date (manifest matches), skipping", name)
            self._record(name, manifest, status="skipped")
            return

        key_path = stage_dir / STAGE_KEY
        resumable = (
            name not in self.force
            and manifest is None
            and key_path.exists()
            and json.loads(key_path.read_text()) == key
        )
        if stage_dir.exists() and not resumable:
            log.info("[%s] config or inputs changed (or --force): clearing %s", name, stage_dir)
            shutil.rmtree(stage_dir)
        elif resumable:
            log.info("[%s] resuming an interrupted stage, keeping %d finished file(s)", name, len(output_files(stage_dir)))
        stage_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_json(key_path, key)
        atomic_write_text(stage_dir / "config.yaml", to_yaml(section))

        log.info("[%s] running", name)
        t0 = time.perf_counter()
        ctx = StageContext(
            name=name, stage_dir=stage_dir, run_dir=self.run_dir, config=section, seed=self.cfg.seed, dataset=spec,
            inputs=input_paths, log=logging.getLogger(f"edgedistill.{name}"),
        )
        fn = self.functions.get(section.kind) or KINDS[section.kind].function()
        result = fn(ctx)
        if result.report_md:
            atomic_write_text(stage_dir / "report.md", result.report_md)
        wall = time.perf_counter() - t0
        outputs = {
            str(p.relative_to(stage_dir)): {"sha256": sha256_file(p), "size": p.stat().st_size}
            for p in output_files(stage_dir)
        }
        manifest = {
            "stage": name,
            "key": key,
            "config": section.model_dump(mode="json"),
            "outputs": outputs,
            "metrics": result.metrics,
            "versions": library_versions(),
            "wall_time_s": round(wall, 3),
            "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        atomic_write_json(stage_dir / MANIFEST, manifest)
        log.info("[%s] done in %.1f s: %s", name, wall, json.dumps(result.metrics, default=str))
        self._record(name, manifest, status="ran")
        write_run_report(self.run_dir, self.cfg, self.report)

    def _record(self, name: str, manifest: dict, status: str) -> None:
        self.digests[name] = outputs_digest(manifest)
        report_md = self.run_dir / name / "report.md"
        self.report[name] = {
            "status": status,
            "wall_time_s": manifest["wall_time_s"],
            "metrics": manifest["metrics"],
            "outputs": len(manifest["outputs"]),
            "report_md": report_md.read_text() if report_md.exists() else "",
        }
