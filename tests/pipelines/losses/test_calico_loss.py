import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from modalities.lidar.pillars import pillarize, scatter_to_bev
from pipelines.losses.calico import BevGrid, plrc_loss, prc_loss, rad_loss, rapc_loss, sample_bev

# ---------------------------------------------------------------------------------------------
# Oracles: the formulas written out with Python loops over points, anchors and regions.


def _dot(a, b):
    return sum(x * y for x, y in zip(a, b))


def _log_sum_exp(values):
    top = max(values)
    return top + math.log(sum(math.exp(v - top) for v in values))


def _plrc_direction(anchors, anchor_region, others, other_region, temperature):
    total, kept = 0.0, 0
    for i, a in enumerate(anchors):
        if anchor_region[i] < 0:
            continue
        positives = [j for j in range(len(others)) if other_region[j] == anchor_region[i]]
        if not positives:
            continue
        scores = [_dot(a, o) / temperature for o in others]
        log_denominator = _log_sum_exp(scores)
        total += -sum(scores[p] - log_denominator for p in positives) / len(positives)
        kept += 1
    return total / kept if kept else 0.0


def _plrc_oracle(f1, f2, region1, region2, temperature=0.1):
    f1, f2 = (np.asarray(t.detach(), dtype=np.float64).tolist() for t in (f1, f2))
    r1, r2 = region1.tolist(), region2.tolist()
    return 0.5 * (_plrc_direction(f1, r1, f2, r2, temperature) + _plrc_direction(f2, r2, f1, r1, temperature))


def _info_nce_direction(anchors, others, temperature):
    total = 0.0
    for i, a in enumerate(anchors):
        scores = [_dot(a, o) / temperature for o in others]
        total += -(scores[i] - _log_sum_exp(scores))
    return total / len(anchors)


def _rapc_oracle(f1, f2, temperature=0.1):
    f1, f2 = (np.asarray(t.detach(), dtype=np.float64).tolist() for t in (f1, f2))
    return 0.5 * (_info_nce_direction(f1, f2, temperature) + _info_nce_direction(f2, f1, temperature))


def _rad_oracle(student, teacher, region, temperature=0.1, normalize_pooled=True):
    student, teacher = (np.asarray(t.detach(), dtype=np.float64).tolist() for t in (student, teacher))
    ids = sorted({r for r in region.tolist() if r >= 0})
    pooled_s, pooled_t = [], []
    for r in ids:
        members = [n for n, rr in enumerate(region.tolist()) if rr == r]
        for feats, out in ((student, pooled_s), (teacher, pooled_t)):
            mean = [sum(feats[n][c] for n in members) / len(members) for c in range(len(feats[0]))]
            if normalize_pooled:
                norm = math.sqrt(_dot(mean, mean))
                mean = [m / norm for m in mean]
            out.append(mean)
    if not ids:
        return 0.0
    total = 0.0
    for r in range(len(ids)):
        scores = [_dot(pooled_s[r], t) / temperature for t in pooled_t]
        total += -(scores[r] - _log_sum_exp(scores))
    return total / len(ids)


def _unit(seed, *shape, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(*shape, generator=g, dtype=dtype), dim=-1)


def _regions(seed, n, ids=(3, 7, 42, 8), outside_fraction=0.3):
    """Non-contiguous ids, about outside_fraction of the points at -1."""
    g = torch.Generator().manual_seed(seed)
    pick = torch.tensor(ids)[torch.randint(0, len(ids), (n,), generator=g)]
    outside = torch.rand(n, generator=g) < outside_fraction
    return torch.where(outside, torch.full_like(pick, -1), pick)


def _two_views(seed, n1=23, n2=19, dim=6):
    f1, f2 = _unit(seed, n1, dim), _unit(seed + 100, n2, dim)
    region1 = _regions(seed + 200, n1)
    region2 = _regions(seed + 300, n2, ids=(3, 7, 42, 99))  # 8 only in view 1, 99 only in view 2
    region1[0], region2[0] = -1, -1  # outside points in both views, always
    region1[1], region2[1] = 3, 3  # region 3 in both views, always
    return f1, f2, region1, region2


