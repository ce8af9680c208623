"""A bundle made by the current code loads and runs with the robot image's pinned runtimes.

The Jetson image (docker/jetson.Dockerfile) installs docker/requirements-jetson.txt (older
onnx / onnxruntime, numpy 1.x) and copies only ``deploy/`` and ``modalities/``. This test
does the same in a fresh virtual environment (this machine's Python, not the image's 3.10)
and runs ``python -m deploy.cli infer`` there, so a bundle the robot cannot load fails CI
rather than the robot. ``cuda-python`` is left out: it only serves TensorRT, which needs a GPU.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
MODEL = "slidr_range_50pct"
GPU_ONLY = ("cuda-python",)


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_bundle_runs_with_the_robot_image_pins(exported_bundle, tiny_run, tmp_path):
    pins = [line.split("#")[0].strip() for line in (ROOT / "docker" / "requirements-jetson.txt").read_text().splitlines()]
    pins = [p for p in pins if p and not p.startswith(GPU_ONLY)]
    assert any(p.startswith("onnxruntime==") for p in pins) and any(p.startswith("onnx==") for p in pins)
    venv = tmp_path / "robot-venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    py = venv / "bin" / "python"
    pip = subprocess.run([py, "-m", "pip", "install", "-q", *pins], capture_output=True, text=True, timeout=600)
    assert pip.returncode == 0, pip.stderr[-3000:]
    image = tmp_path / "opt-edgedistill"  # what the image copies: deploy/ and modalities/ only
    for package in ("deploy", "modalities"):
        shutil.copytree(ROOT / package, image / package, ignore=shutil.ignore_patterns("__pycache__"))
    scan = json.loads((tiny_run / "evaluate" / "models" / f"{MODEL}.json").read_text())["heldout_scans"][0]["lidar"]
    versions = subprocess.run([py, "-c", "import onnx, onnxruntime, numpy; print(onnx.__version__, "
                               "onnxruntime.__version__, numpy.__version__)"], capture_output=True, text=True, cwd=image)

    def infer(python, cwd, precision: str) -> np.ndarray:
        out = tmp_path / f"labels-{precision}-{python == py}"
        proc = subprocess.run([python, "-m", "deploy.cli", "infer", str(exported_bundle), scan, "--out", str(out),
                               "--precision", precision], cwd=cwd, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, versions.stdout + proc.stderr[-3000:]
        labels = np.load(next(out.glob("*.labels.npy")))
        assert labels.dtype == np.uint8 and labels.shape == (Path(scan).stat().st_size // 20,)
        return labels

    # Every precision of the bundle runs there; fp32 gives the labels this environment gives
    # (INT8 kernels differ between onnxruntime releases, so int8 labels are only checked to run).
    infer(py, image, "int8")
    infer(py, image, "fp16")
    robot, here = infer(py, image, "fp32"), infer(sys.executable, ROOT, "fp32")
    assert np.mean(robot == here) > 0.999, versions.stdout
    # `verify` runs there from the bundle alone (no torch: parity is skipped and said so), and the
    # held-out metrics agree with the recorded ones within the tolerance documented for another runtime.
    proc = subprocess.run([py, "-m", "deploy.cli", "verify", str(exported_bundle), "--metric-tolerance", "0.5"],
                          cwd=image, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, versions.stdout + proc.stderr[-3000:]
    assert "skipped" in proc.stdout and "fp32" in proc.stdout and "int8" in proc.stdout
