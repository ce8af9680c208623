"""TensorRT engines from a deploy bundle: build (strongly typed, cached) and run. ``tensorrt`` is optional.

``tensorrt`` needs an NVIDIA driver to install (DESIGN.md 6), so it is imported lazily: this
module imports everywhere, and every entry point calls :func:`import_tensorrt`, which raises
:class:`TensorRTUnavailable` with what to install when it is missing.

Build (TensorRT Python API, "Developer Guide: The Python API" and "Working with Quantized
Types: Explicit Quantization", https://docs.nvidia.com/deeplearning/tensorrt/latest/):

- ``Builder.create_network`` with ``NetworkDefinitionCreationFlag.STRONGLY_TYPED``: tensor
  types come from the ONNX graph (fp32 model, fp16 model with fp32 I/O casts, int8 QDQ
  model), never from builder precision flags. That is the only mode TensorRT 11 keeps: it
  removes the builder precision flags (FP16/INT8) and the implicit INT8 calibrators, which
  10.1+ deprecates; on 11 networks are strongly typed by default, so the flag is optional
  there and required on 10 (:func:`network_flags`).
- ``OnnxParser.parse``; parser errors are raised with the node they name.
- one optimization profile with min = opt = max = each named input's static shape;
- a timing cache file (``IBuilderConfig.create_timing_cache`` / ``set_timing_cache``),
  reused across builds on the same TensorRT + GPU;
- ``Builder.build_serialized_network`` -> engine bytes, cached as
  ``<cache>/<model>-<key>.engine``; the key hashes the ONNX file's sha256, the TensorRT
  version, the GPU name and the L4T release (``/etc/nv_tegra_release`` on Jetson), because
  engines are not portable across any of those.

Run: ``Runtime.deserialize_cuda_engine``, ``IExecutionContext.set_input_shape``,
``set_tensor_address`` and ``execute_async_v3`` (the TensorRT 10 name-based I/O API; the
binding-index API is gone in 10). Device buffers are torch CUDA tensors when torch with
CUDA is importable (x86 GPU hosts), else ``cuda-python`` (``cudart``) allocations (the
torch-free Jetson image).
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import time
from pathlib import Path

import numpy as np

from .runtime import TensorSpec, run_batches

log = logging.getLogger("edgedistill.deploy")

WORKSPACE_BYTES = 1 << 30
L4T_RELEASE_FILE = Path("/etc/nv_tegra_release")


class TensorRTUnavailable(ImportError):
    """tensorrt (or a CUDA device / buffer library) is not available here."""


def import_tensorrt():
    """The ``tensorrt`` module; :class:`TensorRTUnavailable` naming what to install otherwise."""
    try:
        import tensorrt as trt  # noqa: PLC0415
    except ImportError as e:
        raise TensorRTUnavailable(
            "TensorRT is not installed: `pip install edgedistill[tensorrt]` on a machine with an NVIDIA driver, "
            "or use the Jetson image (docker/jetson.Dockerfile, JetPack 6 ships TensorRT 10.3). "
            f"ONNX Runtime runs the bundle without it. ({e})"
        ) from e
    return trt


def trt_major(trt) -> int:
    return int(trt.__version__.split(".")[0])


def network_flags(trt) -> int:
    """Creation flags of a strongly typed network for TensorRT 10 (flag required) or 11+ (default)."""
    major = trt_major(trt)
    if major < 10:
        raise TensorRTUnavailable(f"TensorRT {trt.__version__} is too old: need 10.x (JetPack 6: 10.3) or newer")
    flag = getattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED", None)
    if flag is None:
        if major >= 11:
            return 0  # strongly typed is the only mode
        raise TensorRTUnavailable(f"TensorRT {trt.__version__} lacks STRONGLY_TYPED networks")
    return 1 << int(flag)


def l4t_release() -> str | None:
    """``R36.4.0``-style L4T release from /etc/nv_tegra_release (Jetson), None elsewhere."""
    if not L4T_RELEASE_FILE.is_file():
        return None
    text = L4T_RELEASE_FILE.read_text(errors="replace").splitlines()[0] if L4T_RELEASE_FILE.stat().st_size else ""
    m = re.search(r"R(\d+)\s*\(release\),\s*REVISION:\s*([\d.]+)", text)
    return f"R{m.group(1)}.{m.group(2)}" if m else text.strip() or None


def _cudart():
    try:
        from cuda.bindings import runtime as cudart  # noqa: PLC0415 (cuda-python >= 12.6)
    except ImportError:
        try:
            from cuda import cudart  # noqa: PLC0415 (older cuda-python)
        except ImportError:
            return None
    return cudart


def _torch_cuda():
    try:
        import torch  # noqa: PLC0415
    except ImportError:
        return None
    return torch if torch.cuda.is_available() else None


def cuda_device_name() -> str | None:
    """Name of CUDA device 0 (torch or cuda-python), None when there is none."""
    torch = _torch_cuda()
    if torch is not None:
        return torch.cuda.get_device_name(0)
    cudart = _cudart()
    if cudart is None:
        return None
    err, props = cudart.cudaGetDeviceProperties(0)
    if int(err) != 0:
        return None
    name = props.name
    return (name.decode(errors="replace") if isinstance(name, bytes) else str(name)).rstrip("\x00")


def engine_cache_key(onnx_sha256: str, trt_version: str, gpu: str, l4t: str | None) -> str:
    """Hash of everything an engine depends on (engines are not portable across any of these)."""
    text = "|".join([onnx_sha256, trt_version, gpu, l4t or "no-l4t"])
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def build_serialized(onnx_path: Path, shapes: dict[str, tuple[int, ...]], timing_cache: Path,
                     workspace_bytes: int = WORKSPACE_BYTES) -> bytes:
    """Engine bytes of a strongly typed network parsed from ``onnx_path`` (static profile: ``shapes`` by input name)."""
    trt = import_tensorrt()
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(network_flags(trt))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(Path(onnx_path).read_bytes()):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RuntimeError(f"TensorRT {trt.__version__} could not parse {onnx_path}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_bytes)
    cache = config.create_timing_cache(timing_cache.read_bytes() if timing_cache.is_file() else b"")
    config.set_timing_cache(cache, ignore_mismatch=False)
    profile = builder.create_optimization_profile()
    for name, shape in shapes.items():
        profile.set_shape(name, tuple(shape), tuple(shape), tuple(shape))
    config.add_optimization_profile(profile)
    t0 = time.perf_counter()
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise RuntimeError(f"TensorRT {trt.__version__} failed to build an engine from {onnx_path} (see log above)")
    log.info("built TensorRT engine in %.1f s", time.perf_counter() - t0)
    timing_cache.parent.mkdir(parents=True, exist_ok=True)
    from modalities.fileio import atomic_write_bytes  # noqa: PLC0415

    atomic_write_bytes(timing_cache, bytes(config.get_timing_cache().serialize()))
    return bytes(serialized)


def build_engine(bundle, precision: str = "fp32", cache_dir: Path | None = None, force: bool = False) -> Path:
    """The cached engine file for ``bundle``'s ``precision`` model, built on this device when absent.

    The cache folder is ``cache_dir``, else ``$EDGEDISTILL_ENGINE_CACHE`` (the Jetson image's
    mounted ``/cache``), else ``<bundle>/cache``.
    """
    from modalities.fileio import atomic_write_bytes  # noqa: PLC0415

    trt = import_tensorrt()
    gpu = cuda_device_name()
    if gpu is None:
        raise TensorRTUnavailable("no CUDA device found (need torch with CUDA or cuda-python, and an NVIDIA GPU)")
    onnx_path = bundle.model_path(precision)
    sha = bundle.metadata["files"][onnx_path.name]
    cache = Path(cache_dir or os.environ.get("EDGEDISTILL_ENGINE_CACHE") or bundle.cache_dir())
    key = engine_cache_key(sha, trt.__version__, gpu, l4t_release())
    engine_path = cache / f"{onnx_path.stem}-{key}.engine"
    if engine_path.is_file() and not force:
        log.info("TensorRT engine cache hit: %s", engine_path)
        return engine_path
    safe_gpu = re.sub(r"[^A-Za-z0-9]+", "_", gpu)
    timing = cache / f"timing-trt{trt.__version__}-{safe_gpu}.cache"
    log.info("building TensorRT %s engine for %s on %s (L4T %s)", trt.__version__, onnx_path.name, gpu, l4t_release())
    data = build_serialized(onnx_path, {s["name"]: tuple(s["shape"]) for s in bundle.inputs}, timing)
    cache.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(engine_path, data)
    return engine_path


class _Buffers:
    """Device buffers + a stream: torch CUDA tensors when available, else cuda-python."""

    def __init__(self):
        self.torch = _torch_cuda()
        self.cudart = None if self.torch is not None else _cudart()
        if self.torch is None and self.cudart is None:
            raise TensorRTUnavailable("need torch with CUDA or cuda-python (`pip install cuda-python`) for device buffers")
        if self.torch is not None:
            self.stream = self.torch.cuda.Stream()
            self.handle = self.stream.cuda_stream
        else:
            self.stream = self._check(self.cudart.cudaStreamCreate())
            self.handle = int(self.stream)

    def _check(self, result):
        err, *rest = result if isinstance(result, tuple) else (result,)
        if int(err) != 0:
            raise RuntimeError(f"CUDA runtime error {err}")
        return rest[0] if rest else None

    def alloc(self, shape: tuple[int, ...], dtype: np.dtype):
        if self.torch is not None:
            tdt = {np.dtype(np.float32): self.torch.float32, np.dtype(np.float16): self.torch.float16,
                   np.dtype(np.int32): self.torch.int32, np.dtype(np.int64): self.torch.int64,
                   np.dtype(np.uint8): self.torch.uint8, np.dtype(np.bool_): self.torch.bool}[np.dtype(dtype)]
            t = self.torch.empty(shape, dtype=tdt, device="cuda")
            return t, t.data_ptr()
        nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
        ptr = self._check(self.cudart.cudaMalloc(nbytes))
        return (ptr, nbytes), int(ptr)

    def upload(self, buf, x: np.ndarray) -> None:
        if self.torch is not None:
            with self.torch.cuda.stream(self.stream):
                buf.copy_(self.torch.from_numpy(x), non_blocking=False)
        else:
            ptr, nbytes = buf
            self._check(self.cudart.cudaMemcpyAsync(ptr, x.ctypes.data, nbytes,
                                                    self.cudart.cudaMemcpyKind.cudaMemcpyHostToDevice, self.stream))

    def download(self, buf, out: np.ndarray) -> np.ndarray:
        if self.torch is not None:
            self.stream.synchronize()
            return buf.cpu().numpy()
        ptr, nbytes = buf
        self._check(self.cudart.cudaMemcpyAsync(out.ctypes.data, ptr, nbytes,
                                                self.cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost, self.stream))
        self.synchronize()
        return out

    def synchronize(self) -> None:
        if self.torch is not None:
            self.stream.synchronize()
        else:
            self._check(self.cudart.cudaStreamSynchronize(self.stream))


class TrtEngine:
    """A deserialized engine with static named inputs and outputs: ``run({name: array}) -> {name: array}``."""

    backend = "tensorrt"

    def __init__(self, engine_path: Path):
        trt = import_tensorrt()
        self.trt = trt
        self.logger = trt.Logger(trt.Logger.WARNING)
        self.runtime = trt.Runtime(self.logger)
        self.engine = self.runtime.deserialize_cuda_engine(Path(engine_path).read_bytes())
        if self.engine is None:
            raise RuntimeError(f"{engine_path}: TensorRT {trt.__version__} could not deserialize it (stale cache? delete it)")
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        ins = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        outs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        if not ins or not outs:
            raise ValueError(f"{engine_path}: expected at least one input and one output, got {ins} / {outs}")

        def dtype(n):
            return np.dtype(trt.nptype(self.engine.get_tensor_dtype(n)))

        self.inputs = [TensorSpec(n, tuple(self.engine.get_tensor_shape(n)), dtype(n)) for n in ins]
        for spec in self.inputs:
            self.context.set_input_shape(spec.name, spec.shape)
        self.outputs = [TensorSpec(n, tuple(self.context.get_tensor_shape(n)), dtype(n)) for n in outs]
        self.buffers = _Buffers()
        self._bufs = {}
        for spec in self.inputs + self.outputs:
            buf, ptr = self.buffers.alloc(spec.shape, spec.dtype)
            self._bufs[spec.name] = buf
            self.context.set_tensor_address(spec.name, ptr)

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Outputs of ``feeds`` (checked; several stacked engine batches run one at a time, see ``run_batches``)."""
        return run_batches(self._run_one, feeds, self.inputs)

    def _run_one(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        for name, x in feeds.items():
            self.buffers.upload(self._bufs[name], x)
        if not self.context.execute_async_v3(self.buffers.handle):
            raise RuntimeError("TensorRT execute_async_v3 failed")
        return {o.name: self.buffers.download(self._bufs[o.name], np.empty(o.shape, o.dtype)) for o in self.outputs}

    def time_device(self, iters: int) -> list[float]:
        """Per-iteration latency (ms) of execute_async_v3 + synchronize, input already on the device."""
        times = []
        for _ in range(iters):
            t0 = time.perf_counter()
            self.context.execute_async_v3(self.buffers.handle)
            self.buffers.synchronize()
            times.append((time.perf_counter() - t0) * 1e3)
        return times


def main(argv: list[str] | None = None) -> int:
    """``python -m deploy.tensorrt build BUNDLE [--precision P] [--cache DIR] [--force]`` (the image entrypoint)."""
    import argparse  # noqa: PLC0415

    from .bundle import load_bundle  # noqa: PLC0415

    p = argparse.ArgumentParser(prog="python -m deploy.tensorrt", description="Build/cache a TensorRT engine of a bundle.")
    sub = p.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build", help="build the engine on this device (or report the cache hit)")
    b.add_argument("bundle", type=Path)
    b.add_argument("--precision", default="fp32", choices=["fp32", "fp16", "int8"])
    b.add_argument("--cache", type=Path, help="engine cache folder (default $EDGEDISTILL_ENGINE_CACHE or BUNDLE/cache)")
    b.add_argument("--force", action="store_true", help="rebuild even when cached")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    print(build_engine(load_bundle(args.bundle), args.precision, args.cache, args.force))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
