"""Deploy adapter ``bev_segmentation``: a lidar scan file -> one BEV class per grid cell (CALICO's pillar student).

Runtime path (numpy only; the spec is :class:`modalities.lidar.bev_net.PillarBevSpec`, read from
``metadata.json`` ``task.input``, the object training and evaluation used)::

    scan file (.pcd.bin nuScenes | .bin KITTI | .pcd/.ply) -> points, intensity / the format's full scale
      -> pillar_inputs: feeds {"pillar_points": (1, P, M, 9), "pillar_mask": (1, P, M),
                               "cell_index": (1, ny*nx)}              [engine] -> {"logits": (1, K, ny, nx)}
      -> argmax per cell -> <stem>.bev.npy (uint8 (ny, nx), row iy, column ix, lidar frame) + <stem>.bev.png

The deployed network is the student (pillar encoder, the gather to the grid with the
pre-computed index, the BEV CNN) plus the linear probe as a 1x1 convolution. Metric: cell-wise
mIoU (%) over the bundle's held-out key frames against their BEV label images
(:mod:`modalities.bev_labels`), on the label cells that fall in the student's grid (both grids
are in the LIDAR_TOP frame; a label cell takes the student cell containing its centre).
:class:`BevSegmenterAdapter` (outputs, PNG, metric) and the export helpers here also serve the
camera student's adapter, :mod:`deploy.tasks.camera_bev_segmentation`.
"""

from __future__ import annotations

import io
import logging
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np

from modalities.bev_labels import IGNORE_ID, BevGridSpec, bev_rgb, read_bev_labels
from modalities.fileio import atomic_save_npy, atomic_write_bytes
from modalities.lidar.bev_spec import NUM_POINT_FEATURES, PillarBevSpec, pillar_inputs
from modalities.lidar.io import read_points
from modalities.segmentation_metrics import confusion_matrix, mean_iou

from .base import Feeds, Sample, TaskAdapter

log = logging.getLogger("edgedistill.deploy")

KIND = "bev_segmentation"
INPUT_NAMES = ("pillar_points", "pillar_mask", "cell_index")
OUTPUT_NAME = "logits"
SCAN_SUFFIXES = (".pcd.bin", ".bin", ".pcd", ".ply")
DEPLOYED_GRAPH = "pillar encoder -> gather to the BEV grid -> BEV CNN -> Conv1x1(linear probe) -> per-cell logits"


def _save_png(path: Path, labels: np.ndarray) -> None:
    from PIL import Image  # noqa: PLC0415

    rgb = bev_rgb(labels)  # row 0 at the top = largest y (forward up)
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG")
    atomic_write_bytes(path, buf.getvalue())


def cells_in_grid(label_grid: BevGridSpec, grid: BevGridSpec) -> tuple[np.ndarray, np.ndarray]:
    """(label cell indices (flat), the student cell (flat) holding each one's centre) for label cells inside ``grid``."""
    centers = label_grid.cell_centers_lidar().reshape(-1, 2)
    ix, iy, inside = grid.cell_of(centers)
    return np.flatnonzero(inside), (iy * grid.nx + ix)[inside]


