"""Run a deploy bundle on raw scans: verify, pre-process, infer (TensorRT or ONNX Runtime), label points.

No torch import anywhere on this path (it is the Jetson runtime image's entry point)::

    load_bundle (sha256 of every file, required metadata fields)
      -> read_scan (.pcd.bin / .bin) -> intensity / scale -> range_image_input (numpy)
      -> engine: TensorRT (deploy.tensorrt, when importable with a GPU) else ONNX Runtime
      -> logits (K, H, W) -> per point argmax at its (row, col); points without a pixel get
         255 (UNKNOWN_LABEL: outside the sensor's range limits or far from every beam)
      -> <stem>.labels.npy (uint8, one per point of the input file, atomic write)

The engine-level API (:meth:`OrtEngine.run`, :meth:`deploy.tensorrt.TrtEngine.run`) checks
the input against the static shape and dtype recorded in metadata.json and raises a
:class:`ValueError` saying what it expected; a silently broadcast or cast input would give
wrong labels instead of an error.

ONNX Runtime reference: https://onnxruntime.ai/docs/api/python/api_summary.html
(``InferenceSession``, ``SessionOptions.graph_optimization_level``, ``intra_op_num_threads``).
"""

from __future__ import annotations

import io
import logging
from pathlib import Path

import numpy as np

from modalities.fileio import atomic_write_bytes

from .bundle import Bundle, load_bundle
from .preprocess import RangeInput, point_labels, range_image_input, read_scan, sensor_from_dict

log = logging.getLogger("edgedistill.deploy")

ONNX_DTYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16}


def check_engine_input(x: np.ndarray, shape: tuple[int, ...], dtype: np.dtype, name: str) -> np.ndarray:
    """Return ``x`` as a C-contiguous array after checking its exact shape and dtype."""
    if not isinstance(x, np.ndarray):
        raise TypeError(f"input '{name}': expected a numpy array, got {type(x).__name__}")
    if tuple(x.shape) != tuple(shape):
        raise ValueError(
            f"input '{name}': expected shape {tuple(shape)} (static engine), got {tuple(x.shape)}; "
            "pre-process scans with deploy.preprocess.range_image_input and batch to the engine's batch size"
        )
    if x.dtype != np.dtype(dtype):
        raise ValueError(f"input '{name}': expected dtype {np.dtype(dtype).name}, got {x.dtype.name}")
    return np.ascontiguousarray(x)


def ort_session(path: Path, threads: int | None = None, providers: list[str] | None = None, spin: bool = True):
    """An ONNX Runtime session with all graph optimisations on (and ``threads`` intra-op threads).

    ``spin=False`` stops idle intra-op threads from busy-waiting after a run
    (``session.intra_op.allow_spinning``): slightly higher latency, but it does not steal
    cores from other work in the same process (e.g. torch, in a side-by-side benchmark).
    """
    import onnxruntime as ort  # noqa: PLC0415

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.log_severity_level = 3
    if threads:
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
    if not spin:
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), sess_options=opts, providers=providers or ["CPUExecutionProvider"])


class OrtEngine:
    """A static-shape ONNX model on ONNX Runtime: ``run(x (B, C, H, W)) -> logits (B, K, H, W)``."""

    backend = "onnxruntime"

    def __init__(self, path: Path, threads: int | None = None, providers: list[str] | None = None,
                 spin: bool = True):
        self.session = ort_session(path, threads, providers, spin)
        inp = self.session.get_inputs()[0]
        self.input_name = inp.name
        self.input_shape = tuple(int(d) for d in inp.shape)
        self.input_dtype = ONNX_DTYPES[inp.type]
        self.output_name = self.session.get_outputs()[0].name

    def run(self, x: np.ndarray) -> np.ndarray:
        x = check_engine_input(x, self.input_shape, self.input_dtype, self.input_name)
        return self.session.run([self.output_name], {self.input_name: x})[0]


