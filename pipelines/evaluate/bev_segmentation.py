"""Evaluation task of BEV-feature students (CALICO's lidar and camera students): BEV semantic segmentation.

Labelled data: the dataset's BEV labels (``<root>/bev_labels/<sample token>.png`` and
``grid.json``, format in :mod:`modalities.bev_labels`; the synthetic generator writes them with
``bev_labels: true``, a user can rasterise their own), six classes, 255 ignored. Training labels
come from the training scenes, the metric (cell-wise mIoU over the labelled cells) from the
held-out scenes. Key frames without a label file are counted skips.

Features: the student's BEV map read at the label grid's cell centres
(:func:`pipelines.losses.calico.sample_bev`: exact cells when the student's grid is the label
grid, bilinear otherwise; label cells outside the student's grid are left out), with BatchNorm recalibrated on the training scans for both inits
("precise BN", as the point-segmentation task). Training features are at most ``cells_per_scan``
labelled cells per scan (a seeded uniform draw); test features are every labelled cell.

The random init of the camera student keeps what its constructor gives (the ImageNet image
backbone when ``pretrained``), so the comparison measures what RAD adds to the usual start.
Protocols: ``linear_probe`` (a per-cell linear head on frozen features); fine-tuning BEV students
is not implemented and is refused at the start of the stage. Fused heads (the evaluate stage's
``fused``, e.g. ``[[prc, rad]]``): one probe on the lidar and camera features side by side
(:class:`FusedBevStudents`), against both random inits side by side.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from modalities.bev_labels import BEV_CLASSES, FOLDER, IGNORE_ID, bev_label_path, read_bev_labels, read_grid
from modalities.segmentation_metrics import mean_iou

from ..calico.data import student_feeds
from ..slidr.data import list_scans, split_by_scene
from .config import EvaluateConfig
from .protocols import precise_batchnorm

CELLS_PER_SCAN = 4096
# INT8 calibration needs inputs, not labels: a deployed model calibrates on this many training scans (its
# probe's labelled scans first, then others spread over the training scenes), however few labels the probe had.
CALIBRATION_SCANS = 16


class BevSegmentationTask:
    """Cell-wise BEV segmentation of a dataset's BEV labels; see the module docstring."""

    metric = "miou"
    metric_label = "BEV mIoU"
    sample_noun = "scan"
    class_names = BEV_CLASSES
    confusion_figures = True
    description = "BEV cell-wise mIoU on the held-out scenes"

    @staticmethod
    def score(conf) -> float:
        return mean_iou(conf)

    def __init__(self, ctx, cfg: EvaluateConfig):
        unsupported = sorted(set(cfg.protocols) - {"linear_probe"})
        if unsupported:
            raise ValueError(f"stage {ctx.name}: protocols {unsupported} are not implemented for BEV students "
                             "(task bev_features); use protocols: [linear_probe]")
        root = Path(ctx.inputs["dataset"])
        self.root = root
        self.grid = read_grid(root / FOLDER)
        refs = list_scans(root, ctx.dataset.version, None)
        train_refs, test_refs = split_by_scene(refs, ctx.dataset.holdout_scenes)
        if not test_refs:
            raise ValueError("evaluation needs held-out scenes: set the dataset's holdout_scenes >= 1")
        self.skipped = 0

        def labelled(scan_refs):
            kept = []
            for r in scan_refs:
                path = bev_label_path(root, r.token)
                if not path.is_file():
                    ctx.log.warning("no BEV labels for sample %s (%s): skipped", r.token, path)
                    self.skipped += 1
                    continue
                kept.append((r, read_bev_labels(path, self.grid)))
            return kept

        self.train, self.test = labelled(train_refs), labelled(test_refs)
        if cfg.max_test_scans:
            self.test = self.test[: cfg.max_test_scans]
        if not self.train or not self.test:
            raise ValueError(f"{root / FOLDER}: BEV labels for {len(self.train)} training and {len(self.test)} held-out "
                             "key frames; the evaluation needs both (synthetic data: set bev_labels: true)")
        self.cfg, self.seed, self.log = cfg, ctx.seed, ctx.log
        self.num_classes = len(BEV_CLASSES)
        centers = self.grid.cell_centers_lidar().reshape(-1, 2).astype(np.float32)
        self.centers = torch.from_numpy(centers)

    @property
    def num_train(self) -> int:
        return len(self.train)

    def train_tokens(self, idx) -> list[str]:
        return [self.train[i][0].token for i in idx]

    def student(self, record: dict, stage_dir: Path) -> "PreparedBevStudent":
        return PreparedBevStudent(self, record, stage_dir)

    def fuse(self, students: list["PreparedBevStudent"], name: str) -> "FusedBevStudents":
        return FusedBevStudents(students, name)

    def prediction_figure(self, path: Path, maps: dict[str, np.ndarray], title: str) -> None:
        """The first held-out scan's BEV labels next to each probe's prediction (label -> (ny, nx) class grid)."""
        from ..plots import save_bev_predictions_plot  # noqa: PLC0415

        save_bev_predictions_plot(path, {"BEV labels": self.test[0][1], **maps}, BEV_CLASSES, title)


