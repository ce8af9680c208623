"""Helpers of the tests of the classification adapters (``keyword_spotting``, ``imu_activity``).

Each test file builds its own tiny fitted run (its data and oracle differ); what they share is the fit
of the small classifier, the run folder as the evaluate stage lays it out, and two checks whose steps
are the same for every classification bundle (bench includes pre-processing; verify catches a flipped label).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from deploy.bundle import load_bundle


def fit_classifier(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, steps: int,
                   batchnorm: type[torch.nn.Module]) -> torch.nn.Module:
    """``steps`` full-batch Adam steps of cross-entropy on (x, y), then the ``batchnorm`` layers' running
    statistics of the final weights (cumulative average); returns the model in eval mode."""
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors: extra threads only spin on a shared CI machine
    try:
        model.train()
        for _ in range(steps):
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
        with torch.no_grad():  # BatchNorm running statistics of the final weights (cumulative average)
            for m in model.modules():
                if isinstance(m, batchnorm):
                    m.reset_running_stats()
                    m.momentum = None
            model(x)
    finally:
        torch.set_num_threads(threads)
    return model.eval()


def write_models(run_dir: Path, name: str, model: torch.nn.Module, sidecar: dict) -> Path:
    """``run_dir/evaluate/models/<name>.{safetensors,json}`` as the evaluate stage writes them; the sidecar's path."""
    from safetensors.torch import save_file

    models = run_dir / "evaluate" / "models"
    models.mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(models / f"{name}.safetensors"))
    (models / f"{name}.json").write_text(json.dumps(sidecar, indent=1))
    return models / f"{name}.json"


def export_quantized(run: Path) -> Path:
    """The run's bundle with fp32, fp16 and int8 models."""
    from deploy.export import export_bundle
    from deploy.quantize import quantize_bundle

    path = export_bundle(run)
    quantize_bundle(path)
    return path


def assert_bench_end_to_end_includes_preprocess(bundle: Path, adapter_cls: type, out_dir: Path, monkeypatch) -> None:
    """A pre-processing made 30 ms slower makes the end-to-end rows >= 30 ms, while the engine-only rows stay below."""
    from deploy.bench import run_bench

    delay_s = 0.03
    slow = adapter_cls.preprocess

    def slower(self, raw):
        time.sleep(delay_s)
        return slow(self, raw)

    monkeypatch.setattr(adapter_cls, "preprocess", slower)
    out = run_bench(bundle, batch=1, warmup=1, iters=2, threads=1, backends=("onnxruntime",), out_dir=out_dir)
    for r in out["results"]:
        if r["backend"] == "onnxruntime end-to-end":
            assert r["p50_ms"] >= 1e3 * delay_s and "preprocess" in r["includes"]
        else:
            assert r["p50_ms"] < 1e3 * delay_s, r
    assert out["stages_ms"]["preprocess"]["p50_ms"] >= 1e3 * delay_s


def assert_verify_catches_a_flipped_label(bundle: Path, classes: list[str]) -> None:
    """A held-out label flipped (and re-hashed, so only the metric can notice): verify fails on the accuracy."""
    from deploy.bundle import write_metadata
    from deploy.verify import ParityError, verify_bundle

    meta = load_bundle(bundle).metadata
    target = bundle / meta["data"]["heldout"][0]["target"]
    ref = json.loads(target.read_text())
    other = (ref["class_index"] + 1) % len(classes)
    target.write_text(json.dumps({"label": classes[other], "class_index": other}))
    write_metadata(bundle, meta)
    with pytest.raises(ParityError, match="held-out accuracy"):
        verify_bundle(bundle)
