"""Fixtures: a tiny run folder built directly (synthetic scans + a seeded RangeNet segmenter), and its bundle.

The run has the layout the evaluate stage writes (``evaluate/models/<name>.{safetensors,json}``)
so deploy is exercised exactly as on a real run, in seconds. The slow end-to-end test uses
the real pipeline instead (test_end_to_end.py).

The segmenter is a random RangeNet backbone whose classifier is FITTED to the labels of the
calibration (training) scan, so that its held-out predictions vary (several classes, mIoU
well above 0): a constant argmax would make every agreement 1.0 and every mIoU 0 on both
sides of a comparison, whatever the deploy path does.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch import nn

from modalities.lidar.labels import CLASS_NAMES
from modalities.lidar.range_net import RangeNet
from modalities.lidar.sensors import load_sensor
from modalities.synthetic.config import SynthConfig
from modalities.synthetic.nuscenes_writer import generate_dataset

MODEL = "slidr_range_50pct"
# feature_dim = widths[0] = 16: enough random features for a linear classifier to separate classes.
STUDENT_KWARGS = {"out_dim": 8, "widths": [16, 8, 8, 16, 16], "normalize": True}
FIT_STEPS = 300


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


def _spec(student: RangeNet):
    from pipelines.student_inputs import range_spec_of

    return range_spec_of(student, load_sensor("vlp16"))


def _labeled(ref: dict):
    """(PointCloud, 16-class labels) of a sidecar scan entry, read as training reads it."""
    from modalities.lidar.io import read_nuscenes_pcd_bin
    from modalities.lidar.labels import lidarseg_to_16
    from modalities.nuscenes_tables import load_lidarseg

    cloud = read_nuscenes_pcd_bin(ref["lidar"])
    return cloud, lidarseg_to_16(load_lidarseg(Path(ref["lidarseg"]), num_points=len(cloud)))


def _range_points(ref: dict, student: RangeNet):
    """(image, rows, cols, labels) of the valid points of one sidecar scan entry, as training sees them."""
    cloud, labels = _labeled(ref)
    inp = _spec(student).from_cloud(cloud)
    v = inp.valid
    return (torch.from_numpy(inp.image), torch.from_numpy(inp.rows[v]), torch.from_numpy(inp.cols[v]),
            torch.from_numpy(labels[v]).long())


def _fit_classifier(student: RangeNet, calib, num_classes: int) -> nn.Linear:
    """nn.Linear(feature_dim, num_classes) fitted to the labels of the calibration scan's points.

    Logistic regression on the backbone's per-point features (standardised, then folded back
    into the Linear), class-balanced cross-entropy so that the rare classes are predicted too,
    FIT_STEPS full-batch Adam steps. Held-out scans are never seen.
    """
    from modalities.lidar.range_net import gather_point_features

    img, rows, cols, labels = calib
    with torch.no_grad():
        feats = gather_point_features(student.backbone(img[None]), torch.zeros_like(rows), rows, cols)
    mean, std = feats.mean(0), feats.std(0) + 1e-6
    x = (feats - mean) / std
    counts = torch.bincount(labels, minlength=num_classes).float()
    class_weight = counts.sum() / (counts.clamp_min(1) * (counts > 0).sum())
    linear = nn.Linear(feats.shape[1], num_classes)
    opt = torch.optim.Adam(linear.parameters(), lr=0.05)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny matrices: extra threads only spin on a shared CI machine (10x slower)
    try:
        for _ in range(FIT_STEPS):
            loss = F.cross_entropy(linear(x), labels, weight=class_weight)
            opt.zero_grad()
            loss.backward()
            opt.step()
    finally:
        torch.set_num_threads(threads)
    classifier = nn.Linear(feats.shape[1], num_classes)
    with torch.no_grad():  # W x_std + b = (W / std) f + (b - (W / std) mean)
        classifier.weight.copy_(linear.weight / std)
        classifier.bias.copy_(linear.bias - classifier.weight @ mean)
    return classifier


def make_tiny_run(run_dir: Path, seed: int = 0) -> Path:
    """Write ``run_dir/evaluate/models/MODEL.{safetensors,json}``; returns the sidecar path."""
    cfg = SynthConfig(scenes=1, samples_per_scene=3, sweeps_per_sample=0, lidar_sensor="vlp16",
                      image_width=64, image_height=36, seed=seed)
    data = run_dir / "synth"
    generate_dataset(data, cfg)
    refs = _scan_refs(data, cfg.version)
    torch.manual_seed(seed)
    student = RangeNet(**STUDENT_KWARGS)
    calib = _range_points(refs[0], student)
    # Non-trivial BatchNorm statistics (those of the calibration scan, under random affine
    # parameters), so the export folds something real and the features are not dead ReLUs.
    for m in student.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)
            m.momentum = None  # cumulative average: the statistics of the one pass below
    with torch.no_grad():
        student.train().backbone(calib[0][None])
    student.eval()
    classifier = _fit_classifier(student, calib, len(CLASS_NAMES))
    state = {f"student.{k}": v for k, v in student.state_dict().items()}
    state |= {f"classifier.{k}": v for k, v in classifier.state_dict().items()}
    models = run_dir / "evaluate" / "models"
    models.mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in state.items()}, str(models / f"{MODEL}.safetensors"))
    sidecar = {
        "format": 2, "task": "point_segmentation", "input": _spec(student).to_dict(),
        "label_mapping": "nuScenes lidarseg general index -> 16 benchmark classes",
        "distill_stage": "slidr_range", "student_record": {"teacher": {"name": "efficientnet_lite0"}},
        "label_fraction": 0.5, "student": "range_net", "student_kwargs": STUDENT_KWARGS,
        "num_classes": len(CLASS_NAMES), "classes": list(CLASS_NAMES), "miou_heldout": None,
        "weights": f"{MODEL}.safetensors",
        "state_dict_layout": "student.* = the student, classifier.* = nn.Linear(student.feature_dim, num_classes)",
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
def torch_point_labels(tiny_run):
    """Oracle: ``labels(ref) -> (N,) uint8`` of a sidecar scan entry through the pipeline's torch path.

    Training's pre-processing (``build_range_input``), the student's backbone, the per-point
    gather and the classifier as the ``nn.Linear`` it is in the pipeline; 255 for points
    without a pixel. No ONNX, no deploy pre/post-processing.
    """
    from deploy.model import load_range_segmenter
    from modalities.lidar.range_net import gather_point_features

    models = tiny_run / "evaluate" / "models"
    seg = load_range_segmenter(models / f"{MODEL}.safetensors", "range_net", STUDENT_KWARGS, len(CLASS_NAMES))
    linear = nn.Linear(seg.student.feature_dim, seg.classifier.out_channels)
    linear.weight.data = seg.classifier.weight.data[:, :, 0, 0]
    linear.bias.data = seg.classifier.bias.data

    def labels(ref: dict) -> np.ndarray:
        cloud, _ = _labeled(ref)
        inp = _spec(seg.student).from_cloud(cloud)
        img, row, col, valid = (torch.from_numpy(a) for a in (inp.image, inp.rows, inp.cols, inp.valid))
        out = np.full(len(cloud), 255, np.uint8)
        with torch.no_grad():
            feats = gather_point_features(seg.student.backbone(img[None]), torch.zeros_like(row[valid]), row[valid], col[valid])
            out[valid.numpy()] = linear(feats).argmax(1).numpy()
        return out

    return labels


@pytest.fixture(scope="session")
def heldout_points(tiny_run) -> np.ndarray:
    from modalities.nuscenes_tables import load_points

    side = json.loads((tiny_run / "evaluate" / "models" / f"{MODEL}.json").read_text())
    return load_points(Path(side["heldout_scans"][0]["lidar"]))
