"""The real CLI at toy size, as users run it: local Ray, then a real `ray job submit`."""

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from pipelines.cli import main

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def check_tiny_run(run_dir: Path) -> dict:
    report = json.loads((run_dir / "report.json").read_text())
    assert report["stage_order"] == ["synth", "superpixels", "overlay"]
    for stage in report["stages"]:
        manifest = json.loads((run_dir / stage / "manifest.json").read_text())
        for rel, entry in manifest["outputs"].items():
            assert (run_dir / stage / rel).stat().st_size == entry["size"]
    sp = report["stages"]["superpixels"]["metrics"]
    assert sp["images"] == 2 * 6 and 0 < sp["segments_max"] < sp["budget"]
    assert len(list((run_dir / "superpixels").rglob("*.png"))) == 12
    overlay = report["stages"]["overlay"]["metrics"]
    assert overlay["points_in_image"] > 100
    assert overlay["label_agreement"] > 0.9  # calibration chain lands points on their own class
    assert (run_dir / "overlay" / "overlay.png").stat().st_size > 1000
    assert "overlay/overlay.png" in (run_dir / "report.md").read_text()
    return report


@pytest.mark.slow
def test_cli_run_local_ray_then_skip(tmp_path):
    assert main(["run", "configs/tiny.yaml", f"runs_dir={tmp_path}"]) == 0
    first = check_tiny_run(tmp_path / "tiny")
    assert all(s["status"] == "ran" for s in first["stages"].values())
    assert (tmp_path / "tiny" / "run.log").read_text().count("[overlay] done") == 1
    assert main(["run", "configs/tiny.yaml", f"runs_dir={tmp_path}"]) == 0
    second = json.loads((tmp_path / "tiny" / "report.json").read_text())
    assert all(s["status"] == "skipped" for s in second["stages"].values())


def test_cli_reports_config_errors(capsys):
    assert main(["run", "configs/tiny.yaml", "stages.synth.scenes=zero"]) == 2
    assert "stages.synth.scenes" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_relative_runs_dir_from_the_repo_root_through_ray_train():
    """Issue 7: as a user runs it, from the repository root with the presets' relative ``runs_dir``.

    Ray Train V2 moves each worker into its own working directory, so a relative dataset
    path handed to a worker pointed nowhere and the training stage failed.
    """
    import yaml

    run_id = f"pytest-relative-paths-{os.getpid()}"
    run_dir = ROOT / "runs" / run_id
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "pipelines", "run", "tests/configs/slidr_tiny.yaml", f"run_id={run_id}",
             "only=[synth, superpixels, slidr_range]", "stages.slidr_range.optim.epochs=1"],
            cwd=ROOT, capture_output=True, text=True, timeout=900,
        )
        assert proc.returncode == 0, proc.stderr[-4000:]
        report = json.loads((run_dir / "report.json").read_text())
        assert report["stages"]["slidr_range"]["status"] == "ran"
        assert (run_dir / "slidr_range" / "student.safetensors").stat().st_size > 0
        saved = yaml.safe_load((run_dir / "config.yaml").read_text())
        assert saved["runs_dir"] == str(ROOT / "runs")  # the saved config names the files it used
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_ray_job_submit_on_a_local_head(tmp_path):
    """`ray start --head` + `ray job submit --working-dir .` runs the pipeline on the cluster."""
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env["PATH"] = f"{BIN}{os.pathsep}{env['PATH']}"  # the job's `python` is this venv's
    # Ray 2.60 heads require a token by default; the CLI only sends it in token mode.
    env["RAY_AUTH_MODE"] = "token"
    gcs_port, dash_port = _free_port(), _free_port()
    import ray as ray_module

    ray_module.shutdown()  # `ray stop` below ends every Ray process here, in-process ones too
    ray = str(BIN / "ray")
    temp_dir = Path(tempfile.mkdtemp(prefix="ray", dir="/tmp"))  # short: Ray's socket paths are length-limited
    subprocess.run(
        [ray, "start", "--head", f"--port={gcs_port}", "--num-cpus=2", "--include-dashboard=true",
         "--dashboard-host=127.0.0.1", f"--dashboard-port={dash_port}", "--disable-usage-stats",
         f"--temp-dir={temp_dir}"],
        check=True, env=env, cwd=ROOT, capture_output=True, timeout=180,
    )
    try:
        runs = tmp_path / "runs"
        excludes = json.dumps({"excludes": [".venv", "runs", "data", ".git", "*.pyc"]})
        job = subprocess.run(
            [ray, "job", "submit", f"--address=http://127.0.0.1:{dash_port}", "--working-dir", ".",
             "--runtime-env-json", excludes, "--",
             "python", "-m", "pipelines", "run", "configs/tiny.yaml", f"runs_dir={runs}"],
            env=env, cwd=ROOT, capture_output=True, text=True, timeout=600,
        )
        assert job.returncode == 0 and "succeeded" in job.stdout, job.stdout[-3000:] + job.stderr[-3000:]
        check_tiny_run(runs / "tiny")
    finally:
        subprocess.run([ray, "stop", "--force"], env=env, capture_output=True, timeout=120)
        shutil.rmtree(temp_dir, ignore_errors=True)


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_killed_run_resumes_to_identical_outputs(tmp_path):
    """SIGKILL the CLI mid-stage, start it again: same outputs as an uninterrupted run."""
    import signal
    import time

    def cli(runs: Path, *extra: str) -> list[str]:
        return [sys.executable, "-m", "pipelines", "run", "configs/tiny.yaml", f"runs_dir={runs}",
                "only=[synth]", "stages.synth.scenes=3", *extra]

    killed = tmp_path / "killed"
    proc = subprocess.Popen(cli(killed), cwd=ROOT, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    records = killed / "tiny" / "synth" / ".scenes"
    deadline = time.monotonic() + 300
    while not any(records.glob("scene_*.json")):
        assert proc.poll() is None, "the run ended before it could be interrupted"
        assert time.monotonic() < deadline, "no scene finished within 300 s"
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (killed / "tiny" / "synth" / "manifest.json").exists()

    resumed = subprocess.run(cli(killed), cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming an interrupted stage" in resumed.stderr
    clean = tmp_path / "clean"
    subprocess.run(cli(clean), cwd=ROOT, check=True, capture_output=True, timeout=600)
    a = json.loads((killed / "tiny" / "synth" / "manifest.json").read_text())["outputs"]
    b = json.loads((clean / "tiny" / "synth" / "manifest.json").read_text())["outputs"]
    assert a == b
