"""Checks that an exported model computes what PyTorch computes, and how accurate each precision is.

Parity (DESIGN.md 6: "verify every export against PyTorch with ONNX Runtime"): the same
real, pre-processed held-out range images go through the PyTorch module and the ONNX
model; we report

- ``max_abs_err``  = max over samples and elements of |ort - torch|;
- ``max_rel_err``  = max over samples of max|ort - torch| / max|torch|  (the gate: a
  per-element ratio explodes on logits near 0, a per-tensor scale does not);
- ``max_elem_rel_err`` = max |ort - torch| / (|torch| + 1e-3 * max|torch|), for information;
- ``argmax_agreement`` = fraction of pixels whose predicted class is the same.

fp32 must satisfy ``max_rel_err <= 1e-4`` or the export fails.

Accuracy: per-point mIoU on the held-out scans through an engine, exactly as the
evaluate stage counts it: each valid point reads its pixel's logits, argmax, confusion
against the 16-class labels. A point with no pixel (outside the sensor's range or beams)
depends only on the pre-processing, so the same points are excluded for every precision.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from modalities.segmentation_metrics import confusion_matrix, mean_iou

from .preprocess import RangeInput, point_labels
from .sidecar import LabeledScan

FP32_REL_TOLERANCE = 1e-4


class ParityError(ValueError):
    """The exported model disagrees with PyTorch beyond the tolerance (a ValueError so CLIs print it)."""


def compare_outputs(actual: np.ndarray, reference: np.ndarray) -> dict[str, float]:
    """Error statistics of one output pair (same shape), as defined in the module docstring."""
    if actual.shape != reference.shape:
        raise ParityError(f"output shape {actual.shape} != PyTorch {reference.shape}")
    a, b = actual.astype(np.float64), reference.astype(np.float64)
    diff = np.abs(a - b)
    scale = float(np.abs(b).max())
    return {
        "max_abs_err": float(diff.max()),
        "max_rel_err": float(diff.max() / max(scale, 1e-12)),
        "max_elem_rel_err": float((diff / (np.abs(b) + 1e-3 * max(scale, 1e-12))).max()),
        "argmax_agreement": float((a.argmax(1) == b.argmax(1)).mean()) if a.ndim == 4 else float("nan"),
    }


def torch_parity(torch_model, run_engine: Callable[[np.ndarray], np.ndarray], images: Sequence[np.ndarray]) -> dict:
    """Worst-case :func:`compare_outputs` over ``images`` (each (C, H, W)) at batch 1."""
    import torch  # noqa: PLC0415
    from tqdm import tqdm  # noqa: PLC0415

    worst = {"max_abs_err": 0.0, "max_rel_err": 0.0, "max_elem_rel_err": 0.0, "argmax_agreement": 1.0}
    for img in tqdm(images, desc="parity ORT vs torch", unit="scan"):
        with torch.no_grad():
            ref = torch_model(torch.from_numpy(img[None])).numpy()
        stats = compare_outputs(run_engine(img[None]), ref)
        for k in ("max_abs_err", "max_rel_err", "max_elem_rel_err"):
            worst[k] = max(worst[k], stats[k])
        worst["argmax_agreement"] = min(worst["argmax_agreement"], stats["argmax_agreement"])
    worst["samples"] = len(images)
    return worst


def check_fp32_parity(stats: dict, tolerance: float = FP32_REL_TOLERANCE) -> None:
    if not stats["max_rel_err"] <= tolerance:  # also catches NaN
        raise ParityError(
            f"ONNX Runtime vs PyTorch: max relative error {stats['max_rel_err']:.3g} > {tolerance:g} "
            f"(max abs {stats['max_abs_err']:.3g}) on {stats['samples']} held-out scans; the export is wrong"
        )


def point_miou(
    logits_of: Callable[[RangeInput], np.ndarray],
    scans: Sequence[LabeledScan],
    inputs: Sequence[RangeInput],
    num_classes: int,
) -> dict:
    """Per-point mIoU (%) of an engine over pre-processed scans; invalid points excluded.

    Args:
        logits_of: (K, H, W) logits of one :class:`RangeInput`.
        scans, inputs: the labeled scans and their pre-processing (same order).
    """
    conf = np.zeros((num_classes, num_classes), np.int64)
    points = 0
    for scan, inp in zip(scans, inputs, strict=True):
        labels = point_labels(logits_of(inp), inp.rows, inp.cols, inp.valid)
        conf += confusion_matrix(labels[inp.valid], scan.labels[inp.valid], num_classes)
        points += int(inp.valid.sum())
    return {"miou": mean_iou(conf), "points": points, "scans": len(scans)}
