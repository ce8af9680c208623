"""Run a deploy bundle on raw files: verify, pre-process, infer (TensorRT or ONNX Runtime), post-process.

No torch import anywhere on this path (it is the Jetson runtime image's entry point)::

    load_bundle (sha256 of every file, required metadata fields, format version)
      -> the task's adapter (deploy.tasks, chosen by metadata task.kind): read + pre-process
      -> engine: TensorRT (deploy.tensorrt, when importable with a GPU) else ONNX Runtime;
         named inputs -> named outputs
      -> adapter: post-process, write the result file (atomic)

Engines take and return ``{name: array}``: :meth:`OrtEngine.run` and
:meth:`deploy.tensorrt.TrtEngine.run` check every input's name, static shape and dtype
against the model and raise a :class:`ValueError` saying what was expected; a silently
broadcast or cast input would give wrong results instead of an error. The one exception is
the batch axis: feeds that stack several engine batches along axis 0 (an IMU recording's
windows: ``(n, 6, L)`` for a batch-1 engine) run one engine batch at a time, and each
output is their concatenation along axis 0 (:func:`split_batches`).

ONNX Runtime reference: https://onnxruntime.ai/docs/api/python/api_summary.html
(``InferenceSession``, ``SessionOptions.graph_optimization_level``, ``intra_op_num_threads``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .bundle import Bundle, load_bundle
from .tasks import adapter_for

log = logging.getLogger("edgedistill.deploy")

ONNX_DTYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(int64)": np.int64,
               "tensor(int32)": np.int32, "tensor(uint8)": np.uint8, "tensor(bool)": np.bool_}


@dataclass(frozen=True)
class TensorSpec:
    name: str
    shape: tuple[int, ...]
    dtype: np.dtype


def split_batches(feeds: dict[str, np.ndarray], specs: list[TensorSpec]) -> list[dict[str, np.ndarray]]:
    """``feeds`` cut along axis 0 into engine batches, each checked by :func:`check_feeds`.

    Every input must hold the same number ``k >= 1`` of engine batches (its leading size is
    ``k`` times the engine's, the other axes are the engine's); anything else is left to
    :func:`check_feeds` to reject with its message. ``k == 1``: ``[check_feeds(feeds, specs)]``.
    """
    if isinstance(feeds, dict) and specs and sorted(feeds) == sorted(s.name for s in specs):
        counts = set()
        for spec in specs:
            x = feeds[spec.name]
            shape, want = getattr(x, "shape", ()), tuple(spec.shape)
            if (len(shape) == len(want) and want and want[0] > 0 and shape[0] % want[0] == 0
                    and tuple(shape[1:]) == want[1:]):
                counts.add(shape[0] // want[0])
            else:
                counts.add(None)
        if len(counts) == 1 and (k := counts.pop()) is not None and k > 1:
            return [check_feeds({s.name: feeds[s.name][i * s.shape[0]:(i + 1) * s.shape[0]] for s in specs}, specs)
                    for i in range(k)]
    return [check_feeds(feeds, specs)]


def run_batches(run_one: Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]], feeds: dict[str, np.ndarray],
                specs: list[TensorSpec]) -> dict[str, np.ndarray]:
    """``run_one`` (one checked engine batch -> outputs) over :func:`split_batches`; outputs joined along axis 0."""
    parts = [run_one(f) for f in split_batches(feeds, specs)]
    if len(parts) == 1:
        return parts[0]
    return {name: np.concatenate([p[name] for p in parts], axis=0) for name in parts[0]}


def check_feeds(feeds: dict[str, np.ndarray], specs: list[TensorSpec]) -> dict[str, np.ndarray]:
    """``feeds`` as C-contiguous arrays after checking names, exact shapes and dtypes against ``specs``."""
    if not isinstance(feeds, dict):
        raise TypeError(f"engine inputs: expected a dict {{name: array}}, got {type(feeds).__name__}")
    want = [s.name for s in specs]
    if sorted(feeds) != sorted(want):
        raise ValueError(f"engine inputs: expected the names {want}, got {sorted(feeds)}")
    out = {}
    for spec in specs:
        x = feeds[spec.name]
        if not isinstance(x, np.ndarray):
            raise TypeError(f"input '{spec.name}': expected a numpy array, got {type(x).__name__}")
        if tuple(x.shape) != tuple(spec.shape):
            raise ValueError(f"input '{spec.name}': expected shape {tuple(spec.shape)} (static engine), got "
                             f"{tuple(x.shape)}; pre-process with the bundle's task adapter and batch to the engine's "
                             "batch size")
        if x.dtype != np.dtype(spec.dtype):
            raise ValueError(f"input '{spec.name}': expected dtype {np.dtype(spec.dtype).name}, got {x.dtype.name}")
        out[spec.name] = np.ascontiguousarray(x)
    return out


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
    """A static-shape ONNX model on ONNX Runtime: ``run({name: array}) -> {name: array}``."""

    backend = "onnxruntime"

    def __init__(self, path: Path, threads: int | None = None, providers: list[str] | None = None,
                 spin: bool = True):
        self.session = ort_session(path, threads, providers, spin)

        def spec(t) -> TensorSpec:
            if t.type not in ONNX_DTYPES:
                raise ValueError(f"{path}: tensor '{t.name}' has type {t.type}, not supported by the runtime")
            return TensorSpec(t.name, tuple(int(d) for d in t.shape), np.dtype(ONNX_DTYPES[t.type]))

        self.inputs = [spec(t) for t in self.session.get_inputs()]
        self.outputs = [spec(t) for t in self.session.get_outputs()]

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Outputs of ``feeds`` (checked; several stacked engine batches run one at a time, see :func:`run_batches`)."""
        names = [o.name for o in self.outputs]
        return run_batches(lambda f: dict(zip(names, self.session.run(names, f), strict=True)), feeds, self.inputs)


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