class PreparedBevStudent:
    """Both inits of a BEV student with their features extracted once for every protocol run."""

    def __init__(self, task: BevSegmentationTask, record: dict, stage_dir: Path):
        self.task, self.record = task, record
        where = f"{stage_dir}/student.json"
        spec = record["input"].get("grid", record["input"])  # camera spec: {"grid": ...}; pillar spec: the grid fields
        grid = (spec["x_range_m"][0], spec["y_range_m"][0], spec["cell_size_m"], spec["cell_size_m"])
        feeds = {"train": [self._feeds(r, where) for r, _ in task.train],
                 "test": [self._feeds(r, where) for r, _ in task.test]}
        self.features = {}
        for init in ("distilled", "random"):
            net = _build(record, stage_dir, init, task.seed)
            precise_batchnorm(net, feeds["train"], call=lambda m, f: m(**_batched(f)))  # both inits
            if init == "distilled":
                self.distilled = net  # BatchNorm recalibrated: the backbone of the saved probe models
            rng = np.random.default_rng(task.seed)
            train = [_cells(net, f, y, task.centers, grid, rng, CELLS_PER_SCAN)
                     for f, (_, y) in zip(feeds["train"], task.train)]
            self.train_cells = [keep for _, _, keep in train]  # label-grid cells of each training scan's features
            train = [(x, y) for x, y, _ in train]
            test = [_cells(net, f, y, task.centers, grid, None, None) for f, (_, y) in zip(feeds["test"], task.test)]
            self.features[init] = (train, (torch.cat([x for x, _, _ in test]), torch.cat([y for _, y, _ in test])))
            self.test_cells = [keep for _, _, keep in test]  # label-grid cells of each held-out scan, in order

    def prediction_map(self, predicted: np.ndarray) -> np.ndarray:
        """The first held-out scan's label grid (ny, nx) filled with ``predicted`` (a class per test cell, in the
        order of :meth:`test_features`); cells the probe did not see are IGNORE_ID."""
        first = self.test_cells[0]
        out = np.full(self.task.grid.shape, IGNORE_ID, np.uint8)
        out.reshape(-1)[first] = predicted[: len(first)]
        return out

    def _feeds(self, ref, where: str) -> dict:
        return student_feeds(self.record["kind"], self.record["input"], ref.lidar_path, ref.cameras, where)

    def labeled_features(self, init: str, idx) -> tuple[torch.Tensor, torch.Tensor]:
        per_scan = [self.features[init][0][i] for i in idx]
        return torch.cat([x for x, _ in per_scan]), torch.cat([y for _, y in per_scan])

    def test_features(self, init: str) -> tuple[torch.Tensor, torch.Tensor]:
        return self.features[init][1]

    def save_probe(self, folder: Path, stage: str, head: nn.Linear, fraction: float, metric: float, idx) -> Path:
        """The deployable BEV segmenter (the distilled student + the probe as a 1x1 convolution) and its sidecar.

        The sidecar (task ``bev_segmentation``, :mod:`deploy.tasks.bev_segmentation`, for the lidar student;
        ``camera_bev_segmentation``, :mod:`deploy.tasks.camera_bev_segmentation`, for the camera student) lists
        the key frames to calibrate INT8 on (training scenes: the probe's labelled scans, then others up to
        ``CALIBRATION_SCANS``; calibration reads no label) and to measure on (the held-out scenes), each its
        lidar file or its cameras (image, K, T_cam_from_lidar) and its BEV label image.
        """
        from safetensors.torch import save_file  # noqa: PLC0415

        from modalities.fileio import atomic_write_json  # noqa: PLC0415

        from .config import segmenter_name  # noqa: PLC0415

        t = self.task
        name = segmenter_name(stage, fraction)
        folder.mkdir(parents=True, exist_ok=True)
        state = {f"student.{k}": v for k, v in self.distilled.state_dict().items()}
        state["classifier.weight"] = head.weight.detach()[:, :, None, None]
        state["classifier.bias"] = head.bias.detach()
        tmp = folder / f".{name}.safetensors.tmp"
        save_file({k: v.contiguous() for k, v in state.items()}, str(tmp))
        tmp.replace(folder / f"{name}.safetensors")

        camera = self.record["kind"] == "camera_bev"

        def ref(r) -> dict:
            entry = {"token": r.token, "bev_labels": str(bev_label_path(t.root, r.token).resolve())}
            if camera:  # each camera's image and calibration (deploy writes them as a frame file)
                entry["cameras"] = [{"channel": c.channel, "image": str(Path(c.image_path).resolve()), "K": c.K.tolist(),
                                     "T_cam_from_lidar": c.T_cam_from_lidar.tolist()} for c in r.cameras]
            else:
                entry["lidar"] = str(Path(r.lidar_path).resolve())
            return entry

        labelled = [int(i) for i in idx][:CALIBRATION_SCANS]  # the probe's labelled scans first, then others
        chosen = set(labelled)
        others = [p for i, p in enumerate(t.train) if i not in chosen]  # spread over the scenes
        extra = max(0, min(len(others), CALIBRATION_SCANS - len(labelled)))
        calibration = [t.train[i] for i in labelled] + [others[int(j)] for j in np.linspace(0, len(others) - 1, extra)]
        atomic_write_json(folder / f"{name}.json", {
            "format": 2, "task": "camera_bev_segmentation" if camera else "bev_segmentation", "distill_stage": stage,
            "student_record": self.record,
            "label_fraction": fraction, "student": self.record["kind"], "student_kwargs": self.record["kwargs"],
            "num_classes": t.num_classes, "classes": list(BEV_CLASSES),
            "metric_heldout": {"name": "miou", "value": metric}, "weights": f"{name}.safetensors",
            "state_dict_layout": "student.* = the BEV student, classifier.* = Conv2d(feature_dim, num_classes, 1)",
            "input": self.record["input"], "label_grid": t.grid.to_dict(),
            "calibration_samples": [ref(r) for r, _ in calibration], "heldout_samples": [ref(r) for r, _ in t.test],
        })
        return folder / f"{name}.safetensors"


