import numpy as np
import torch

from modalities.lidar.labels import IGNORE, lidarseg_to_16
from modalities.segmentation_metrics import confusion_matrix, iou_per_class, mean_iou
from pipelines.evaluate.lovasz import lovasz_softmax
from pipelines.evaluate.protocols import linear_probe


def test_iou_against_set_definition():
    rng = np.random.default_rng(0)
    pred, gt = rng.integers(0, 4, 1000), rng.integers(0, 3, 1000)
    gt[:50] = IGNORE
    conf = confusion_matrix(pred, gt, 4)
    iou = iou_per_class(conf)
    keep = gt != IGNORE
    for c in range(3):
        inter = np.sum((pred == c) & (gt == c) & keep)
        union = np.sum(((pred == c) | (gt == c)) & keep)
        assert np.isclose(iou[c], inter / union)
    assert np.isnan(iou[3])  # absent from the ground truth: not part of the mean
    assert np.isclose(mean_iou(conf), np.mean(iou[:3]) * 100)


def test_lovasz_on_hard_predictions_is_one_minus_iou():
    """For one-hot probabilities the Lovasz extension equals the Jaccard loss exactly."""
    rng = np.random.default_rng(1)
    pred, gt = rng.integers(0, 3, 200), rng.integers(0, 3, 200)
    probs = torch.nn.functional.one_hot(torch.from_numpy(pred), 3).double()
    loss = lovasz_softmax(probs, torch.from_numpy(gt))
    iou = iou_per_class(confusion_matrix(pred, gt, 3))
    assert np.isclose(loss.item(), np.mean(1 - iou))


def test_lidarseg_mapping():
    out = lidarseg_to_16(np.array([0, 2, 3, 9, 17, 24, 28, 30, 31]))
    assert out.tolist() == [IGNORE, 6, 6, 0, 3, 10, 14, 15, IGNORE]


def test_linear_probe_separates_separable_features():
    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, 3, (3000,), generator=g)
    x = torch.nn.functional.one_hot(y, 3).float() * 5 + torch.randn(3000, 3, generator=g) * 0.3
    conf = linear_probe((x[:2000], y[:2000]), (x[2000:], y[2000:]), 3, steps=100, lr=0.05, seed=0)
    assert mean_iou(conf) > 95


def test_weight_rescaling_keeps_the_function_in_train_mode():
    from torch import nn

    from pipelines.evaluate.probe import match_init_weight_scale

    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 4, 1), nn.BatchNorm2d(4))
    ref = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 4, 1), nn.BatchNorm2d(4))
    with torch.no_grad():
        net[0].weight.mul_(7.0)
        net[3].weight.mul_(3.0)
    x = torch.randn(4, 3, 10, 10)
    before = net(x)
    assert match_init_weight_scale(net, ref) == 2
    assert torch.allclose(net(x), before, atol=1e-3)  # equal up to the BN eps term
    assert torch.isclose(net[0].weight.norm(), ref[0].weight.norm())
