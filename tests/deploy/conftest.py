"""Fixtures: a tiny run folder built directly (synthetic scans + a seeded random RangeNet), and its bundle.

The run has the layout the evaluate stage writes (``evaluate/models/<name>.{safetensors,json}``)
so deploy is exercised exactly as on a real run, in seconds. The slow end-to-end test uses
the real pipeline instead (test_end_to_end.py).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from modalities.lidar.labels import CLASS_NAMES
from modalities.lidar.range_net import RangeNet
from modalities.lidar.sensors import load_sensor
from modalities.synthetic.config import SynthConfig
from modalities.synthetic.nuscenes_writer import generate_dataset

MODEL = "slidr_range_50pct"
STUDENT_KWARGS = {"out_dim": 8, "widths": [8, 8, 8, 16, 16], "normalize": True}


def _scan_refs(root: Path, version: str) -> list[dict]:
    tables = root / version
    sd = {r["token"]: r for r in json.loads((tables / "sample_data.json").read_text())}
    refs = []
    for rec in json.loads((tables / "lidarseg.json").read_text()):
        lidar = sd[rec["sample_data_token"]]
        refs.append({"token": lidar["sample_token"], "lidar": str(root / lidar["filename"]),
                     "lidarseg": str(root / rec["filename"]), "_ts": lidar["timestamp"]})
    refs.sort(key=lambda r: r.pop("_ts"))
    return refs


def make_tiny_run(run_dir: Path, seed: int = 0) -> Path:
    """Write ``run_dir/evaluate/models/MODEL.{safetensors,json}``; returns the sidecar path."""
    cfg = SynthConfig(scenes=1, samples_per_scene=3, sweeps_per_sample=0, lidar_sensor="vlp16",
                      image_width=64, image_height=36, seed=seed)
    data = run_dir / "synth"
    generate_dataset(data, cfg)
    refs = _scan_refs(data, cfg.version)
    torch.manual_seed(seed)
    student = RangeNet(**STUDENT_KWARGS)
    # Non-trivial BatchNorm statistics, so the export folds something real.
    for m in student.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)
    classifier = nn.Linear(student.feature_dim, len(CLASS_NAMES))
    state = {f"student.{k}": v for k, v in student.state_dict().items()}
    state |= {f"classifier.{k}": v for k, v in classifier.state_dict().items()}
    models = run_dir / "evaluate" / "models"
    models.mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in state.items()}, str(models / f"{MODEL}.safetensors"))
    sidecar = {
        "distill_stage": "slidr_range", "student_record": {"teacher": {"name": "efficientnet_lite0"}},
        "label_fraction": 0.5, "student": "range_net", "student_kwargs": STUDENT_KWARGS,
        "num_classes": len(CLASS_NAMES), "classes": list(CLASS_NAMES), "miou_heldout": None,
        "weights": f"{MODEL}.safetensors",
        "state_dict_layout": "student.* = the student, classifier.* = nn.Linear(student.feature_dim, num_classes)",
        "preprocessing": {"intensity_scale": 255.0, "sensor": load_sensor("vlp16").to_dict(),
                          "voxel_size": [0.1, 1.0, 0.1], "point_columns": "x y z intensity ring"},
        "calibration_scans": refs[:1], "heldout_scans": refs[1:],
    }
    (models / f"{MODEL}.json").write_text(json.dumps(sidecar, indent=1))
    return models / f"{MODEL}.json"


@pytest.fixture(scope="session")
def tiny_run_factory():
    """``make_tiny_run`` (a function of (run_dir, seed)) for tests that need their own run."""
    return make_tiny_run


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("run") / "tiny"
    make_tiny_run(run)
    return run


@pytest.fixture(scope="session")
def exported_bundle(tiny_run) -> Path:
    """A bundle with fp32, fp16 and int8 models (built once; tests that modify it copy it first)."""
    from deploy.export import export_bundle
    from deploy.quantize import quantize_bundle

    path = export_bundle(tiny_run)
    quantize_bundle(path)
    return path


@pytest.fixture
def bundle_copy(exported_bundle, tmp_path) -> Path:
    import shutil

    dst = tmp_path / "bundle"
    shutil.copytree(exported_bundle, dst)
    return dst


@pytest.fixture(scope="session")
def heldout_points(tiny_run) -> np.ndarray:
    from modalities.nuscenes_tables import load_points

    side = json.loads((tiny_run / "evaluate" / "models" / f"{MODEL}.json").read_text())
    return load_points(Path(side["heldout_scans"][0]["lidar"]))
