"""Superpixel-driven image-to-lidar contrastive loss (SLidR).

Sautier et al., "Image-to-Lidar Self-Supervised Distillation for Autonomous Driving Data",
CVPR 2022. Reference code: valeoai/SLidR, ``pretrain/lightning_trainer.py``
(``loss_superpixels_average``) and ``pretrain/criterion.py`` (``NCELoss``).

The paper's defining idea: "we use superpixels to pool 3D point features and 2D pixel
features in visually similar regions, and contrast these superpixel-level features": the
pooled point feature of a superpixel must match the pooled pixel feature of the same
superpixel and not those of every other superpixel in the batch.

Differences from the reference, on purpose:
- Pooling uses ``index_add_`` (memory O(P + N + S*D)) instead of sparse one-hot matrix
  products (same numbers; measured 9 ms vs 27 ms on an H100 for 8 scans).
- The reference keeps superpixels with ``k[:, 0] != 0`` (first channel of the pooled point
  feature non-zero); here superpixels are kept by count: at least one point AND at least
  one pixel. A superpixel with points but no pixels cannot occur when pairs come from
  pixels of the crop; if it does (a caller bug or a crop that dropped pixels) its q would be
  the zero vector, a meaningless target, so it is dropped rather than contrasted.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

# Guards the pooled means against division by zero, as in the reference (counts + 1e-6).
_COUNT_EPS = 1e-6


def superpixel_contrastive_loss(
    point_feats: torch.Tensor,
    point_superpixel: torch.Tensor,
    pixel_feats: torch.Tensor,
    pixel_superpixel: torch.Tensor,
    num_superpixels: int,
    temperature: float = 0.07,
) -> torch.Tensor:
    """One-directional InfoNCE between superpixel-pooled point and pixel features.

    k_s = mean of the paired point features of superpixel s (a voxel feature counts once
    per point paired with a pixel of s); q_s = mean of ALL pixel features of s; both are
    sums divided by (count + 1e-6) and are NOT re-normalised. Superpixels without points
    (or without pixels) are dropped. With the kept superpixels,
    ``logits = k q^T / temperature`` and the loss is the cross-entropy with the diagonal as
    target (points -> pixels only); every other kept superpixel of the batch is a negative.

    Args:
        point_feats: (P, D) float, one row per point-pixel pair (the student feature of the
            pair's voxel, repeated for each of its paired points).
        point_superpixel: (P,) int64, global superpixel id of each pair's pixel.
        pixel_feats: (N, D) float, the teacher features of all pixels of the crops.
        pixel_superpixel: (N,) int64, global superpixel id of each pixel.
        num_superpixels: S, the number of global ids; every id must be in [0, S).
        temperature: softmax temperature (0.07 in the reference).

    Returns:
        Scalar tensor: mean cross-entropy over the kept superpixels.

    Raises:
        ValueError: on shape mismatches, ids outside [0, num_superpixels), non-finite
            features, a non-positive temperature, or when no superpixel has both points and
            pixels (the loss is undefined; callers count and skip such batches).
    """
    # Einsum letters: s, t = kept superpixels (rows: point side, columns: pixel side),
    # d = feature channel.
    _validate(point_feats, point_superpixel, pixel_feats, pixel_superpixel, num_superpixels, temperature)
    dim = point_feats.shape[1]

    # Compact the ids to rows 0..U-1 of the U superpixels that have points, so memory is
    # O(S) integers + O(P + N + U * D) floats, never S x D or S x P (S may be large and
    # sparsely used). Pixels of superpixels without points go to a dump row U.
    has_points = torch.bincount(point_superpixel, minlength=num_superpixels) > 0
    num_rows = int(has_points.sum())
    row_of_id = torch.cumsum(has_points, 0) - 1
    row_of_id[~has_points] = num_rows
    point_row = row_of_id[point_superpixel]
    pixel_row = row_of_id[pixel_superpixel]

    # Sums of thousands of bf16/fp16 pixel features lose most of their bits: accumulate in
    # at least float32 (the loss is returned in that dtype too).
    acc = torch.promote_types(torch.promote_types(point_feats.dtype, pixel_feats.dtype), torch.float32)
    k_sum = point_feats.new_zeros(num_rows, dim, dtype=acc).index_add_(0, point_row, point_feats.to(acc))
    q_sum = pixel_feats.new_zeros(num_rows + 1, dim, dtype=acc).index_add_(0, pixel_row, pixel_feats.to(acc))
    q_sum = q_sum[:num_rows]
    k_count = torch.bincount(point_row, minlength=num_rows)
    q_count = torch.bincount(pixel_row, minlength=num_rows + 1)[:num_rows]

    kept = torch.nonzero(q_count > 0).squeeze(1)  # every row already has >= 1 point
    if kept.numel() == 0:
        raise ValueError(
            "no superpixel has both points and pixels: the loss is undefined for this batch; "
            "check that point_superpixel holds the superpixel ids of the paired pixels and "
            "skip (and count) batches without point-pixel pairs"
        )
    k = k_sum[kept] / (k_count[kept].to(k_sum.dtype)[:, None] + _COUNT_EPS)
    q = q_sum[kept] / (q_count[kept].to(q_sum.dtype)[:, None] + _COUNT_EPS)

    logits = torch.einsum("sd,td->st", k, q) / temperature
    target = torch.arange(kept.numel(), device=logits.device)
    return F.cross_entropy(logits, target)


def _validate(
    point_feats: torch.Tensor,
    point_superpixel: torch.Tensor,
    pixel_feats: torch.Tensor,
    pixel_superpixel: torch.Tensor,
    num_superpixels: int,
    temperature: float,
) -> None:
    if point_feats.ndim != 2 or pixel_feats.ndim != 2:
        raise ValueError(
            f"point_feats and pixel_feats must be 2-D (rows, D); got shapes "
            f"{tuple(point_feats.shape)} and {tuple(pixel_feats.shape)} "
            "(flatten images with x.permute(0, 2, 3, 1).reshape(-1, D))"
        )
    if point_feats.shape[1] != pixel_feats.shape[1]:
        raise ValueError(
            f"feature dims differ: point_feats has D={point_feats.shape[1]}, pixel_feats has "
            f"D={pixel_feats.shape[1]}; both heads must output the same number of channels"
        )
    for name, ids, feats in (
        ("point_superpixel", point_superpixel, point_feats),
        ("pixel_superpixel", pixel_superpixel, pixel_feats),
    ):
        if ids.ndim != 1 or ids.shape[0] != feats.shape[0]:
            raise ValueError(
                f"{name} must have shape ({feats.shape[0]},), one id per feature row; "
                f"got {tuple(ids.shape)}"
            )
        if ids.dtype != torch.int64:
            raise ValueError(f"{name} must be int64 (torch.long); got {ids.dtype}; use ids.long()")
        if ids.device != feats.device:
            raise ValueError(f"{name} is on {ids.device} but its features are on {feats.device}")
    if int(num_superpixels) < 1:
        raise ValueError(f"num_superpixels must be >= 1; got {num_superpixels}")
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0; got {temperature}")
    for name, ids in (("point_superpixel", point_superpixel), ("pixel_superpixel", pixel_superpixel)):
        if ids.numel() == 0:
            continue
        lo, hi = int(ids.min()), int(ids.max())
        if lo < 0 or hi >= num_superpixels:
            raise ValueError(
                f"{name} ids must be in [0, {num_superpixels}); found min {lo}, max {hi}; "
                "offset per-image ids by the per-image budget and pass "
                "num_superpixels = images * budget"
            )
    for name, feats in (("point_feats", point_feats), ("pixel_feats", pixel_feats)):
        if not torch.isfinite(feats).all():
            raise ValueError(
                f"{name} contains NaN or Inf; check the encoder output (learning rate, AMP "
                "overflow) before the loss"
            )
