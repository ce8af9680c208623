"""End to end at toy size, as a user runs it: pipeline run -> export --quantize -> verify -> infer -> bench (real CLIs)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_pipeline_run_to_labels(tmp_path):
    runs = tmp_path / "runs"
    subprocess.run([sys.executable, "-m", "pipelines", "run", "tests/configs/slidr_tiny.yaml", f"runs_dir={runs}",
                    "only=[synth, superpixels, slidr_range, evaluate]",
                    "stages.evaluate.students=[slidr_range]"], cwd=ROOT, check=True, timeout=900)
    run = runs / "slidr_tiny"
    # Every comparison is a paired record a script can read, whatever the method.
    comparisons = json.loads((run / "report.json").read_text())["stages"]["evaluate"]["metrics"]["comparisons"]
    assert {(c["student"], c["protocol"]) for c in comparisons} == {("slidr_range", "linear_probe"),
                                                                    ("slidr_range", "finetune")}
    for c in comparisons:
        assert c["label_fraction"] == 0.5 and c["metric"] == "miou" and c["n_paired"] == 2
        low, high = c["gain_ci95"]
        assert low <= c["gain_mean"] <= high
        assert c["gain_mean"] == pytest.approx(c["distilled_mean"] - c["random_mean"])
        assert c["claimed"] == (low > 0 or high < 0)
    runs_json = json.loads((run / "evaluate" / "results.json").read_text())["runs"]
    assert len(runs_json) == 2 * 2 * 2  # protocols x paired runs x inits
    deploy = [sys.executable, "-m", "deploy.cli"]
    out = subprocess.run([*deploy, "export", str(run), "--quantize"], cwd=ROOT, check=True, capture_output=True,
                         text=True).stdout.strip().splitlines()[-1]
    bundle = Path(out)
    assert bundle.resolve() == (run / "deploy" / "slidr_range_50pct").resolve()
    meta = json.loads((bundle / "metadata.json").read_text())
    assert meta["format_version"] == 2 and meta["task"]["kind"] == "point_segmentation"
    assert meta["metrics"]["parity_fp32"]["max_rel_err"] <= 1e-4
    # The deployed graph reproduces the evaluate stage's own held-out mIoU.
    held = meta["metrics"]["heldout"]
    assert held["metric"] == "miou"
    assert held["by_precision"]["fp32"] == pytest.approx(meta["metrics"]["pipeline"]["miou_heldout"], abs=1e-6)
    assert set(held["by_precision"]) == {"fp32", "fp16", "int8"}
    assert {p: v["heldout_metric"] for p, v in meta["precisions"].items()} == held["by_precision"]
    subprocess.run([*deploy, "verify", str(bundle)], cwd=ROOT, check=True)
    scan = json.loads((run / "evaluate/models/slidr_range_50pct.json").read_text())["heldout_scans"][0]["lidar"]
    subprocess.run([*deploy, "infer", str(bundle), scan, "--out", str(tmp_path / "labels"), "--precision", "int8"],
                   cwd=ROOT, check=True)
    labels = np.load(next((tmp_path / "labels").glob("*.labels.npy")))
    assert labels.dtype == np.uint8 and labels.shape == (Path(scan).stat().st_size // 20,)
    subprocess.run([*deploy, "bench", str(bundle), "--iters", "2", "--warmup", "1", "--batch", "2",
                    "--backend", "onnxruntime"], cwd=ROOT, check=True)
    assert (bundle / "report" / "bench.png").is_file()