class FusedBevStudents:
    """Several BEV students read side by side (e.g. lidar + camera): a cell's feature is the concatenation of theirs.

    The probe on it is the fused head; its random-init baseline concatenates the random inits. The students must
    read the same label cells (the same BEV grid), checked here. Not deployable (two networks): nothing is saved.
    """

    def __init__(self, students: list[PreparedBevStudent], name: str):
        self.students = students
        first, *rest = students
        for other in rest:
            same = all(len(a) == len(b) and np.array_equal(a, b) for a, b in zip(
                first.train_cells + first.test_cells, other.train_cells + other.test_cells, strict=True))
            if not same:
                raise ValueError(f"fused {name}: the students read different label cells (different BEV grids); "
                                 "a fused head needs the same grid for every student")

    def prediction_map(self, predicted: np.ndarray) -> np.ndarray:
        return self.students[0].prediction_map(predicted)  # the same cells for every student (checked)

    def labeled_features(self, init: str, idx) -> tuple[torch.Tensor, torch.Tensor]:
        parts = [s.labeled_features(init, idx) for s in self.students]
        return torch.cat([x for x, _ in parts], dim=1), parts[0][1]

    def test_features(self, init: str) -> tuple[torch.Tensor, torch.Tensor]:
        parts = [s.test_features(init) for s in self.students]
        return torch.cat([x for x, _ in parts], dim=1), parts[0][1]


def _build(record: dict, stage_dir: Path, init: str, seed: int) -> nn.Module:
    """The distilled student (its weights) or the same network from a seeded random init (the constructor's)."""
    from modalities.bev_students import build_bev_student  # noqa: PLC0415

    from ..calico.rad import load_bev_student  # noqa: PLC0415

    if init == "distilled":
        return load_bev_student(record, stage_dir)
    torch.manual_seed(seed)
    return build_bev_student(record["kind"], record["kwargs"])


def _batched(feeds: dict) -> dict:
    return {k: torch.from_numpy(v)[None] for k, v in feeds.items()}


@torch.no_grad()
def _cells(net: nn.Module, feeds: dict, labels: np.ndarray, centers: torch.Tensor, grid: tuple, rng, limit):
    """(features (n, C), labels (n,), label cells (n,) flat indices) of the labelled cells of one scan (at most
    ``limit``, seeded draw): the student's map on its own ``grid`` (x_min, y_min, cell_x, cell_y) read at the label
    cells' ``centers``."""
    from ..losses.calico import sample_bev  # noqa: PLC0415

    net.eval()
    bev = net(**_batched(feeds))
    y = labels.reshape(-1)
    x0, y0, sx, sy = grid
    ny, nx = bev.shape[2:]
    c = centers.numpy()
    inside = (c[:, 0] >= x0) & (c[:, 0] < x0 + nx * sx) & (c[:, 1] >= y0) & (c[:, 1] < y0 + ny * sy)
    keep = np.flatnonzero((y != IGNORE_ID) & inside)  # cells the student's map covers
    if limit is not None and len(keep) > limit:
        keep = np.sort(rng.choice(keep, limit, replace=False))
    x, _ = sample_bev(bev, centers[keep][None], grid)
    return x[0].float(), torch.from_numpy(y[keep].astype(np.int64)), keep
