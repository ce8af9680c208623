"""CALICO BEV students (DESIGN 5.3): per-frame latency at batch 1 on this CPU, with the pre-processing share.

    .venv/bin/python benchmarks/calico.py [--data ROOT [--version V]] [--frames N] [--max-pillars P]
                                          [--image-hw 128x224 176x320] [--iters N] [--camera-iters N]
                                          [--warmup N] [--quick] [--out DIR]

Each stage is timed on its own, p50/p90/p99 over the timed runs after untimed warm-up runs; every
stage runs once per round in a rotating order (``benchmarks._common.time_interleaved``), so that load
from other processes hits all alike. The stages of a frame-dependent input cycle over ``--frames``
key frames (each stage on its own, frame after frame). ONNX Runtime runs the fp32 graph (exported
to a temporary folder with ``torch.onnx.export(..., dynamo=False, opset_version=17)``, static
shapes, batch 1, :func:`deploy.export.export_onnx`) in :class:`deploy.runtime.OrtEngine` with the two
thread settings of ``benchmarks._common.ORT_INTRA_OP_THREADS``: ``1 thread`` (robot-like) and
``default threads`` (ONNX Runtime's choice, one per physical core); idle ORT threads do not spin.
PyTorch eager (one torch thread, ``inference_mode``) is timed for reference.

1. Lidar pillar BEV student (:class:`modalities.lidar.bev_net.PillarBevNet`, the sizes of
   ``pipelines.calico.config.PillarNetConfig``, the default grid of 128 x 128 cells of 0.5 m):

   - ``read .pcd.bin (read_points)``: :func:`pipelines.calico.data.read_points` of the key frame's scan;
   - ``pillar_inputs``: :func:`modalities.lidar.bev_net.pillar_inputs` of the points in memory, with
     ``max_pillars`` = ``--max-pillars`` (default 6000, the pipeline's ``PillarNetConfig``; ``PillarBevSpec``'s
     own default is 12000, and the network's pillar encoder runs on every buffer row, so its cost grows with it);
   - ``pre-processing`` = both, in one call;
   - the network: ORT on (pillar_points, pillar_mask, cell_index) with each thread setting, and torch eager;
   - ``end to end``: pre-processing + ORT in one call, per thread setting.

2. Camera BEV student (:class:`modalities.camera.bev_lift.CameraBevNet`, the sizes of
   ``pipelines.calico.config.CameraNetConfig``, 6 cameras, heights (-1.5, -0.5, 0.5) m, the same grid), one
   row per ``--image-hw`` (default 128x224, what ``configs/calico.yaml`` trains, and 176x320, the config's
   default):

   - ``images``: :func:`modalities.camera.bev_inputs.read_resized` of the 6 JPEGs (decode + bilinear resize) stacked
     to the network's (6, 3, H, W) float32 in [0, 1], as :func:`pipelines.calico.data.camera_inputs` does;
   - ``lift_geometry``: :func:`modalities.camera.bev_inputs.lift_geometry` of the 6 cameras' calibration;
   - ``pre-processing, geometry per frame``: :func:`~pipelines.calico.data.camera_inputs` (images + geometry,
     what the pipeline does: the lidar-to-camera transforms change slightly from frame to frame);
     ``pre-processing, geometry cached`` is the ``images`` stage (a robot with a fixed rig computes the
     geometry once);
   - the network: ORT on (images, sample_grid, valid) with each thread setting, and torch eager;
   - ``end to end``: pre-processing + ORT in one call, geometry per frame and cached, per thread setting.

The pre-processing share is p50(pre-processing) / p50(end to end) of the same setting. GMACs per frame
count every Conv2d and Linear of one PyTorch forward (forward hooks; ONNX shape inference loses the batch
dimension of these graphs, so ``deploy.bench.count_params_macs`` misses most of their convolutions). The weights are
random (``torch.manual_seed(0)``; the camera backbone with ``pretrained=False``): latency does not depend
on them. The ORT vs torch outputs are compared on the first frame.

Input data: without ``--data``, a small synthetic nuScenes-format set is generated in a temporary folder
with the repository's generator (:mod:`modalities.synthetic.nuscenes_writer`, as the ``synth`` stage
runs it: one scene, ``--frames`` key frames, no sweeps, HDL-32E lidar, six 640x360 JPEG cameras); with
``--data ROOT`` (e.g. ``runs/calico/synth/nuscenes``, version ``v1.0-synthetic``) the first ``--frames``
key frames of that set are used.

Prints a Markdown report (machine and load on its first line) and writes ``calico.json`` and
``calico.md`` into ``--out`` (default ``benchmarks/results/calico/``), then a short summary table.
Absolute times are context for the machine named; on a shared machine compare the stages within one
run. ``--quick`` (2 frames, 10 lidar and 3 camera timed rounds after 1 warm-up) is a smoke check.
"""

