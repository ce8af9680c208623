"""Lidar pillar BEV student: input building against a hand-made cloud, gather = scatter oracle,
locality, masking, gradients, ONNX export (no Scatter ops, ORT parity)."""

from __future__ import annotations


import numpy as np
import pytest
import torch

from modalities.bev_labels import BevGridSpec
from modalities.lidar.bev_net import NUM_POINT_FEATURES, PillarBevNet, PillarBevSpec, pillar_inputs
from modalities.lidar.pillars import pillarize, scatter_to_bev
from tests.modalities.onnx_parity import assert_onnx_export_matches

# 32 x 32 cells of 0.5 m: small enough for fast tests, deep enough for the stride-4 stage.
SMALL = PillarBevSpec(x_range_m=(-8.0, 8.0), y_range_m=(-8.0, 8.0), cell_size_m=0.5,
                      z_range_m=(-3.0, 2.0), max_points_per_pillar=4, max_pillars=64)
SMALL_NET = dict(pillar_channels=8, widths=(8, 16, 16), out_channels=8)


def _batch(*feeds: dict) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return tuple(torch.from_numpy(np.stack([f[k] for f in feeds]))
                 for k in ("pillar_points", "pillar_mask", "cell_index"))


def _random_cloud(n: int, seed: int, spec: PillarBevSpec = SMALL) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    xyz = rng.uniform([spec.x_range_m[0], spec.y_range_m[0], -2.0], [spec.x_range_m[1], spec.y_range_m[1], 1.0], (n, 3))
    return xyz, rng.random(n)


def _calibrated(net: PillarBevNet, spec: PillarBevSpec = SMALL) -> PillarBevNet:
    """Non-trivial BatchNorm statistics (a few train-mode passes), then eval mode."""
    with torch.no_grad():
        for seed in range(3):
            net(*_batch(pillar_inputs(*_random_cloud(300, seed, spec), spec)[0]))
    return net.eval()


# ------------------------------------------------------------------------- the spec


def test_spec_defaults_grid_and_round_trip():
    spec = PillarBevSpec()
    assert spec.grid == BevGridSpec() and (spec.ny, spec.nx) == (128, 128)
    assert PillarBevSpec.from_dict(spec.to_dict()) == spec
    assert PillarBevSpec.from_dict(SMALL.to_dict()) == SMALL


@pytest.mark.parametrize("change, field", [
    (lambda d: d.pop("max_pillars"), "max_pillars"),
    (lambda d: d.update(ring=1), "ring"),
])
def test_spec_from_dict_names_missing_and_unknown_fields(change, field):
    d = SMALL.to_dict()
    change(d)
    with pytest.raises(ValueError, match=field):
        PillarBevSpec.from_dict(d)


@pytest.mark.parametrize("kwargs, field", [
    (dict(cell_size_m=0.3), "x_range_m"),  # 16 m is not a whole number of 0.3 m cells
    (dict(z_range_m=(2.0, -3.0)), "z_range_m"),
    (dict(max_points_per_pillar=0), "max_points_per_pillar"),
    (dict(max_pillars=2.5), "max_pillars"),
])
def test_spec_rejects_bad_values_naming_the_field(kwargs, field):
    with pytest.raises(ValueError, match=field):
        PillarBevSpec(**{**SMALL.to_dict(), **kwargs})


# ------------------------------------------------------------------------- pillar_inputs


def test_pillar_inputs_on_a_hand_made_cloud():
    # Cells: x in [-8, 8), y in [-8, 8), 0.5 m -> cell (ix, iy) = floor((x + 8) / 0.5), floor((y + 8) / 0.5).
    xyz = np.array([
        [0.1, 0.2, 0.0],    # cell (16, 16) -> pillar 0 (first seen)
        [-7.9, 7.9, 1.0],   # cell (0, 31)  -> pillar 1
        [0.4, 0.3, -1.0],   # cell (16, 16) again -> pillar 0, slot 1
        [3.0, -5.2, 0.5],   # cell (22, 5)  -> pillar 2
        [8.0, 0.0, 0.0],    # x = 8 is outside the half-open range
        [0.0, 0.0, 2.5],    # above z_range
        [-8.1, 0.0, 0.0],   # left of the grid
    ])
    intensity = np.array([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7])
    feeds, stats = pillar_inputs(xyz, intensity, SMALL)
    assert feeds["pillar_points"].shape == (64, 4, NUM_POINT_FEATURES) and feeds["pillar_points"].dtype == np.float32
    assert feeds["pillar_mask"].shape == (64, 4) and feeds["pillar_mask"].dtype == np.float32
    assert feeds["cell_index"].shape == (32 * 32,) and feeds["cell_index"].dtype == np.int64
    assert stats["points_out_of_range"] == 3 and stats["points_dropped"] == 0
    assert stats["pillars_dropped"] == 0 and stats["num_pillars"] == 3
    np.testing.assert_array_equal(stats["point_to_pillar"], [0, 1, 0, 2, -1, -1, -1])

    expected = np.full(32 * 32, 64)
    for (ix, iy), pillar in {(16, 16): 0, (0, 31): 1, (22, 5): 2}.items():
        expected[iy * 32 + ix] = pillar
    np.testing.assert_array_equal(feeds["cell_index"], expected)

    mask = np.zeros((64, 4), np.float32)
    mask[0, :2] = mask[1, 0] = mask[2, 0] = 1
    np.testing.assert_array_equal(feeds["pillar_mask"], mask)
    pts = feeds["pillar_points"]
    np.testing.assert_allclose(pts[0, 1, :4], [0.4, 0.3, -1.0, 0.3], rtol=1e-6)  # x, y, z, intensity
    # decorations: offset to the pillar's mean (0.25, 0.25, -0.5), to its centre (0.25, 0.25)
    np.testing.assert_allclose(pts[0, 1, 4:], [0.15, 0.05, -0.5, 0.15, 0.05], atol=1e-6)
    assert not pts[mask == 0].any()


