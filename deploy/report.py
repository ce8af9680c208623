"""``report.md`` of a bundle, rendered from its metadata (so the two never disagree)."""

from __future__ import annotations

from pathlib import Path

from modalities.fileio import atomic_write_text


def _fmt(v) -> str:
    return "-" if v is None else (f"{v:.2f}" if isinstance(v, float) else str(v))


def _fmt_g(v) -> str:
    return "-" if v is None else f"{v:.3g}"


def render_report(meta: dict) -> str:
    m, pre, met = meta["model"], meta["preprocessing"], meta["metrics"]
    par = met["parity_fp32"]
    lines = [
        f"# Deploy bundle: {m['name']}", "",
        f"- student: `{m['student']}` {m['student_kwargs']}, {m['num_classes']} classes",
        f"- source run: `{meta['source']['run_dir']}`, sidecar `{meta['source']['model_sidecar']}`",
        f"- distillation teacher: {meta['source'].get('distill_teacher')}",
        f"- input `{meta['inputs'][0]['name']}` {meta['inputs'][0]['shape']} float32 (channels {pre['channels']}); "
        f"output `{meta['outputs'][0]['name']}` {meta['outputs'][0]['shape']}",
        f"- sensor `{pre['sensor']['name']}` {pre['sensor_height']}x{pre['sensor_width']}, width padded by "
        f"{pre['width_padding']} to {pre['image_width']}; intensity / {pre['intensity_scale']:g}; "
        f"points without a pixel get label {pre['unknown_label']}",
        "", "## Parity (ONNX Runtime fp32 vs PyTorch, real held-out scans)", "",
        f"max abs error {par['max_abs_err']:.3g}, max relative error {par['max_rel_err']:.3g} "
        f"(max|ort-torch| / max|torch|, gate {par['tolerance_rel']:g}), per-element relative "
        f"{par['max_elem_rel_err']:.3g}, argmax agreement {par['argmax_agreement']:.4%} over {par['samples']} scans.",
        "", f"## TensorRT {meta['tensorrt']['checked_version']} op check", "",
    ]
    issues = meta["tensorrt"]["unsupported_nodes"]
    lines += [f"- {i}" for i in issues] if issues else ["All nodes are on the TensorRT 10.3 allow-list."]
    for prec, info in meta["precisions"].items():
        if prec != "fp32" and info.get("unsupported_nodes"):
            lines += [f"- {prec}: {i}" for i in info["unsupported_nodes"]]
    lines += ["", "## Accuracy per precision (per-point mIoU %, held-out scenes, ONNX Runtime)", "",
              "| precision | file | mIoU | drop vs fp32 | max rel err vs fp32 |", "|---|---|---|---|---|"]
    fp32 = meta["precisions"]["fp32"]["miou"]
    for prec, info in meta["precisions"].items():
        drop = None if prec == "fp32" or info.get("miou") is None else fp32 - info["miou"]
        lines.append(f"| {prec} | `{info['file']}` | {_fmt(info.get('miou'))} | {_fmt(drop)} | "
                     f"{_fmt_g(info.get('max_rel_err_vs_fp32'))} |")
    lines += ["", f"Pipeline's own (PyTorch) mIoU of this model: {_fmt(met.get('miou_heldout_pipeline'))} "
              f"over {met.get('miou_points')} points."]
    if "int8" in meta["precisions"]:
        q = meta["precisions"]["int8"]
        lines += ["", f"INT8: explicit QDQ ({q.get('method')}), calibrated on {q.get('calibration_scans')} labeled "
                  f"training scans (never the held-out ones); drop {_fmt(fp32 - q['miou'])} mIoU points "
                  f"(target <= 2)."]
    if "bench" in meta:
        lines += ["", f"Benchmark: see `{meta['bench']['markdown']}` ({meta['bench']['machine']})."]
    return "\n".join(lines) + "\n"


def write_report(folder: Path, meta: dict) -> None:
    atomic_write_text(Path(folder) / "report.md", render_report(meta))
