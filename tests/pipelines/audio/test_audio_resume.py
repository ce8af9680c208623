"""DINO pre-training survives a killed Ray Train worker (restarted from its last checkpoint)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from tests.pipelines.slidr.test_distill_stage import _descendants, _is_train_worker, _kill, _wait_for

ROOT = Path(__file__).resolve().parents[3]
EPOCHS = 40  # tiny epochs take about a second unloaded: enough of them that the kill lands mid-training


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_killed_dino_worker_restarts_from_checkpoint(tmp_path):
    cmd = [sys.executable, "-m", "pipelines", "run", "tests/configs/audio_tiny.yaml", f"runs_dir={tmp_path}",
           "only=[keywords, dino]", f"stages.dino.optim.epochs={EPOCHS}"]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        stage = tmp_path / "audio_tiny" / "dino"
        _wait_for(stage / ".ray_results", "run-0/checkpoint_*/meta.json", proc, count=2)
        workers = [p for p in _descendants(proc) if _is_train_worker(p)]
        assert workers, "no Ray Train worker process of this run found to kill"
        _kill(workers)
        psutil.wait_procs(workers, timeout=30)
        out, _ = proc.communicate(timeout=800)
    finally:
        if proc.poll() is None:
            _kill(_descendants(proc))
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, out[-4000:]
    history = json.loads((stage / "history.json").read_text())
    assert [h["epoch"] for h in history] == list(range(EPOCHS))
    assert max(h["attempt_start_epoch"] for h in history) > 0  # later epochs ran after the restart
    record = json.loads((stage / "student.json").read_text())
    assert record["task"] == "clip_features" and (stage / record["weights"]).stat().st_size > 0
