import json

import pytest

from pipelines.ray_train import META, latest_checkpoint
from pipelines.slidr.step import cosine_lr


def test_latest_checkpoint_skips_incomplete_ones(tmp_path):
    assert latest_checkpoint(tmp_path) is None
    for run, name, epoch in [("run-0", "checkpoint_a", 0), ("run-0", "checkpoint_b", 1), ("run-1", "checkpoint_c", 3)]:
        (tmp_path / run / name).mkdir(parents=True)
        (tmp_path / run / name / META).write_text(json.dumps({"epoch": epoch}))
    (tmp_path / "run-1" / "checkpoint_d").mkdir()  # cut off before meta.json was written
    (tmp_path / "run-1" / "checkpoint_e").mkdir()
    (tmp_path / "run-1" / "checkpoint_e" / META).write_text("{")  # corrupt
    assert latest_checkpoint(tmp_path) == tmp_path / "run-1" / "checkpoint_c"


def test_cosine_schedule_endpoints():
    assert cosine_lr(0, 50, 0.5) == 0.5
    assert abs(cosine_lr(25, 50, 0.5) - 0.25) < 1e-12
    assert cosine_lr(50, 50, 0.5) == 0.0
    assert cosine_lr(60, 50, 0.5) == 0.0


def test_latest_checkpoint_through_a_uri(tmp_path):
    """The same layout addressed as ``file://`` (how a cluster's shared storage is named): a URI comes back."""
    for run, name, epoch in [("run-0", "checkpoint_a", 0), ("run-1", "checkpoint_c", 3), ("run-1", "checkpoint_b", 1)]:
        (tmp_path / run / name).mkdir(parents=True)
        (tmp_path / run / name / META).write_text(json.dumps({"epoch": epoch}))
    (tmp_path / "run-1" / "checkpoint_e").mkdir()
    (tmp_path / "run-1" / "checkpoint_e" / META).write_text("{")  # corrupt: skipped
    (tmp_path / "run-1" / "checkpoint_c" / "nested" / "checkpoint_z").mkdir(parents=True)  # not at checkpoint depth
    (tmp_path / "run-1" / "checkpoint_c" / "nested" / "checkpoint_z" / META).write_text(json.dumps({"epoch": 9}))
    uri = f"file://{tmp_path}"
    assert latest_checkpoint(uri) == f"{uri}/run-1/checkpoint_c"
    assert latest_checkpoint(f"file://{tmp_path}/absent") is None


def test_relative_storage_path_becomes_absolute_and_uris_stay(tmp_path):
    from pipelines.config import load_config

    cfg = load_config("tests/configs/slidr_tiny.yaml", ["stages.slidr_range.storage_path=ckpts",
                                                        "stages.slidr_sparse.storage_path=s3://bucket/ckpts"])
    cfg = cfg.with_absolute_paths(tmp_path)
    assert cfg.stage_config("slidr_range").storage_path == str(tmp_path / "ckpts")
    assert cfg.stage_config("slidr_sparse").storage_path == "s3://bucket/ckpts"


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_checkpoints_go_to_a_storage_uri_and_an_interrupted_stage_resumes_from_there(tmp_path):
    """``storage_path`` as a URI: checkpoints land there (not in the stage folder), and a stage whose
    training finished but which never wrote its manifest resumes from that storage to the same weights.

    Planted bugs this catches: the storage path ignored (checkpoints in ``.ray_results``), the resume
    listing only a local glob (no "resuming from checkpoint file://..."), or a resume that cannot
    turn the last checkpoint into the stage's outputs when no epoch is left to train.
    """
    import hashlib
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    shared = tmp_path / "shared"
    cmd = [sys.executable, "-m", "pipelines", "run", "tests/configs/slidr_tiny.yaml", f"runs_dir={tmp_path / 'runs'}",
           "only=[synth,superpixels,slidr_range]", f"stages.slidr_range.storage_path=file://{shared}"]
    subprocess.run(cmd, cwd=root, check=True, capture_output=True, timeout=900)
    stage = tmp_path / "runs" / "slidr_tiny" / "slidr_range"
    checkpoints = sorted((shared / "slidr_tiny" / "slidr_range").glob(f"run-0/checkpoint_*/{META}"))
    assert checkpoints and not (stage / ".ray_results").exists()
    weights = hashlib.sha256((stage / "student.safetensors").read_bytes()).hexdigest()

    (stage / "manifest.json").unlink()  # as if killed after the last epoch's checkpoint
    (stage / "student.safetensors").unlink()
    again = subprocess.run(cmd, cwd=root, capture_output=True, text=True, timeout=900)
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"resuming from checkpoint file://{shared}/slidr_tiny/slidr_range/run-0/checkpoint_" in again.stderr
    assert hashlib.sha256((stage / "student.safetensors").read_bytes()).hexdigest() == weights
