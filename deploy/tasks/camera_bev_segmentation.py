"""Deploy adapter ``camera_bev_segmentation``: a multi-camera frame -> one BEV class per grid cell (CALICO's
camera student, distilled by RAD).

Runtime path (numpy + Pillow; the spec is :class:`modalities.camera.bev_inputs.CameraBevSpec`, read
from ``metadata.json`` ``task.input``, the object training and evaluation used)::

    <name>.frame.json (one image per camera + K + T_cam_from_lidar; format in modalities.camera.bev_inputs)
      -> camera_bev_feeds: every image resized edge to edge to (H, W), RGB in [0, 1]; the fixed lift geometry of
         the frame's calibration (computed once and reused while the calibration is unchanged: a fixed rig)
      -> feeds {"images": (1, n, 3, H, W), "sample_grid": (1, n, Z*ny, nx, 2), "valid": (1, n, Z, ny, nx)}
      [engine] -> {"logits": (1, K, ny, nx)} -> argmax per cell -> <name>.bev.npy (uint8 (ny, nx)) + <name>.bev.png

The deployed network is :class:`modalities.camera.bev_lift.CameraBevNet` (truncated
EfficientNet-Lite0, 4-D GridSample lift, BEV CNN) plus the linear probe as a 1x1 convolution.
The metric is the lidar adapter's (:class:`deploy.tasks.bev_segmentation.BevSegmenterAdapter`):
cell-wise mIoU on the bundle's held-out key frames; the bundle stores each frame as a frame file
with its images. ``edgedistill bench`` times the pre-processing with the geometry cached (the
robot's steady state; ``benchmarks/calico.py`` also times it per frame).
"""

from __future__ import annotations

import shutil
from pathlib import Path

from modalities.camera.bev_inputs import (
    FRAME_SUFFIX,
    CameraBevSpec,
    FrameCamera,
    GeometryCache,
    camera_bev_feeds,
    read_frame,
    write_frame,
)

from .base import Feeds
from .bev_segmentation import OUTPUT_NAME, BevSegmenterAdapter, bev_segmenter_module, bev_task_metadata, copy_labels
from .bev_segmentation import sidecar_file

KIND = "camera_bev_segmentation"
INPUT_NAMES = ("images", "sample_grid", "valid")
DEPLOYED_GRAPH = ("EfficientNet-Lite0 (to stride 16) per camera -> GridSample lift to the BEV grid -> BEV CNN "
                  "-> Conv1x1(linear probe) -> per-cell logits")


class CameraBevSegmentation(BevSegmenterAdapter):
    """BEV semantic segmentation of multi-camera frames through the camera BEV network."""

    kind = KIND
    sample_noun = "frame"
    input_suffixes = (FRAME_SUFFIX, ".json")

    def __init__(self, metadata: dict, bundle_dir: Path | None = None):
        super().__init__(metadata, bundle_dir)
        self.spec = CameraBevSpec.from_dict(metadata["task"]["input"])
        self.grid = self.spec.grid
        self.geometry = GeometryCache()

    def read(self, path: Path) -> list[FrameCamera]:
        return read_frame(path, self.spec.cameras)

    def preprocess(self, raw: list[FrameCamera]) -> tuple[Feeds, None]:
        feeds = camera_bev_feeds([c.image_path for c in raw], [(c.K, c.T_cam_from_lidar) for c in raw], self.spec,
                                 self.geometry)
        return {k: v[None] for k, v in feeds.items()}, None


# ----------------------------------------------------------------------------- export side


def task_metadata(sidecar: dict) -> dict:
    """``metadata.json`` ``task`` section of a camera BEV model's sidecar."""
    return bev_task_metadata(KIND, CameraBevSpec.from_dict(sidecar["input"]).to_dict(), sidecar)


def describe_input(task: dict) -> str:
    spec = CameraBevSpec.from_dict(task["input"])
    g = spec.grid
    return (f"input spec `camera_bev`: cameras {list(spec.cameras)}, each resized to {spec.image_hw[0]} x "
            f"{spec.image_hw[1]} (H x W); lift heights {list(spec.heights_m)} m; BEV x {list(g.x_range_m)} m, "
            f"y {list(g.y_range_m)} m, {g.cell_size_m} m cells ({g.ny} x {g.nx})")


def io_metadata(sidecar: dict) -> tuple[list[dict], list[dict]]:
    """Named input and output specs (batch 1, static) of the deployed graph."""
    spec = CameraBevSpec.from_dict(sidecar["input"])
    n, z, (h, w), (ny, nx) = len(spec.cameras), len(spec.heights_m), spec.image_hw, spec.grid.shape
    K = int(sidecar["num_classes"])
    return ([{"name": "images", "shape": [1, n, 3, h, w], "dtype": "float32", "layout": "NCHW per camera, RGB [0, 1]"},
             {"name": "sample_grid", "shape": [1, n, z * ny, nx, 2], "dtype": "float32"},
             {"name": "valid", "shape": [1, n, z, ny, nx], "dtype": "float32"}],
            [{"name": OUTPUT_NAME, "shape": [1, K, ny, nx], "dtype": "float32", "layout": "NCHW"}])


def write_samples(folder: Path, sidecar: dict, split: str, max_samples: int | None = None) -> list[dict]:
    """Copy a sidecar's ``<split>_samples`` into ``folder/data/<split>/``: per frame its images
    (``<token>/<channel><suffix>``), a frame file ``<token>.frame.json`` and the BEV label image."""
    refs = sidecar[f"{split}_samples"]
    refs = refs[:max_samples] if max_samples else refs
    channels = CameraBevSpec.from_dict(sidecar["input"]).cameras
    dest = folder / "data" / split
    out = []
    for ref in refs:
        cams = {c["channel"]: c for c in ref["cameras"]}
        missing = [c for c in channels if c not in cams]
        if missing:
            raise ValueError(f"sample {ref['token']} ({split}) of the model's sidecar lacks cameras {missing}")
        (dest / ref["token"]).mkdir(parents=True, exist_ok=True)
        entries = []
        for ch in channels:
            src = sidecar_file(cams[ch]["image"], f"{ch} image", split)
            name = f"{ref['token']}/{ch}{src.suffix}"
            shutil.copyfile(src, dest / name)
            entries.append((ch, name, cams[ch]["K"], cams[ch]["T_cam_from_lidar"]))
        frame_rel = f"data/{split}/{ref['token']}{FRAME_SUFFIX}"
        write_frame(folder / frame_rel, entries)
        out.append({"token": ref["token"], "input": frame_rel, "target": copy_labels(folder, ref, split)})
    return out


def torch_module(weights: Path, meta: dict):
    """The deployed graph (camera student + classifier) as a PyTorch module, from the bundle's weights (no ImageNet
    read: the bundle's weights replace them)."""
    return bev_segmenter_module(weights, meta, pretrained=False)