def test_pillar_inputs_drops_over_budget_pillars_to_the_empty_row():
    spec = PillarBevSpec(**{**SMALL.to_dict(), "max_pillars": 2, "max_points_per_pillar": 1})
    xyz = np.array([[0.1, 0.1, 0.0], [0.2, 0.2, 0.0], [2.1, 0.1, 0.0], [4.1, 0.1, 0.0]])
    feeds, stats = pillar_inputs(xyz, np.zeros(4), spec)
    assert stats["pillars_dropped"] == 1 and stats["points_dropped"] == 2 and stats["num_pillars"] == 2
    cell = lambda x, y: int((y + 8) / 0.5) * 32 + int((x + 8) / 0.5)  # noqa: E731
    assert feeds["cell_index"][cell(0.1, 0.1)] == 0 and feeds["cell_index"][cell(2.1, 0.1)] == 1
    assert feeds["cell_index"][cell(4.1, 0.1)] == 2  # dropped pillar: the network's zero row
    assert (feeds["cell_index"] == 2).sum() == 32 * 32 - 2


def test_pillar_inputs_rejects_mismatched_intensity():
    with pytest.raises(ValueError, match="intensity"):
        pillar_inputs(np.zeros((3, 3)), np.zeros(2), SMALL)


# ------------------------------------------------------------------------- the network


def test_output_shape_and_feature_dim():
    net = PillarBevNet(SMALL.ny, SMALL.nx, **SMALL_NET).eval()
    feeds = [pillar_inputs(*_random_cloud(200, s), SMALL)[0] for s in range(2)]
    with torch.no_grad():
        out = net(*_batch(*feeds))
    assert out.shape == (2, 8, 32, 32) and net.feature_dim == 8
    assert torch.isfinite(out).all()


def test_default_size():
    # A regression pin only (printed by this implementation): catches an unintended change of
    # the default architecture. Regenerate: .venv/bin/python -c "from modalities.lidar.bev_net import
    #   PillarBevNet; print(sum(p.numel() for p in PillarBevNet(128, 128).parameters()))"
    net = PillarBevNet(128, 128)
    assert sum(p.numel() for p in net.parameters()) == 499_808
    assert net.feature_dim == 64


def test_rejects_grid_not_divisible_by_the_stride():
    with pytest.raises(ValueError, match="multiples of 4"):
        PillarBevNet(30, 32)


def test_pseudo_image_gather_equals_the_numpy_scatter():
    # Oracle: pillars.scatter_to_bev of the encoder's per-pillar features (a direct scatter).
    torch.manual_seed(0)
    net = _calibrated(PillarBevNet(SMALL.ny, SMALL.nx, **SMALL_NET))
    xyz, inten = _random_cloud(150, seed=7)
    feeds, _ = pillar_inputs(xyz, inten, SMALL)
    pts, mask, cells = _batch(feeds)
    with torch.no_grad():
        pillar_feats = net.encode_pillars(pts, mask)[0].T.numpy()  # (P, C)
        got = net.pseudo_image(pts, mask, cells)[0].numpy()
    s = SMALL.cell_size_m
    pillars = pillarize(xyz, np.column_stack([xyz, inten]).astype(np.float32), SMALL.x_range_m, SMALL.y_range_m,
                        (s, s), SMALL.max_points_per_pillar, SMALL.max_pillars, SMALL.z_range_m, decorate=True)
    np.testing.assert_allclose(got, scatter_to_bev(pillar_feats, pillars), rtol=0, atol=0)
    occupied = np.zeros((SMALL.ny, SMALL.nx), bool)
    occupied[pillars.coords[: pillars.num_pillars, 1], pillars.coords[: pillars.num_pillars, 0]] = True
    assert not got[:, ~occupied].any() and got[:, occupied].any()


