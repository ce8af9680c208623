"""Exit non-zero unless a run folder holds a report in which every stage of its config finished.

    python scripts/check_report.py runs/demo

Used by CI after `make demo`; prints one line per stage (status, wall time).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import yaml


def check(run_dir: Path) -> list[str]:
    """Problems found (empty when the run is complete)."""
    report_path = run_dir / "report.json"
    if not report_path.is_file():
        return [f"{report_path}: missing (the run did not finish)"]
    report = json.loads(report_path.read_text())
    wanted = yaml.safe_load((run_dir / "config.yaml").read_text())["stages"]
    problems = []
    for name in wanted:
        stage = report["stages"].get(name)
        if stage is None:
            problems.append(f"stage {name}: not in {report_path}")
        elif stage["status"] not in ("ran", "skipped"):
            problems.append(f"stage {name}: status {stage['status']!r}")
        elif not (run_dir / name / "manifest.json").is_file():
            problems.append(f"stage {name}: no manifest.json")
        else:
            print(f"{name:<14} {stage['status']:<8} {stage['wall_time_s']:8.1f} s")
    return problems


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    problems = check(Path(argv[0]))
    for p in problems:
        print(f"check_report: {p}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