# ---------------------------------------------------------------------------------------------
# sample_bev


def _hand_bilinear(bev, x, y, grid):
    """Bilinear interpolation written out: cell centres at (ix + 0.5, iy + 0.5), edge cells extended."""
    x_min, y_min, sx, sy = grid
    _, channels, height, width = bev.shape
    u, v = (x - x_min) / sx, (y - y_min) / sy
    if not (0 <= u < width and 0 <= v < height):
        return [0.0] * channels, False
    cu, cv = u - 0.5, v - 0.5  # in units of cells, from the centre of cell 0
    i0, j0 = math.floor(cu), math.floor(cv)
    a, b = cu - i0, cv - j0
    out = []
    for c in range(channels):
        value = 0.0
        for di, wi in ((0, 1 - a), (1, a)):
            for dj, wj in ((0, 1 - b), (1, b)):
                col = min(max(i0 + di, 0), width - 1)
                row = min(max(j0 + dj, 0), height - 1)
                value += wi * wj * float(bev[0, c, row, col])
        out.append(value)
    return out, True


def test_sample_bev_matches_hand_interpolation():
    grid = BevGrid(x_min_m=-3.0, y_min_m=10.0, cell_x_m=0.5, cell_y_m=0.25)
    height, width = 4, 6  # not square: swapping rows and columns cannot go unnoticed
    bev = torch.randn(1, 3, height, width, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    g = torch.Generator().manual_seed(1)
    x = -3.0 + torch.rand(40, generator=g, dtype=torch.float64) * (width * 0.5)
    y = 10.0 + torch.rand(40, generator=g, dtype=torch.float64) * (height * 0.25)
    # Edge half-cells, the exact lower corner (inside) and points just outside each side.
    extra = torch.tensor(
        [[-3.0, 10.0], [-2.9, 10.95], [-0.05, 10.02], [-3.01, 10.5], [0.0, 10.5], [-1.0, 9.99], [-1.0, 11.0]],
        dtype=torch.float64,
    )
    xy = torch.cat([torch.stack([x, y], dim=1), extra])[None]
    got, valid = sample_bev(bev, xy, grid)
    assert got.shape == (1, xy.shape[1], 3) and valid.shape == (1, xy.shape[1])
    for n in range(xy.shape[1]):
        want, want_valid = _hand_bilinear(bev, float(xy[0, n, 0]), float(xy[0, n, 1]), grid)
        assert bool(valid[0, n]) == want_valid, n
        assert got[0, n].tolist() == pytest.approx(want, abs=1e-12), n
    assert valid[0, -7:].tolist() == [True, True, True, False, False, False, False]


def test_sample_bev_cell_centres_are_exact_and_batched():
    grid = (5.0, -2.0, 0.2, 0.4)
    bev = torch.arange(2 * 2 * 3 * 5, dtype=torch.float64).reshape(2, 2, 3, 5)
    ix = torch.tensor([0, 4, 2, 1, 3], dtype=torch.float64)
    iy = torch.tensor([0, 2, 1, 2, 0], dtype=torch.float64)
    xy = torch.stack([5.0 + (ix + 0.5) * 0.2, -2.0 + (iy + 0.5) * 0.4], dim=1)
    xy = torch.stack([xy, xy.flip(0)])  # the second map sampled at the points in reverse order
    got, valid = sample_bev(bev, xy, grid)
    assert valid.all()
    iy, ix = iy.long(), ix.long()
    torch.testing.assert_close(got[0], bev[0][:, iy, ix].T)
    torch.testing.assert_close(got[1], bev[1][:, iy.flip(0), ix.flip(0)].T)


def test_sample_bev_follows_the_pillar_grid():
    """A point sampled at its pillar's centre reads that pillar's feature in scatter_to_bev's map."""
    rng = np.random.default_rng(0)
    points = np.column_stack([rng.uniform(-4, 6, 50), rng.uniform(-2, 3, 50), np.zeros(50)])
    x_range, y_range, size = (-4.0, 6.0), (-2.0, 3.0), (0.5, 0.25)
    pillars = pillarize(points, points, x_range, y_range, size, max_points_per_pillar=4, max_pillars=64)
    pillar_feats = rng.standard_normal((64, 3)).astype(np.float32)
    bev = torch.from_numpy(scatter_to_bev(pillar_feats, pillars))[None]  # (1, C, ny, nx)
    kept = pillars.point_to_pillar >= 0
    rows = pillars.point_to_pillar[kept]
    centres = np.column_stack(
        [x_range[0] + (pillars.coords[rows, 0] + 0.5) * size[0], y_range[0] + (pillars.coords[rows, 1] + 0.5) * size[1]]
    )
    got, valid = sample_bev(bev, torch.from_numpy(centres).float()[None], (x_range[0], y_range[0], *size))
    assert valid.all()
    torch.testing.assert_close(got[0], torch.from_numpy(pillar_feats[rows]))


def test_sample_bev_outside_and_non_finite_points_are_zero_with_finite_gradient():
    bev = torch.randn(1, 4, 3, 3, requires_grad=True)
    xy = torch.tensor([[[0.5, 0.5], [-0.1, 1.0], [3.0, 1.0], [float("nan"), 1.0], [1.0, float("inf")], [2.9, 2.9]]])
    got, valid = sample_bev(bev, xy, (0.0, 0.0, 1.0, 1.0))
    assert valid[0].tolist() == [True, False, False, False, False, True]
    assert (got[0, 1:5] == 0).all()
    torch.testing.assert_close(got[0, 0], bev[0, :, 0, 0])
    torch.testing.assert_close(got[0, 5], bev[0, :, 2, 2])  # outer half cell: the edge value, not blended with 0
    got.sum().backward()
    assert torch.isfinite(bev.grad).all()
    assert bev.grad[0, :, 0, 0].tolist() == pytest.approx([1.0] * 4, abs=1e-6)
    assert bev.grad[0, :, 1, 1].abs().max() < 1e-6  # invalid points (sampled at the centre) add no gradient


def test_sample_bev_bf16_map_is_sampled_in_float32():
    bev = torch.randn(1, 2, 4, 512).bfloat16()
    col = 300
    xy = torch.tensor([[[col + 0.5, 2.5]]])
    got, _ = sample_bev(bev, xy, (0.0, 0.0, 1.0, 1.0))
    assert got.dtype == torch.float32
    torch.testing.assert_close(got[0, 0], bev[0, :, 2, col].float())


def test_sample_bev_rejects_bad_shapes_and_grids():
    bev = torch.zeros(2, 3, 4, 5)
    with pytest.raises(ValueError, match=r"bev must be \(B, C, H, W\)"):
        sample_bev(bev[0], torch.zeros(2, 7, 2), (0, 0, 1, 1))
    with pytest.raises(ValueError, match=r"xy_lidar_m must be \(B=2, N, 2\)"):
        sample_bev(bev, torch.zeros(2, 7, 3), (0, 0, 1, 1))
    with pytest.raises(ValueError, match=r"xy_lidar_m must be \(B=2, N, 2\)"):
        sample_bev(bev, torch.zeros(1, 7, 2), (0, 0, 1, 1))
    with pytest.raises(ValueError, match="cell sizes must be > 0"):
        sample_bev(bev, torch.zeros(2, 7, 2), (0, 0, 0.0, 1))
    with pytest.raises(ValueError, match="grid must be"):
        sample_bev(bev, torch.zeros(2, 7, 2), (0, 0, 1))


# ---------------------------------------------------------------------------------------------
# PLRC


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_plrc_matches_loop_oracle(seed):
    f1, f2, region1, region2 = _two_views(seed)
    got = plrc_loss(f1, f2, region1, region2)
    assert got.ndim == 0
    assert got.item() == pytest.approx(_plrc_oracle(f1, f2, region1, region2), rel=1e-10)


@pytest.mark.parametrize("temperature", [0.05, 0.3, 1.0])
def test_plrc_temperature_matches_oracle(temperature):
    f1, f2, region1, region2 = _two_views(4)
    got = plrc_loss(f1, f2, region1, region2, temperature=temperature)
    assert got.item() == pytest.approx(_plrc_oracle(f1, f2, region1, region2, temperature), rel=1e-10)


def test_plrc_is_symmetric_in_the_views():
    f1, f2, region1, region2 = _two_views(5)
    assert plrc_loss(f1, f2, region1, region2).item() == pytest.approx(plrc_loss(f2, f1, region2, region1).item())
    # and not a one-directional loss: the two directions differ on this input
    one_way = _plrc_direction(f1.tolist(), region1.tolist(), f2.tolist(), region2.tolist(), 0.1)
    assert plrc_loss(f1, f2, region1, region2).item() != pytest.approx(one_way, rel=1e-3)


def test_plrc_outside_points_are_negatives_not_positives():
    f1, f2, region1, region2 = _two_views(6)
    f2 = f2.clone().requires_grad_(True)
    plrc_loss(f1, f2, region1, region2).backward()
    outside2 = region2 < 0
    assert f2.grad[outside2].abs().sum() > 0  # they sit in the denominators
    # Adding an outside point equal to an anchor's feature raises that anchor's loss (a
    # negative); if outside points matched each other (-1 == -1) it would be a positive.
    anchor = int(torch.nonzero(region1 == 3)[0])
    f2_more = torch.cat([f2.detach(), f1[anchor : anchor + 1]])
    region2_more = torch.cat([region2, torch.tensor([-1])])
    assert plrc_loss(f1, f2_more, region1, region2_more).item() > plrc_loss(f1, f2.detach(), region1, region2).item()
    assert plrc_loss(f1, f2_more, region1, region2_more).item() == pytest.approx(
        _plrc_oracle(f1, f2_more, region1, region2_more), rel=1e-10
    )


def test_plrc_regions_in_one_view_only_are_skipped():
    """Anchors without a positive neither add a term nor count in the mean: marking them outside changes nothing."""
    f1, f2, region1, region2 = _two_views(7)
    assert (region1 == 8).any() and (region2 == 99).any()  # 8 only in view 1, 99 only in view 2
    base = plrc_loss(f1, f2, region1, region2).item()
    outside = plrc_loss(f1, f2, torch.where(region1 == 8, -1, region1), torch.where(region2 == 99, -1, region2))
    assert outside.item() == pytest.approx(base, rel=1e-12)


@pytest.mark.parametrize(
    "region1,region2",
    [
        ([-1] * 5, [-1] * 4),  # all points outside
        ([1, 1, -1, 1, -1], [2, -1, 2, 2]),  # regions, none shared by the views
        ([], []),  # no points in either view
    ],
)
def test_plrc_without_any_anchor_is_zero_with_a_graph(region1, region2):
    n1, n2 = len(region1), len(region2)
    f1 = _unit(8, n1, 4).requires_grad_(True)
    f2 = _unit(9, n2, 4).requires_grad_(True)
    loss = plrc_loss(f1, f2, torch.tensor(region1, dtype=torch.long), torch.tensor(region2, dtype=torch.long))
    assert loss.item() == 0.0 and loss.requires_grad
    loss.backward()
    assert torch.isfinite(f1.grad).all() and torch.isfinite(f2.grad).all()


def test_plrc_single_region_is_finite_and_matches_oracle():
    f1, f2 = _unit(10, 6, 5).requires_grad_(True), _unit(11, 4, 5).requires_grad_(True)
    region1, region2 = torch.tensor([0, 0, -1, 0, -1, -1]), torch.tensor([0, -1, 0, -1])
    loss = plrc_loss(f1, f2, region1, region2)
    assert loss.item() == pytest.approx(_plrc_oracle(f1, f2, region1, region2), rel=1e-10)
    loss.backward()
    assert torch.isfinite(f1.grad).all() and f1.grad.abs().sum() > 0


@pytest.mark.parametrize("temperature", [1.0, 0.3, 0.1, 0.05])
def test_plrc_closed_form_on_collapsed_orthogonal_regions(temperature):
    """Two regions of 5 points each, every point exactly its region's (orthogonal) centre.

    Matched views: each anchor has 5 positives at similarity 1 and 5 negatives at 0, so
    l = -1/T + log(5 e^(1/T) + 5) = log 5 + log(1 + e^(-1/T)), falling with T towards log 5.
    Crossed views (view 2's regions swapped): positives at 0, negatives at 1, so
    l = log 5 + log(1 + e^(1/T)), rising as T falls.
    """
    centres = torch.eye(2, 4, dtype=torch.float64)
    region = torch.tensor([0] * 5 + [1] * 5)
    f = centres[region]
    matched = plrc_loss(f, f, region, region, temperature=temperature).item()
    assert matched == pytest.approx(math.log(5) + math.log1p(math.exp(-1 / temperature)), rel=1e-12)
    crossed = plrc_loss(f, centres[1 - region], region, region, temperature=temperature).item()
    assert crossed == pytest.approx(math.log(5) + math.log1p(math.exp(1 / temperature)), rel=1e-12)


def test_plrc_float32_and_integer_id_dtypes():
    f1, f2, region1, region2 = _two_views(13)
    want = _plrc_oracle(f1, f2, region1, region2)
    got = plrc_loss(f1.float(), f2.float(), region1.int(), region2.to(torch.int16))
    assert got.dtype == torch.float32
    assert got.item() == pytest.approx(want, rel=1e-5)


def test_plrc_rejects_bad_inputs():
    f1, f2, region1, region2 = _two_views(14)
    with pytest.raises(ValueError, match="feature dims differ"):
        plrc_loss(f1, f2[:, :3], region1, region2)
    with pytest.raises(ValueError, match="must be 2-D"):
        plrc_loss(f1[None], f2, region1, region2)
    with pytest.raises(ValueError, match=r"region2 must have shape \(19,\)"):
        plrc_loss(f1, f2, region1, region2[:-1])
    with pytest.raises(ValueError, match="integer region ids"):
        plrc_loss(f1, f2, region1.double(), region2)
    with pytest.raises(ValueError, match="found -2"):
        plrc_loss(f1, f2, region1, torch.where(region2 < 0, -2, region2))
    with pytest.raises(ValueError, match="temperature must be > 0"):
        plrc_loss(f1, f2, region1, region2, temperature=0.0)


# ---------------------------------------------------------------------------------------------
# RAPC and PRC


@pytest.mark.parametrize("seed,n,temperature", [(0, 9, 0.1), (1, 1, 0.1), (2, 17, 0.4), (3, 5, 1.0)])
def test_rapc_matches_loop_oracle(seed, n, temperature):
    f1, f2 = _unit(seed, n, 7), _unit(seed + 50, n, 7)
    got = rapc_loss(f1, f2, temperature=temperature)
    assert got.item() == pytest.approx(_rapc_oracle(f1, f2, temperature), rel=1e-10, abs=1e-12)


def test_rapc_is_symmetric_and_matched_by_row():
    f1, f2 = _unit(20, 8, 5), _unit(21, 8, 5)
    assert rapc_loss(f1, f2).item() == pytest.approx(rapc_loss(f2, f1).item(), rel=1e-12)
    one_way = _info_nce_direction(f1.tolist(), f2.tolist(), 0.1)
    assert rapc_loss(f1, f2).item() != pytest.approx(one_way, rel=1e-3)
    # Permuting both views together keeps the pairs: same loss. Permuting one breaks them.
    perm = torch.randperm(8, generator=torch.Generator().manual_seed(0))
    assert (perm != torch.arange(8)).any()
    assert rapc_loss(f1[perm], f2[perm]).item() == pytest.approx(rapc_loss(f1, f2).item(), rel=1e-12)
    assert rapc_loss(f1, f1).item() < rapc_loss(f1, f1[perm]).item()


def test_rapc_rejects_bad_inputs():
    f1, f2 = _unit(22, 6, 4), _unit(23, 6, 4)
    with pytest.raises(ValueError, match="same points in the same order"):
        rapc_loss(f1, f2[:-1])
    with pytest.raises(ValueError, match="N >= 1"):
        rapc_loss(f1[:0], f2[:0])
    with pytest.raises(ValueError, match="temperature must be > 0"):
        rapc_loss(f1, f2, temperature=-1.0)


def _matched_views(seed, n=30, dim=6):
    f1, f2 = _unit(seed, n, dim), _unit(seed + 1, n, dim)
    return f1, f2, _regions(seed + 2, n)


@pytest.mark.parametrize("alpha", [0.0, 0.1, 0.5, 0.9, 1.0])
def test_prc_combines_the_parts(alpha):
    f1, f2, region = _matched_views(30)
    f1.requires_grad_(True)
    loss, parts = prc_loss(f1, f2, region, alpha=alpha, plrc_temperature=0.2, rapc_temperature=0.07)
    plrc = _plrc_oracle(f1, f2, region, region, 0.2)
    rapc = _rapc_oracle(f1, f2, 0.07)
    assert parts["plrc"].item() == pytest.approx(plrc, rel=1e-10)
    assert parts["rapc"].item() == pytest.approx(rapc, rel=1e-10)
    assert loss.requires_grad and not parts["plrc"].requires_grad and not parts["rapc"].requires_grad
    assert loss.item() == pytest.approx(alpha * plrc + (1 - alpha) * rapc, rel=1e-10)


def test_prc_alpha_extremes_equal_the_parts_exactly():
    f1, f2, region = _matched_views(31)
    assert torch.equal(prc_loss(f1, f2, region, alpha=1.0)[0], plrc_loss(f1, f2, region, region))
    assert torch.equal(prc_loss(f1, f2, region, alpha=0.0)[0], rapc_loss(f1, f2))


def test_prc_with_all_points_outside_is_pure_rapc_scaled():
    f1, f2, _ = _matched_views(32)
    f1.requires_grad_(True)
    region = torch.full((30,), -1)
    loss, parts = prc_loss(f1, f2, region, alpha=0.5)
    assert parts["plrc"].item() == 0.0
    assert loss.item() == pytest.approx(0.5 * _rapc_oracle(f1, f2), rel=1e-10)
    loss.backward()
    assert torch.isfinite(f1.grad).all()


def test_prc_rejects_alpha_outside_unit_interval():
    f1, f2, region = _matched_views(33)
    for alpha in (-0.1, 1.5):
        with pytest.raises(ValueError, match=r"alpha must be in \[0, 1\]"):
            prc_loss(f1, f2, region, alpha=alpha)


def test_prc_falls_with_sgd():
    f1, f2, region = _matched_views(34, n=40, dim=8)
    raw1, raw2 = f1.clone().requires_grad_(True), f2.clone().requires_grad_(True)
    opt = torch.optim.SGD([raw1, raw2], lr=0.5, momentum=0.9)
    losses = []
    for _ in range(30):
        opt.zero_grad()
        loss, _ = prc_loss(F.normalize(raw1, dim=1), F.normalize(raw2, dim=1), region)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0], losses