from __future__ import annotations

import argparse
import itertools
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._common import (ORT_INTRA_OP_THREADS, header_line, latency_rows, load_average,  # noqa: E402
                                report_header, time_interleaved, write_report)
from deploy.bench import count_params_macs  # noqa: E402
from deploy.export import export_onnx  # noqa: E402
from deploy.runtime import OrtEngine  # noqa: E402
from modalities.camera.bev_inputs import lift_geometry, read_resized  # noqa: E402
from modalities.camera.bev_lift import CameraBevNet  # noqa: E402
from modalities.lidar.bev_net import PillarBevNet, PillarBevSpec, pillar_inputs  # noqa: E402
from modalities.nuscenes_tables import NuScenesTables  # noqa: E402
from pipelines.calico.config import BevGridConfig, CameraNetConfig, PillarNetConfig  # noqa: E402
from pipelines.calico.data import camera_inputs, read_points  # noqa: E402

THREADS = {"1 thread": 1, "default threads": None}  # OrtEngine threads of each ORT_INTRA_OP_THREADS setting
assert set(THREADS) == set(ORT_INTRA_OP_THREADS)
ORT = {k: f"ORT fp32, {k}" for k in THREADS}
TORCH = "torch eager fp32, 1 thread"

L_READ = "read .pcd.bin (read_points)"
L_PILLARS = "pillar_inputs"
L_PRE = "pre-processing (read + pillar_inputs)"
L_E2E = {k: f"end to end (pre-processing + ORT {k})" for k in THREADS}

C_IMAGES = "images: read + resize 6 (read_resized) = pre-processing, geometry cached"
C_GEOM = "lift_geometry (6 cameras)"
C_PRE = "pre-processing, geometry per frame (camera_inputs)"
C_E2E = {(g, k): f"end to end, geometry {g} (pre-processing + ORT {k})"
         for g in ("per frame", "cached") for k in THREADS}


def count_parameters(model: torch.nn.Module) -> int:
    return int(sum(p.numel() for p in model.parameters()))


def conv_macs(model: torch.nn.Module, feeds: dict[str, np.ndarray]) -> int:
    """Multiply-accumulates of every Conv2d and Linear of one forward on ``feeds``, counted with forward hooks.

    (``deploy.bench.count_params_macs`` counts from the ONNX graph's inferred shapes; ONNX shape inference loses
    the batch dimension of these graphs, after the GatherElements of the pillar scatter and in the Pad arithmetic
    of the Lite0 convolutions, so it misses most of their convolutions.)
    """
    total = [0]

    def hook(m, _inp, out):
        if isinstance(m, torch.nn.Conv2d):
            total[0] += out.numel() * (m.in_channels // m.groups) * m.kernel_size[0] * m.kernel_size[1]
        else:
            total[0] += out.numel() * m.in_features

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, (torch.nn.Conv2d,
                                                                                        torch.nn.Linear))]
    try:
        with torch.inference_mode():
            model(*(torch.from_numpy(v) for v in feeds.values()))
    finally:
        for h in handles:
            h.remove()
    return int(total[0])