class Predictor:
    """Raw file -> result with a bundle's task adapter and one engine."""

    def __init__(self, bundle: Bundle, engine):
        self.bundle = bundle
        self.engine = engine
        self.adapter = adapter_for(bundle.metadata, bundle.path)

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Engine outputs of adapter feeds, cast to each engine input's dtype."""
        dtypes = {s.name: s.dtype for s in self.engine.inputs}
        return self.engine.run({k: v.astype(dtypes.get(k, v.dtype), copy=False) for k, v in feeds.items()})

    def predict(self, raw) -> np.ndarray:
        feeds, state = self.adapter.preprocess(raw)
        return self.adapter.postprocess(self.run(feeds), state)

    def predict_file(self, path: Path) -> np.ndarray:
        return self.predict(self.adapter.read(Path(path)))


def infer_files(bundle_dir: Path, inputs: list[Path], out_dir: Path | None = None, precision: str = "fp32",
                backend: str = "auto", echo: Callable[[str], None] | None = None) -> list[Path]:
    """Run the bundle on every file of ``inputs``; the adapter writes each result next to it (or into ``out_dir``).

    ``echo`` (e.g. ``print``) receives one line per file as soon as it is done: the adapter's
    :meth:`~deploy.tasks.base.TaskAdapter.summary` of the result (keyword spotting: the top-k
    keywords with their scores) and ``-> <written file>``, or the written file alone.
    """
    from tqdm import tqdm  # noqa: PLC0415

    bundle = load_bundle(bundle_dir)
    pred = Predictor(bundle, open_engine(bundle, precision, backend))
    log.info("bundle %s (%s, %s, task %s)", bundle.path, precision, pred.engine.backend, pred.adapter.kind)
    written: list[Path] = []
    for path in tqdm([Path(p) for p in inputs], desc="infer", unit="file"):
        result = pred.predict_file(path)
        dest = pred.adapter.write(result, path, out_dir)
        if dest in written:
            log.warning("%s: overwrites the result of an earlier input of this run (same file stem)", dest)
        written.append(dest)
        if echo is not None:
            line = pred.adapter.summary(result, path)
            echo(str(dest) if line is None else f"{line} -> {dest}")
    return written