# ---------------------------------------------------------------------------------------------
# RAD


def _rad_inputs(seed, n=40, dim=6):
    student, teacher = _unit(seed, n, dim), _unit(seed + 1, n, dim)
    region = _regions(seed + 2, n, ids=(5, 1, 17, 2, 9))
    return student, teacher, region


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("normalize_pooled", [True, False])
def test_rad_matches_loop_oracle(seed, normalize_pooled):
    student, teacher, region = _rad_inputs(seed)
    got = rad_loss(student, teacher, region, normalize_pooled=normalize_pooled)
    assert got.item() == pytest.approx(_rad_oracle(student, teacher, region, 0.1, normalize_pooled), rel=1e-10)


@pytest.mark.parametrize("temperature", [0.03, 0.5, 2.0])
def test_rad_temperature_matches_oracle(temperature):
    student, teacher, region = _rad_inputs(3)
    got = rad_loss(student, teacher, region, temperature=temperature)
    assert got.item() == pytest.approx(_rad_oracle(student, teacher, region, temperature), rel=1e-10)


def test_rad_gradient_reaches_the_student_only():
    student, teacher, region = _rad_inputs(4)
    student.requires_grad_(True)
    teacher.requires_grad_(True)
    rad_loss(student, teacher, region).backward()
    assert teacher.grad is None
    assert student.grad[region >= 0].abs().sum() > 0
    assert (student.grad[region < 0] == 0).all()  # points in no region take no part