class BevSegmenterAdapter(TaskAdapter):
    """What the BEV segmentation adapters share: one class per BEV cell out, the PNG, the cell-wise mIoU.

    Subclasses set :attr:`kind`, :attr:`input_suffixes` (stripped from an input's name for the output's stem) and
    :attr:`grid` (the student's BEV grid, a :class:`~modalities.bev_labels.BevGridSpec`) and implement ``read`` and
    ``preprocess``.
    """

    input_suffixes: tuple[str, ...] = ()
    grid: BevGridSpec

    def __init__(self, metadata: dict, bundle_dir: Path | None = None):
        super().__init__(metadata, bundle_dir)
        self.label_grid = BevGridSpec.from_dict(metadata["task"]["label_grid"])
        self.num_classes = int(metadata["model"]["num_classes"])
        self.classes = list(metadata["model"]["classes"])

    def postprocess(self, outputs: Feeds, state) -> np.ndarray:
        return outputs[OUTPUT_NAME][0].argmax(axis=0).astype(np.uint8)

    def write(self, result: np.ndarray, source: Path, out_dir: Path | None) -> Path:
        source = Path(source)
        stem = next((source.name[: -len(s)] for s in self.input_suffixes if source.name.endswith(s)), source.stem)
        folder = Path(out_dir) if out_dir else source.parent
        folder.mkdir(parents=True, exist_ok=True)
        dest = folder / f"{stem}.bev.npy"
        atomic_save_npy(dest, result)
        _save_png(folder / f"{stem}.bev.png", result)
        return dest

    def summary(self, result: np.ndarray, source: Path) -> str:
        counts = np.bincount(result.reshape(-1), minlength=self.num_classes)
        top = np.argsort(-counts)[:3]
        return f"{Path(source).name}: " + ", ".join(f"{self.classes[i]} {100 * counts[i] / result.size:.0f}%" for i in top)

    def load_target(self, sample: Sample) -> np.ndarray:
        return read_bev_labels(sample.target, self.label_grid)

    def metric(self, run: Callable[[Feeds], Feeds], samples: list[Sample]) -> dict:
        """Cell-wise mIoU (%) of ``run`` on ``samples``: the labelled label cells inside the student's grid."""
        K = self.num_classes
        conf = np.zeros((K, K), np.int64)
        label_cells, student_cells = cells_in_grid(self.label_grid, self.grid)
        cells = 0
        for s in samples:
            feeds, state = self.preprocess(self.read(s.path))
            pred = self.postprocess(run(feeds), state).reshape(-1)[student_cells]
            target = self.load_target(s).reshape(-1)[label_cells]
            keep = target != IGNORE_ID
            conf += confusion_matrix(pred[keep], target[keep], K)
            cells += int(keep.sum())
        return {"name": "miou", "value": mean_iou(conf), "points": cells, "points_noun": "cells",
                "samples": len(samples), "confusion": conf.tolist()}


class BevSegmentation(BevSegmenterAdapter):
    """BEV semantic segmentation of lidar scans through the pillar BEV network."""

    kind = KIND
    sample_noun = "scan"
    input_suffixes = SCAN_SUFFIXES
    # One convolution (a decoder lateral) flips ~13% of the cells' classes when quantized: keep the most sensitive
    # one in float (benchmarks/int8_calibration.py).
    int8_float_fallback = 1

    def __init__(self, metadata: dict, bundle_dir: Path | None = None):
        super().__init__(metadata, bundle_dir)
        self.spec = PillarBevSpec.from_dict(metadata["task"]["input"])
        self.grid = self.spec.grid

    def read(self, path: Path) -> tuple[np.ndarray, np.ndarray]:
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"scan file not found: {path}")
        cloud = read_points(path)
        return cloud.points_xyz.astype(np.float32), cloud.unit_intensity().astype(np.float32)

    def preprocess(self, raw: tuple[np.ndarray, np.ndarray]) -> tuple[Feeds, dict]:
        feeds, stats = pillar_inputs(raw[0], raw[1], self.spec)
        return {k: v[None] for k, v in feeds.items()}, stats


# ----------------------------------------------------------------------------- export side


def bev_task_metadata(kind: str, input_spec: dict, sidecar: dict) -> dict:
    """``metadata.json`` ``task`` section of a BEV segmenter (either student) with its input spec's dict."""
    return {"kind": kind, "input": input_spec, "label_grid": BevGridSpec.from_dict(sidecar["label_grid"]).to_dict(),
            "classes": list(sidecar["classes"]),
            "postprocessing": "class of a cell = argmax of its logits; grid row iy, column ix in the lidar frame"}


def task_metadata(sidecar: dict) -> dict:
    """``metadata.json`` ``task`` section of a lidar BEV model's sidecar."""
    return bev_task_metadata(KIND, PillarBevSpec.from_dict(sidecar["input"]).to_dict(), sidecar)


