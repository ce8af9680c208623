"""The video-to-IMU pipeline through the real CLI at toy size: recordings -> teacher -> COMODO / InfoNCE ->
evaluation -> deploy; and a killed COMODO worker that resumes from its checkpoint (queue included)."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from pipelines.student_record import read_student_record
from tests.pipelines.worker_kill import assert_resumed, run_killing_the_worker

ROOT = Path(__file__).resolve().parents[3]


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_comodo_pipeline_end_to_end(tmp_path):
    cmd = [sys.executable, "-m", "pipelines", "run", "tests/configs/comodo_tiny.yaml", f"runs_dir={tmp_path}"]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=880)
    assert proc.returncode == 0, proc.stderr[-4000:]
    run = tmp_path / "comodo_tiny"
    report = json.loads((run / "report.json").read_text())
    assert report["stage_order"] == ["recordings", "teacher", "comodo", "infonce", "evaluate", "deploy"]
    with open(run / "recordings" / "egocentric" / "labels.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 3 * 4 * 2 and {r["subject"] for r in rows} == {"s00", "s01", "s02"}  # subjects x acts x 2
    teacher = report["stages"]["teacher"]["metrics"]
    train_recordings = 2 * 4 * 2  # the last subject is held out
    assert teacher["recordings"] == train_recordings and teacher["clips"] == 2 * train_recordings
    with np.load(run / "teacher" / "embeddings.npz") as z:
        emb = z["embedding"]
        assert emb.shape == (32, 32) and np.allclose(np.linalg.norm(emb, axis=1), 1, atol=1e-5)
        assert np.abs(emb - emb[0]).max() > 0.1  # clips differ
    for stage, kind in (("comodo", "imu_cnn"), ("infonce", "imu_transformer")):
        record = read_student_record(run / stage)  # checks the weights' sha256 too
        assert (record["kind"], record["task"], record["input"]["kind"]) == (kind, "window_features", "imu_window")
        assert record["input"]["std"] != [1.0] * 6  # the training windows' normalisation is stored with the run
        m = report["stages"][stage]["metrics"]
        assert m["windows"] == 32 and m["queue_seed_windows"] == 6 and m["train_windows"] == 26
    history = json.loads((run / "comodo" / "history.json").read_text())
    assert len(history) == 2 and all(np.isfinite(h["loss"]) and np.isfinite(h["heldout_loss"]) for h in history)
    results = json.loads((run / "evaluate" / "results.json").read_text())
    comps = {(c["student"], c["protocol"], c["label_fraction"]): c for c in results["comparisons"]}
    assert set(comps) == {(s, p, f) for s in ("comodo", "infonce") for p, f in
                          (("svm", 0.5), ("linear_probe", 0.5), ("finetune", 0.5), ("svm", 1.0),
                           ("linear_probe", 1.0))}
    for key, c in comps.items():
        assert c["metric"] == "accuracy" and c["test_samples"] == 16 and c["n_paired"] == 2  # 8 recordings x 2
        assert ("top3" in c) == (key[1] != "finetune")
        if "top3" in c:
            assert c["top3"]["distilled_mean"] >= c["distilled_mean"]
    # COMODO vs its InfoNCE baseline on the same paired runs, for every protocol and fraction
    pairs = {(h["a"], h["b"], h["protocol"], h["label_fraction"]): h for h in results["head_to_head"]}
    assert set(pairs) == {("comodo", "infonce", p, f) for _, p, f in comps}
    for (_, _, p, f), h in pairs.items():
        assert h["a_mean"] == comps[("comodo", p, f)]["distilled_mean"]
        assert h["b_mean"] == comps[("infonce", p, f)]["distilled_mean"]
        assert np.isclose(h["difference_mean"], h["a_mean"] - h["b_mean"]) and h["n_paired"] == 2
    assert "Distilled students head to head" in (run / "evaluate" / "report.md").read_text()
    sidecar = json.loads((run / "evaluate" / "models" / "comodo_50pct.json").read_text())
    assert sidecar["task"] == "imu_activity" and sidecar["classes"] == sorted(sidecar["classes"])
    assert len(sidecar["heldout_samples"]) == 8 and all(Path(s["imu"]).is_file() for s in sidecar["heldout_samples"])
    deploy = report["stages"]["deploy"]["metrics"]
    assert deploy["parity_max_rel_err"] < 1e-4 and 0 <= deploy["accuracy_int8"] <= 100
    text = (run / "report.md").read_text()
    assert "held-out subjects" in text and "Top-k accuracy" in text


EPOCHS = 60  # batches of 2 windows: 13 steps an epoch, so that the kill lands mid-training


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_killed_comodo_worker_restarts_from_checkpoint(tmp_path):
    cmd = [sys.executable, "-m", "pipelines", "run", "tests/configs/comodo_tiny.yaml", f"runs_dir={tmp_path}",
           "only=[recordings, teacher, comodo]", f"stages.comodo.optim.epochs={EPOCHS}", "stages.comodo.batch_windows=2"]
    stage = tmp_path / "comodo_tiny" / "comodo"
    run_killing_the_worker(cmd, stage)
    assert_resumed(stage, EPOCHS)
    record = read_student_record(stage)  # the hand-off after the restart: weights present, sha256 matches
    assert record["task"] == "window_features"
