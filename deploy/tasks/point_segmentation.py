"""Deploy adapter ``point_segmentation``: a lidar scan file -> one class label per point.

Runtime path (numpy only; the spec is :class:`modalities.lidar.range_spec.RangeImageSpec`,
read from ``metadata.json`` ``task.input``, the object training and evaluation used)::

    scan file (.pcd.bin nuScenes | .bin KITTI | .pcd/.ply) -> PointCloud
      -> intensity / the format's full scale, beam row from the ring column when present
         (else elevation); a scan of another beam layout is logged with its no-pixel fraction
      -> feeds {"range_image": (1, C, H, W)}          [engine]  -> {"logits": (1, K, H, W)}
      -> per point: argmax of its pixel's logits; ``unknown_label`` (255) without a pixel
      -> <stem>.labels.npy (uint8, one per point of the file)

The deployed network is the student's backbone plus the classifier as a 1x1 convolution
(:class:`deploy.model.RangeSegmenter`); the per-point gather stays here, outside the engine.
Metric: per-point mIoU (%) over the bundle's held-out scans, points without a pixel excluded
(they depend only on the pre-processing, so every precision excludes the same ones).
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np

from modalities.fileio import atomic_save_npy
from modalities.lidar.io import PointCloud, read_points
from modalities.lidar.range_spec import RangeImageSpec, project_checked
from modalities.lidar.range_view import RangeInput
from modalities.segmentation_metrics import confusion_matrix, mean_iou

from .base import Feeds, Sample, TaskAdapter

log = logging.getLogger("edgedistill.deploy")

KIND = "point_segmentation"
INPUT_NAME = "range_image"
OUTPUT_NAME = "logits"
UNKNOWN_LABEL = 255  # label written for a point that has no pixel (outside every beam / range)
SCAN_SUFFIXES = (".pcd.bin", ".bin", ".pcd", ".ply")
DEPLOYED_GRAPH = "student.backbone -> Conv1x1(classifier) -> per-pixel logits"


def point_labels(logits: np.ndarray, rows: np.ndarray, cols: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """(N,) uint8 label of each point: argmax of its pixel's (K, H, W) logits, :data:`UNKNOWN_LABEL` without a pixel."""
    if logits.ndim != 3:
        raise ValueError(f"logits: expected (K, H, W), got {logits.shape}")
    labels = np.full(rows.shape, UNKNOWN_LABEL, np.uint8)
    pred = logits.argmax(axis=0)
    labels[valid] = pred[rows[valid], cols[valid]].astype(np.uint8)
    return labels


def labels_path(out_dir: Path, scan: Path) -> Path:
    name = scan.name
    for suffix in SCAN_SUFFIXES:
        if name.endswith(suffix):
            name = name[: -len(suffix)]
            break
    return out_dir / f"{name}.labels.npy"


class PointSegmentation(TaskAdapter):
    """Per-point semantic segmentation of lidar scans through a range-view network."""

    kind = KIND
    sample_noun = "scan"

    def __init__(self, metadata: dict, bundle_dir: Path | None = None):
        super().__init__(metadata, bundle_dir)
        self.spec = RangeImageSpec.from_dict(metadata["task"]["input"], "metadata.json task.input")
        self.input_name = metadata["inputs"][0]["name"]
        self.output_name = metadata["outputs"][0]["name"]
        self.num_classes = int(metadata["model"]["num_classes"])
        self.unknown_label = int(metadata["task"].get("unknown_label", UNKNOWN_LABEL))
        self.warn_layout = True

    def read(self, path: Path) -> PointCloud:
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"scan file not found: {path}")
        return read_points(path)

    def project(self, cloud: PointCloud) -> RangeInput:
        """The spec's range input of a scan; a beam-layout mismatch is logged once per scan."""
        inp, layout = project_checked(cloud, self.spec)
        if not layout.matches and self.warn_layout:
            log.warning(layout.message)
        return inp

    def preprocess(self, raw: PointCloud) -> tuple[Feeds, RangeInput]:
        inp = self.project(raw)
        return {self.input_name: inp.image[None]}, inp

    def postprocess(self, outputs: Feeds, state: RangeInput) -> np.ndarray:
        return point_labels(outputs[self.output_name][0], state.rows, state.cols, state.valid)

    def write(self, result: np.ndarray, source: Path, out_dir: Path | None) -> Path:
        dest = labels_path(Path(out_dir) if out_dir else Path(source).parent, Path(source))
        dest.parent.mkdir(parents=True, exist_ok=True)
        atomic_save_npy(dest, result)
        log.info("%s: %d points, %d without a pixel -> %s", Path(source).name, len(result),
                 int((result == self.unknown_label).sum()), dest)
        return dest

    def load_target(self, sample: Sample, num_points: int) -> np.ndarray:
        labels = np.load(sample.target, allow_pickle=False)
        if labels.shape != (num_points,):
            raise ValueError(f"{sample.target}: {labels.shape[0]} labels for {num_points} points of {sample.path}")
        return labels

    def metric(self, run: Callable[[Feeds], Feeds], samples: list[Sample]) -> dict:
        """Per-point mIoU (%) of ``run`` on ``samples``; points without a pixel are excluded."""
        K = self.num_classes
        conf = np.zeros((K, K), np.int64)
        points = 0
        for s in samples:
            cloud = self.read(s.path)
            feeds, inp = self.preprocess(cloud)
            pred = self.postprocess(run(feeds), inp)
            target = self.load_target(s, len(cloud))
            conf += confusion_matrix(pred[inp.valid], target[inp.valid], K)
            points += int(inp.valid.sum())
        return {"name": "miou", "value": mean_iou(conf), "points": points, "samples": len(samples)}