def describe_input(task: dict) -> str:
    spec = task["input"]
    ny = round((spec["y_range_m"][1] - spec["y_range_m"][0]) / spec["cell_size_m"])
    nx = round((spec["x_range_m"][1] - spec["x_range_m"][0]) / spec["cell_size_m"])
    return (f"input spec `pillar_bev`: x {spec['x_range_m']} m, y {spec['y_range_m']} m, z {spec['z_range_m']} m, "
            f"{spec['cell_size_m']} m cells ({ny} x {nx}), at most {spec['max_pillars']} pillars of "
            f"{spec['max_points_per_pillar']} points")


def io_metadata(sidecar: dict) -> tuple[list[dict], list[dict]]:
    """Named input and output specs (batch 1, static) of the deployed graph."""
    spec = PillarBevSpec.from_dict(sidecar["input"])
    P, M, K = spec.max_pillars, spec.max_points_per_pillar, int(sidecar["num_classes"])
    return ([{"name": "pillar_points", "shape": [1, P, M, NUM_POINT_FEATURES], "dtype": "float32"},
             {"name": "pillar_mask", "shape": [1, P, M], "dtype": "float32"},
             {"name": "cell_index", "shape": [1, spec.ny * spec.nx], "dtype": "int64"}],
            [{"name": OUTPUT_NAME, "shape": [1, K, spec.ny, spec.nx], "dtype": "float32", "layout": "NCHW"}])


def write_samples(folder: Path, sidecar: dict, split: str, max_samples: int | None = None) -> list[dict]:
    """Copy a sidecar's ``<split>_samples`` (lidar file + BEV label image) into ``folder/data/<split>/``."""
    refs = sidecar[f"{split}_samples"]
    refs = refs[:max_samples] if max_samples else refs
    dest = folder / "data" / split
    dest.mkdir(parents=True, exist_ok=True)
    out = []
    for ref in refs:
        src = sidecar_file(ref["lidar"], "scan", split)
        suffix = next((s for s in SCAN_SUFFIXES if src.name.endswith(s)), src.suffix)
        scan_rel = f"data/{split}/{ref['token']}{suffix}"
        shutil.copyfile(src, folder / scan_rel)
        out.append({"token": ref["token"], "input": scan_rel, "target": copy_labels(folder, ref, split)})
    return out


def sidecar_file(path: str, what: str, split: str) -> Path:
    """``path`` named by a model sidecar, checked to exist (the error names it and the split)."""
    if not Path(path).is_file():
        raise FileNotFoundError(f"{path}: {what} named by the model's sidecar ({split}) is missing")
    return Path(path)


def copy_labels(folder: Path, ref: dict, split: str) -> str:
    """Copy a sample's BEV label image into the bundle; its path relative to ``folder``."""
    rel = f"data/{split}/{ref['token']}.bev.png"
    shutil.copyfile(sidecar_file(ref["bev_labels"], "BEV label image", split), folder / rel)
    return rel


def bev_segmenter_module(weights: Path, meta: dict, **student_overrides):
    """The deployed graph of a BEV segmenter as a PyTorch module (eval mode): the student + the Conv1x1 classifier,
    from the bundle's weights; ``forward`` takes the student's inputs in order."""
    import torch  # noqa: PLC0415
    from safetensors.torch import load_file  # noqa: PLC0415

    from modalities.bev_students import build_bev_student  # noqa: PLC0415

    class BevSegmenter(torch.nn.Module):
        def __init__(self, student, num_classes: int):
            super().__init__()
            self.student = student
            self.classifier = torch.nn.Conv2d(student.feature_dim, num_classes, 1)

        def forward(self, *inputs):
            return self.classifier(self.student(*inputs))

    student = build_bev_student(meta["model"]["student"], {**meta["model"]["student_kwargs"], **student_overrides})
    model = BevSegmenter(student, int(meta["model"]["num_classes"]))
    model.load_state_dict(load_file(str(weights)))
    return model.eval()


def torch_module(weights: Path, meta: dict):
    """The deployed graph (pillar student + classifier) as a PyTorch module, from the bundle's weights."""
    return bev_segmenter_module(weights, meta)
