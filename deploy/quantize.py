"""``edgedistill quantize BUNDLE``: FP16 and INT8 (explicit QDQ) variants, each re-measured on held-out data.

- FP16 (``model_fp16.onnx``): every float initializer / Constant becomes float16 except
  Resize's ``roi`` and ``scales`` (float32 by the ONNX spec); the graph keeps float32 I/O
  with a Cast after the input and before the output, so runtimes feed the same arrays.
  (Written here with ``onnx`` helpers: onnxconverter-common is not a dependency.)
- INT8 (``model_int8.onnx``): explicit quantization, QuantizeLinear/DequantizeLinear pairs
  from ONNX Runtime's static quantizer, per-channel symmetric int8 weights and symmetric
  int8 activations (TensorRT requires zero points of 0), calibrated on the bundle's
  ``data/calibration`` samples (*training* data), never the held-out ones, with the task
  adapter's ``int8_calibration`` (:data:`CALIBRATION_METHODS`: ``minmax``, the range over every
  calibration batch, by default; the mean of the per-batch ranges, histogram percentiles or
  entropy) and its ``int8_float_fallback``: that many convolutions, the ones whose quantization
  alone flips the most output classes on the calibration samples, stay in float
  (:func:`float_fallback_nodes`). On CALICO's lidar BEV bundle the all-int8 drop ranged from 0.2
  to 2.6 mIoU over the calibration methods and from one calibration set to another, and from 0.4
  to 0.9 with one convolution kept in float (``benchmarks/int8_calibration.py``).
  References: https://onnxruntime.ai/docs/performance/model-optimizations/quantization.html
  (``quantize_static``, ``QuantFormat.QDQ``, ``CalibrationDataReader``) and the TensorRT
  developer guide, "Explicit Quantization" (Q/DQ networks; TensorRT 10.1+ deprecates the
  implicit calibrators that TensorRT 11 removes).

Each precision's held-out metric (the task adapter's, through ONNX Runtime) goes into
metadata.json (``precisions.<p>.heldout_metric``, ``metrics.heldout.by_precision``,
``metrics.int8_drop``) and report.md, then every file hash is refreshed. Only the bundle is
read: its calibration and held-out samples are inside it.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

import numpy as np
from onnxruntime.quantization import CalibrationDataReader

from .bundle import PRECISION_FILES, Bundle, load_bundle, write_metadata
from .report import write_report
from .tasks import adapter_for
from .trt_ops import unsupported_nodes
from .verify import compare_outputs, worst_case

log = logging.getLogger("edgedistill.deploy")

INT8_TARGET_DROP = 2.0  # points of the task metric (mIoU %, accuracy %); reported, not enforced
_FLOAT32_ONLY_INPUTS = {"Resize": (1, 2), "Upsample": (1,)}  # (op, input indices) that stay float32


def convert_to_fp16(src: Path, dst: Path) -> None:
    """Write an fp16-weight copy of the fp32 ONNX model ``src`` with float32 inputs/outputs."""
    import onnx  # noqa: PLC0415
    from onnx import TensorProto, helper, numpy_helper  # noqa: PLC0415

    model = onnx.load(str(src))
    g = model.graph
    keep32 = {n.input[i] for n in g.node if n.op_type in _FLOAT32_ONLY_INPUTS
              for i in _FLOAT32_ONLY_INPUTS[n.op_type] if i < len(n.input) and n.input[i]}
    for init in g.initializer:
        if init.data_type == TensorProto.FLOAT and init.name not in keep32:
            init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init).astype(np.float16), init.name))
    for node in g.node:
        if node.op_type == "Constant" and node.output[0] not in keep32:
            for attr in node.attribute:
                if attr.name == "value" and attr.t.data_type == TensorProto.FLOAT:
                    attr.t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(attr.t).astype(np.float16)))
        if node.op_type == "Cast":
            for attr in node.attribute:
                if attr.name == "to" and attr.i == TensorProto.FLOAT:
                    attr.i = TensorProto.FLOAT16
    casts = []
    for inp in g.input:
        if inp.type.tensor_type.elem_type != TensorProto.FLOAT:
            continue
        inner = f"{inp.name}__fp16"
        for node in g.node:
            for i, name in enumerate(node.input):
                if name == inp.name:
                    node.input[i] = inner
        casts.append(helper.make_node("Cast", [inp.name], [inner], name=f"{inp.name}_to_fp16", to=TensorProto.FLOAT16))
    out_casts = []
    for out in g.output:
        if out.type.tensor_type.elem_type != TensorProto.FLOAT:
            continue
        inner = f"{out.name}__fp16"
        for node in g.node:
            for i, name in enumerate(node.output):
                if name == out.name:
                    node.output[i] = inner
        out_casts.append(helper.make_node("Cast", [inner], [out.name], name=f"{out.name}_to_fp32", to=TensorProto.FLOAT))
    nodes = casts + list(g.node) + out_casts
    del g.node[:]
    g.node.extend(nodes)
    del g.value_info[:]
    model = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(dst))


class FeedsCalibrationReader(CalibrationDataReader):
    """Feeds one pre-processed calibration sample ({input name: (1, ...) array}) per ``get_next`` call, then None."""

    def __init__(self, feeds: list[dict[str, np.ndarray]]):
        self.feeds = feeds
        self._next = 0

    def get_next(self) -> dict | None:
        if self._next >= len(self.feeds):
            return None
        self._next += 1
        # Float inputs as float32 (the graph's I/O type); integer inputs (a gather index) keep their dtype.
        return {k: v.astype(np.float32, copy=False) if np.issubdtype(v.dtype, np.floating) else v
                for k, v in self.feeds[self._next - 1].items()}

    def rewind(self) -> None:
        self._next = 0


# name -> (onnxruntime CalibrationMethod, extra_options)
CALIBRATION_METHODS: dict[str, tuple[str, dict]] = {
    "minmax": ("MinMax", {}),
    "minmax_moving_average": ("MinMax", {"CalibMovingAverage": True}),
    "percentile_99.99": ("Percentile", {"CalibPercentile": 99.99}),
    "percentile_99.999": ("Percentile", {"CalibPercentile": 99.999}),
    "entropy": ("Entropy", {}),
}


def quantize_int8(src: Path, dst: Path, calibration_feeds: list[dict[str, np.ndarray]],
                  calibration: str = "minmax", float_fallback: int = 0) -> dict:
    """INT8 QDQ model of ``src`` calibrated on ``calibration_feeds`` (named engine inputs, batch 1) with the
    activation-range method ``calibration`` (a key of :data:`CALIBRATION_METHODS`), the ``float_fallback`` most
    sensitive convolutions kept in float (:func:`float_fallback_nodes`). Returns what was done:
    ``{"float_nodes": [...], "calibration_agreement": ...}`` (the latter only with a fallback)."""
    if calibration not in CALIBRATION_METHODS:
        raise ValueError(f"calibration: unknown {calibration!r}; choose from {sorted(CALIBRATION_METHODS)}")
    if not calibration_feeds:
        raise ValueError("INT8 calibration needs at least one calibration sample (the bundle's data/calibration is empty)")
    from onnxruntime.quantization.shape_inference import quant_pre_process  # noqa: PLC0415

    with tempfile.TemporaryDirectory() as tmp:
        # ORT's recommended pre-processing: shape inference + graph optimisation before QDQ insertion.
        prepared = Path(tmp) / "prepared.onnx"
        quant_pre_process(str(src), str(prepared))
        float_nodes, info = [], {}
        if float_fallback:
            ranked = float_fallback_nodes(src, prepared, calibration_feeds, calibration, Path(tmp))
            float_nodes = [r["node"] for r in ranked[:float_fallback]]
        quantize_prepared(prepared, dst, calibration_feeds, calibration, float_nodes)
        if float_fallback:
            info["calibration_agreement"] = {"all_int8": ranked[0]["all_int8"],
                                             "with_fallback": _agreement(_outputs(src, calibration_feeds), dst,
                                                                         calibration_feeds)}
        return {"float_nodes": float_nodes, **info}


def _outputs(model: Path, feeds: list[dict[str, np.ndarray]]) -> list[dict[str, np.ndarray]]:
    """The named outputs of ``model`` (ONNX Runtime) on every feed."""
    from .runtime import OrtEngine  # noqa: PLC0415

    engine = OrtEngine(model)
    return [engine.run(f) for f in feeds]


def _agreement(reference: list[dict[str, np.ndarray]], quantized: Path, feeds: list[dict[str, np.ndarray]]) -> float:
    """Mean over ``feeds`` and outputs of the fraction of positions whose class (argmax over axis 1, the class axis
    of every deployed head here) is the one of ``reference`` (the fp32 model's outputs on the same feeds)."""
    scores = []
    for a, b in zip(reference, _outputs(quantized, feeds), strict=True):
        scores += [float(np.mean(a[k].argmax(axis=1) == b[k].argmax(axis=1))) for k in a]
    return float(np.mean(scores))


def float_fallback_nodes(fp32: Path, prepared: Path, feeds: list[dict[str, np.ndarray]], calibration: str,
                         tmp: Path) -> list[dict]:
    """Sensitivity of each convolution to INT8, on the calibration samples only (no held-out sample is read).

    For every Conv of ``prepared``, the model is quantized with that one node kept in float, and the agreement of
    its classes with fp32's (:func:`_agreement`) is measured on ``feeds``. Returns ``[{"node", "agreement",
    "all_int8"}]`` best first: keeping the first node in float recovers the most. This is the usual partial
    quantization (NVIDIA's TensorRT docs and pytorch-quantization: leave the few layers whose quantization costs the
    most accuracy in higher precision), with the classes of the calibration samples as the criterion: a network
    whose logits stay close in norm can still flip many argmaxes (one lateral convolution of CALICO's lidar BEV
    network flipped 13% of the cells' classes on its own).
    """
    import onnx  # noqa: PLC0415

    convs = [n.name for n in onnx.load(str(prepared)).graph.node if n.op_type == "Conv" and n.name]
    reference = _outputs(fp32, feeds)  # once: every candidate is compared with the same fp32 outputs
    probe = tmp / "fallback_probe.onnx"
    quantize_prepared(prepared, probe, feeds, calibration)
    base = _agreement(reference, probe, feeds)
    ranked = []
    for name in convs:
        quantize_prepared(prepared, probe, feeds, calibration, [name])
        ranked.append({"node": name, "agreement": _agreement(reference, probe, feeds), "all_int8": base})
        log.info("int8 sensitivity: %s kept in float -> class agreement %.3f (all int8 %.3f)", name,
                 ranked[-1]["agreement"], base)
    return sorted(ranked, key=lambda r: -r["agreement"])


def quantize_prepared(src: Path, dst: Path, calibration_feeds: list[dict[str, np.ndarray]],
                      calibration: str = "minmax", float_nodes: list[str] | tuple[str, ...] = ()) -> None:
    """:func:`quantize_int8` of a model already through ORT's ``quant_pre_process`` (a benchmark that tries several
    calibrations prepares once), with the nodes named in ``float_nodes`` left unquantized."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static  # noqa: PLC0415

    quantize_static(
        str(src), str(dst), FeedsCalibrationReader(calibration_feeds),
        quant_format=QuantFormat.QDQ, activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
        per_channel=True, calibrate_method=getattr(CalibrationMethod, CALIBRATION_METHODS[calibration][0]),
        nodes_to_exclude=list(float_nodes),
        extra_options={"ActivationSymmetric": True, "WeightSymmetric": True, **CALIBRATION_METHODS[calibration][1]},
    )


def quantize_bundle(bundle_dir: str | Path, precisions: tuple[str, ...] = ("fp16", "int8")) -> Bundle:
    """Add ``precisions`` to a bundle, measure each on its held-out samples, update metadata + report."""
    import onnx  # noqa: PLC0415
    from tqdm import tqdm  # noqa: PLC0415

    from .runtime import OrtEngine, split_batches  # noqa: PLC0415

    bundle = load_bundle(bundle_dir)
    meta = bundle.metadata
    unknown = [p for p in precisions if p not in ("fp16", "int8")]
    if unknown:
        raise ValueError(f"precisions: unknown {unknown}; choose from fp16, int8")
    adapter = adapter_for(meta, bundle.path)
    held = adapter.samples("heldout")
    calib = adapter.samples("calibration")
    leaked = sorted({s.token for s in calib} & {s.token for s in held})
    if leaked:
        raise ValueError(f"{bundle.path}: calibration samples {leaked} are also held-out samples; calibration must not "
                         "see held-out data")

    def feeds(samples, what):
        return [adapter.preprocess(adapter.read(s.path))[0] for s in tqdm(samples, desc=what, unit="sample")]

    held_feeds = feeds(held, "pre-process held-out")
    fp32_engine = OrtEngine(bundle.model_path("fp32"))
    fp32_out = [fp32_engine.run(f) for f in held_feeds]
    metric_name = meta["metrics"]["heldout"]["metric"]
    fp32_value = meta["precisions"]["fp32"]["heldout_metric"]

    for prec in precisions:
        dst = bundle.path / PRECISION_FILES[prec]
        if prec == "fp16":
            log.info("fp16: converting weights, float32 I/O")
            convert_to_fp16(bundle.model_path("fp32"), dst)
            info = {"file": dst.name, "method": "fp16 weights/activations, fp32 I/O via Cast"}
        else:
            # One engine batch per calibration step (a sample may stack several, e.g. an IMU recording's windows).
            calib_feeds = [f for fs in feeds(calib, "pre-process calibration")
                           for f in split_batches(fs, fp32_engine.inputs)]
            log.info("int8: QDQ calibration on %d training samples (%d engine batches)", len(calib), len(calib_feeds))
            done = quantize_int8(bundle.model_path("fp32"), dst, calib_feeds, adapter.int8_calibration,
                                 adapter.int8_float_fallback)
            info = {"file": dst.name, "method": "onnxruntime quantize_static QDQ, QInt8 symmetric, per-channel, "
                    f"{adapter.int8_calibration}", "calibration_samples": len(calib), **done}
            if done["float_nodes"]:
                log.info("int8: kept in float %s (class agreement with fp32 on the calibration samples %.3f, all "
                         "int8 %.3f)", done["float_nodes"], done["calibration_agreement"]["with_fallback"],
                         done["calibration_agreement"]["all_int8"])
        info["unsupported_nodes"] = [str(i) for i in unsupported_nodes(onnx.load(str(dst)))]
        engine = OrtEngine(dst)
        outs = [engine.run(f) for f in tqdm(held_feeds, desc=f"{prec} held-out", unit="sample")]
        info["max_rel_err_vs_fp32"] = worst_case([compare_outputs(o[k], r[k]) for o, r in zip(outs, fp32_out, strict=True)
                                                 for k in r])["max_rel_err"]
        info["heldout_metric"] = adapter.metric(engine.run, held)["value"]
        log.info("%s %s %.2f (fp32 %.2f)", prec, metric_name, info["heldout_metric"], fp32_value)
        meta["precisions"][prec] = info
        meta["metrics"]["heldout"]["by_precision"][prec] = info["heldout_metric"]
    if "int8" in meta["precisions"]:
        drop = meta["precisions"]["fp32"]["heldout_metric"] - meta["precisions"]["int8"]["heldout_metric"]
        meta["metrics"]["int8_drop"] = drop
        meta["metrics"]["int8_within_target"] = bool(drop <= INT8_TARGET_DROP)
        if drop > INT8_TARGET_DROP:
            log.warning("INT8 costs %.2f %s points (> %.1f target)", drop, metric_name, INT8_TARGET_DROP)
    write_report(bundle.path, meta)
    write_metadata(bundle.path, meta)
    return load_bundle(bundle.path)
