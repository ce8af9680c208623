"""``report.md`` of a bundle, rendered from its metadata (so the two never disagree)."""

from __future__ import annotations

from pathlib import Path

from modalities.fileio import atomic_write_text


def _describe_input(task: dict) -> str:
    """The task adapter module's one-line description of the input contract."""
    from .tasks import task_module  # noqa: PLC0415

    return task_module(task["kind"]).describe_input(task)


def _fmt(v) -> str:
    return "-" if v is None else (f"{v:.2f}" if isinstance(v, float) else str(v))


def _fmt_g(v) -> str:
    return "-" if v is None else f"{v:.3g}"


def render_report(meta: dict) -> str:
    m, task, met = meta["model"], meta["task"], meta["metrics"]
    par = met["parity_fp32"]
    held = met["heldout"]
    metric = held["metric"]
    io = "; ".join(f"input `{t['name']}` {t['shape']} {t['dtype']}" for t in meta["inputs"])
    io += "; " + "; ".join(f"output `{t['name']}` {t['shape']} {t['dtype']}" for t in meta["outputs"])
    lines = [
        f"# Deploy bundle: {m['name']}", "",
        f"- task `{task['kind']}`; student `{m['student']}` {m['student_kwargs']}, {m['num_classes']} classes",
        f"- {io}",
        f"- {_describe_input(task)}",
        f"- data in the bundle: {len(meta['data']['calibration'])} calibration and {len(meta['data']['heldout'])} "
        "held-out samples (quantize, bench and verify need nothing else)",
        f"- exported from run `{meta['source']['run_dir']}`; distillation teacher: {meta['source'].get('distill_teacher')}",
        "", "## Parity (ONNX Runtime fp32 vs PyTorch, real held-out samples)", "",
        f"max abs error {par['max_abs_err']:.3g}, max relative error {par['max_rel_err']:.3g} "
        f"(max|ort-torch| / max|torch|, gate {par['tolerance_rel']:g}), per-element relative "
        f"{par['max_elem_rel_err']:.3g}, argmax agreement {par['argmax_agreement']:.4%} over {par['samples']} samples.",
        "", f"## TensorRT {meta['tensorrt']['checked_version']} op check", "",
    ]
    issues = meta["tensorrt"]["unsupported_nodes"]
    lines += [f"- {i}" for i in issues] if issues else ["All nodes are on the TensorRT 10.3 allow-list."]
    for prec, info in meta["precisions"].items():
        if prec != "fp32" and info.get("unsupported_nodes"):
            lines += [f"- {prec}: {i}" for i in info["unsupported_nodes"]]
    lines += ["", f"## Accuracy per precision ({metric}, held-out samples, ONNX Runtime)", "",
              f"| precision | file | {metric} | drop vs fp32 | max rel err vs fp32 |", "|---|---|---|---|---|"]
    fp32 = meta["precisions"]["fp32"]["heldout_metric"]
    for prec, info in meta["precisions"].items():
        drop = None if prec == "fp32" or info.get("heldout_metric") is None else fp32 - info["heldout_metric"]
        lines.append(f"| {prec} | `{info['file']}` | {_fmt(info.get('heldout_metric'))} | {_fmt(drop)} | "
                     f"{_fmt_g(info.get('max_rel_err_vs_fp32'))} |")
    pipe = met["pipeline"]
    pipe_value = pipe.get("value", pipe.get("miou_heldout"))
    counted = (f"{held['points']} {held.get('points_noun', 'points')} of "
               if "points" in held and held["points"] != held["samples"] else "")
    lines += ["", f"Pipeline's own (PyTorch) {pipe.get('name') or metric} of this model: {_fmt(pipe_value)}; "
              f"bundle figures over {counted}{held['samples']} samples."]
    conf = held.get("confusion_fp32")
    if conf:
        classes = m["classes"]
        lines += ["", "## Confusion matrix (fp32, held-out; rows = label, columns = prediction)", "",
                  "| label \\ prediction | " + " | ".join(classes) + " |", "|---" * (len(classes) + 1) + "|"]
        lines += [f"| {c} | " + " | ".join(str(v) for v in row) + " |" for c, row in zip(classes, conf, strict=True)]
    if "int8" in meta["precisions"]:
        q = meta["precisions"]["int8"]
        kept = q.get("float_nodes") or []
        agree = q.get("calibration_agreement") or {}
        lines += ["", f"INT8: explicit QDQ ({q.get('method')}), calibrated on {q.get('calibration_samples')} "
                  f"training samples (never the held-out ones); drop {_fmt(fp32 - q['heldout_metric'])} points "
                  f"(target <= 2)."
                  + (f" Kept in float, the most INT8-sensitive: {', '.join(f'`{n}`' for n in kept)} (class agreement "
                     f"with fp32 on the calibration samples {agree['with_fallback']:.3f}, all int8 "
                     f"{agree['all_int8']:.3f})." if kept else "")]
    if "bench" in meta:
        lines += ["", f"Benchmark: see `{meta['bench']['markdown']}` ({meta['bench']['machine']})."]
    return "\n".join(lines) + "\n"


def write_report(folder: Path, meta: dict) -> None:
    atomic_write_text(Path(folder) / "report.md", render_report(meta))
