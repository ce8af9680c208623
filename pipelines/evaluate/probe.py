"""Few-label evaluation task "per-point segmentation" of a lidar student, point-wise mIoU.

Protocols (SLidR, Sautier et al. CVPR 2022, section 4; reference valeoai/SLidR ``downstream/``):

- linear probe: the backbone is frozen in eval mode, its BatchNorm statistics first
  recalibrated on the training scans (no labels needed; done for both inits, otherwise a
  random init is probed with untrained statistics); per-point pre-head features are
  z-scored with the labeled set's statistics and a linear classifier is trained with
  cross-entropy (:func:`pipelines.evaluate.protocols.fit_linear_probe`).
- fine-tuning: the backbone plus a linear classifier, started from the linear probe's
  (LP-FT), are trained end to end with cross-entropy + Lovasz-softmax on the labeled scans
  (random z-rotation and x/y flips), the backbone at a lower rate than the head (the
  reference uses 100x lower), with a linear warm-up then cosine decay.

Both report the confusion matrix on held-out scans; every comparison runs the same
protocol on the same network from random initialisation.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from modalities.lidar.io import read_nuscenes_pcd_bin
from modalities.lidar.labels import IGNORE, lidarseg_to_16
from modalities.lidar.range_spec import RangeImageSpec
from modalities.lidar.sensors import LidarSensor
from modalities.nuscenes_tables import load_lidarseg
from modalities.segmentation_metrics import confusion_matrix

from ..slidr.augment import rotate_flip_z
from ..slidr.data import ScanRef
from ..student_inputs import PointFeatureNet, StudentInput, make_student_input, point_features
from .lovasz import lovasz_softmax
from .protocols import precise_batchnorm, warmup_cosine


@dataclass
class LabeledScan:
    token: str
    xyz: np.ndarray  # (N, 3)
    intensity: np.ndarray  # (N,) in [0, 1]
    labels: np.ndarray  # (N,) benchmark class or IGNORE
    ring: np.ndarray | None = None  # (N,) beam index when the file stores it


def load_labeled_scans(scans: list[ScanRef]) -> list[LabeledScan]:
    out = []
    for s in scans:
        if s.lidarseg_path is None:
            raise ValueError(f"scan {s.token} ({s.lidar_path}) has no lidarseg labels; evaluation needs them")
        cloud = read_nuscenes_pcd_bin(s.lidar_path)
        labels = lidarseg_to_16(load_lidarseg(s.lidarseg_path, num_points=len(cloud)))
        out.append(LabeledScan(s.token, cloud.points_xyz.copy(), cloud.unit_intensity(), labels, cloud.ring))
    return out


@dataclass(frozen=True)
class StudentSpec:
    """How to feed a student: its kind, voxel size (sparse) or range-image spec (range)."""

    kind: str
    voxel_size: tuple[float, float, float]
    range_spec: RangeImageSpec | None

    @classmethod
    def from_record(cls, record: dict, sensor: LidarSensor, where: str = "student record") -> "StudentSpec":
        """From a student record (``pipelines.student_record``); ``sensor``: the evaluation data's lidar.

        A range-view student trained for another sensor than the evaluation data's is an
        error naming both (its rows and columns would not mean the same beams).
        """
        inp = record["input"]
        if inp.get("kind") == RangeImageSpec.kind:
            spec = RangeImageSpec.from_dict(inp, where)
            if spec.sensor != sensor:
                raise ValueError(f"{where}: the student was trained for lidar '{spec.sensor.name}' but the evaluation "
                                 f"dataset's lidar is '{sensor.name}'")
            return cls(record["kind"], (0.1, 1.0, 0.1), spec)
        return cls(record["kind"], tuple(inp.get("voxel_size") or (0.1, 1.0, 0.1)), None)

    def batch(self, scans: list[LabeledScan], xyz: list[np.ndarray] | None = None) -> StudentInput:
        """The student's input for ``scans`` (``xyz``: their augmented points, default the scans' own)."""
        return make_student_input(self.kind, xyz if xyz is not None else [s.xyz for s in scans],
                                  [s.intensity for s in scans], self.voxel_size, self.range_spec,
                                  [s.ring for s in scans])


def _batches(scans: list[LabeledScan], size: int):
    for i in range(0, len(scans), size):
        yield scans[i : i + size]


@torch.no_grad()
def extract_features(student: nn.Module, scans: list[LabeledScan], spec: StudentSpec,
                     batch_scans: int = 2) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Per scan, (features (P_s, F), labels (P_s,)) of the points the student sees (eval mode)."""
    student.eval()
    out = []
    for group in _batches(scans, batch_scans):
        inp = spec.batch(group)
        f = point_features(student, inp, backbone_only=True)
        y = torch.from_numpy(np.concatenate([s.labels for s in group]))
        for b in range(len(group)):
            keep = inp.point_valid & (inp.point_batch == b)
            out.append((f[keep], y[keep]))
    return out


def concat_features(per_scan: list[tuple[torch.Tensor, torch.Tensor]]) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.cat([f for f, _ in per_scan]), torch.cat([y for _, y in per_scan])


class Segmenter(nn.Module):
    """A student backbone with a linear per-point classifier on its pre-head features."""

    def __init__(self, student: nn.Module, num_classes: int):
        super().__init__()
        self.student = student
        self.classifier = nn.Linear(student.feature_dim, num_classes)

    def forward(self, inp) -> torch.Tensor:
        return self.classifier(point_features(self.student, inp, backbone_only=True))


