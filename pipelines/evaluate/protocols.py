"""Task-agnostic pieces of the evaluation protocols: linear probe, schedules, paired comparisons.

A result of ours is a *paired* comparison: the distilled student and the same student from
random initialisation are evaluated on the same labelled subset with the same seed, for
several subsets x seeds; the gain is reported as its mean with a 95% Student-t interval
over the paired runs, and claimed only when the interval excludes 0.

The linear probe returns its classifier folded with the feature standardisation, so that a
fine-tune can start from it (LP-FT: Kumar et al., "Fine-Tuning can Distort Pretrained
Features and Underperform Out-of-Distribution", ICLR 2022).
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from modalities.lidar.labels import IGNORE
from modalities.segmentation_metrics import confusion_matrix


def fit_linear_probe(
    x: torch.Tensor, y: torch.Tensor, num_classes: int, steps: int, lr: float, seed: int,
    points_per_step: int = 16384,
) -> nn.Linear:
    """A linear classifier on frozen features ``x`` (P, F), labels ``y`` (P,) (IGNORE skipped).

    Trained with Adam on z-scored features (the labelled set's statistics); the returned
    layer has the standardisation folded in, so it applies to raw features.
    """
    keep = y != IGNORE
    x, y = x[keep], y[keep]
    if len(y) == 0:
        raise ValueError("linear probe: the labeled scans have no labeled point")
    # A near-constant channel (e.g. a ReLU that almost never fires) is not blown up by its tiny
    # std: the folded weights would reach 1e5 (seen on the demo), ruin FP16/INT8 exports and
    # amplify noise. Scales below 1% of the median channel's are floored there.
    mean, std = x.mean(0), x.std(0)
    std = std.clamp_min(max(1e-6, 1e-2 * float(std.median())))
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    clf = nn.Linear(x.shape[1], num_classes)
    opt = torch.optim.Adam(clf.parameters(), lr=lr)
    xn = (x - mean) / std
    for _ in range(steps):
        idx = torch.randint(len(y), (min(points_per_step, len(y)),), generator=g)
        loss = F.cross_entropy(clf(xn[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    folded = nn.Linear(x.shape[1], num_classes)
    with torch.no_grad():  # W ((x - m) / s) + b = (W / s) x + (b - W (m / s))
        folded.weight.copy_(clf.weight / std)
        folded.bias.copy_(clf.bias - clf.weight @ (mean / std))
    return folded


@torch.no_grad()
def precise_batchnorm(model: nn.Module, batches, call=None, momentum_after: float | None = None) -> None:
    """Replace BatchNorm running statistics by their exact (cumulative) average over ``batches``; eval mode after.

    With a handful of labelled samples the exponential running averages are far from the statistics
    the weights were trained with; evaluating with them measures the BN lag, not the features
    ("precise BN", Wu & Johnson 2021). No labels are used. ``call(model, batch)`` runs one batch
    (default ``model(batch)``); ``momentum_after`` restores an exponential momentum afterwards
    (None keeps the cumulative average).
    """
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None  # cumulative moving average
    model.train()
    for batch in batches:
        model(batch) if call is None else call(model, batch)
    if momentum_after is not None:
        for bn in bns:
            bn.momentum = momentum_after
    model.eval()


def linear_probe(
    train: tuple[torch.Tensor, torch.Tensor],
    test: tuple[torch.Tensor, torch.Tensor],
    num_classes: int,
    steps: int,
    lr: float,
    seed: int,
) -> np.ndarray:
    """Train a linear classifier on frozen features; the confusion matrix on ``test``."""
    clf = fit_linear_probe(*train, num_classes, steps, lr, seed)
    with torch.no_grad():
        pred = clf(test[0]).argmax(1)
    return confusion_matrix(pred.numpy(), test[1].numpy(), num_classes)


def svm_scores(train: tuple[torch.Tensor, torch.Tensor], test_x: torch.Tensor, num_classes: int, C: float = 1.0,
               seed: int = 0) -> np.ndarray:
    """StandardScaler + RBF SVM (scikit-learn ``SVC``, one-vs-rest decision values) on frozen features:
    scores (N_test, C); a class absent from the labelled subset scores -inf (DESIGN 5.2's protocol)."""
    from sklearn.pipeline import make_pipeline  # noqa: PLC0415
    from sklearn.preprocessing import StandardScaler  # noqa: PLC0415
    from sklearn.svm import SVC  # noqa: PLC0415

    x, y = train[0].numpy().astype(np.float64), train[1].numpy()
    keep = y != IGNORE
    x, y = x[keep], y[keep]
    scores = np.full((len(test_x), num_classes), -np.inf)
    classes = np.unique(y)
    if len(classes) == 1:  # one labelled class: every prediction is that class
        scores[:, classes[0]] = 0.0
        return scores
    svm = make_pipeline(StandardScaler(), SVC(C=C, kernel="rbf", gamma="scale", decision_function_shape="ovr",
                                              random_state=seed))
    svm.fit(x, y)
    d = svm.decision_function(test_x.numpy().astype(np.float64))
    scores[:, classes] = d if d.ndim == 2 else np.stack([-d, d], axis=1)
    return scores


def top_k_accuracy(scores: np.ndarray, y: np.ndarray, k: int) -> float:
    """% of rows whose true class is among the ``k`` highest scores (ties broken by class order)."""
    top = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return float((top == np.asarray(y)[:, None]).any(1).mean() * 100)


def warmup_cosine(step: int, total_steps: int, warmup_steps: int) -> float:
    """LR multiplier: linear warm-up from 1/warmup to 1 over ``warmup_steps``, then cosine to 0."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    t = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return 0.5 * (1 + math.cos(math.pi * min(t, 1.0)))


def paired_comparison(distilled: Sequence[float], random: Sequence[float]) -> dict:
    """Mean gain of paired runs with its 95% t interval; ``claimed`` only if the interval excludes 0.

    Args:
        distilled, random: one metric value per paired run (same labelled subset and seed).
    """
    a, b = np.asarray(distilled, float), np.asarray(random, float)
    if a.shape != b.shape or a.ndim != 1 or len(a) == 0:
        raise ValueError(f"paired runs must be two equal-length lists, got {a.shape} and {b.shape}")
    gains = a - b
    out = {"distilled_mean": float(a.mean()), "random_mean": float(b.mean()), "gain_mean": float(gains.mean()),
           "n_paired": int(len(gains))}
    if len(gains) < 2:
        out.update(gain_ci95=None, claimed=False)  # one run: no interval, so no claim
        return out
    from scipy.stats import t  # noqa: PLC0415

    half = float(t.ppf(0.975, len(gains) - 1)) * gains.std(ddof=1) / math.sqrt(len(gains))
    low, high = float(gains.mean() - half), float(gains.mean() + half)
    out.update(gain_ci95=[low, high], claimed=bool(low > 0 or high < 0))
    return out