def test_rad_weighs_regions_not_points():
    """Repeating the points of one region (same features) changes neither its mean nor the loss."""
    student, teacher, region = _rad_inputs(5)
    members = region == 17
    assert members.sum() >= 2
    student_more = torch.cat([student, student[members].repeat(10, 1)])
    teacher_more = torch.cat([teacher, teacher[members].repeat(10, 1)])
    region_more = torch.cat([region, region[members].repeat(10)])
    base = rad_loss(student, teacher, region).item()
    assert rad_loss(student_more, teacher_more, region_more).item() == pytest.approx(base, rel=1e-12)


def test_rad_ignores_outside_points_and_id_values():
    student, teacher, region = _rad_inputs(6)
    base = rad_loss(student, teacher, region).item()
    outside = region < 0
    student2, teacher2 = student.clone(), teacher.clone()
    student2[outside], teacher2[outside] = _unit(60, int(outside.sum()), 6), _unit(61, int(outside.sum()), 6)
    assert rad_loss(student2, teacher2, region).item() == pytest.approx(base, rel=1e-12)
    relabelled = torch.where(region >= 0, 1000 - 7 * region, region)  # other ids, other order
    assert rad_loss(student, teacher, relabelled).item() == pytest.approx(base, rel=1e-12)


def test_rad_pulls_the_student_to_its_own_region():
    student, teacher, region = _rad_inputs(7)
    aligned = rad_loss(teacher, teacher, region).item()  # student equals teacher
    shuffled = torch.where(region >= 0, (region + 1) % 20, region)
    crossed = rad_loss(student, teacher, region).item()
    assert aligned < crossed
    assert rad_loss(teacher, teacher, shuffled).item() == pytest.approx(aligned, rel=1e-12)


