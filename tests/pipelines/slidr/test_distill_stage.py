"""SLidR distillation through the real CLI: training, a killed worker, a killed run."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

ROOT = Path(__file__).resolve().parents[3]
WORKER = "RayTrainWorker"  # in the process title Ray gives a Ray Train worker ("ray::RayTrainWorker...")


def _cli(runs: Path, epochs: int) -> list[str]:
    return [sys.executable, "-m", "pipelines", "run", "tests/configs/slidr_tiny.yaml", f"runs_dir={runs}",
            "only=[synth, superpixels, slidr_range]", f"stages.slidr_range.optim.epochs={epochs}"]


def _wait_for(pattern_root: Path, glob: str, proc: subprocess.Popen, timeout_s: float = 400, count: int = 1) -> None:
    deadline = time.monotonic() + timeout_s
    while len(list(pattern_root.glob(glob))) < count:
        assert proc.poll() is None, "the run ended before the event"
        assert time.monotonic() < deadline, f"no {glob} under {pattern_root} within {timeout_s} s"
        time.sleep(0.5)


def _descendants(proc: subprocess.Popen) -> list[psutil.Process]:
    """Every process of this run: the CLI started its own Ray instance (gcs, raylet), whose raylet forks the workers."""
    try:
        return psutil.Process(proc.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def _is_train_worker(p: psutil.Process) -> bool:
    try:
        return WORKER in " ".join(p.cmdline())
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return False


def _kill(processes: list[psutil.Process]) -> None:
    """SIGKILL by pid; psutil checks each pid still names the process it recorded (no pid-reuse accident)."""
    for p in processes:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass


def _decoy() -> subprocess.Popen:
    """A process outside this run whose command line names a Ray Train worker, like one of another job."""
    return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(900)", f"ray::{WORKER}.decoy"])


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_killed_worker_restarts_from_checkpoint(tmp_path):
    """SIGKILL this run's Ray Train worker mid-training (by pid, nobody else's): Ray restarts it from the last checkpoint."""
    # Epochs take seconds here: enough of them that the kill lands while training still runs.
    proc = subprocess.Popen(_cli(tmp_path, epochs=12), cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    decoy = _decoy()
    try:
        stage = tmp_path / "slidr_tiny" / "slidr_range"
        # Two checkpoints on disk: the first one is surely registered with Ray by then.
        _wait_for(stage / ".ray_results", "run-0/checkpoint_*/meta.json", proc, count=2)
        workers = [p for p in _descendants(proc) if _is_train_worker(p)]
        assert workers, "no Ray Train worker process of this run found to kill"
        _kill(workers)
        psutil.wait_procs(workers, timeout=30)
        assert decoy.poll() is None, "a look-alike process outside this run was killed"
        out, _ = proc.communicate(timeout=800)
    finally:
        decoy.kill()
        decoy.wait()
        if proc.poll() is None:  # a failed assertion: stop this run, and only this run
            _kill(_descendants(proc))
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, out[-4000:]
    history = json.loads((stage / "history.json").read_text())
    assert [h["epoch"] for h in history] == list(range(12))
    assert max(h["attempt_start_epoch"] for h in history) > 0  # later epochs ran after a restart
    assert (stage / "student.safetensors").stat().st_size > 0


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_killed_pipeline_resumes_training(tmp_path):
    """SIGKILL the whole run after a checkpoint (its orphans by pid, nobody else's); the re-run continues from it."""
    proc = subprocess.Popen(_cli(tmp_path, epochs=8), cwd=ROOT, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    decoy = _decoy()
    try:
        stage = tmp_path / "slidr_tiny" / "slidr_range"
        _wait_for(stage / ".ray_results", "run-0/checkpoint_*/meta.json", proc)
        run_processes = _descendants(proc)  # recorded before the kill orphans them
        assert any(_is_train_worker(p) for p in run_processes), "no Ray Train worker process of this run found"
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        _kill(run_processes)  # whatever of this run's Ray instance outlived the process group (by pid)
        assert decoy.poll() is None, "a look-alike process outside this run was killed"
    finally:
        decoy.kill()
        decoy.wait()
    rerun = subprocess.run(_cli(tmp_path, epochs=8), cwd=ROOT, capture_output=True, text=True, timeout=800)
    assert rerun.returncode == 0, rerun.stderr[-4000:]
    assert "resuming from checkpoint" in rerun.stderr
    history = json.loads((stage / "history.json").read_text())
    assert [h["epoch"] for h in history] == list(range(8))
    assert history[-1]["attempt_start_epoch"] > 0
    report = json.loads((tmp_path / "slidr_tiny" / "report.json").read_text())
    assert report["stages"]["slidr_range"]["metrics"]["epochs"] == 8
