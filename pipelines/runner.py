"""Resumable stage runner.

A pipeline is an ordered list of stages. Stage ``s`` of run ``r`` writes only into
``<runs_dir>/<r>/<s>/`` and finishes by writing ``manifest.json`` (atomically, last):
config hash, input hashes, every output with its size and sha256, metrics, library
versions and wall time. On a re-run:

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

from .config import DatasetConfig, PipelineConfig, to_yaml
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
    dataset: DatasetConfig  # where the data lives and which table version to read
    inputs: dict[str, Path]  # upstream stage name (or "dataset") -> folder
    log: logging.Logger


@dataclass
class StageResult:
    metrics: dict[str, Any] = field(default_factory=dict)
    # Markdown for the run report; image links are relative to the run folder.
    report_md: str = ""


StageFn = Callable[[StageContext], StageResult]


@dataclass(frozen=True)
class Stage:
    fn: StageFn
    section: str  # the config section the stage reads
    needs: tuple[str, ...] = ()  # upstream stages or "dataset"; "name?" = only if in the pipeline


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


def external_dataset_digest(root: Path, version: str) -> str:
    """Cheap identity of an external dataset: its table files' names, sizes and mtimes."""
    table_dir = root / version
    if not table_dir.is_dir():
        raise FileNotFoundError(f"dataset tables not found: {table_dir} (check dataset.root / dataset.version)")
    stats = {p.name: [p.stat().st_size, int(p.stat().st_mtime)] for p in sorted(table_dir.glob("*.json"))}
    return sha256_json({"root": str(root.resolve()), "tables": stats})


class Runner:
    """Runs the stages of one pipeline config into ``runs_dir/run_id``."""

    def __init__(self, cfg: PipelineConfig, stages: dict[str, Stage], force: tuple[str, ...] = ()):
        self.cfg = cfg.with_absolute_paths()  # paths handed to Ray workers never depend on their cwd
        self.stages = stages
        self.force = set(force)
        self.run_dir = self.cfg.run_dir
        self.digests: dict[str, str] = {}
        self.report: dict[str, dict] = {}

    def dataset_dir(self) -> Path:
        if "synth" in self.cfg.stages:
            return self.run_dir / "synth" / "nuscenes"
        assert self.cfg.dataset.root is not None
        return self.cfg.dataset.root

    def _inputs(self, stage: Stage) -> tuple[dict[str, Path], dict[str, str]]:
        paths, hashes = {}, {}
        for need in stage.needs:
            if need.endswith("?"):
                need = need[:-1]
                if need not in self.cfg.stages:
                    continue
            if need == "dataset":
                paths["dataset"] = self.dataset_dir()
                if "synth" in self.cfg.stages:
                    hashes["dataset"] = self.digests["synth"]
                else:
                    hashes["dataset"] = external_dataset_digest(paths["dataset"], self.cfg.dataset.version)
            else:
                if need not in self.digests:
                    raise ValueError(f"stage needs '{need}' to run before it; add it to `stages` earlier")
                paths[need] = self.run_dir / need
                hashes[need] = self.digests[need]
        return paths, hashes

    def run(self) -> dict[str, dict]:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.run_dir / "config.yaml", to_yaml(self.cfg))
        for name in self.cfg.stages:
            self._run_stage(name, self.stages[name])
        write_run_report(self.run_dir, self.cfg, self.report)
        return self.report

    def _run_stage(self, name: str, stage: Stage) -> None:
        section: BaseModel = getattr(self.cfg, stage.section)
        input_paths, input_hashes = self._inputs(stage)
        key = {
            "config_hash": sha256_json(
                {"stage": name, "config": section.model_dump(mode="json"), "seed": self.cfg.seed,
                 "dataset": self.cfg.dataset.model_dump(mode="json")}
            ),
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
            name=name, stage_dir=stage_dir, run_dir=self.run_dir, config=section, seed=self.cfg.seed, dataset=self.cfg.dataset,
            inputs=input_paths, log=logging.getLogger(f"edgedistill.{name}"),
        )
        result = stage.fn(ctx)
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
