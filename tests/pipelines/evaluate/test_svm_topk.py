"""The SVM protocol and top-k accuracy of the generic evaluation."""

import numpy as np
import pytest
import torch

from pipelines.evaluate.protocols import svm_scores, top_k_accuracy


def _blobs(n_per: int, classes: int, dim: int, seed: int, spread: float = 0.3):
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(classes, dim)) * 3
    y = np.repeat(np.arange(classes), n_per)
    x = centers[y] + rng.normal(size=(len(y), dim)) * spread
    return torch.from_numpy(x.astype(np.float32)), torch.from_numpy(y)


def test_svm_separates_blobs_and_scores_every_class():
    x, y = _blobs(30, 4, 8, 0)
    xt, yt = _blobs(20, 4, 8, 0)  # same centers (same seed), new noise draws would be nicer: perturb
    xt = xt + 0.05 * torch.randn_like(xt)
    scores = svm_scores((x, y), xt, num_classes=4)
    assert scores.shape == (80, 4)
    assert (scores.argmax(1) == yt.numpy()).mean() > 0.95


def test_svm_marks_classes_missing_from_the_labels():
    x, y = _blobs(20, 4, 6, 1)
    keep = y != 2
    scores = svm_scores((x[keep], y[keep]), x, num_classes=4)
    assert np.isneginf(scores[:, 2]).all()
    assert np.isfinite(scores[:, [0, 1, 3]]).all()
    assert 2 not in scores.argmax(1)


def test_svm_with_two_and_one_labelled_classes():
    x, y = _blobs(20, 2, 5, 2)
    scores = svm_scores((x, y), x, num_classes=3)
    assert (scores.argmax(1) == y.numpy()).mean() > 0.95  # binary decision values mapped to both columns
    one = svm_scores((x[y == 1], y[y == 1]), x, num_classes=3)
    assert (one.argmax(1) == 1).all()


@pytest.mark.parametrize("k, expected", [(1, 25.0), (2, 50.0), (3, 100.0)])
def test_top_k_accuracy(k, expected):
    scores = np.array([[3.0, 2.0, 1.0], [1.0, 3.0, 2.0], [2.0, 1.0, 3.0], [1.0, 2.0, 3.0]])
    y = np.array([0, 2, 1, 0])  # ranks of the true class: 1, 2, 3, 3
    assert top_k_accuracy(scores, y, k) == expected
