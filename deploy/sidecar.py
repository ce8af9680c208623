"""Reading a fine-tuned model from a run: the evaluate stage's ``models/<name>.json`` sidecar.

The sidecar (written by ``pipelines.evaluate.stage.save_segmenter``) is the only contract
between the pipeline and deploy: student class + kwargs, classes, pre-processing
parameters, and the real scans to calibrate on (labeled training scans) and to measure
accuracy on (held-out scenes). No torch, no ``pipelines`` import.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from modalities.lidar.labels import lidarseg_to_16
from modalities.nuscenes_tables import load_lidarseg, load_points

DEPLOYABLE_STUDENTS = ("range_net",)
NOT_DEPLOYABLE = {
    "sparse_unet": "the sparse_unet student runs on spconv, which has no ONNX/TensorRT export (and NVIDIA's "
    "libspconv lacks inverse convolution and concat); distill a range_net student (slidr_range) to deploy",
}
REQUIRED_SIDECAR_FIELDS = ("student", "student_kwargs", "num_classes", "classes", "weights", "preprocessing",
                           "calibration_scans", "heldout_scans")


@dataclass(frozen=True)
class LabeledScan:
    token: str
    points: np.ndarray  # (N, 4) x y z intensity, intensity divided by intensity_scale
    labels: np.ndarray  # (N,) int64 16-class labels, 255 = ignore


def list_models(run_dir: Path, evaluate_stage: str | None = None) -> list[Path]:
    """Sidecars (``<stage>/models/*.json``) of the fine-tuned models of a run, sorted.

    ``evaluate_stage`` names the stage whose ``models/`` to read; None: every stage of the run
    that saved models (a pipeline may have several evaluate stages).
    """
    run_dir = Path(run_dir)
    folders = [run_dir / evaluate_stage / "models"] if evaluate_stage else sorted(run_dir.glob("*/models"))
    sidecars = sorted(p for f in folders if f.is_dir() for p in f.glob("*.json"))
    if not sidecars:
        where = folders[0] if evaluate_stage else run_dir / "<stage>" / "models"
        raise FileNotFoundError(f"no fine-tuned model in {where}: run the pipeline's evaluate stage with the finetune"
                                " protocol first")
    return sidecars


def _label(path: Path) -> str:
    return f"{path.parent.parent.name}/{path.stem}"


def choose_model(run_dir: Path, name: str | None, evaluate_stage: str | None = None) -> Path:
    """The sidecar named ``name``, or the only deployable model of the run; errors list the choices."""
    sidecars = list_models(run_dir, evaluate_stage)
    if name is not None:
        matches = [p for p in sidecars if p.stem == Path(name).stem]
        if not matches:
            raise FileNotFoundError(f"model {name!r} not found in {run_dir}; have {[_label(p) for p in sidecars]}")
        if len(matches) > 1:
            raise ValueError(f"model {name!r} is saved by several stages {[_label(p) for p in matches]}; "
                             "name the stage (--stage)")
        return matches[0]
    deployable = [p for p in sidecars if json.loads(p.read_text()).get("student") in DEPLOYABLE_STUDENTS]
    if len(deployable) == 1:
        return deployable[0]
    if not deployable:
        raise ValueError(f"{run_dir} has no deployable (range_net) model; have {[_label(p) for p in sidecars]}. "
                         + NOT_DEPLOYABLE["sparse_unet"])
    raise ValueError(f"{run_dir} has several deployable models {[_label(p) for p in deployable]}; "
                     "pick one with --model")


def read_sidecar(path: Path) -> dict:
    """The sidecar dict; raises naming a missing field or an undeployable student."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"model sidecar not found: {path}")
    side = json.loads(path.read_text())
    for field in REQUIRED_SIDECAR_FIELDS:
        if field not in side:
            raise ValueError(f"{path}: missing field '{field}' (re-run the evaluate stage)")
    if side["student"] in NOT_DEPLOYABLE:
        raise ValueError(f"{path.stem}: cannot deploy: {NOT_DEPLOYABLE[side['student']]}")
    if side["student"] not in DEPLOYABLE_STUDENTS:
        raise ValueError(f"{path.stem}: unknown student {side['student']!r}; deployable: {DEPLOYABLE_STUDENTS}")
    return side


def load_labeled_scan(ref: dict, intensity_scale: float) -> LabeledScan:
    """Points (intensity scaled as in training) and 16-class labels of a sidecar scan entry."""
    raw = load_points(Path(ref["lidar"]))
    if not ref.get("lidarseg"):
        raise ValueError(f"scan {ref.get('token')} ({ref['lidar']}) has no lidarseg labels")
    labels = lidarseg_to_16(load_lidarseg(Path(ref["lidarseg"]), num_points=len(raw)))
    points = np.concatenate([raw[:, :3], raw[:, 3:4] / intensity_scale], axis=1).astype(np.float32)
    return LabeledScan(ref.get("token", Path(ref["lidar"]).stem), points, labels)
