"""``edgedistill export RUN_DIR``: fine-tuned range-view segmenter -> verified ONNX deploy bundle.

Steps (DESIGN.md section 6):

1. read the evaluate stage's sidecar, refuse students that cannot be exported (spconv);
2. rebuild student + classifier as :class:`deploy.model.RangeSegmenter` (classifier as 1x1 conv);
3. pre-process the sidecar's held-out scans with the numpy pre-processing of the runtime;
4. ``torch.onnx.export`` (TorchScript exporter, ``dynamo=False``), opset 17, static shape
   (1, C, H, W) (https://pytorch.org/docs/stable/onnx_torchscript.html);
5. list every node TensorRT 10.3 cannot run (:mod:`deploy.trt_ops`) into metadata + report;
6. parity ONNX Runtime vs PyTorch on the held-out images (fp32 relative error <= 1e-4)
   and fp32 per-point mIoU through ONNX Runtime;
7. write metadata.json (with the sha256 of every file) and report.md.

Everything is written into a hidden staging folder next to the destination and renamed
into place only at the end: an export that fails (parity included) leaves no bundle.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import numpy as np

from .bundle import FORMAT_VERSION, PRECISION_FILES, library_versions, publish, staging_folder, write_metadata
from .preprocess import UNKNOWN_LABEL, range_image_input, sensor_from_dict
from .report import write_report
from .sidecar import choose_model, load_labeled_scan, read_sidecar
from .trt_ops import TRT_VERSION_CHECKED, unsupported_nodes
from .verify import FP32_REL_TOLERANCE, check_fp32_parity, point_miou, torch_parity

log = logging.getLogger("edgedistill.deploy")

OPSET = 17
INPUT_NAME = "range_image"
OUTPUT_NAME = "logits"


def preprocessing_params(sidecar: dict, student) -> dict:
    """The pre/post-processing parameters a runtime needs, as recorded in metadata.json."""
    from modalities.lidar.range_net import DEFAULT_CHANNEL_STATS  # noqa: PLC0415

    pre = sidecar["preprocessing"]
    sensor = sensor_from_dict(pre["sensor"])
    channels = list(student.input_channels)
    mh, mw = student.input_multiple
    height = -(-sensor.beams // mh) * mh
    width = -(-sensor.columns // mw) * mw
    return {
        "channels": channels,
        "means": [DEFAULT_CHANNEL_STATS[c][0] for c in channels],
        "stds": [DEFAULT_CHANNEL_STATS[c][1] for c in channels],
        "normalisation": "(v - mean) / std per channel, then 0 in every channel of empty pixels (RangeNet++)",
        "intensity_scale": float(pre["intensity_scale"]),
        "sensor": pre["sensor"],
        "projection": "modalities.lidar.range_view.project_to_range_image, nearest beam by elevation (ring unused)",
        "sensor_height": sensor.beams, "sensor_width": sensor.columns,
        "image_height": height, "image_width": width,
        "width_multiple": mw, "height_multiple": mh,
        "width_padding": width - sensor.columns, "height_padding": height - sensor.beams,
        "unknown_label": UNKNOWN_LABEL,
        "postprocessing": "label of a point = argmax of logits at its (row, col); 255 when the point has no pixel",
    }


def export_onnx(model, example: np.ndarray, path: Path) -> None:
    """Static-shape opset-17 ONNX of ``model`` for inputs shaped like ``example`` (B, C, H, W)."""
    import onnx  # noqa: PLC0415
    import torch  # noqa: PLC0415

    torch.onnx.export(
        model, (torch.from_numpy(example),), str(path), opset_version=OPSET, dynamo=False,
        input_names=[INPUT_NAME], output_names=[OUTPUT_NAME], do_constant_folding=True,
    )
    onnx.checker.check_model(onnx.load(str(path)), full_check=True)


def export_bundle(run_dir: str | Path, model_name: str | None = None, out: str | Path | None = None,
                  tolerance: float = FP32_REL_TOLERANCE, max_scans: int | None = None,
                  evaluate_stage: str | None = None) -> Path:
    """Export one fine-tuned model of ``run_dir`` into a verified bundle; returns its folder.

    Args:
        run_dir: a pipeline run folder with ``<evaluate stage>/models/``.
        model_name: sidecar stem (e.g. ``slidr_range_10pct``); default: the run's only range_net model.
        out: bundle folder (default ``run_dir/bundle/<model name>``).
        tolerance: fp32 parity gate on ``max_rel_err``.
        max_scans: use at most this many held-out scans (parity and mIoU); default all.
        evaluate_stage: the evaluate stage whose ``models/`` holds the sidecar; None: any stage of the run.
    """
    import onnx  # noqa: PLC0415
    from tqdm import tqdm  # noqa: PLC0415

    from .model import load_segmenter  # noqa: PLC0415 (torch)
    from .runtime import OrtEngine  # noqa: PLC0415

    run_dir = Path(run_dir).resolve()
    sidecar_path = choose_model(run_dir, model_name, evaluate_stage)
    sidecar = read_sidecar(sidecar_path)
    name = sidecar_path.stem
    final = Path(out) if out else run_dir / "bundle" / name
    model = load_segmenter(sidecar_path, sidecar)
    pre = preprocessing_params(sidecar, model.student)
    sensor = sensor_from_dict(pre["sensor"])
    refs = sidecar["heldout_scans"][:max_scans] if max_scans else sidecar["heldout_scans"]
    if not refs:
        raise ValueError(f"{sidecar_path}: no held-out scans to verify the export on")
    scans = [load_labeled_scan(r, pre["intensity_scale"]) for r in tqdm(refs, desc="load held-out scans", unit="scan")]
    inputs = [range_image_input(s.points, sensor, pre["channels"], pre["means"], pre["stds"],
                                pre["width_multiple"], pre["height_multiple"]) for s in scans]
    shape = (1, *inputs[0].image.shape)

    staging = staging_folder(final)
    try:
        onnx_path = staging / PRECISION_FILES["fp32"]
        log.info("exporting %s -> ONNX opset %d, input %s", name, OPSET, shape)
        export_onnx(model, inputs[0].image[None], onnx_path)
        issues = [str(i) for i in unsupported_nodes(onnx.load(str(onnx_path)))]
        for issue in issues:
            log.warning("TensorRT %s cannot run node %s", TRT_VERSION_CHECKED, issue)

        engine = OrtEngine(onnx_path)
        stats = torch_parity(model, engine.run, [i.image for i in inputs])
        log.info("parity ORT vs torch: max abs %.3g, max rel %.3g", stats["max_abs_err"], stats["max_rel_err"])
        check_fp32_parity(stats, tolerance)
        miou = point_miou(lambda inp: engine.run(inp.image[None])[0], scans, inputs, int(sidecar["num_classes"]))
        log.info("fp32 mIoU (ONNX Runtime, %d held-out scans): %.2f", len(scans), miou["miou"])

        teacher = (sidecar.get("student_record") or {}).get("teacher", {}).get("name")
        meta = {
            "format_version": FORMAT_VERSION,
            "model": {"name": name, "student": sidecar["student"], "student_kwargs": sidecar["student_kwargs"],
                      "num_classes": int(sidecar["num_classes"]), "classes": list(sidecar["classes"]),
                      "deployed_graph": "student.backbone -> Conv1x1(classifier) -> per-pixel logits",
                      "distill_stage": sidecar.get("distill_stage"), "label_fraction": sidecar.get("label_fraction")},
            "inputs": [{"name": INPUT_NAME, "shape": list(shape), "dtype": "float32", "layout": "NCHW",
                        "channels": pre["channels"]}],
            "outputs": [{"name": OUTPUT_NAME, "shape": [1, int(sidecar["num_classes"]), shape[2], shape[3]],
                         "dtype": "float32", "layout": "NCHW"}],
            "onnx": {"opset": OPSET, "exporter": "torch.onnx.export(dynamo=False)", "static_shapes": True},
            "preprocessing": pre,
            "source": {"run_dir": str(run_dir), "model_sidecar": str(sidecar_path),
                       "weights": str(sidecar_path.parent / sidecar["weights"]), "distill_teacher": teacher,
                       "heldout_scans": [r["token"] for r in refs],
                       "calibration_scans": [r["token"] for r in sidecar["calibration_scans"]]},
            "tensorrt": {"checked_version": TRT_VERSION_CHECKED, "unsupported_nodes": issues},
            "metrics": {"miou_heldout_pipeline": sidecar.get("miou_heldout"),
                        "parity_fp32": {**stats, "tolerance_rel": tolerance},
                        "miou_heldout": {"fp32": miou["miou"]}, "miou_points": miou["points"]},
            "precisions": {"fp32": {"file": PRECISION_FILES["fp32"], "miou": miou["miou"]}},
            "versions": library_versions(),
        }
        write_report(staging, meta)
        write_metadata(staging, meta)
        publish(staging, final)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    log.info("bundle: %s", final)
    return final

