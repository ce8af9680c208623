"""``edgedistill export RUN_DIR``: a fine-tuned model of a run -> verified, self-contained ONNX deploy bundle.

Steps (DESIGN.md section 6), task-specific ones through the task's adapter (:mod:`deploy.tasks`):

1. read the evaluate stage's sidecar, refuse students that cannot be exported (spconv);
2. copy into the bundle the weights (``torch/model.safetensors``) and the calibration and
   held-out samples (``data/``): raw input files as the robot reads them, plus targets;
3. rebuild the deployed graph in PyTorch (the adapter's ``torch_module``) and pre-process
   the held-out samples with the adapter, from the bundle's own copies;
4. ``torch.onnx.export`` (TorchScript exporter, ``dynamo=False``), opset 17, static shapes,
   named inputs and outputs (https://pytorch.org/docs/stable/onnx_torchscript.html);
5. list every node TensorRT 10.3 cannot run (:mod:`deploy.trt_ops`) into metadata + report;
6. parity ONNX Runtime vs PyTorch on the held-out samples (fp32 relative error <= 1e-4 on
   every output) and the task metric through ONNX Runtime;
7. write metadata.json (format version, task, I/O, the sha256 of every file) and report.md.

Everything is written into a hidden staging folder next to the destination and renamed
into place only at the end: an export that fails (parity included) leaves no bundle.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import numpy as np

from .bundle import (FORMAT_VERSION, PRECISION_FILES, default_bundle_dir, library_versions, publish, staging_folder,
                     write_metadata)
from .report import write_report
from .sidecar import choose_model, read_sidecar, sample_refs
from .tasks import adapter_class, task_module
from .trt_ops import TRT_VERSION_CHECKED, unsupported_nodes
from .verify import FP32_REL_TOLERANCE, check_fp32_parity, torch_parity

log = logging.getLogger("edgedistill.deploy")

OPSET = 17
TORCH_WEIGHTS = "torch/model.safetensors"


def export_onnx(model, example: dict[str, np.ndarray], output_names: list[str], path: Path) -> None:
    """Static-shape opset-17 ONNX of ``model(*inputs)`` with the names and shapes of ``example`` (in order)."""
    import onnx  # noqa: PLC0415
    import torch  # noqa: PLC0415

    torch.onnx.export(
        model, tuple(torch.from_numpy(v) for v in example.values()), str(path), opset_version=OPSET, dynamo=False,
        input_names=list(example), output_names=output_names, do_constant_folding=True,
    )
    onnx.checker.check_model(onnx.load(str(path)), full_check=True)


def pipeline_metric(sidecar: dict) -> dict:
    """``metrics.pipeline``: the evaluate stage's own (PyTorch) held-out metric of the model, as its sidecar says.

    Lidar sidecars carry ``miou_heldout`` (a number, kept under that key); others
    ``metric_heldout`` ``{"name", "value"}``. ``{"name", "value"}`` is always present (value None when unknown).
    """
    if "metric_heldout" in sidecar:
        m = sidecar["metric_heldout"] or {}
        return {"name": m.get("name"), "value": m.get("value")}
    return {"name": "miou", "value": sidecar.get("miou_heldout"), "miou_heldout": sidecar.get("miou_heldout")}


def export_bundle(run_dir: str | Path, model_name: str | None = None, out: str | Path | None = None,
                  tolerance: float = FP32_REL_TOLERANCE, max_scans: int | None = None,
                  evaluate_stage: str | None = None) -> Path:
    """Export one fine-tuned model of ``run_dir`` into a verified bundle; returns its folder.

    Args:
        run_dir: a pipeline run folder with ``<evaluate stage>/models/``.
        model_name: sidecar stem (e.g. ``slidr_range_10pct``); default: the run's only deployable model.
        out: bundle folder (default ``run_dir/deploy/<model name>``, where the deploy stage writes too).
        tolerance: fp32 parity gate on ``max_rel_err``.
        max_scans: copy and use at most this many held-out samples (parity and metric); default all.
        evaluate_stage: the evaluate stage whose ``models/`` holds the sidecar; None: any stage of the run.
    """
    import onnx  # noqa: PLC0415
    from tqdm import tqdm  # noqa: PLC0415

    from .runtime import OrtEngine  # noqa: PLC0415

    run_dir = Path(run_dir).resolve()
    sidecar_path = choose_model(run_dir, model_name, evaluate_stage)
    sidecar = read_sidecar(sidecar_path)
    name = sidecar_path.stem
    final = Path(out) if out else default_bundle_dir(run_dir, name)
    cls = adapter_class(sidecar["task"])
    task_mod = task_module(sidecar["task"])
    if not sample_refs(sidecar, "heldout"):
        raise ValueError(f"{sidecar_path}: no held-out samples to verify the export on")

    staging = staging_folder(final)
    try:
        weights = staging / TORCH_WEIGHTS
        weights.parent.mkdir(parents=True)
        shutil.copyfile(sidecar_path.parent / sidecar["weights"], weights)
        data = {split: task_mod.write_samples(staging, sidecar, split, max_scans if split == "heldout" else None)
                for split in ("calibration", "heldout")}
        inputs, outputs = task_mod.io_metadata(sidecar)
        teacher = ((sidecar.get("student_record") or {}).get("teacher") or {}).get("name")
        meta = {
            "format_version": FORMAT_VERSION,
            "task": task_mod.task_metadata(sidecar),
            "model": {"name": name, "student": sidecar["student"], "student_kwargs": sidecar["student_kwargs"],
                      "num_classes": int(sidecar["num_classes"]), "classes": list(sidecar["classes"]),
                      "torch_weights": TORCH_WEIGHTS,
                      "deployed_graph": task_mod.DEPLOYED_GRAPH,
                      "distill_stage": sidecar.get("distill_stage"), "label_fraction": sidecar.get("label_fraction")},
            "inputs": inputs, "outputs": outputs, "data": data,
            "onnx": {"opset": OPSET, "exporter": "torch.onnx.export(dynamo=False)", "static_shapes": True},
            "source": {"run_dir": str(run_dir), "model_sidecar": str(sidecar_path), "distill_teacher": teacher,
                       "note": "provenance only: nothing reads these paths after export"},
            "versions": library_versions(),
        }
        adapter = cls(meta, staging)
        model = task_mod.torch_module(weights, meta)
        held = adapter.samples("heldout")
        feeds = [adapter.preprocess(adapter.read(s.path))[0] for s in tqdm(held, desc="pre-process held-out", unit="sample")]
        onnx_path = staging / PRECISION_FILES["fp32"]
        # The deployed batch of the first sample (a sample may stack several, e.g. an IMU recording's windows).
        example = {i["name"]: np.ascontiguousarray(feeds[0][i["name"]][: i["shape"][0]]) for i in inputs}
        log.info("exporting %s -> ONNX opset %d, inputs %s", name, OPSET, {k: v.shape for k, v in example.items()})
        export_onnx(model, example, [o["name"] for o in outputs], onnx_path)
        issues = [str(i) for i in unsupported_nodes(onnx.load(str(onnx_path)))]
        for issue in issues:
            log.warning("TensorRT %s cannot run node %s", TRT_VERSION_CHECKED, issue)

        engine = OrtEngine(onnx_path)
        stats = torch_parity(model, engine.run, feeds)
        log.info("parity ORT vs torch: max abs %.3g, max rel %.3g", stats["max_abs_err"], stats["max_rel_err"])
        check_fp32_parity(stats, tolerance)
        metric = adapter.metric(engine.run, held)
        log.info("fp32 %s (ONNX Runtime, %d held-out samples): %.2f", metric["name"], len(held), metric["value"])
        heldout = {"metric": metric["name"], "samples": metric["samples"], "by_precision": {"fp32": metric["value"]}}
        heldout |= {k: metric[k] for k in ("points", "points_noun") if k in metric}
        if "confusion" in metric:
            heldout["confusion_fp32"] = metric["confusion"]
        meta.update({
            "tensorrt": {"checked_version": TRT_VERSION_CHECKED, "unsupported_nodes": issues},
            "metrics": {"pipeline": pipeline_metric(sidecar),
                        "parity_fp32": {**stats, "tolerance_rel": tolerance},
                        "heldout": heldout},
            "precisions": {"fp32": {"file": PRECISION_FILES["fp32"], "heldout_metric": metric["value"]}},
        })
        write_report(staging, meta)
        write_metadata(staging, meta)
        publish(staging, final)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    log.info("bundle: %s", final)
    return final