# ----------------------------------------------------------------------------- export side


def task_metadata(sidecar: dict) -> dict:
    """``metadata.json`` ``task`` section of a segmentation model's sidecar."""
    spec = RangeImageSpec.from_dict(sidecar["input"], "sidecar input")
    return {"kind": KIND, "input": spec.to_dict(), "unknown_label": UNKNOWN_LABEL,
            "classes": list(sidecar["classes"]), "label_mapping": sidecar.get("label_mapping"),
            "postprocessing": "label of a point = argmax of logits at its (row, col); 255 when the point has no pixel"}


def describe_input(task: dict) -> str:
    """One line of report.md about the input contract."""
    spec = task["input"]
    return (f"input spec `{spec['kind']}` v{spec['version']}: sensor `{spec['sensor']['name']}` "
            f"({spec['sensor']['beams']} beams x {spec['sensor']['columns']} columns), image {spec['image_shape']}, "
            f"channels {spec['channels']}, beams from {spec['beam_source']}; intensity {spec['intensity']}; points "
            f"without a pixel get label {task['unknown_label']}")


def io_metadata(sidecar: dict) -> tuple[list[dict], list[dict]]:
    """Named input and output specs (batch 1, static) of the deployed graph."""
    spec = RangeImageSpec.from_dict(sidecar["input"], "sidecar input")
    C, H, W = spec.image_shape
    K = int(sidecar["num_classes"])
    return ([{"name": INPUT_NAME, "shape": [1, C, H, W], "dtype": "float32", "layout": "NCHW", "channels": list(spec.channels)}],
            [{"name": OUTPUT_NAME, "shape": [1, K, H, W], "dtype": "float32", "layout": "NCHW"}])


def write_samples(folder: Path, sidecar: dict, split: str, max_samples: int | None = None) -> list[dict]:
    """Copy a sidecar's ``<split>_scans`` (scan file + 16-class labels) into ``folder/data/<split>/``.

    The bundle then carries its own calibration and held-out data (quantize, bench and verify
    need nothing else); the scan files are copied byte for byte, in the format the robot reads.
    """
    from modalities.lidar.labels import lidarseg_to_16  # noqa: PLC0415
    from modalities.nuscenes_tables import load_lidarseg  # noqa: PLC0415

    refs = sidecar[f"{split}_scans"]
    refs = refs[:max_samples] if max_samples else refs
    out = []
    dest = folder / "data" / split
    dest.mkdir(parents=True, exist_ok=True)
    for ref in refs:
        src = Path(ref["lidar"])
        if not src.is_file():
            raise FileNotFoundError(f"{src}: scan named by the model's sidecar ({split}) is missing")
        if not ref.get("lidarseg"):
            raise ValueError(f"{src}: scan {ref.get('token')} has no lidarseg labels")
        suffix = next((s for s in SCAN_SUFFIXES if src.name.endswith(s)), src.suffix)
        scan_rel, labels_rel = f"data/{split}/{ref['token']}{suffix}", f"data/{split}/{ref['token']}.labels.npy"
        shutil.copyfile(src, folder / scan_rel)
        n = len(read_points(folder / scan_rel))
        atomic_save_npy(folder / labels_rel, lidarseg_to_16(load_lidarseg(Path(ref["lidarseg"]), num_points=n)).astype(np.uint8))
        out.append({"token": ref["token"], "input": scan_rel, "target": labels_rel})
    return out


def torch_module(weights: Path, meta: dict):
    """The deployed graph as a PyTorch module (eval mode) from the weights stored in a bundle."""
    from ..model import load_range_segmenter  # noqa: PLC0415

    return load_range_segmenter(weights, meta["model"]["student"], meta["model"]["student_kwargs"],
                                int(meta["model"]["num_classes"]))
