"""Stage ``overlay``: a picture of lidar points projected into one camera, for the report.

Points are drawn coloured by depth over the image, with superpixel boundaries; when the
dataset has a rendered ground-truth mask (the synthetic generator writes one), the stage
also measures how often a projected point's lidarseg class equals the mask's class at its
pixel — a direct check of the calibration chain that a user can read in the report.
"""

from __future__ import annotations

import numpy as np
from matplotlib import colormaps
from PIL import Image, ImageDraw
from skimage.segmentation import find_boundaries

from modalities.camera.calibration import project_points
from modalities.camera.io import read_image
from modalities.camera.superpixels import load_superpixels
from modalities.fileio import atomic_open
from modalities.nuscenes_tables import NuScenesTables

from ..runner import StageContext, StageResult
from .config import MAX_SUPERPIXEL_BUDGET, OverlayConfig
from .superpixels_stage import superpixel_path


def render_overlay(
    image_rgb: np.ndarray,
    uv_pixels: np.ndarray,
    depth_m: np.ndarray,
    superpixel_ids: np.ndarray | None,
    radius_px: int,
    max_depth_m: float = 50.0,
) -> Image.Image:
    """Two panels stacked: the image with superpixel boundaries (white), and the image
    with the projected points coloured by depth (turbo colour map, near = blue)."""
    top = image_rgb.copy()
    if superpixel_ids is not None:
        top[find_boundaries(superpixel_ids, mode="inner")] = 255
    bottom = Image.fromarray(image_rgb)
    draw = ImageDraw.Draw(bottom)
    colours = (colormaps["turbo"](np.clip(depth_m / max_depth_m, 0, 1))[:, :3] * 255).astype(np.uint8)
    r = radius_px - 0.5
    for i in np.argsort(-depth_m):  # far first, near points drawn on top
        u, v = uv_pixels[i]
        draw.ellipse([u - r, v - r, u + r, v + r], fill=tuple(int(c) for c in colours[i]))
    H, W = image_rgb.shape[:2]
    canvas = Image.new("RGB", (W, 2 * H))
    canvas.paste(Image.fromarray(top), (0, 0))
    canvas.paste(bottom, (0, H))
    return canvas


def run_overlay(ctx: StageContext) -> StageResult:
    cfg: OverlayConfig = ctx.config  # type: ignore[assignment]
    tables = NuScenesTables(ctx.inputs["dataset"], ctx.dataset.version)
    samples = list(tables.samples())
    if cfg.sample_index >= len(samples):
        raise ValueError(f"stages.{ctx.name}.sample_index={cfg.sample_index} but the dataset has {len(samples)} samples")
    sample = samples[cfg.sample_index]
    cams = {c.channel: c for c in tables.cameras(sample)}
    if cfg.camera not in cams:
        raise ValueError(f"stages.{ctx.name}.camera={cfg.camera!r} not in this sample; cameras: {sorted(cams)}")
    cam = cams[cfg.camera]
    points = tables.load_points(sample)
    image = read_image(cam.image_path)
    uv, depth, valid = project_points(points[:, :3], cam.T_cam_from_lidar, cam.K, (cam.width, cam.height))
    sp = None
    if cfg.superpixels:
        sp_file = superpixel_path(ctx.inputs[cfg.superpixels], cam.channel, cam.image_path)
        # Drawn only: any id below the largest budget the config allows is acceptable here.
        sp = load_superpixels(sp_file, budget=MAX_SUPERPIXEL_BUDGET, expected_hw=(cam.height, cam.width))
    img = render_overlay(image, uv[valid], depth[valid], sp, cfg.point_radius_px)
    out = ctx.stage_dir / "overlay.png"
    with atomic_open(out, "wb") as f:
        img.save(f, format="PNG")

    metrics = {"sample_token": sample.token, "camera": cam.channel, "points": int(len(points)),
               "points_in_image": int(valid.sum())}
    # The synthetic generator's rendered ground truth (absent for real datasets).
    gt_mask_path = ctx.inputs["dataset"] / "groundtruth" / cam.channel / f"{cam.image_path.stem}_semantic.png"
    if gt_mask_path.exists() and sample.lidarseg_path is not None:
        labels = tables.load_lidarseg(sample, num_points=len(points))
        mask = np.asarray(Image.open(gt_mask_path))
        px = np.rint(uv[valid]).astype(int)
        agree = mask[px[:, 1], px[:, 0]] == labels[valid]
        metrics["label_agreement"] = float(agree.mean())
    md = (
        f"Lidar points of sample {cfg.sample_index} projected into {cam.channel} "
        f"({int(valid.sum())} of {len(points)} points; colour = depth, white = superpixel boundaries):\n\n"
        f"![overlay]({ctx.name}/overlay.png)\n"
    )
    return StageResult(metrics=metrics, report_md=md)
