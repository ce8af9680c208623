"""Run-level reports: ``report.json`` (every stage's metrics) and ``report.md`` (for people)."""

from __future__ import annotations

import json
import time
from pathlib import Path

from modalities.fileio import atomic_write_json, atomic_write_text
from modalities.versions import library_versions

from .config import PipelineConfig


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, dict):
        return json.dumps(value, default=str)
    return str(value)


def write_run_report(run_dir: Path, cfg: PipelineConfig, stages: dict[str, dict]) -> None:
    machine = {k: v for k, v in library_versions().items() if k in ("python", "platform")}
    atomic_write_json(
        run_dir / "report.json",
        {
            "run_id": cfg.resolved_run_id,
            "pipeline": cfg.name,
            "updated_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "machine": machine,
            "stage_order": list(stages),
            "stages": {name: {k: v for k, v in s.items() if k != "report_md"} for name, s in stages.items()},
        },
    )
    lines = [
        f"# edgedistill run `{cfg.resolved_run_id}` ({cfg.name})",
        "",
        f"Machine: {machine['platform']}, Python {machine['python']}. Config: [config.yaml](config.yaml).",
        "",
        "| stage | status | wall time (s) | outputs |",
        "|---|---|---|---|",
    ]
    for name, s in stages.items():
        lines.append(f"| {name} | {s['status']} | {s['wall_time_s']:.1f} | {s['outputs']} |")
    for name, s in stages.items():
        lines += ["", f"## {name}", ""]
        # Lists of records (e.g. the evaluate stage's comparisons) are in the stage's own table below.
        scalars = {k: v for k, v in s["metrics"].items() if not isinstance(v, list)}
        if scalars:
            lines += ["| metric | value |", "|---|---|"]
            lines += [f"| {k} | {_fmt(v)} |" for k, v in scalars.items()]
        if s.get("report_md"):
            lines += ["", s["report_md"].strip()]
    atomic_write_text(run_dir / "report.md", "\n".join(lines) + "\n")
