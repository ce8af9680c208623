"""CALICO camera-lidar BEV contrastive pre-training: PRC (PLRC + RAPC) and RAD.

Sun, Zheng, Zhang, Prakash, Mao and Xiao, "CALICO: Self-Supervised Camera-LiDAR Contrastive
Pre-training for BEV Perception", ICLR 2024, arXiv:2306.00349. No official code is public:
everything below is written from the paper's description and DESIGN 5.3.
PointContrast: Xie, Gu, Guo, Qi, Guibas and Litany, "PointContrast: Unsupervised
Pre-training for 3D Point Cloud Understanding", ECCV 2020 (``PointInfoNCE``).

The paper's defining idea: two stages. Point-region contrast (PRC) pre-trains the lidar BEV
backbone on two augmented views of a scan, balancing a region-level term (PLRC: points of the
same label-free region, found by ground removal + clustering, are positives across the views)
and a scene-level term (RAPC: each point must find itself in the other view, PointContrast
style), ``PRC = alpha * PLRC + (1 - alpha) * RAPC``. Region-aware distillation (RAD) then
trains the camera BEV backbone (the student) against the frozen PRC lidar backbone (the
teacher) "region by region": pooled region embeddings of the student must match the teacher's
embedding of the same region, contrasted against the teacher's other regions.

Point features are read from the BEV maps bilinearly (:func:`sample_bev`), in the grid
convention of ``modalities/lidar/pillars.py``::

        y
        ^   grid cell (ix, iy) covers
        |   [x_min + ix*sx, x_min + (ix+1)*sx) x [y_min + iy*sy, y_min + (iy+1)*sy)
        |
        +-------> x          BEV map (B, C, H=ny, W=nx): column = ix, row = iy

Not public, so OURS (each one an argument, DESIGN 5.3 asks for an ablation):
- Temperatures: 0.1 for every term (SupCon's value; PointContrast tunes its own, not checked here).
- PLRC is a supervised-contrastive loss (Khosla et al., NeurIPS 2020, the "L_out" form:
  mean over the positives of the log-probability) computed across views only, averaged over
  the two directions; RAPC is a symmetric InfoNCE (mean of the two directions; PointContrast
  computes one direction).
- RAD mean-pools each region and re-L2-normalises the pooled embeddings
  (``normalize_pooled``); it is one-directional (student region -> teacher regions).
- The projection heads (and their sizes) belong to the caller: these functions take the
  already L2-normalised point features.
All functions take one flat set of points; a batch of scans is flattened with the region ids
offset per scan (so the points and regions of the other scans become extra negatives).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F

# Region id of a point that lies in no region (ground, background, filtered clusters).
OUTSIDE = -1


class BevGrid(NamedTuple):
    """Metric geometry of a BEV map: the lidar-frame corner and the cell size, metres.

    Cell (ix, iy) covers [x_min_m + ix*cell_x_m, x_min_m + (ix+1)*cell_x_m) x
    [y_min_m + iy*cell_y_m, ...), as ``modalities.lidar.pillars`` (x_range[0], y_range[0],
    pillar_size_m). The number of cells comes from the map itself (W = nx, H = ny).
    """

    x_min_m: float
    y_min_m: float
    cell_x_m: float
    cell_y_m: float


def sample_bev(
    bev: torch.Tensor,
    xy_lidar_m: torch.Tensor,
    grid: BevGrid | Sequence[float],
) -> tuple[torch.Tensor, torch.Tensor]:
    """Bilinear BEV features at metric points; points outside the grid get zeros.

    The continuous cell coordinate of a point is ``u = (x - x_min) / sx`` (column) and
    ``v = (y - y_min) / sy`` (row): cell ix spans u in [ix, ix + 1) and its centre u = ix + 0.5
    returns ``bev[b, :, iy, ix]`` exactly (``F.grid_sample``, ``align_corners=False``, with
    normalised coordinates ``2 u / W - 1``). Between centres the four nearest cells are
    interpolated bilinearly. A point is valid when it lies in the grid, half-open as in the
    pillarization (0 <= u < W and 0 <= v < H, finite); in the outer half cell of the border
    the edge value is extended (``padding_mode="border"``), never blended with zero. Invalid
    points (outside, NaN or Inf) return zero features.

    Args:
        bev: (B, C, H, W) float BEV map, row = iy, column = ix.
        xy_lidar_m: (B, N, 2) float point coordinates (x, y) in the map's lidar frame, metres.
        grid: :class:`BevGrid` or (x_min_m, y_min_m, cell_x_m, cell_y_m).

    Returns:
        ``(features, valid)``: (B, N, C) features (dtype at least float32; gradient flows to
        ``bev``) and the (B, N) bool mask of points inside the grid.

    Raises:
        ValueError: on shapes other than the above, a grid that is not four numbers, or a
            cell size <= 0.
    """
    if bev.ndim != 4:
        raise ValueError(f"bev must be (B, C, H, W); got shape {tuple(bev.shape)}")
    if xy_lidar_m.ndim != 3 or xy_lidar_m.shape[2] != 2 or xy_lidar_m.shape[0] != bev.shape[0]:
        raise ValueError(
            f"xy_lidar_m must be (B={bev.shape[0]}, N, 2) metric (x, y) points, one set per map; "
            f"got shape {tuple(xy_lidar_m.shape)}"
        )
    if not (torch.is_floating_point(bev) and torch.is_floating_point(xy_lidar_m)):
        raise ValueError(f"bev and xy_lidar_m must be floating point; got {bev.dtype} and {xy_lidar_m.dtype}")
    if len(grid) != 4:
        raise ValueError(f"grid must be (x_min_m, y_min_m, cell_x_m, cell_y_m); got {tuple(grid)}")
    x_min, y_min, cell_x, cell_y = (float(value) for value in grid)
    if not (cell_x > 0 and cell_y > 0):
        raise ValueError(f"grid cell sizes must be > 0; got cell_x_m={cell_x}, cell_y_m={cell_y}")

    # grid_sample wants the same dtype for map and grid; bf16 coordinates would be off by
    # whole cells on a 512-wide map, so both are sampled in at least float32.
    acc = torch.promote_types(torch.promote_types(bev.dtype, xy_lidar_m.dtype), torch.float32)
    _, _, height, width = bev.shape
    xy = xy_lidar_m.to(acc)
    u = (xy[..., 0] - x_min) / cell_x  # continuous column coordinate, cell ix = [ix, ix + 1)
    v = (xy[..., 1] - y_min) / cell_y  # continuous row coordinate
    valid = (u >= 0) & (u < width) & (v >= 0) & (v < height)  # NaN compares False
    # Invalid points are sampled at the map centre (finite, result discarded) so that NaN
    # coordinates cannot reach grid_sample's backward.
    grid_x = torch.where(valid, 2.0 * u / width - 1.0, torch.zeros_like(u))
    grid_y = torch.where(valid, 2.0 * v / height - 1.0, torch.zeros_like(v))
    sample_grid = torch.stack([grid_x, grid_y], dim=-1)[:, :, None, :]  # (B, N, 1, 2): (x, y) order
    sampled = F.grid_sample(bev.to(acc), sample_grid, mode="bilinear", padding_mode="border", align_corners=False)
    features = sampled[..., 0].transpose(1, 2)  # (B, C, N, 1) -> (B, N, C)
    features = torch.where(valid[..., None], features, torch.zeros_like(features))
    return features, valid


def plrc_loss(
    f1: torch.Tensor,
    f2: torch.Tensor,
    region1: torch.Tensor,
    region2: torch.Tensor,
    temperature: float = 0.1,
) -> torch.Tensor:
    """Point-level region contrast (CALICO PLRC): same-region points of the other view are positives.

    For an anchor i of view 1 in region r >= 0, the positives P(i) are the view-2 points of
    region r and the denominator runs over ALL view-2 points (other regions and the outside
    points, region -1, as extra negatives; the positives included)::

        l_i = -1/|P(i)| sum_{p in P(i)} log( exp(f1_i . f2_p / T) / sum_j exp(f1_i . f2_j / T) )

    (SupCon "L_out", across views only: OURS, the paper's exact formula is not public).
    Anchors outside every region, or whose region has no point in the other view, are
    skipped; the view-1 -> view-2 term is the mean over the kept anchors, the view-2 -> view-1
    term is the same with the views swapped, and the loss is their mean (OURS). Without any
    kept anchor (no regions, all points outside, no region seen in both views) the loss is a
    zero that keeps the graph (``backward`` works, gradients are zero), never NaN.

    Args:
        f1: (N1, C) L2-normalised point features of view 1 (points inside and outside regions).
        f2: (N2, C) L2-normalised point features of view 2.
        region1: (N1,) integer region id of each view-1 point, -1 outside every region.
        region2: (N2,) integer region ids of view 2, the same ids for the same regions.
        temperature: softmax temperature T > 0 (0.1, OURS).

    Returns:
        Scalar tensor (dtype at least float32).

    Raises:
        ValueError: on shapes other than the above, non-integer ids or ids below -1, or a
            temperature <= 0.
    """
    _check_features("f1", f1, "f2", f2, same_rows=False)
    _check_regions("region1", region1, f1)
    _check_regions("region2", region2, f2)
    _check_temperature("temperature", temperature)
    acc = torch.promote_types(torch.promote_types(f1.dtype, f2.dtype), torch.float32)
    # Einsum letters: i = view-1 points, j = view-2 points, c = channel.
    logits = torch.einsum("ic,jc->ij", f1.to(acc), f2.to(acc)) / temperature
    positive = (region1[:, None] == region2[None, :]) & (region1[:, None] >= 0)  # (N1, N2)
    forward = _supcon_direction(logits, positive)
    backward = _supcon_direction(logits.T, positive.T)
    return 0.5 * (forward + backward)


def rapc_loss(f1: torch.Tensor, f2: torch.Tensor, temperature: float = 0.1) -> torch.Tensor:
    """Point contrast between two views (CALICO RAPC, PointContrast's PointInfoNCE), symmetric.

    Rows are matched: f1[i] and f2[i] are the same physical point seen in the two views; every
    other point of the other view is a negative::

        l_i = -log( exp(f1_i . f2_i / T) / sum_j exp(f1_i . f2_j / T) )

    averaged over i, and the loss is the mean of this view-1 -> view-2 term and the
    view-2 -> view-1 term (OURS; PointContrast computes one direction). The region awareness
    of the paper's RAPC lies in which points are drawn (inside and outside regions, as for
    PLRC); its further details are not public and not reproduced here.

    Args:
        f1: (N, C) L2-normalised point features of view 1.
        f2: (N, C) L2-normalised features of the same N points in view 2, same order.
        temperature: softmax temperature T > 0 (0.1, OURS).

    Returns:
        Scalar tensor (dtype at least float32).

    Raises:
        ValueError: on shapes other than the above, N = 0, or a temperature <= 0.
    """
    _check_features("f1", f1, "f2", f2, same_rows=True)
    if f1.shape[0] == 0:
        raise ValueError("rapc_loss needs at least one matched point (N >= 1); got N = 0")
    _check_temperature("temperature", temperature)
    acc = torch.promote_types(torch.promote_types(f1.dtype, f2.dtype), torch.float32)
    logits = torch.einsum("ic,jc->ij", f1.to(acc), f2.to(acc)) / temperature
    target = torch.arange(logits.shape[0], device=logits.device)
    return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target))


def prc_loss(
    f1: torch.Tensor,
    f2: torch.Tensor,
    region: torch.Tensor,
    alpha: float = 0.5,
    plrc_temperature: float = 0.1,
    rapc_temperature: float = 0.1,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """CALICO point-region contrast: ``alpha * PLRC + (1 - alpha) * RAPC``.

    The N points are drawn once per scan (1024 inside regions and 1024 outside in DESIGN 5.3)
    and seen in both augmented views, so row i of ``f1`` and of ``f2`` is the same point and
    ``region`` holds for both views: PLRC gets ``(f1, f2, region, region)`` (each anchor's
    positives are its region's points in the other view, itself included), RAPC ``(f1, f2)``.

    Args:
        f1: (N, C) L2-normalised point features of view 1 (e.g. :func:`sample_bev` of the
            view-1 BEV map at the view-1 coordinates of the points, then a head).
        f2: (N, C) the same points' features in view 2.
        region: (N,) integer region ids, -1 outside every region.
        alpha: weight of PLRC in [0, 1] (0.5; DESIGN 5.3: 0.9 with very few labels, 0.1 with
            many).
        plrc_temperature, rapc_temperature: temperatures of the two terms (0.1 each, OURS).

    Returns:
        ``(loss, parts)``: the scalar loss and ``{"plrc": ..., "rapc": ...}``, the two
        unweighted terms as detached scalar tensors (no host sync), so that
        ``loss = alpha * parts["plrc"] + (1 - alpha) * parts["rapc"]``.

    Raises:
        ValueError: as :func:`plrc_loss` and :func:`rapc_loss`, or alpha outside [0, 1].
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1] (the weight of PLRC); got {alpha}")
    plrc = plrc_loss(f1, f2, region, region, temperature=plrc_temperature)
    rapc = rapc_loss(f1, f2, temperature=rapc_temperature)
    loss = alpha * plrc + (1.0 - alpha) * rapc
    return loss, {"plrc": plrc.detach(), "rapc": rapc.detach()}


def rad_loss(
    student: torch.Tensor,
    teacher: torch.Tensor,
    region: torch.Tensor,
    temperature: float = 0.1,
    normalize_pooled: bool = True,
) -> torch.Tensor:
    """Region-aware distillation (CALICO RAD): student regions contrast against teacher regions.

    For each region r present (ids >= 0; -1 points are ignored): s_r = mean of the student
    features over the points of r, t_r = the same mean of the teacher features (no gradient),
    every point of a region weighted alike; with ``normalize_pooled`` both are re-L2-normalised
    (OURS: a mean of unit vectors is shorter than 1, and shorter the more the region's points
    disagree). Then, over the R regions present::

        loss = 1/R sum_r -log( exp(s_r . t_r / T) / sum_k exp(s_r . t_k / T) )

    so each region weighs 1/R whatever its number of points, and the negatives are the
    teacher's embeddings of the other regions (OURS: one direction, student -> teacher; the
    teacher is frozen). With a single region the loss is 0 (nothing to contrast against), with
    none it is a zero that keeps the student's graph; never NaN.

    Args:
        student: (N, C) L2-normalised camera-BEV point features (gradient flows here only).
        teacher: (N, C) L2-normalised frozen lidar-BEV features of the same points, same order
            (detached here whatever the caller passes).
        region: (N,) integer region ids (any non-negative values, need not be contiguous), -1
            for points in no region.
        temperature: softmax temperature T > 0 (0.1, OURS).
        normalize_pooled: re-L2-normalise the pooled region embeddings (True, OURS).

    Returns:
        Scalar tensor (dtype at least float32).

    Raises:
        ValueError: on shapes other than the above, non-integer ids or ids below -1, or a
            temperature <= 0.
    """
    _check_features("student", student, "teacher", teacher, same_rows=True)
    _check_regions("region", region, student)
    _check_temperature("temperature", temperature)
    acc = torch.promote_types(torch.promote_types(student.dtype, teacher.dtype), torch.float32)
    inside = region >= 0
    ids, row = torch.unique(region[inside], return_inverse=True)  # compact ids to rows 0..R-1
    num_regions = ids.numel()
    if num_regions == 0:
        return student.to(acc).sum() * 0.0
    dim = student.shape[1]
    count = torch.bincount(row, minlength=num_regions).to(acc)[:, None]
    student_sum = student.new_zeros(num_regions, dim, dtype=acc).index_add_(0, row, student[inside].to(acc))
    student_region = student_sum / count
    with torch.no_grad():
        teacher_sum = teacher.new_zeros(num_regions, dim, dtype=acc).index_add_(0, row, teacher.detach()[inside].to(acc))
        teacher_region = teacher_sum / count
    if normalize_pooled:
        student_region = F.normalize(student_region, dim=1)
        teacher_region = F.normalize(teacher_region, dim=1)
    # Einsum letters: r = student region, k = teacher region, c = channel.
    logits = torch.einsum("rc,kc->rk", student_region, teacher_region) / temperature
    target = torch.arange(num_regions, device=logits.device)
    return F.cross_entropy(logits, target)


def _supcon_direction(logits: torch.Tensor, positive: torch.Tensor) -> torch.Tensor:
    """Mean over anchors (rows) with >= 1 positive of -mean_{positives} log_softmax(row); 0 if none."""
    log_prob = logits - torch.logsumexp(logits, dim=1, keepdim=True)
    num_positive = positive.sum(dim=1)
    kept = num_positive > 0
    # where(), not a product: a masked -inf (underflowed exp) times 0 would give NaN.
    positive_sum = torch.where(positive, log_prob, torch.zeros_like(log_prob)).sum(dim=1)
    per_anchor = -positive_sum / num_positive.clamp(min=1).to(log_prob.dtype)
    # Sum / max(count, 1) instead of mean over kept rows: 0 (with the graph) when none is kept.
    return torch.where(kept, per_anchor, torch.zeros_like(per_anchor)).sum() / kept.sum().clamp(min=1)


def _check_features(name1: str, a: torch.Tensor, name2: str, b: torch.Tensor, same_rows: bool) -> None:
    if a.ndim != 2 or b.ndim != 2:
        raise ValueError(f"{name1} and {name2} must be 2-D (points, C); got shapes {tuple(a.shape)} and {tuple(b.shape)}")
    if a.shape[1] != b.shape[1]:
        raise ValueError(
            f"feature dims differ: {name1} has C={a.shape[1]}, {name2} has C={b.shape[1]}; both heads must "
            "output the same number of channels"
        )
    if same_rows and a.shape[0] != b.shape[0]:
        raise ValueError(
            f"{name1} and {name2} must hold the same points in the same order; got {a.shape[0]} and {b.shape[0]} rows"
        )
    if not (torch.is_floating_point(a) and torch.is_floating_point(b)):
        raise ValueError(f"{name1} and {name2} must be floating point; got {a.dtype} and {b.dtype}")


def _check_regions(name: str, region: torch.Tensor, feats: torch.Tensor) -> None:
    if region.ndim != 1 or region.shape[0] != feats.shape[0]:
        raise ValueError(f"{name} must have shape ({feats.shape[0]},), one region id per point; got {tuple(region.shape)}")
    if torch.is_floating_point(region) or torch.is_complex(region) or region.dtype == torch.bool:
        raise ValueError(f"{name} must hold integer region ids (-1 outside every region); got {region.dtype}")
    if region.device != feats.device:
        raise ValueError(f"{name} is on {region.device} but its features are on {feats.device}")
    if region.numel() and int(region.min()) < OUTSIDE:
        raise ValueError(f"{name} ids must be >= 0, or -1 for points outside every region; found {int(region.min())}")


def _check_temperature(name: str, value: float) -> None:
    if not value > 0:
        raise ValueError(f"{name} must be > 0; got {value}")
