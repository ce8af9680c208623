"""TensorRT module: imports without tensorrt and says what is missing; real builds where TensorRT exists."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from deploy import tensorrt as dtrt

HAVE_TRT = importlib.util.find_spec("tensorrt") is not None


@pytest.mark.skipif(HAVE_TRT, reason="tensorrt is installed here")
def test_missing_tensorrt_is_a_clear_error(exported_bundle):
    from deploy.bundle import load_bundle

    with pytest.raises(dtrt.TensorRTUnavailable, match=r"TensorRT is not installed: `pip install edgedistill\[tensorrt\]`"):
        dtrt.build_engine(load_bundle(exported_bundle))
    with pytest.raises(ImportError, match="ONNX Runtime runs the bundle without it"):
        dtrt.TrtEngine("nowhere.engine")


def test_engine_cache_key_changes_with_every_component():
    base = dtrt.engine_cache_key("abc", "10.3.0", "Orin", "R36.4.0")
    assert base == dtrt.engine_cache_key("abc", "10.3.0", "Orin", "R36.4.0")
    others = {dtrt.engine_cache_key("abd", "10.3.0", "Orin", "R36.4.0"),
              dtrt.engine_cache_key("abc", "10.4.0", "Orin", "R36.4.0"),
              dtrt.engine_cache_key("abc", "10.3.0", "H100", "R36.4.0"),
              dtrt.engine_cache_key("abc", "10.3.0", "Orin", None)}
    assert base not in others and len(others) == 4


def test_l4t_release_is_parsed(tmp_path, monkeypatch):
    f = tmp_path / "nv_tegra_release"
    f.write_text("# R36 (release), REVISION: 4.0, GCID: 37537400, BOARD: generic, EABI: aarch64, DATE: Fri Sep 13\n")
    monkeypatch.setattr(dtrt, "L4T_RELEASE_FILE", f)
    assert dtrt.l4t_release() == "R36.4.0"
    monkeypatch.setattr(dtrt, "L4T_RELEASE_FILE", tmp_path / "absent")
    assert dtrt.l4t_release() is None


class _FakeTrt:
    class NetworkDefinitionCreationFlag:
        STRONGLY_TYPED = 1


def test_network_flags_branch_on_major_version():
    fake = _FakeTrt()
    fake.__version__ = "10.3.0"
    assert dtrt.network_flags(fake) == 2
    fake11 = type("T11", (), {"NetworkDefinitionCreationFlag": type("F", (), {})})()
    fake11.__version__ = "11.0.0"
    assert dtrt.network_flags(fake11) == 0  # strongly typed is the only mode on 11
    fake.__version__ = "8.6.1"
    with pytest.raises(dtrt.TensorRTUnavailable, match="too old"):
        dtrt.network_flags(fake)


@pytest.mark.tensorrt
@pytest.mark.skipif(not HAVE_TRT, reason="tensorrt not installed (needs an NVIDIA driver)")
@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
def test_tensorrt_engine_matches_onnxruntime(exported_bundle, precision, tmp_path):
    from deploy.bundle import load_bundle
    from deploy.runtime import OrtEngine

    if dtrt.cuda_device_name() is None:
        pytest.skip("no CUDA device")
    from deploy.tasks import adapter_for

    bundle = load_bundle(exported_bundle)
    path = dtrt.build_engine(bundle, precision, cache_dir=tmp_path)
    assert dtrt.build_engine(bundle, precision, cache_dir=tmp_path) == path  # cache hit
    assert list(tmp_path.glob("timing-*.cache"))
    engine, ort = dtrt.TrtEngine(path), OrtEngine(bundle.model_path(precision))
    # The same named, static inputs and outputs as ONNX Runtime's, as metadata.json declares them.
    assert [(s.name, s.shape, s.dtype) for s in engine.inputs] == [(s.name, s.shape, s.dtype) for s in ort.inputs]
    assert [(s.name, s.shape, s.dtype) for s in engine.outputs] == [(s.name, s.shape, s.dtype) for s in ort.outputs]
    assert [s.name for s in engine.inputs] == [s["name"] for s in bundle.inputs] == ["range_image"]
    assert [s.name for s in engine.outputs] == [s["name"] for s in bundle.outputs] == ["logits"]
    # A real held-out sample of the bundle (logits that vary), pre-processed by its adapter.
    adapter = adapter_for(bundle.metadata, bundle.path)
    feeds = adapter.preprocess(adapter.read(adapter.samples("heldout")[0].path))[0]
    got, ref = engine.run(feeds), ort.run(feeds)
    assert list(got) == list(ref) == ["logits"]
    tol = {"fp32": 1e-3, "fp16": 2e-2, "int8": 0.1}[precision]
    assert np.abs(got["logits"] - ref["logits"]).max() / np.abs(ref["logits"]).max() < tol
    x = feeds["range_image"]
    with pytest.raises(ValueError, match="expected shape"):
        engine.run({"range_image": x[:, :, :8]})
    with pytest.raises(ValueError, match=r"expected the names \['range_image'\]"):
        engine.run({"image": x})
    with pytest.raises(ValueError, match=r"expected the names \['range_image'\]"):
        engine.run({"range_image": x, "ring": x})


class _Recorder:
    """A stand-in for the parts of the TensorRT 10 Python API that build_engine calls, recording them."""

    __version__ = "10.3.0"

    def __init__(self):
        self.calls = []
        rec = self

        class Logger:
            WARNING = 2

            def __init__(self, level):
                pass

        class NetworkDefinitionCreationFlag:
            STRONGLY_TYPED = 1

        class MemoryPoolType:
            WORKSPACE = 0

        class Cache:
            def __init__(self, data):
                self.data = data

            def serialize(self):
                return b"timing:" + self.data

        class Profile:
            def set_shape(self, name, lo, opt, hi):
                rec.calls.append(("set_shape", name, tuple(lo), tuple(opt), tuple(hi)))

        class Config:
            def set_memory_pool_limit(self, pool, size):
                rec.calls.append(("workspace", size))

            def create_timing_cache(self, data):
                rec.calls.append(("timing_cache_in", bytes(data)))
                return Cache(bytes(data))

            def set_timing_cache(self, cache, ignore_mismatch):
                self.cache = cache

            def get_timing_cache(self):
                return self.cache

            def add_optimization_profile(self, p):
                rec.calls.append(("profile",))

        class Parser:
            num_errors = 0

            def __init__(self, network, logger):
                pass

            def parse(self, data):
                rec.calls.append(("parse", len(data)))
                return True

        class Builder:
            def __init__(self, logger):
                pass

            def create_network(self, flags):
                rec.calls.append(("network_flags", flags))
                return object()

            def create_builder_config(self):
                return Config()

            def create_optimization_profile(self):
                return Profile()

            def build_serialized_network(self, network, config):
                rec.calls.append(("build",))
                return b"ENGINE"

        self.Logger, self.Builder, self.OnnxParser = Logger, Builder, Parser
        self.NetworkDefinitionCreationFlag, self.MemoryPoolType = NetworkDefinitionCreationFlag, MemoryPoolType


def test_build_engine_flow_with_a_recording_tensorrt(exported_bundle, tmp_path, monkeypatch):
    """Orchestration only (no real TensorRT): strongly typed, static profile, timing cache, engine cache hit."""
    from deploy.bundle import load_bundle

    fake = _Recorder()
    monkeypatch.setattr(dtrt, "import_tensorrt", lambda: fake)
    monkeypatch.setattr(dtrt, "cuda_device_name", lambda: "Orin (fake)")
    bundle = load_bundle(exported_bundle)
    path = dtrt.build_engine(bundle, "int8", cache_dir=tmp_path)
    assert path.read_bytes() == b"ENGINE" and path.name.startswith("model_int8-")
    shape = tuple(bundle.inputs[0]["shape"])
    assert ("network_flags", 2) in fake.calls and ("build",) in fake.calls
    assert ("set_shape", "range_image", shape, shape, shape) in fake.calls
    timing = next(tmp_path.glob("timing-trt10.3.0-Orin_fake_.cache"))
    assert timing.read_bytes() == b"timing:"
    fake.calls.clear()
    assert dtrt.build_engine(bundle, "int8", cache_dir=tmp_path) == path and fake.calls == []  # cache hit
    dtrt.build_engine(bundle, "int8", cache_dir=tmp_path, force=True)
    assert ("timing_cache_in", b"timing:") in fake.calls  # the timing cache is fed back
    monkeypatch.setenv("EDGEDISTILL_ENGINE_CACHE", str(tmp_path / "env"))
    assert dtrt.build_engine(bundle, "fp32").parent == tmp_path / "env"


def test_build_serialized_sets_a_static_profile_for_every_named_input(tmp_path, monkeypatch):
    """Each input name gets min = opt = max = its own shape (a multi-input graph, e.g. a future task)."""
    fake = _Recorder()
    monkeypatch.setattr(dtrt, "import_tensorrt", lambda: fake)
    onnx_path = tmp_path / "m.onnx"
    onnx_path.write_bytes(b"onnx")
    data = dtrt.build_serialized(onnx_path, {"range_image": [1, 6, 16, 1808], "mask": (1, 1, 16, 1808)},
                                 tmp_path / "timing.cache")
    assert data == b"ENGINE" and ("parse", 4) in fake.calls
    shapes = [c for c in fake.calls if c[0] == "set_shape"]
    assert shapes == [("set_shape", "range_image", (1, 6, 16, 1808), (1, 6, 16, 1808), (1, 6, 16, 1808)),
                      ("set_shape", "mask", (1, 1, 16, 1808), (1, 1, 16, 1808), (1, 1, 16, 1808))]
    assert fake.calls.count(("profile",)) == 1