@pytest.mark.parametrize("region", [[-1, -1, -1, -1], [], [4, 4, -1, 4]])
def test_rad_no_or_single_region_is_zero_not_nan(region):
    n = len(region)
    student = _unit(8, n, 3).requires_grad_(True)
    teacher = _unit(9, n, 3)
    loss = rad_loss(student, teacher, torch.tensor(region, dtype=torch.long))
    assert loss.item() == 0.0 and loss.requires_grad
    loss.backward()
    assert torch.isfinite(student.grad).all()


def test_rad_falls_with_sgd():
    student, teacher, region = _rad_inputs(10, n=60, dim=8)
    raw = student.clone().requires_grad_(True)
    opt = torch.optim.SGD([raw], lr=0.5, momentum=0.9)
    losses = []
    for _ in range(30):
        opt.zero_grad()
        loss = rad_loss(F.normalize(raw, dim=1), teacher, region)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], losses


def test_rad_rejects_bad_inputs():
    student, teacher, region = _rad_inputs(11)
    with pytest.raises(ValueError, match="same points in the same order"):
        rad_loss(student, teacher[:-1], region)
    with pytest.raises(ValueError, match="feature dims differ"):
        rad_loss(student, teacher[:, :2], region)
    with pytest.raises(ValueError, match=r"region must have shape \(40,\)"):
        rad_loss(student, teacher, region[None])
    with pytest.raises(ValueError, match="integer region ids"):
        rad_loss(student, teacher, region > 0)
    with pytest.raises(ValueError, match="temperature must be > 0"):
        rad_loss(student, teacher, region, temperature=0)
