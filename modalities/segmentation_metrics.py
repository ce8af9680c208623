"""Point-wise segmentation metrics (numpy only): the evaluate stage and the deploy checks share them.

A (C, C) confusion matrix (rows = ground truth, columns = prediction) over points whose
label is not ``ignore``; IoU = TP / (TP + FP + FN); mIoU averages the classes present in
the ground truth, in percent.
"""

from __future__ import annotations

import numpy as np


def confusion_matrix(pred: np.ndarray, target: np.ndarray, num_classes: int, ignore: int = 255) -> np.ndarray:
    """(C, C) int64 counts; targets equal to ``ignore`` are skipped."""
    pred, target = np.asarray(pred).reshape(-1), np.asarray(target).reshape(-1)
    if pred.shape != target.shape:
        raise ValueError(f"pred/target: need the same number of points, got {pred.shape}/{target.shape}")
    keep = target != ignore
    idx = target[keep].astype(np.int64) * num_classes + pred[keep].astype(np.int64)
    return np.bincount(idx, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def iou_per_class(conf: np.ndarray) -> np.ndarray:
    """IoU = TP / (TP + FP + FN) per class; NaN for a class absent from the ground truth."""
    tp = np.diag(conf).astype(np.float64)
    gt = conf.sum(1)
    denom = gt + conf.sum(0) - tp
    iou = np.divide(tp, denom, out=np.zeros_like(tp), where=denom > 0)
    iou[gt == 0] = np.nan
    return iou


def mean_iou(conf: np.ndarray) -> float:
    """Mean IoU over the classes present in the ground truth, in percent; NaN when none is."""
    iou = iou_per_class(conf)
    return float(np.nanmean(iou) * 100) if np.any(~np.isnan(iou)) else float("nan")