def tensorrt_available() -> bool:
    """True when ``tensorrt`` imports and a CUDA device answers (so an engine can be built)."""
    try:
        from .tensorrt import cuda_device_name, import_tensorrt  # noqa: PLC0415

        import_tensorrt()
        return cuda_device_name() is not None
    except Exception:  # noqa: BLE001 - any failure means "use ONNX Runtime"
        return False


def open_engine(bundle: Bundle, precision: str = "fp32", backend: str = "auto", threads: int | None = None):
    """The engine for ``precision``: TensorRT when ``backend`` is "tensorrt" (or "auto" and available), else ORT."""
    if backend not in ("auto", "tensorrt", "onnxruntime"):
        raise ValueError(f"backend: expected auto, tensorrt or onnxruntime, got {backend!r}")
    model = bundle.model_path(precision)
    if backend == "tensorrt" or (backend == "auto" and tensorrt_available()):
        from .tensorrt import TrtEngine, build_engine  # noqa: PLC0415

        return TrtEngine(build_engine(bundle, precision))
    return OrtEngine(model, threads)


class Segmenter:
    """Raw scan -> per-point labels with a bundle's pre-processing and one engine."""

    def __init__(self, bundle: Bundle, engine):
        self.bundle = bundle
        self.engine = engine
        pre = bundle.metadata["preprocessing"]
        self.sensor = sensor_from_dict(pre["sensor"])
        self.pre = pre

    def preprocess(self, points_raw: np.ndarray) -> RangeInput:
        """(N, >=4) points with intensity as stored in the file -> :class:`RangeInput`."""
        pts = np.asarray(points_raw, np.float32)
        if pts.ndim != 2 or pts.shape[1] < 4:
            raise ValueError(f"points: expected (N, >=4) x, y, z, intensity, got {pts.shape}")
        pts = np.concatenate([pts[:, :3], pts[:, 3:4] / float(self.pre["intensity_scale"])], axis=1)
        return range_image_input(pts, self.sensor, self.pre["channels"], self.pre["means"], self.pre["stds"],
                                 int(self.pre["width_multiple"]), int(self.pre["height_multiple"]))

    def logits(self, inp: RangeInput) -> np.ndarray:
        """(K, H, W) logits of one pre-processed scan (engine batch 1)."""
        return self.engine.run(inp.image[None].astype(self.engine.input_dtype, copy=False))[0]

    def predict(self, points_raw: np.ndarray) -> np.ndarray:
        """(N,) uint8 labels (class index into ``metadata.model.classes``; 255 = no pixel)."""
        inp = self.preprocess(points_raw)
        return point_labels(self.logits(inp), inp.rows, inp.cols, inp.valid)


def labels_path(out_dir: Path, scan: Path) -> Path:
    name = scan.name
    for suffix in (".pcd.bin", ".bin", ".pcd", ".ply"):
        if name.endswith(suffix):
            name = name[: -len(suffix)]
            break
    return out_dir / f"{name}.labels.npy"


def infer_files(bundle_dir: Path, inputs: list[Path], out_dir: Path | None = None, precision: str = "fp32",
                backend: str = "auto") -> list[Path]:
    """Label every scan file in ``inputs``; writes ``<stem>.labels.npy`` next to it (or into ``out_dir``)."""
    from tqdm import tqdm  # noqa: PLC0415

    bundle = load_bundle(bundle_dir)
    seg = Segmenter(bundle, open_engine(bundle, precision, backend))
    log.info("bundle %s (%s, %s)", bundle.path, precision, seg.engine.backend)
    written = []
    for scan in tqdm([Path(p) for p in inputs], desc="infer", unit="scan"):
        labels = seg.predict(read_scan(scan))
        dest = labels_path(Path(out_dir) if out_dir else scan.parent, scan)
        dest.parent.mkdir(parents=True, exist_ok=True)
        buf = io.BytesIO()
        np.save(buf, labels)
        atomic_write_bytes(dest, buf.getvalue())
        log.info("%s: %d points, %d without a pixel -> %s", scan.name, len(labels), int((labels == 255).sum()), dest)
        written.append(dest)
    return written
