import json

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