# ----------------------------------------------------------------------------- data


def synthetic_set(folder: Path, frames: int) -> tuple[Path, str, dict, float]:
    """(root, version, generator options, seconds) of a one-scene synthetic nuScenes-format set in ``folder``."""
    from modalities.synthetic.config import SynthConfig  # noqa: PLC0415
    from modalities.synthetic.nuscenes_writer import generate_scene, write_tables  # noqa: PLC0415

    t0 = time.perf_counter()
    cfg = SynthConfig(scenes=1, samples_per_scene=frames, sweeps_per_sample=0, lidar_sensor="hdl32e",
                      image_width=640, image_height=360)
    root = folder / "nuscenes"
    write_tables(root, cfg, [generate_scene(root, cfg, 0)])
    opts = {k: v for k, v in cfg.model_dump(mode="json").items()
            if k in ("seed", "scenes", "samples_per_scene", "sweeps_per_sample", "lidar_sensor", "image_width",
                     "image_height", "version")}
    return root, cfg.version, opts, time.perf_counter() - t0


def key_frames(root: Path, version: str, n: int, channels: list[str]) -> list[tuple[Path, list]]:
    """(lidar path, camera views in ``channels`` order) of the first ``n`` key frames that have every camera."""
    tables = NuScenesTables(root, version)
    out = []
    for s in tables.samples():
        by_channel = {v.channel: v for v in tables.cameras(s)}
        if all(c in by_channel for c in channels):
            out.append((s.lidar_path, [by_channel[c] for c in channels]))
        if len(out) == n:
            break
    if not out:
        raise SystemExit(f"{root / version}: no key frame with LIDAR_TOP and all of {channels}")
    return out


def cycler(items: list):
    """A function returning the items in turn, forever."""
    it = itertools.cycle(items)
    return lambda: next(it)


def export(model: torch.nn.Module, example: dict[str, np.ndarray], path: Path) -> Path:
    with warnings.catch_warnings():  # static shapes trace right; the tracer's warnings are noise here
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.simplefilter("ignore", UserWarning)
        export_onnx(model, example, ["bev"], path)
    return path


def engines(path: Path) -> dict[str, OrtEngine]:
    return {k: OrtEngine(path, threads=n, spin=False) for k, n in THREADS.items()}