@torch.no_grad()
def recalibrate_batchnorm(model: nn.Module, scans: list[LabeledScan], spec: StudentSpec, batch_scans: int) -> None:
    """Replace BatchNorm running statistics by their exact average over ``scans``.

    With a handful of labeled scans and a few hundred steps, the exponential running
    averages are still far from the statistics the weights were trained with; evaluating
    with them measures the BN lag, not the features ("precise BN", Wu & Johnson 2021).
    """
    precise_batchnorm(model, (spec.batch(group) for group in _batches(scans, batch_scans)))


def recalibrate_student_batchnorm(student: nn.Module, scans: list[LabeledScan], spec: StudentSpec,
                                  batch_scans: int) -> None:
    """:func:`recalibrate_batchnorm` of a bare student (its backbone's point features)."""
    recalibrate_batchnorm(PointFeatureNet(student), scans, spec, batch_scans)


def match_init_weight_scale(model: nn.Module, reference: nn.Module) -> int:
    """Rescale every conv that feeds a BatchNorm to the weight norm of a fresh initialisation.

    A conv followed by BatchNorm is scale-invariant, so the rescaling leaves the network's
    function unchanged in training mode (and BN statistics are recalibrated after
    fine-tuning anyway). It matters for the optimiser: distillation with SGD at lr 0.5
    grows these weights several-fold (observed up to 8x on the demo run), which shrinks
    every Adam step relative to the weights by the same factor; fine-tuning a distilled
    network then barely moves in a few hundred steps. Returns the number of convs rescaled.
    """
    modules = list(model.named_modules())
    ref = dict(reference.named_modules())
    count = 0
    for (name, m), (_, nxt) in zip(modules, modules[1:]):
        w = getattr(m, "weight", None)
        if (not isinstance(w, torch.Tensor) or isinstance(m, nn.modules.batchnorm._BatchNorm)
                or not isinstance(nxt, nn.modules.batchnorm._BatchNorm) or w.shape[0] != nxt.num_features):
            continue
        factor = ref[name].weight.norm() / w.norm().clamp_min(1e-12)
        with torch.no_grad():
            w.mul_(factor)
            if getattr(m, "bias", None) is not None:
                m.bias.mul_(factor)
        count += 1
    return count


def finetune(
    student: nn.Module,
    train_scans: list[LabeledScan],
    test_scans: list[LabeledScan],
    spec: StudentSpec,
    num_classes: int,
    steps: int,
    lr: float,
    batch_scans: int,
    seed: int,
    lovasz_weight: float = 1.0,
    init_reference: nn.Module | None = None,
    head: nn.Linear | None = None,
    backbone_lr_scale: float = 1.0,
    warmup_steps: int = 0,
) -> tuple[np.ndarray, list[float], Segmenter]:
    """Fine-tune a copy of ``student`` for ``steps`` steps.

    ``init_reference`` (a freshly initialised network of the same architecture) rescales the
    conv weights first, see :func:`match_init_weight_scale`. ``head`` (a linear probe on the
    backbone's raw features) initialises the classifier (LP-FT); the backbone learns at
    ``lr * backbone_lr_scale``; both rates warm up linearly over ``warmup_steps``, then decay
    (cosine). Returns (confusion on ``test_scans``, loss per step, the fine-tuned model in eval mode).
    """
    torch.manual_seed(seed)
    model = Segmenter(copy.deepcopy(student), num_classes)
    if head is not None:
        model.classifier.load_state_dict(head.state_dict())
    if init_reference is not None:
        match_init_weight_scale(model.student, init_reference)
    opt = torch.optim.AdamW([
        {"params": model.student.parameters(), "lr": lr * backbone_lr_scale},
        {"params": model.classifier.parameters(), "lr": lr},
    ], weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: warmup_cosine(step, steps, warmup_steps))
    rng = np.random.default_rng(seed)
    curve = []
    order: list[int] = []
    model.train()
    for _ in range(steps):
        if len(order) < batch_scans:
            order += list(rng.permutation(len(train_scans)))
        group = [train_scans[order.pop()] for _ in range(min(batch_scans, len(train_scans)))]
        xyz = [rotate_flip_z(s.xyz, rng) for s in group]
        inp = spec.batch(group, xyz)
        y = torch.from_numpy(np.concatenate([s.labels for s in group]))[inp.point_valid]
        logits = model(inp)[inp.point_valid]
        loss = F.cross_entropy(logits, y, ignore_index=IGNORE)
        if lovasz_weight:
            loss = loss + lovasz_weight * lovasz_softmax(logits.softmax(1), y, IGNORE)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        curve.append(loss.item())
    recalibrate_batchnorm(model, train_scans, spec, batch_scans)  # leaves the model in eval mode
    conf = np.zeros((num_classes, num_classes), dtype=np.int64)
    with torch.no_grad():
        for group in _batches(test_scans, batch_scans):
            inp = spec.batch(group)
            pred = model(inp).argmax(1)[inp.point_valid]
            y = torch.from_numpy(np.concatenate([s.labels for s in group]))[inp.point_valid]
            conf += confusion_matrix(pred.numpy(), y.numpy(), num_classes)
    return conf, curve, model
