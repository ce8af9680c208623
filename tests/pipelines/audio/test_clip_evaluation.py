"""The clip-classification evaluation task on a small tone dataset: skips, probe, LP-FT, the deploy sidecar."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import torch
from safetensors.torch import save_file

from modalities.audio.io import write_wav
from modalities.audio.logmel import LogMelSpec
from modalities.audio.students import AudioCNN
from modalities.fileio import sha256_file
from pipelines.evaluate.clip_classification import ClipClassificationTask, accuracy
from pipelines.evaluate.config import EvaluateConfig
from pipelines.evaluate.protocols import linear_probe
from pipelines.datasets import KeywordsDatasetSpec

RATE = 16_000
FREQS = {"high": 2400.0, "low": 300.0, "mid": 900.0}


def _clip(freq: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(RATE) / RATE
    f = freq * rng.uniform(0.9, 1.1)
    return (0.3 * np.sin(2 * np.pi * f * t) * (t > rng.uniform(0, 0.3)) + rng.normal(0, 0.02, RATE)).astype(np.float32)


def _dataset(root):
    seed = 0
    for split, voices in (("train", 6), ("test", 2)):
        for word, f in FREQS.items():
            for v in range(voices):
                seed += 1
                write_wav(root / split / word / f"{split}{v}_0.wav", _clip(f, seed))
    (root / "train" / "low" / "broken_0.wav").write_bytes(b"RIFF....WAVEfmt garbage")


def _record(stage_dir, spec):
    torch.manual_seed(1)
    save_file(AudioCNN((8, 16, 16, 16)).state_dict(), str(stage_dir / "student.safetensors"))
    return {"format": 2, "kind": "ds_cnn", "kwargs": {"widths": [8, 16, 16, 16]}, "task": "clip_features",
            "input": spec.to_dict(), "teacher": {"name": "none"}, "weights": "student.safetensors",
            "weights_sha256": sha256_file(stage_dir / "student.safetensors")}


def test_clip_task_counts_skips_probes_finetunes_and_saves(tmp_path):
    root = tmp_path / "kw"
    _dataset(root)
    stage = tmp_path / "stage"
    stage.mkdir()
    record = _record(stage, LogMelSpec().with_stats(-4.0, 4.0))
    cfg = EvaluateConfig(dataset="kw", students=["s"], probe_steps=100, finetune_steps=8, batch_scans=1)
    ctx = SimpleNamespace(inputs={"dataset": root}, dataset=KeywordsDatasetSpec(root=root), seed=0)
    task = ClipClassificationTask(ctx, cfg)
    assert task.class_names == ["high", "low", "mid"] and task.num_train == 19
    student = task.student(record, stage)
    assert task.skipped == 1 and task.num_train == 18  # the broken clip is dropped before any subset is drawn
    x, y = student.labeled_features("distilled", [0, 5, 17])
    assert x.shape == (3, 16) and y.tolist() == [0, 0, 2]
    # Both inits are real, different networks (the "distilled" one loaded the stage's weights).
    assert not torch.allclose(student.test_features("distilled")[0], student.test_features("random")[0])
    conf = linear_probe(student.labeled_features("distilled", range(18)), student.test_features("distilled"), 3, 200,
                        1e-2, 0)
    assert conf.sum() == 6 and accuracy(conf) > 50  # pitched tones are separable by a linear probe
    conf, model = student.finetune("distilled", list(range(0, 18, 2)), seed=0)
    assert conf.sum() == 6 and set(model.state_dict()) >= {"classifier.weight", "student.stem.0.weight"}
    student.save(tmp_path / "models", "s", model, 0.5, accuracy(conf), [0, 1])
    side = json.loads((tmp_path / "models" / "s_50pct.json").read_text())
    assert side["task"] == "keyword_spotting" and side["metric_heldout"]["value"] == accuracy(conf)
    assert len(side["heldout_samples"]) == 6 and side["calibration_samples"][0]["label"] == "high"
    assert side["input"]["mean"] == -4.0 and (tmp_path / "models" / "s_50pct.safetensors").is_file()


def test_accuracy_of_a_confusion_matrix():
    assert accuracy(np.array([[3, 1], [0, 4]])) == 87.5
    assert np.isnan(accuracy(np.zeros((2, 2), int)))
