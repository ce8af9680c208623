"""Paired comparisons with intervals, the linear probe with folded standardisation, LR schedule."""

import math

import pytest
import torch

from modalities.segmentation_metrics import mean_iou
from pipelines.evaluate.protocols import fit_linear_probe, linear_probe, paired_comparison, warmup_cosine


def test_paired_interval_by_hand():
    # gains 1, 2, 3: mean 2, sample sd 1, t(0.975, df=2) = 4.302653
    out = paired_comparison([11.0, 12.0, 13.0], [10.0, 10.0, 10.0])
    half = 4.302653 / math.sqrt(3)
    assert out["gain_mean"] == pytest.approx(2.0) and out["n_paired"] == 3
    assert out["gain_ci95"] == pytest.approx([2 - half, 2 + half], abs=1e-5)
    assert out["claimed"] is False  # the interval [-0.48, 4.48] contains 0
    assert out["distilled_mean"] == pytest.approx(12.0) and out["random_mean"] == pytest.approx(10.0)


def test_pairing_matters_and_claims_follow_the_interval():
    """Large between-run spread, constant within-pair gain: paired, the gain is certain."""
    distilled, random = [30.0, 50.0, 70.0, 40.0], [28.0, 48.1, 67.9, 38.0]
    out = paired_comparison(distilled, random)
    assert out["claimed"] is True and out["gain_ci95"][0] > 0
    loss = paired_comparison(random, distilled)
    assert loss["claimed"] is True and loss["gain_ci95"][1] < 0 and loss["gain_mean"] < 0
    assert paired_comparison([5.0, 1.0], [1.0, 5.0])["claimed"] is False


def test_one_run_has_no_interval_and_no_claim():
    out = paired_comparison([40.0], [10.0])
    assert out["gain_ci95"] is None and out["claimed"] is False and out["gain_mean"] == 30.0
    with pytest.raises(ValueError, match="equal-length"):
        paired_comparison([1.0, 2.0], [1.0])


def test_probe_folds_the_standardisation_into_the_layer():
    """Features far from zero mean / unit scale: only a correctly folded layer classifies them."""
    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, 3, (3000,), generator=g)
    x = (torch.nn.functional.one_hot(y, 3).float() * 5 + torch.randn(3000, 3, generator=g) * 0.3) * 0.01 + 40.0
    clf = fit_linear_probe(x[:2000], y[:2000], 3, steps=100, lr=0.05, seed=0)
    assert (clf(x[2000:]).argmax(1) == y[2000:]).float().mean() > 0.95
    conf = linear_probe((x[:2000], y[:2000]), (x[2000:], y[2000:]), 3, steps=100, lr=0.05, seed=0)
    assert mean_iou(conf) > 90


def test_warmup_then_cosine():
    assert warmup_cosine(0, 100, 10) == pytest.approx(0.1)
    assert warmup_cosine(9, 100, 10) == pytest.approx(1.0)
    assert warmup_cosine(10, 100, 10) == pytest.approx(1.0)
    assert warmup_cosine(55, 100, 10) == pytest.approx(0.5)
    assert warmup_cosine(100, 100, 10) == pytest.approx(0.0, abs=1e-12)
    assert warmup_cosine(0, 100, 0) == pytest.approx(1.0)


def test_near_constant_channel_does_not_blow_up_the_folded_weights():
    """A channel with a tiny spread (a ReLU that almost never fires) must not get a 1e5 weight."""
    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, 3, (3000,), generator=g)
    x = torch.nn.functional.one_hot(y, 3).float() * 5 + torch.randn(3000, 3, generator=g) * 0.3
    nearly_dead = (torch.rand(3000, 1, generator=g) < 0.01).float() * 1e-5  # rare, tiny activations
    x = torch.cat([x, nearly_dead], 1)
    clf = fit_linear_probe(x[:2000], y[:2000], 3, steps=100, lr=0.05, seed=0)
    assert clf.weight.abs().max() < 100  # unfloored, the last column reaches ~1e4..1e5
    assert (clf(x[2000:]).argmax(1) == y[2000:]).float().mean() > 0.95