def test_pillar_feature_is_the_max_over_its_real_points():
    # Oracle: the PointPillars encoder written out per point (eval-mode BN as an affine map).
    torch.manual_seed(1)
    net = _calibrated(PillarBevNet(SMALL.ny, SMALL.nx, **SMALL_NET))
    feeds, _ = pillar_inputs(*_random_cloud(200, seed=3), SMALL)
    pts, mask, _ = _batch(feeds)
    with torch.no_grad():
        got = net.encode_pillars(pts, mask)[0]  # (C, P)
        w = net.point_linear.weight[:, :, 0, 0]
        bn = net.point_bn
        for p in range(SMALL.max_pillars):
            real = pts[0, p][mask[0, p] > 0]  # (k, F)
            if not len(real):
                assert not got[:, p].any()
                continue
            y = (real @ w.T - bn.running_mean) / torch.sqrt(bn.running_var + bn.eps) * bn.weight + bn.bias
            torch.testing.assert_close(got[:, p], torch.relu(y).amax(0), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("train_mode", [False, True])
def test_padded_slots_do_not_affect_the_output(train_mode):
    torch.manual_seed(2)
    net = _calibrated(PillarBevNet(SMALL.ny, SMALL.nx, **SMALL_NET)).train(train_mode)
    pts, mask, cells = _batch(*[pillar_inputs(*_random_cloud(200, seed=s), SMALL)[0] for s in (4, 5)])
    garbage = pts + torch.randn_like(pts) * 50 * (1 - mask).unsqueeze(-1)
    assert not torch.equal(garbage, pts)
    with torch.no_grad():
        torch.testing.assert_close(net(garbage, mask, cells), net(pts, mask, cells), rtol=1e-5, atol=1e-5)


def test_a_change_in_one_cell_stays_within_the_receptive_field():
    spec = PillarBevSpec(**{**SMALL.to_dict(), "x_range_m": (-16.0, 16.0), "y_range_m": (-16.0, 16.0),
                            "max_pillars": 1000})  # 64 x 64 cells, no pillar dropped
    torch.manual_seed(3)
    net = _calibrated(PillarBevNet(spec.ny, spec.nx, **SMALL_NET), spec)
    xyz, inten = _random_cloud(400, seed=9, spec=spec)
    extra = np.array([[-14.2, -14.7, 0.3]])  # cell (ix, iy) = (3, 2)
    base, _ = pillar_inputs(xyz, inten, spec)
    more, _ = pillar_inputs(np.concatenate([xyz, extra]), np.append(inten, 0.9), spec)
    with torch.no_grad():
        diff = (net(*_batch(more)) - net(*_batch(base))).abs().amax(dim=(0, 1)).numpy()  # (ny, nx)
    iy, ix = np.indices(diff.shape)
    far = np.maximum(np.abs(iy - 2), np.abs(ix - 3)) > 30  # the receptive field's radius is ~24 cells
    assert diff[:6, :7].max() > 0
    assert diff[far].max() == 0


def test_gradient_reaches_the_pillar_encoder():
    torch.manual_seed(4)
    net = PillarBevNet(SMALL.ny, SMALL.nx, **SMALL_NET).train()
    pts, mask, cells = _batch(*[pillar_inputs(*_random_cloud(200, seed=s), SMALL)[0] for s in (1, 2)])
    net(pts, mask, cells).square().mean().backward()
    for p in (net.point_linear.weight, net.point_bn.weight):
        assert p.grad is not None and p.grad.abs().sum() > 0


def test_rejects_out_of_range_cell_index():
    net = PillarBevNet(SMALL.ny, SMALL.nx, **SMALL_NET)
    pts, mask, cells = _batch(pillar_inputs(*_random_cloud(50, seed=0), SMALL)[0])
    with pytest.raises(ValueError, match="cell_index"):
        net(pts, mask, cells + SMALL.max_pillars)


# ------------------------------------------------------------------------- export


def test_onnx_export_has_no_scatter_and_matches_torch():
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    torch.manual_seed(5)
    net = _calibrated(PillarBevNet(SMALL.ny, SMALL.nx, **SMALL_NET))
    inputs = _batch(pillar_inputs(*_random_cloud(300, seed=11), SMALL)[0])
    assert_onnx_export_matches(net, inputs, ["pillar_points", "pillar_mask", "cell_index"], "GatherElements",
                               (1, 8, 32, 32))
