"""Reading a fine-tuned model from a run: the evaluate stage's ``models/<name>.json`` sidecar.

The sidecar (written by the evaluate stage, e.g. ``pipelines.evaluate.point_segmentation.save_segmenter``)
is the only contract between the pipeline and deploy: the task kind (which deploy adapter),
student class + kwargs, classes, the input's pre-processing spec (as the student record carries
it), and the real samples to calibrate on (labelled training data) and to measure on (held-out):
``calibration_samples`` / ``heldout_samples`` (lidar sidecars: ``calibration_scans`` /
``heldout_scans``), each entry in the format of the task's adapter.
``edgedistill export`` copies what it needs into the bundle; nothing reads the sidecar
after that. No torch, no ``pipelines`` import.
"""

from __future__ import annotations

import json
from pathlib import Path

DEPLOYABLE_STUDENTS = ("range_net", "ds_cnn", "imu_cnn", "imu_transformer", "pillar_bev", "camera_bev")
NOT_DEPLOYABLE = {
    "sparse_unet": "the sparse_unet student runs on spconv, which has no ONNX/TensorRT export (and NVIDIA's "
    "libspconv lacks inverse convolution and concat); distill a range_net student (slidr_range) to deploy",
}
REQUIRED_SIDECAR_FIELDS = ("format", "task", "student", "student_kwargs", "num_classes", "classes", "weights", "input")
# (calibration, held-out) sample lists: one of these pairs must be present.
SAMPLE_FIELDS = (("calibration_samples", "heldout_samples"), ("calibration_scans", "heldout_scans"))
SIDECAR_FORMAT = 2


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
        raise ValueError(f"{run_dir} has no deployable ({'/'.join(DEPLOYABLE_STUDENTS)}) model; have "
                         f"{[_label(p) for p in sidecars]}. "
                         + NOT_DEPLOYABLE["sparse_unet"])
    raise ValueError(f"{run_dir} has several deployable models {[_label(p) for p in deployable]}; "
                     "pick one with --model")


def read_sidecar(path: Path) -> dict:
    """The sidecar dict; raises naming a missing field or an undeployable student."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"model sidecar not found: {path}")
    try:
        side = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e}); re-run the evaluate stage") from e
    for field in REQUIRED_SIDECAR_FIELDS:
        if field not in side:
            raise ValueError(f"{path}: missing field '{field}' (written by an older edgedistill? re-run the evaluate "
                             "stage with --force)")
    if not any(all(f in side for f in pair) for pair in SAMPLE_FIELDS):
        raise ValueError(f"{path}: missing the sample lists (one of {[list(p) for p in SAMPLE_FIELDS]}); re-run the "
                         "evaluate stage with --force")
    if side["format"] != SIDECAR_FORMAT:
        raise ValueError(f"{path}: sidecar format {side['format']}, this tool reads {SIDECAR_FORMAT}; re-run the "
                         "evaluate stage with --force")
    if side["student"] in NOT_DEPLOYABLE:
        raise ValueError(f"{path.stem}: cannot deploy: {NOT_DEPLOYABLE[side['student']]}")
    if side["student"] not in DEPLOYABLE_STUDENTS:
        raise ValueError(f"{path.stem}: unknown student {side['student']!r}; deployable: {DEPLOYABLE_STUDENTS}")
    return side


def sample_refs(side: dict, split: str) -> list[dict]:
    """The sidecar's sample entries of ``split`` (``calibration`` or ``heldout``): ``<split>_samples`` or ``<split>_scans``."""
    for key in (f"{split}_samples", f"{split}_scans"):
        if key in side:
            return list(side[key])
    raise ValueError(f"model sidecar: no '{split}_samples' (or '{split}_scans') list")
