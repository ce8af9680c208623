"""Superpixels for image-to-lidar contrast (SLidR), their id contract, cache and quality metrics.

SLidR (Sautier et al., "Image-to-Lidar Self-Supervised Distillation for Autonomous Driving
Data", CVPR 2022) pools pixel and point features per superpixel. The reference
(valeoai/SLidR ``superpixel_segmenter.py``) computes, once per camera image::

    slic(image, n_segments=150, compactness=6, sigma=3.0, start_label=0).astype(np.uint8)

and stores the result as an 8-bit PNG. The ``astype(np.uint8)`` would silently wrap an id of
256 onto id 0 and merge two segments; here every id is checked against a per-image
``budget`` instead (DESIGN.md 5.1: ids are offset per image by the budget, so an id at or
above it would collide with the next image's superpixels).

Arrays: ``image_rgb`` is (H, W, 3) uint8, rows = v (down), columns = u (right);
``ids`` is (H, W) int32, contiguous 0..K-1 with K <= budget.

Methods (``SUPERPIXEL_METHODS``):
- ``"slic"``: the reference call above on the full-resolution image.
- ``"slic_downsampled"``: the same SLIC on the image area-averaged by ``factor`` (default 2),
  ``sigma`` divided by ``factor``, labels upsampled nearest and relabelled contiguous.
  ``compactness`` needs no rescaling: scikit-image normalises the spatial distance by the
  grid step, which shrinks with the image. About 3.5-4.5x faster at 1600x900 with boundary recall
  within about 2 points of full SLIC (``benchmarks/superpixels.py`` measures both).
- ``"seeds"``: OpenCV's SEEDS (Van den Bergh et al., ECCV 2012) on the image area-averaged
  to about 400x225 px, labels upsampled nearest. About 70x faster than ``"slic"`` at
  1600x900 with higher boundary recall and lower undersegmentation error at a similar
  segment count (see ``seeds_superpixels`` and ``benchmarks/superpixels.py``). Needs
  ``opencv-contrib-python-headless`` (imported lazily, on first use).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image
from skimage.segmentation import slic

from modalities.errors import DataError, require_file

# SLIC with n_segments=150 gives at most ~150 segments (measured at 1600x900: 79-97 on the
# scenes of benchmarks/superpixels.py, 108 on a tiled photo; connectivity enforcement removes
# some, grid rounding can add a few above 150 on odd aspect ratios). 256 leaves headroom and
# equals the range of the reference's uint8 PNG cache, so caches stay 8-bit. Raise it only
# together with n_segments; the per-image offset in the loss grows with it.
DEFAULT_BUDGET = 256

# The SLidR reference parameters (valeoai/SLidR superpixel_segmenter.py). Do not change:
# the superpixel size sets the number of negatives and the pooling granularity of the loss.
SLIDR_SLIC_KWARGS = {"n_segments": 150, "compactness": 6, "sigma": 3.0, "start_label": 0}

# Largest id a 16-bit PNG cache can hold.
_MAX_CACHE_ID = np.iinfo(np.uint16).max


def _check_image(image_rgb: np.ndarray) -> np.ndarray:
    image_rgb = np.asarray(image_rgb)
    if image_rgb.ndim != 3 or image_rgb.shape[2] != 3 or image_rgb.dtype != np.uint8:
        raise ValueError(
            f"superpixels: expected an (H, W, 3) uint8 RGB image, got shape {image_rgb.shape} "
            f"dtype {image_rgb.dtype}; convert with PIL .convert('RGB') / np.asarray"
        )
    if image_rgb.shape[0] < 2 or image_rgb.shape[1] < 2:
        raise ValueError(f"superpixels: image too small: {image_rgb.shape}")
    return image_rgb


def relabel_contiguous(ids: np.ndarray) -> np.ndarray:
    """(H, W) int32 copy of non-negative integer ``ids`` mapped onto 0..K-1, order kept."""
    ids = np.asarray(ids)
    if ids.size == 0:
        return ids.astype(np.int32)
    if ids.min() < 0:
        raise ValueError(f"relabel_contiguous: negative id {int(ids.min())}")
    present = np.zeros(int(ids.max()) + 1, dtype=bool)
    present[ids] = True
    lut = (np.cumsum(present) - 1).astype(np.int32)
    return lut[ids]


def slic_superpixels(image_rgb: np.ndarray) -> np.ndarray:
    """(H, W) int32 contiguous SLIC ids of an (H, W, 3) uint8 image, SLidR parameters exactly."""
    image_rgb = _check_image(image_rgb)
    return relabel_contiguous(slic(image_rgb, **SLIDR_SLIC_KWARGS))


def _area_downsample(image_rgb: np.ndarray, factor: int) -> np.ndarray:
    """(ceil(H/f), ceil(W/f), 3) float32 block mean in [0, 1]; edge blocks padded by replication."""
    h, w, _ = image_rgb.shape
    hs, ws = -(-h // factor), -(-w // factor)
    img = image_rgb
    if (hs * factor, ws * factor) != (h, w):
        img = np.pad(img, ((0, hs * factor - h), (0, ws * factor - w), (0, 0)), mode="edge")
    blocks = img.reshape(hs, factor, ws, factor, 3).astype(np.float32)
    return blocks.mean(axis=(1, 3)) * np.float32(1.0 / 255.0)


def slic_downsampled_superpixels(image_rgb: np.ndarray, factor: int = 2) -> np.ndarray:
    """(H, W) int32 ids: SLidR SLIC on the image area-averaged by ``factor``, upsampled nearest.

    ``sigma`` is divided by ``factor`` so that the smoothing is the same in full-resolution
    pixels; ``n_segments`` and ``compactness`` are unchanged (see the module docstring).
    Boundaries are quantised to ``factor`` pixels.
    """
    image_rgb = _check_image(image_rgb)
    if not isinstance(factor, (int, np.integer)) or factor < 1:
        raise ValueError(f"slic_downsampled: factor must be an integer >= 1, got {factor!r}")
    if factor == 1:
        return slic_superpixels(image_rgb)
    h, w, _ = image_rgb.shape
    small = _area_downsample(image_rgb, int(factor))
    kwargs = dict(SLIDR_SLIC_KWARGS, sigma=SLIDR_SLIC_KWARGS["sigma"] / factor)
    small_ids = slic(small, channel_axis=-1, **kwargs)
    rows = np.arange(h) // factor
    cols = np.arange(w) // factor
    return relabel_contiguous(small_ids[rows[:, None], cols[None, :]])


# SEEDS parameters (OpenCV ximgproc), tuned at the 400x225 working resolution of a 1600x900
# image (benchmarks/superpixels.py): 84 segments there (SLIC: 79-97). histogram_bins=8 per
# Lab channel (512-bin colour histograms) is what lifts the quality above SLIC's; the
# OpenCV default of 5 gives ~0.07 lower boundary recall, 6 is faster with a thinner margin.
SEEDS_KWARGS = {"num_superpixels": 150, "num_levels": 4, "prior": 2, "histogram_bins": 8, "iterations": 4}
# Target pixel count of the image SEEDS runs on (400x225 = 1600x900 / 4).
SEEDS_WORKING_PIXELS = 400 * 225


def seeds_working_factor(height: int, width: int) -> int:
    """Integer downsampling factor that brings an (height, width) image nearest to
    ``SEEDS_WORKING_PIXELS`` pixels (1600x900 -> 4, 640x360 -> 2, 400x225 -> 1)."""
    return max(1, int(np.floor(np.sqrt(height * width / SEEDS_WORKING_PIXELS) + 0.5)))


def _seeds_top_grid(height: int, width: int, num_superpixels: int, num_levels: int) -> tuple[int, int] | None:
    """(rows, cols) of the top-level block grid OpenCV's SEEDS builds for an image of this size
    (one superpixel per top-level block), or None when OpenCV would have to drop levels.

    Mirrors ``SuperpixelSEEDSImpl::initialize`` (opencv_contrib modules/ximgproc/src/seeds.cpp).
    OpenCV itself does not check this: on images too small for the requested grid it loops
    forever or crashes (measured with 4.11: a 2x2 image hangs, 16x16 segfaults), so
    ``seeds_superpixels`` only calls it when this returns a grid of at least 3x3 blocks.
    """
    f32 = np.float32
    n_h = int(np.sqrt(f32(num_superpixels) * f32(height) / f32(width)))
    if n_h < 1:
        return None
    n_w = n_h * width // height
    if n_w < 1:
        return None
    scale = f32(1 << (num_levels - 1))
    seeds_wf = f32(width) / f32(n_w) / scale
    seeds_hf = f32(height) / f32(n_h) / scale
    if seeds_wf < 1 or seeds_hf < 1:
        return None
    rows = (height // int(np.ceil(seeds_hf))) >> (num_levels - 1)
    cols = (width // int(np.ceil(seeds_wf))) >> (num_levels - 1)
    return rows, cols


def _import_cv2_ximgproc():
    try:
        import cv2
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError(
            "superpixel method 'seeds' needs OpenCV with the contrib modules: "
            "pip install opencv-contrib-python-headless"
        ) from e
    if not hasattr(cv2, "ximgproc"):  # pragma: no cover - depends on the environment
        raise ImportError(
            "superpixel method 'seeds' needs cv2.ximgproc, which only the contrib build has "
            "(another OpenCV wheel, e.g. opencv-python-headless, shadows it): "
            "pip install opencv-contrib-python-headless"
        )
    return cv2


def seeds_superpixels(image_rgb: np.ndarray, histogram_bins: int | None = None) -> np.ndarray:
    """(H, W) int32 contiguous SEEDS ids of an (H, W, 3) uint8 image.

    SEEDS: M. Van den Bergh, X. Boix, G. Roig, B. de Capitani, L. Van Gool, "SEEDS: Superpixels
    Extracted via Energy-Driven Sampling", ECCV 2012 (and IJCV 2015). Hill-climbing from a
    regular grid that moves blocks, then pixels, between neighbouring superpixels to make
    each one's colour histogram purer; OpenCV's implementation,
    ``cv2.ximgproc.createSuperpixelSEEDS`` (https://docs.opencv.org/4.x/df/d6c/group__ximgproc__superpixel.html,
    https://docs.opencv.org/4.x/d5/daf/seeds_8hpp.html), with
    ``SEEDS_KWARGS`` (``histogram_bins`` overrides its value; the benchmark compares them).

    The image is area-averaged by ``seeds_working_factor`` (edge blocks padded by
    replication) to about 400x225 px, converted to Lab as the OpenCV docs recommend, segmented,
    and the labels are upsampled nearest, so boundaries are quantised to that factor (4 px at
    1600x900). Deterministic (no random state; the same image gives the same ids).
    Measured at 1600x900 (``benchmarks/superpixels.py``, textured scenes with exact ground
    truth, 2-core x86_64 shared with another job): ~70x faster than ``slic_superpixels``,
    84 segments (SLIC 79-97), boundary recall@2px ~0.76 vs SLIC ~0.73, undersegmentation
    error ~0.19 vs SLIC ~0.26. Images too small for the SEEDS grid (below about 128x72 px)
    fall back to ``slic_superpixels``, since OpenCV hangs or crashes on them.
    """
    image_rgb = _check_image(image_rgb)
    h, w, _ = image_rgb.shape
    f = seeds_working_factor(h, w)
    hs, ws = -(-h // f), -(-w // f)
    kw = dict(SEEDS_KWARGS)
    if histogram_bins is not None:
        kw["histogram_bins"] = int(histogram_bins)
    grid = _seeds_top_grid(hs, ws, kw["num_superpixels"], kw["num_levels"])
    if grid is None or min(grid) < 3:
        return slic_superpixels(image_rgb)
    cv2 = _import_cv2_ximgproc()
    img = np.ascontiguousarray(image_rgb)
    if f > 1:
        if (hs * f, ws * f) != (h, w):
            img = cv2.copyMakeBorder(img, 0, hs * f - h, 0, ws * f - w, cv2.BORDER_REPLICATE)
        img = cv2.resize(img, (ws, hs), interpolation=cv2.INTER_AREA)  # f x f block mean
    lab = cv2.cvtColor(img, cv2.COLOR_RGB2Lab)
    seeds = cv2.ximgproc.createSuperpixelSEEDS(
        ws, hs, 3, kw["num_superpixels"], kw["num_levels"], kw["prior"], kw["histogram_bins"], False
    )
    seeds.iterate(lab, kw["iterations"])
    small = relabel_contiguous(seeds.getLabels())
    if f == 1:
        return small
    # Every working pixel covers at least one output pixel, so the ids stay contiguous.
    return np.ascontiguousarray(np.repeat(np.repeat(small, f, axis=0), f, axis=1)[:h, :w])


# Names -> functions of an (H, W, 3) uint8 image returning (H, W) int32 ids.
SUPERPIXEL_METHODS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "slic": slic_superpixels,
    "slic_downsampled": slic_downsampled_superpixels,
    "seeds": seeds_superpixels,
}


def merge_smallest_segments(ids: np.ndarray, max_segments: int) -> np.ndarray:
    """(H, W) int32 contiguous ids with at most ``max_segments`` segments.

    Deterministic: repeatedly take the smallest segment (ties: lowest id) and merge it into
    the 4-neighbour segment with which it shares the longest boundary (ties: lowest id).
    """
    ids = relabel_contiguous(ids)
    k = int(ids.max()) + 1
    if max_segments < 1:
        raise ValueError(f"merge_smallest_segments: max_segments must be >= 1, got {max_segments}")
    if k <= max_segments:
        return ids
    sizes = np.bincount(ids.ravel(), minlength=k).astype(np.int64)
    # Shared boundary lengths between 4-neighbour pairs of different segments.
    a = np.concatenate([ids[:, :-1].ravel(), ids[:-1, :].ravel()]).astype(np.int64)
    b = np.concatenate([ids[:, 1:].ravel(), ids[1:, :].ravel()]).astype(np.int64)
    diff = a != b
    lo, hi = np.minimum(a[diff], b[diff]), np.maximum(a[diff], b[diff])
    pair_keys, pair_counts = np.unique(lo * k + hi, return_counts=True)
    adjacency: list[dict[int, int]] = [{} for _ in range(k)]
    for key, count in zip(pair_keys.tolist(), pair_counts.tolist()):
        i, j = divmod(key, k)
        adjacency[i][j] = count
        adjacency[j][i] = count
    parent = np.arange(k)
    alive = np.ones(k, dtype=bool)
    for _ in range(k - max_segments):
        alive_ids = np.flatnonzero(alive)
        s = int(alive_ids[np.argmin(sizes[alive_ids])])  # argmin takes the lowest id on ties
        if not adjacency[s]:
            raise ValueError(f"merge_smallest_segments: segment {s} has no neighbour")
        n = min(adjacency[s].items(), key=lambda kv: (-kv[1], kv[0]))[0]
        neighbours_of_s, adjacency[s] = adjacency[s], {}
        for m, count in neighbours_of_s.items():
            del adjacency[m][s]
            if m != n:
                adjacency[n][m] = adjacency[n].get(m, 0) + count
                adjacency[m][n] = adjacency[n][m]
        sizes[n] += sizes[s]
        alive[s] = False
        parent[s] = n
    # Resolve merge chains (each merged id points to a segment merged later or alive).
    root = parent.copy()
    while True:
        nxt = root[root]
        if np.array_equal(nxt, root):
            break
        root = nxt
    return relabel_contiguous(root[ids])


def check_superpixel_ids(
    ids: np.ndarray,
    budget: int,
    source: str,
    expected_hw: tuple[int, int] | None = None,
) -> np.ndarray:
    """Validate superpixel ids, returned as int32; raises DataError (a ValueError) naming ``source``.

    Requires a 2-D integer array (of shape ``expected_hw`` when given) with every id in
    [0, budget).
    """
    ids = np.asarray(ids)
    if ids.ndim != 2:
        raise DataError(source, f"superpixel ids must be a 2-D (H, W) array, got shape {ids.shape}")
    if ids.dtype.kind not in "iu":
        raise DataError(source, f"superpixel ids must be integers, got dtype {ids.dtype}")
    if expected_hw is not None and tuple(ids.shape) != tuple(expected_hw):
        raise DataError(
            source,
            f"superpixel map is {ids.shape[0]}x{ids.shape[1]} (HxW) but the image is "
            f"{expected_hw[0]}x{expected_hw[1]}; recompute the superpixels for this image"
        )
    if ids.size:
        lo, hi = int(ids.min()), int(ids.max())
        if lo < 0:
            raise DataError(source, f"negative superpixel id {lo}")
        if hi >= budget:
            raise DataError(
                source,
                f"superpixel id {hi} is outside the per-image budget [0, {budget}); "
                f"ids at or above the budget would collide with the next image's superpixels. "
                f"Recompute with a larger budget or merge_excess=True"
            )
    return ids.astype(np.int32, copy=False)


def compute_superpixels(
    image_rgb: np.ndarray,
    method: str = "slic",
    budget: int = DEFAULT_BUDGET,
    merge_excess: bool = False,
    source: str = "<image>",
) -> np.ndarray:
    """(H, W) int32 superpixel ids in [0, budget), contiguous 0..K-1.

    Args:
        image_rgb: (H, W, 3) uint8 RGB image.
        method: a key of ``SUPERPIXEL_METHODS``.
        budget: per-image id budget; more than ``budget`` segments is a ValueError unless
            ``merge_excess`` is set, which merges the smallest segments into their neighbours
            (``merge_smallest_segments``) until ``budget`` remain.
        source: name of the image (a file path) for error messages.
    """
    if method not in SUPERPIXEL_METHODS:
        raise ValueError(f"unknown superpixel method {method!r}; choose one of {sorted(SUPERPIXEL_METHODS)}")
    if not isinstance(budget, (int, np.integer)) or not 1 <= budget <= _MAX_CACHE_ID + 1:
        raise ValueError(f"superpixel budget must be an integer in [1, {_MAX_CACHE_ID + 1}], got {budget!r}")
    ids = SUPERPIXEL_METHODS[method](image_rgb)
    k = int(ids.max()) + 1
    if k > budget:
        if not merge_excess:
            raise DataError(
                source,
                f"{method} produced {k} superpixels, more than the budget {budget}; "
                f"raise the budget or pass merge_excess=True"
            )
        ids = merge_smallest_segments(ids, budget)
    return check_superpixel_ids(ids, budget, source, expected_hw=np.shape(image_rgb)[:2])


# ---------------------------------------------------------------------------------------------
# Cache: one PNG per image, 8-bit when every id fits (the reference layout), else 16-bit.


def save_superpixels(path: str | os.PathLike, ids: np.ndarray) -> Path:
    """Write (H, W) ids to ``path`` as a lossless PNG, atomically (temp file + os.replace)."""
    path = Path(path)
    ids = check_superpixel_ids(ids, _MAX_CACHE_ID + 1, str(path))
    dtype = np.uint8 if ids.size == 0 or int(ids.max()) <= np.iinfo(np.uint8).max else np.uint16
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            Image.fromarray(ids.astype(dtype)).save(f, format="PNG")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def load_superpixels(
    path: str | os.PathLike,
    budget: int = DEFAULT_BUDGET,
    expected_hw: tuple[int, int] | None = None,
) -> np.ndarray:
    """(H, W) int32 ids read from a PNG written by ``save_superpixels`` (or the SLidR reference).

    Raises DataError (a ValueError) naming the file when it is missing or not a single-channel
    integer map, when its size differs from ``expected_hw`` (the image's (H, W)), or when an
    id is >= ``budget``. A missing file raises MissingDataError (also a FileNotFoundError).
    """
    path = require_file(path, "superpixel map")
    with Image.open(path) as im:
        if im.mode not in ("L", "I;16", "I"):
            raise DataError(path, f"not a superpixel map (PNG mode {im.mode}, expected L or I;16)")
        ids = np.asarray(im)
    return check_superpixel_ids(ids, budget, str(path), expected_hw=expected_hw)


# ---------------------------------------------------------------------------------------------
# Quality metrics (pure functions of label maps).


def segment_count(ids: np.ndarray) -> int:
    """Number of distinct ids in a label map."""
    return int(np.unique(np.asarray(ids)).size)


def boundary_mask(ids: np.ndarray) -> np.ndarray:
    """(H, W) bool: pixels whose right or lower neighbour has a different id.

    One-sided, so a boundary is one pixel thick and a map shifted by s pixels has its
    boundary exactly s pixels away.
    """
    ids = np.asarray(ids)
    mask = np.zeros(ids.shape, dtype=bool)
    mask[:, :-1] |= ids[:, :-1] != ids[:, 1:]
    mask[:-1, :] |= ids[:-1, :] != ids[1:, :]
    return mask


def boundary_recall(pred_ids: np.ndarray, gt_ids: np.ndarray, tolerance_px: float = 2) -> float:
    """Fraction of ground-truth boundary pixels within ``tolerance_px`` (Euclidean) of a
    predicted boundary pixel (Martin et al. 2004; the superpixel benchmark of Stutz et al. 2018).

    Returns 1.0 when the ground truth has no boundary.
    """
    from scipy.ndimage import distance_transform_edt

    pred_ids, gt_ids = np.asarray(pred_ids), np.asarray(gt_ids)
    if pred_ids.shape != gt_ids.shape or pred_ids.ndim != 2:
        raise ValueError(f"boundary_recall: shapes differ or are not 2-D: {pred_ids.shape} vs {gt_ids.shape}")
    gt_boundary = boundary_mask(gt_ids)
    if not gt_boundary.any():
        return 1.0
    pred_boundary = boundary_mask(pred_ids)
    if not pred_boundary.any():
        return 0.0
    dist_to_pred = distance_transform_edt(~pred_boundary)
    return float(np.mean(dist_to_pred[gt_boundary] <= tolerance_px))


def undersegmentation_error(pred_ids: np.ndarray, gt_ids: np.ndarray) -> float:
    """Undersegmentation error of Neubert & Protzel (2012): the fraction of pixels that leak,

        UE = (1/N) sum_G sum_{S : S ∩ G != 0} min(|S ∩ G|, |S \\ G|)

    over ground-truth segments G and superpixels S. 0 is perfect.
    """
    pred_ids, gt_ids = np.asarray(pred_ids), np.asarray(gt_ids)
    if pred_ids.shape != gt_ids.shape:
        raise ValueError(f"undersegmentation_error: shapes differ: {pred_ids.shape} vs {gt_ids.shape}")
    s = relabel_contiguous(pred_ids).ravel().astype(np.int64)
    g = relabel_contiguous(gt_ids).ravel().astype(np.int64)
    n_g = int(g.max()) + 1
    keys, overlap = np.unique(s * n_g + g, return_counts=True)
    size_s = np.bincount(s)
    outside = size_s[keys // n_g] - overlap
    return float(np.minimum(overlap, outside).sum() / s.size)
