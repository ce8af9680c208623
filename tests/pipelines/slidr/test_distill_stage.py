"""SLidR distillation through the real CLI: training, a killed worker, a killed run."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]


def _cli(runs: Path, epochs: int) -> list[str]:
    return [sys.executable, "-m", "pipelines", "run", "tests/configs/slidr_tiny.yaml", f"runs_dir={runs}",
            "only=[synth, superpixels, slidr_range]", f"stages.slidr_range.optim.epochs={epochs}"]


def _wait_for(pattern_root: Path, glob: str, proc: subprocess.Popen, timeout_s: float = 400, count: int = 1) -> None:
    deadline = time.monotonic() + timeout_s
    while len(list(pattern_root.glob(glob))) < count:
        assert proc.poll() is None, "the run ended before the event"
        assert time.monotonic() < deadline, f"no {glob} under {pattern_root} within {timeout_s} s"
        time.sleep(0.5)


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_killed_worker_restarts_from_checkpoint(tmp_path):
    """SIGKILL the Ray Train worker mid-training: Ray restarts it from the last checkpoint."""
    # Epochs take seconds here: enough of them that the kill lands while training still runs.
    proc = subprocess.Popen(_cli(tmp_path, epochs=12), cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    stage = tmp_path / "slidr_tiny" / "slidr_range"
    # Two checkpoints on disk: the first one is surely registered with Ray by then.
    _wait_for(stage / ".ray_results", "run-0/checkpoint_*/meta.json", proc, count=2)
    killed = subprocess.run(["pkill", "-9", "-f", "RayTrainWorker"], capture_output=True)
    assert killed.returncode == 0, "no Ray Train worker process found to kill"
    out, _ = proc.communicate(timeout=800)
    assert proc.returncode == 0, out[-4000:]
    history = json.loads((stage / "history.json").read_text())
    assert [h["epoch"] for h in history] == list(range(12))
    assert max(h["attempt_start_epoch"] for h in history) > 0  # later epochs ran after a restart
    assert (stage / "student.safetensors").stat().st_size > 0


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_killed_pipeline_resumes_training(tmp_path):
    """SIGKILL the whole run after a checkpoint; the re-run continues from it."""
    proc = subprocess.Popen(_cli(tmp_path, epochs=8), cwd=ROOT, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    stage = tmp_path / "slidr_tiny" / "slidr_range"
    _wait_for(stage / ".ray_results", "run-0/checkpoint_*/meta.json", proc)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    subprocess.run(["pkill", "-9", "-f", "RayTrainWorker"], capture_output=True)  # orphaned by the kill
    rerun = subprocess.run(_cli(tmp_path, epochs=8), cwd=ROOT, capture_output=True, text=True, timeout=800)
    assert rerun.returncode == 0, rerun.stderr[-4000:]
    assert "resuming from checkpoint" in rerun.stderr
    history = json.loads((stage / "history.json").read_text())
    assert [h["epoch"] for h in history] == list(range(8))
    assert history[-1]["attempt_start_epoch"] > 0
    report = json.loads((tmp_path / "slidr_tiny" / "report.json").read_text())
    assert report["stages"]["slidr_range"]["metrics"]["epochs"] == 8
