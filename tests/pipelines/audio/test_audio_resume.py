"""DINO pre-training survives a killed Ray Train worker (restarted from its last checkpoint)."""

from __future__ import annotations

import json
import sys

import pytest

from tests.pipelines.worker_kill import assert_resumed, run_killing_the_worker

EPOCHS = 40  # tiny epochs take about a second unloaded: enough of them that the kill lands mid-training


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_killed_dino_worker_restarts_from_checkpoint(tmp_path):
    cmd = [sys.executable, "-m", "pipelines", "run", "tests/configs/audio_tiny.yaml", f"runs_dir={tmp_path}",
           "only=[keywords, dino]", f"stages.dino.optim.epochs={EPOCHS}"]
    stage = tmp_path / "audio_tiny" / "dino"
    run_killing_the_worker(cmd, stage)
    assert_resumed(stage, EPOCHS)
    record = json.loads((stage / "student.json").read_text())
    assert record["task"] == "clip_features" and (stage / record["weights"]).stat().st_size > 0
