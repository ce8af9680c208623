"""The audio pipeline through the real CLI at toy size: keywords -> DINO -> UnFuSeD -> evaluation."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from pipelines.student_record import read_student_record

ROOT = Path(__file__).resolve().parents[3]


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_audio_pipeline_end_to_end(tmp_path):
    cmd = [sys.executable, "-m", "pipelines", "run", "tests/configs/audio_tiny.yaml", f"runs_dir={tmp_path}"]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=880)
    assert proc.returncode == 0, proc.stderr[-4000:]
    run = tmp_path / "audio_tiny"
    report = json.loads((run / "report.json").read_text())
    assert report["stage_order"] == ["keywords", "dino", "unfused", "evaluate"]
    kw = report["stages"]["keywords"]["metrics"]["clips"]
    assert kw == {"train": 3 * 4 * 2, "test": 3 * 2 * 2, "pool": (4 + 1) * (3 + 20)}  # words x voices x takes
    for stage, kind in (("dino", "ds_cnn"), ("unfused", "ds_cnn")):
        record = read_student_record(run / stage)  # checks the weights' sha256 too
        assert (record["kind"], record["task"], record["input"]["kind"]) == (kind, "clip_features", "log_mel")
        assert record["input"]["std"] != 1.0  # the training clips' normalisation is stored with the run
    dino = json.loads((run / "dino" / "history.json").read_text())
    assert len(dino) == 2 and all(0 < h["teacher_entropy"] <= h["max_entropy"] + 1e-6 for h in dino)
    unfused = report["stages"]["unfused"]["metrics"]
    assert unfused["clusters"] == 6 and 0 < unfused["cluster_purity_train_pct"] <= 100
    results = json.loads((run / "evaluate" / "results.json").read_text())
    comps = {(c["student"], c["protocol"], c["label_fraction"]): c for c in results["comparisons"]}
    assert set(comps) == {(s, p, f) for s in ("dino", "unfused") for p, f in
                          (("linear_probe", 0.5), ("finetune", 0.5), ("linear_probe", 1.0))}
    for c in comps.values():
        assert c["metric"] == "accuracy" and c["test_samples"] == 12 and c["n_paired"] == 2
        assert 0 <= c["distilled_mean"] <= 100 and 0 <= c["random_mean"] <= 100
    runs = [r for r in results["runs"] if r["student"] == "unfused" and r["protocol"] == "linear_probe"]
    assert len({tuple(r["labeled_samples"]) for r in runs if r["label_fraction"] == 0.5}) == 2  # a subset per run
    sidecar = json.loads((run / "evaluate" / "models" / "unfused_50pct.json").read_text())
    assert sidecar["task"] == "keyword_spotting" and sidecar["classes"] == ["no", "stop", "yes"]
    assert len(sidecar["heldout_samples"]) == 12 and all(Path(s["audio"]).is_file() for s in sidecar["heldout_samples"])
    assert "Clip accuracy on the held-out voices" in (run / "report.md").read_text()