def batched(feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {k: v[None] for k, v in feeds.items()}


def torch_fn(model: torch.nn.Module, feeds_of):
    def run():
        f = feeds_of()
        with torch.inference_mode():
            return model(*(torch.from_numpy(v) for v in f.values()))
    return run


def shares(lat: dict, pairs: dict[str, tuple[str, str]]) -> dict[str, float]:
    """p50(pre-processing) / p50(end to end) of each named (pre-processing stage, end-to-end stage)."""
    return {k: lat[pre]["p50"] / lat[e2e]["p50"] for k, (pre, e2e) in pairs.items()}


# ----------------------------------------------------------------------------- 1: lidar


def time_lidar(frames: list, max_pillars: int, tmp: Path, iters: int, warmup: int) -> dict:
    cfg, grid = PillarNetConfig(max_pillars=max_pillars), BevGridConfig()
    spec = PillarBevSpec(x_range_m=grid.x_range_m, y_range_m=grid.y_range_m, cell_size_m=grid.cell_size_m,
                         z_range_m=cfg.z_range_m, max_points_per_pillar=cfg.max_points_per_pillar,
                         max_pillars=cfg.max_pillars)
    kwargs = {"ny": spec.ny, "nx": spec.nx, "pillar_channels": cfg.pillar_channels, "widths": list(cfg.widths),
              "out_channels": cfg.out_channels}
    torch.manual_seed(0)
    model = PillarBevNet(**kwargs).eval()
    paths = [p for p, _ in frames]
    points = [read_points(p) for p in paths]
    results = [pillar_inputs(xyz, inten, spec) for xyz, inten in points]
    feeds = [batched(f) for f, _ in results]
    onnx_path = export(model, feeds[0], tmp / "pillar_bev.onnx")
    eng = engines(onnx_path)
    with torch.inference_mode():
        ref = model(*(torch.from_numpy(v) for v in feeds[0].values())).numpy()
    diff = float(np.abs(eng["1 thread"].run(feeds[0])["bev"] - ref).max())

    next_path, next_points, next_feeds = cycler(paths), cycler(points), cycler(feeds)

    def pre(path: Path):
        return batched(pillar_inputs(*read_points(path), spec)[0])

    def net(e):
        return lambda: e.run(next_feeds())

    def e2e(e):
        return lambda: e.run(pre(next_path()))

    fns = {L_READ: lambda: read_points(next_path()),
           L_PILLARS: lambda: pillar_inputs(*next_points(), spec),
           L_PRE: lambda: pre(next_path()),
           **{ORT[k]: net(e) for k, e in eng.items()},
           TORCH: torch_fn(model, next_feeds),
           **{L_E2E[k]: e2e(e) for k, e in eng.items()}}
    lat = time_interleaved(fns, iters, warmup)
    return {
        "student": "pillar_bev",
        "student_kwargs": kwargs,
        "input_spec": spec.to_dict(),
        "input_shapes": {k: list(v.shape) for k, v in feeds[0].items()},
        "frames": [{"lidar": p.name, "points": int(len(xyz)), "num_pillars": int(st["num_pillars"]),
                    "pillars_dropped": int(st["pillars_dropped"]), "points_dropped": int(st["points_dropped"]),
                    "points_out_of_range": int(st["points_out_of_range"])}
                   for p, (xyz, _), (_, st) in zip(paths, points, results, strict=True)],
        "params": count_parameters(model),
        "macs": conv_macs(model, feeds[0]),
        "onnx": {**count_params_macs(onnx_path), "note": "macs: from ONNX shape inference, which loses the batch "
                 "dimension in these graphs (see macs)"},
        "latency_ms": lat,
        "summary": [summary_row("lidar pillar BEV", f"max_pillars {max_pillars}", k, lat, L_PRE, L_E2E[k])
                    for k in THREADS],
        "preprocessing_share_of_p50": shares(lat, {k: (L_PRE, L_E2E[k]) for k in THREADS}),
        "checks": {"bev_max_abs_diff_ort_vs_torch": diff, "bev_max_abs_torch": float(np.abs(ref).max())},
    }


# ----------------------------------------------------------------------------- 2: camera


def time_camera(frames: list, image_hw: tuple[int, int], tmp: Path, iters: int, warmup: int) -> dict:
    cfg, grid = CameraNetConfig(image_hw=image_hw, pretrained=False), BevGridConfig().spec()
    heights = list(cfg.heights_m)
    kwargs = {"ny": grid.ny, "nx": grid.nx, "num_cameras": len(cfg.cameras), "num_heights": len(heights),
              "pretrained": False, "lift_channels": cfg.lift_channels, "widths": list(cfg.widths),
              "out_channels": cfg.out_channels}
    torch.manual_seed(0)
    model = CameraBevNet(**kwargs).eval()
    views = [v for _, v in frames]
    cams = [[(c.K, c.T_cam_from_lidar, c.width, c.height) for c in vs] for vs in views]
    feeds = [batched(camera_inputs(vs, grid, image_hw, heights)) for vs in views]
    geometry = [{"sample_grid": f["sample_grid"], "valid": f["valid"]} for f in feeds]  # the cached geometry
    onnx_path = export(model, feeds[0], tmp / f"camera_bev_{image_hw[0]}x{image_hw[1]}.onnx")
    eng = engines(onnx_path)
    with torch.inference_mode():
        ref = model(*(torch.from_numpy(v) for v in feeds[0].values())).numpy()
    diff = float(np.abs(eng["1 thread"].run(feeds[0])["bev"] - ref).max())

    def images(vs) -> np.ndarray:  # camera_inputs' image half
        x = np.stack([read_resized(v.image_path, image_hw)[0] for v in vs]).astype(np.float32) / 255.0
        return np.ascontiguousarray(x.transpose(0, 3, 1, 2))

    next_views, next_cams, next_feeds = cycler(views), cycler(cams), cycler(feeds)
    next_cached = cycler(list(zip(views, geometry, strict=True)))

    def net(e):
        return lambda: e.run(next_feeds())

    def e2e_per_frame(e):
        return lambda: e.run(batched(camera_inputs(next_views(), grid, image_hw, heights)))

    def e2e_cached(e):
        def run():
            vs, geo = next_cached()
            return e.run({"images": images(vs)[None], **geo})
        return run

    fns = {C_IMAGES: lambda: images(next_views()),
           C_GEOM: lambda: lift_geometry(next_cams(), grid, image_hw, heights),
           C_PRE: lambda: camera_inputs(next_views(), grid, image_hw, heights),
           **{ORT[k]: net(e) for k, e in eng.items()},
           TORCH: torch_fn(model, next_feeds),
           **{C_E2E["per frame", k]: e2e_per_frame(e) for k, e in eng.items()},
           **{C_E2E["cached", k]: e2e_cached(e) for k, e in eng.items()}}
    lat = time_interleaved(fns, iters, warmup)
    hw = f"{image_hw[0]}x{image_hw[1]}"
    pairs = {f"geometry {g}, {k}": (C_PRE if g == "per frame" else C_IMAGES, C_E2E[g, k])
             for g in ("per frame", "cached") for k in THREADS}
    v0 = views[0][0]
    return {
        "student": "camera_bev",
        "image_hw": list(image_hw),
        "student_kwargs": kwargs,
        "input_spec": {"cameras": list(cfg.cameras), "image_hw": list(image_hw), "heights_m": heights,
                       "grid": grid.to_dict()},
        "source_images": {"width": int(v0.width), "height": int(v0.height), "format": v0.image_path.suffix},
        "input_shapes": {k: list(v.shape) for k, v in feeds[0].items()},
        "params": count_parameters(model),
        "macs": conv_macs(model, feeds[0]),
        "onnx": {**count_params_macs(onnx_path), "note": "macs: from ONNX shape inference, which loses the batch "
                 "dimension in these graphs (see macs)"},
        "latency_ms": lat,
        "summary": [summary_row(f"camera BEV {hw}", f"geometry {g}", k, lat,
                                C_PRE if g == "per frame" else C_IMAGES, C_E2E[g, k])
                    for g in ("per frame", "cached") for k in THREADS],
        "preprocessing_share_of_p50": shares(lat, pairs),
        "checks": {"bev_max_abs_diff_ort_vs_torch": diff, "bev_max_abs_torch": float(np.abs(ref).max())},
    }


# ----------------------------------------------------------------------------- report


def summary_row(student: str, setting: str, threads: str, lat: dict, pre: str, e2e: str) -> dict:
    net = lat[ORT[threads]]
    return {"student": student, "setting": setting, "ort": threads,
            "pre_p50": lat[pre]["p50"], "pre_p90": lat[pre]["p90"], "net_p50": net["p50"], "net_p90": net["p90"],
            "e2e_p50": lat[e2e]["p50"], "e2e_p90": lat[e2e]["p90"],
            "pre_share_p50": lat[pre]["p50"] / lat[e2e]["p50"]}


def summary_table(rows: list[dict]) -> list[str]:
    lines = ["| student | setting | ORT | pre-proc p50 / p90 | network p50 / p90 | end to end p50 / p90 | "
             "pre-proc share (p50) |", "|---|---|---|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['student']} | {r['setting']} | {r['ort']} | {r['pre_p50']:.1f} / {r['pre_p90']:.1f} | "
                     f"{r['net_p50']:.1f} / {r['net_p90']:.1f} | {r['e2e_p50']:.1f} / {r['e2e_p90']:.1f} | "
                     f"{100 * r['pre_share_p50']:.0f}% |")
    return lines


def markdown(report: dict) -> str:
    lines = header_line(report)
    d, li = report["data"], report["lidar"]
    src = (f"the synthetic nuScenes-format set generated for this run ({d['generator']['image_width']}x"
           f"{d['generator']['image_height']} JPEGs, {d['generator']['lidar_sensor']}, {d['generate_s']:.0f} s)"
           if d["generated"] else f"{d['root']} ({d['version']})")
    lines += [f"CALICO BEV students, batch 1, CPU, random weights (latency does not depend on them); "
              f"{d['frames']} key frame(s) of {src}, cycled; stages interleaved, ms. ORT threads: "
              f"{', '.join(f'{k} = {v}' for k, v in ORT_INTRA_OP_THREADS.items())}; torch eager on 1 thread; "
              "GMACs per frame: Conv2d + Linear of one PyTorch forward.", ""]
    fr = li["frames"]
    lines += [f"Lidar pillar BEV student, grid {li['student_kwargs']['ny']}x{li['student_kwargs']['nx']}, "
              f"max_pillars {li['input_spec']['max_pillars']}, {li['input_spec']['max_points_per_pillar']} points "
              f"per pillar; scans of {min(f['points'] for f in fr):,}-{max(f['points'] for f in fr):,} points, "
              f"{min(f['num_pillars'] for f in fr):,}-{max(f['num_pillars'] for f in fr):,} pillars "
              f"({sum(f['pillars_dropped'] for f in fr)} dropped); {report['iters']['lidar']} timed rounds after "
              f"{report['iters']['warmup']} warm-up:", "",
              "| student | params | GMACs | stage | p50 | p90 | p99 |", "|---|---:|---:|---|---:|---:|---:|"]
    lines += latency_rows(["pillar_bev", f"{li['params'] / 1e6:.2f}M", f"{li['macs'] / 1e9:.2f}"],
                          li["latency_ms"])
    lines.append("")
    cams = report["camera"]
    if cams:
        c0 = cams[0]
        lines += [f"Camera BEV student, {len(c0['input_spec']['cameras'])} cameras "
                  f"({c0['source_images']['width']}x{c0['source_images']['height']} "
                  f"{c0['source_images']['format']} files), heights {c0['input_spec']['heights_m']} m, same grid; "
                  f"{report['iters']['camera']} timed rounds after {report['iters']['warmup']} warm-up:", "",
                  "| image_hw | params | GMACs | stage | p50 | p90 | p99 |", "|---|---:|---:|---|---:|---:|---:|"]
        for c in cams:
            lines += latency_rows([f"{c['image_hw'][0]}x{c['image_hw'][1]}", f"{c['params'] / 1e6:.2f}M",
                                   f"{c['macs'] / 1e9:.2f}"], c["latency_ms"])
        lines.append("")
    for m in [li, *cams]:
        name = m["student"] + (f" {m['image_hw'][0]}x{m['image_hw'][1]}" if "image_hw" in m else "")
        lat = m["latency_ms"]
        one, dflt = lat[ORT["1 thread"]]["p50"], lat[ORT["default threads"]]["p50"]
        lines.append(f"- {name}: torch eager / ORT 1 thread (p50) {lat[TORCH]['p50'] / one:.2f}x, "
                     f"ORT default / 1 thread {dflt / one:.2f}x; "
                     f"ORT vs torch output max |diff| {m['checks']['bev_max_abs_diff_ort_vs_torch']:.1e} "
                     f"(max |output| {m['checks']['bev_max_abs_torch']:.1e})")
    lines += ["", "Summary (ms; pre-processing share = p50 pre-processing / p50 end to end):", ""]
    lines += summary_table(report["summary"])
    return "\n".join(lines) + "\n"


def parse_hw(s: str) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in s.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected HxW such as 128x224, got {s!r}") from None
    if h < 16 or w < 16 or h % 16 or w % 16:
        raise argparse.ArgumentTypeError(f"H and W must be positive multiples of 16, got {s!r}")
    return h, w


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, default=None,
                   help="a nuScenes-format root (e.g. runs/calico/synth/nuscenes); default: generate a small one")
    p.add_argument("--version", default="v1.0-synthetic", help="table folder of --data")
    p.add_argument("--frames", type=int, default=4, help="key frames to cycle over (generated or the first of --data)")
    p.add_argument("--max-pillars", type=int, default=PillarNetConfig().max_pillars,
                   help="pillar buffer of the lidar student (default: the pipeline's PillarNetConfig; "
                        f"PillarBevSpec's own default is {PillarBevSpec().max_pillars})")
    p.add_argument("--image-hw", type=parse_hw, nargs="*", default=[(128, 224), (176, 320)],
                   help="camera student input sizes HxW, one row each (none: skip the camera student)")
    p.add_argument("--iters", type=int, default=100, help="timed rounds of the lidar stages")
    p.add_argument("--camera-iters", type=int, default=20, help="timed rounds of the camera stages (per size)")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--quick", action="store_true",
                   help="smoke check: 2 frames, 10 lidar and 3 camera rounds, 1 warm-up")
    p.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results" / "calico")
    args = p.parse_args(argv)
    if args.quick:
        args.frames, args.iters, args.camera_iters, args.warmup = 2, 10, 3, 1
    if args.frames < 1 or args.iters < 1 or args.camera_iters < 1 or args.warmup < 0 or args.max_pillars < 1:
        p.error("--frames, --iters, --camera-iters, --max-pillars must be >= 1, --warmup >= 0")

    import onnxruntime  # noqa: PLC0415

    t_start = time.perf_counter()
    load_start = load_average()
    default_threads = torch.get_num_threads()
    channels = list(CameraNetConfig().cameras)
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        data = {"generated": args.data is None, "frames": None}
        if args.data is None:
            root, version, opts, gen_s = synthetic_set(tmp, args.frames)
            data.update(root=None, version=version, generator=opts, generate_s=gen_s)
            print(f"generated a {args.frames}-frame synthetic set in {gen_s:.0f} s", file=sys.stderr)
        else:
            root, version = args.data, args.version
            data.update(root=str(root), version=version)
        frames = key_frames(root, version, args.frames, channels)
        data["frames"] = len(frames)
        torch.set_num_threads(1)
        try:
            lidar = time_lidar(frames, args.max_pillars, tmp, args.iters, args.warmup)
            print(f"timed the lidar student ({time.perf_counter() - t_start:.0f} s)", file=sys.stderr)
            camera = []
            for hw in dict.fromkeys(args.image_hw):
                camera.append(time_camera(frames, hw, tmp, args.camera_iters, args.warmup))
                print(f"timed the camera student at {hw[0]}x{hw[1]} ({time.perf_counter() - t_start:.0f} s)",
                      file=sys.stderr)
        finally:
            torch.set_num_threads(default_threads)

    report = {
        **report_header("calico", load_start, onnxruntime.__version__),
        "quick": args.quick,
        "wall_s": None,
        "weights": "random (torch.manual_seed(0); camera backbone pretrained=False)",
        "data": data,
        "iters": {"lidar": args.iters, "camera": args.camera_iters, "warmup": args.warmup},
        "ort_intra_op_threads": ORT_INTRA_OP_THREADS,
        "torch_threads": 1,
        "lidar": lidar,
        "camera": camera,
        "summary": lidar["summary"] + [r for c in camera for r in c["summary"]],
    }
    report["wall_s"] = time.perf_counter() - t_start
    write_report(args.out, "calico", report, markdown(report))
    print("\n" + "\n".join(summary_table(report["summary"])))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
