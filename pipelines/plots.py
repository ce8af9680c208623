"""Small report figures (matplotlib, headless), written atomically."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from modalities.fileio import atomic_open  # noqa: E402


def save_line_plot(path: Path, series: dict[str, tuple[list[float], list[float]]], xlabel: str, ylabel: str,
                   title: str) -> None:
    """One line per entry of ``series`` (label -> (xs, ys)) into a PNG."""
    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=100)
    for label, (xs, ys) in series.items():
        ax.plot(xs, ys, marker="o", markersize=3, label=label)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    if len(series) > 1:
        ax.legend()
    fig.tight_layout()
    with atomic_open(path, "wb") as f:
        fig.savefig(f, format="png")
    plt.close(fig)


def save_confusion_plot(path: Path, confusions: dict[str, "object"], class_names: list[str], title: str) -> None:
    """Row-normalised confusion matrices side by side (label -> (K, K) counts, rows = true class) into a PNG."""
    import numpy as np

    n = len(confusions)
    k = len(class_names)
    size = max(3.0, 0.28 * k + 1.5)
    fig, axes = plt.subplots(1, n, figsize=(size * n, size), dpi=100, squeeze=False)
    for ax, (label, conf) in zip(axes[0], confusions.items()):
        conf = np.asarray(conf, np.float64)
        rows = conf / np.maximum(conf.sum(1, keepdims=True), 1)
        ax.imshow(rows, vmin=0, vmax=1, cmap="Blues")
        acc = np.trace(conf) / max(conf.sum(), 1) * 100
        ax.set_title(f"{label}: {acc:.1f}%", fontsize=9)
        ax.set_xticks(range(k), class_names, rotation=90, fontsize=7)
        ax.set_yticks(range(k), class_names, fontsize=7)
        ax.set_xlabel("predicted", fontsize=8)
        ax.set_ylabel("true", fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    with atomic_open(path, "wb") as f:
        fig.savefig(f, format="png")
    plt.close(fig)


def save_bev_predictions_plot(path: Path, maps: dict[str, "object"], class_names, title: str) -> None:
    """BEV class grids side by side (label -> (ny, nx) class ids, row iy, column ix; forward up), one legend."""
    import matplotlib.patches as mpatches
    import numpy as np

    from modalities.bev_labels import BEV_PALETTE, bev_rgb

    n = len(maps)
    fig, axes = plt.subplots(1, n, figsize=(2.6 * n, 3.2), dpi=100, squeeze=False)
    for ax, (label, grid) in zip(axes[0], maps.items()):
        ax.imshow(bev_rgb(np.asarray(grid)), interpolation="nearest")
        ax.set_title(label, fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
    handles = [mpatches.Patch(color=BEV_PALETTE[i] / 255.0, label=c) for i, c in enumerate(class_names)]
    handles.append(mpatches.Patch(color="black", label="ignored / not predicted"))
    fig.legend(handles=handles, loc="lower center", ncol=min(len(handles), 7), fontsize=7, frameon=False)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    with atomic_open(path, "wb") as f:
        fig.savefig(f, format="png")
    plt.close(fig)


def save_regions_bev_plot(path: Path, points_xy, region_id, ground, boxes, title: str, extent_m: float = 32.0) -> None:
    """Bird's-eye view of one scan's regions: ground light grey, other points dark grey, each region
    in its own colour with its oriented box ((R, 7) x, y, z, length, width, height, yaw) outlined."""
    import numpy as np

    fig, ax = plt.subplots(figsize=(6, 6), dpi=110)
    other = (region_id < 0) & ~ground
    ax.scatter(points_xy[ground, 0], points_xy[ground, 1], s=0.5, c="0.82", linewidths=0)
    ax.scatter(points_xy[other, 0], points_xy[other, 1], s=1.0, c="0.35", linewidths=0)
    colours = plt.get_cmap("tab20")(np.arange(20))
    inside = region_id >= 0
    ax.scatter(points_xy[inside, 0], points_xy[inside, 1], s=4, c=colours[region_id[inside] % 20], linewidths=0, zorder=3)
    for k, (x, y, _, length, width, _, yaw) in enumerate(np.asarray(boxes, np.float64)):
        c, s = np.cos(yaw), np.sin(yaw)
        corners = np.array([[1, 1], [1, -1], [-1, -1], [-1, 1], [1, 1]]) * [length / 2, width / 2]
        xy = corners @ np.array([[c, s], [-s, c]]) + [x, y]
        ax.plot(xy[:, 0], xy[:, 1], lw=1.2, c=colours[k % 20], zorder=4)
    ax.plot(0, 0, marker="^", c="k", ms=6)
    ax.set_xlim(-extent_m, extent_m)
    ax.set_ylim(-extent_m, extent_m)
    ax.set_aspect("equal")
    ax.set_xlabel("x (m, lidar frame)")
    ax.set_ylabel("y (m, lidar frame)")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    with atomic_open(path, "wb") as f:
        fig.savefig(f, format="png")
    plt.close(fig)
