"""Side-by-side table of two pipeline runs' headline figures (e.g. before / after a change).

    .venv/bin/python scripts/compare_runs.py runs/before/demo runs/demo [--names before after]

Reads each run's ``report.json``: every training stage's first/last-epoch loss, every
evaluation comparison (distilled and random-init metric, gain with its 95% interval),
and the deploy stage's parity, per-precision metric, INT8 drop and p50 latencies.
Prints a Markdown table; a figure missing from one run shows as "-".
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def _fmt(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.3g}" if abs(v) < 1e-2 and v != 0 else f"{v:.2f}"
    return str(v)


def headline(run_dir: Path) -> dict[str, str]:
    """Row label -> formatted figure of one run."""
    path = Path(run_dir) / "report.json"
    if not path.is_file():
        raise SystemExit(f"{path}: not found (is {run_dir} a finished run folder?)")
    stages = json.loads(path.read_text())["stages"]
    rows: dict[str, str] = {}
    for name, st in stages.items():
        m = st.get("metrics", {})
        if "loss_last_epoch" in m:
            rows[f"{name}: loss first / last epoch"] = f"{_fmt(m['loss_first_epoch'])} / {_fmt(m['loss_last_epoch'])}"
        for c in m.get("comparisons", []):
            label = f"{name}: {c['student']} {c['protocol']} {c['label_fraction']:.0%} {c['metric']}"
            ci = c.get("gain_ci95")
            ci_text = f" [{ci[0]:+.1f}, {ci[1]:+.1f}]" if ci else ""
            rows[label + " (random -> distilled, gain)"] = (
                f"{c['random_mean']:.1f} -> {c['distilled_mean']:.1f}, {c['gain_mean']:+.1f}{ci_text}")
        if "parity_max_rel_err" in m:
            rows[f"{name}: parity max rel err"] = _fmt(m["parity_max_rel_err"])
            for key in sorted(k for k in m if k.startswith(("miou_", "int8_", "p50_ms_"))):
                rows[f"{name}: {key}"] = _fmt(m[key])
        rows[f"{name}: wall time (s)"] = _fmt(st.get("wall_time_s"))
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("runs", nargs=2, type=Path)
    p.add_argument("--names", nargs=2, default=None)
    args = p.parse_args()
    names = args.names or [str(r) for r in args.runs]
    a, b = (headline(r) for r in args.runs)
    print(f"| figure | {names[0]} | {names[1]} |\n|---|---|---|")
    for key in list(a) + [k for k in b if k not in a]:
        print(f"| {key} | {a.get(key, '-')} | {b.get(key, '-')} |")


if __name__ == "__main__":
    main()
