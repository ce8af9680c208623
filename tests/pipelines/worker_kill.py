"""A training stage run through the real CLI whose Ray Train worker is SIGKILLed mid-training (shared by the
DINO and COMODO resume tests; the process helpers are the SLidR test's, which also plants a look-alike decoy)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import psutil

from tests.pipelines.slidr.test_distill_stage import _descendants, _is_train_worker, _kill, _wait_for

ROOT = Path(__file__).resolve().parents[2]


def run_killing_the_worker(cmd: list[str], stage: Path) -> str:
    """Run ``cmd`` from the repository root; once ``stage`` has two checkpoints on disk (the first one is surely
    registered with Ray by then), SIGKILL this run's Ray Train worker(s), by pid; the run must still succeed.
    Returns its output."""
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        _wait_for(stage / ".ray_results", "run-0/checkpoint_*/meta.json", proc, count=2)
        workers = [p for p in _descendants(proc) if _is_train_worker(p)]
        assert workers, "no Ray Train worker process of this run found to kill"
        _kill(workers)
        psutil.wait_procs(workers, timeout=30)
        out, _ = proc.communicate(timeout=800)
    finally:
        if proc.poll() is None:  # a failed assertion: stop this run, and only this run
            _kill(_descendants(proc))
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, out[-4000:]
    return out


def assert_resumed(stage: Path, epochs: int) -> None:
    """Every epoch ran once, and later epochs ran in an attempt started after the restart (from a checkpoint)."""
    history = json.loads((stage / "history.json").read_text())
    assert [h["epoch"] for h in history] == list(range(epochs))
    assert max(h["attempt_start_epoch"] for h in history) > 0  # later epochs ran after the restart
