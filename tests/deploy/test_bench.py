"""Benchmark: MAC/param counts against an independent count, and a tiny run writing every artefact."""

from __future__ import annotations

import json

import pytest

from deploy.bench import count_params_macs, run_bench
from deploy.bundle import load_bundle


def test_params_and_macs_match_torch_forward_hooks(exported_bundle, tiny_run):
    """Oracle: sum over the torch model's Conv2d layers of out_elements * in/groups * kH * kW."""
    import torch

    from deploy.model import load_range_segmenter
    from deploy.sidecar import read_sidecar

    side_path = tiny_run / "evaluate" / "models" / "slidr_range_50pct.json"
    side = read_sidecar(side_path)
    model = load_range_segmenter(side_path.parent / side["weights"], side["student"], side["student_kwargs"],
                                 side["num_classes"])
    macs, params = [], []

    def hook(m, _inp, out):
        macs.append(out.numel() * m.in_channels // m.groups * m.kernel_size[0] * m.kernel_size[1])
        params.append(m.weight.numel() + m.out_channels)  # BN folds into a conv bias on export

    for m in model.modules():
        if isinstance(m, torch.nn.Conv2d):
            m.register_forward_hook(hook)
    shape = load_bundle(exported_bundle).inputs[0]["shape"]
    with torch.no_grad():
        model(torch.zeros(shape))
    expected_params = sum(params)  # only the convs on the forward path (the distillation head is not)
    got = count_params_macs(load_bundle(exported_bundle).model_path("fp32"))
    assert got["macs"] == sum(macs)
    assert got["params"] == expected_params


@pytest.mark.slow
def test_bench_writes_json_markdown_plot_and_keeps_bundle_valid(bundle_copy):
    out = run_bench(bundle_copy, batch=2, warmup=1, iters=2, threads=1)
    backends = {(r["backend"], r["precision"], r["batch"]) for r in out["results"]}
    assert {("torch eager", "fp32", 1), ("onnxruntime", "fp32", 1), ("onnxruntime", "int8", 2)} <= backends, out["skipped"]
    assert out["inputs"] == {"range_image": [1, 6, 16, 1808]}
    for r in out["results"]:
        assert r["p50_ms"] <= r["p90_ms"] <= r["p99_ms"] and r["throughput_scans_per_s"] > 0
    for name in ("bench.json", "bench.md", "bench.png"):
        assert (bundle_copy / "report" / name).stat().st_size > 0
    assert json.loads((bundle_copy / "report" / "bench.json").read_text())["machine"] in \
        (bundle_copy / "report" / "bench.md").read_text()
    meta = load_bundle(bundle_copy).metadata  # hashes refreshed, report files included
    assert "report/bench.png" in meta["files"]
    # The deployed model stays static batch 1.
    import onnx

    dims = [d.dim_value for d in onnx.load(str(bundle_copy / "model.onnx")).graph.input[0].type.tensor_type.shape.dim]
    assert dims[0] == 1


def test_bench_into_another_folder_leaves_a_read_only_bundle_untouched(bundle_copy, tmp_path):
    """The robot image mounts the bundle read-only: ``bench --out`` must write nothing into it."""
    import os

    from deploy.cli import main

    before = {p: p.read_bytes() for p in bundle_copy.rglob("*") if p.is_file()}
    assert main(["bench", str(bundle_copy), "--out", str(tmp_path / "bench"), "--iters", "2", "--warmup", "1",
                 "--batch", "1", "--backend", "onnxruntime"]) == 0
    assert sorted(p for p in bundle_copy.rglob("*") if p.is_file()) == sorted(before)  # no file added
    assert {p: p.read_bytes() for p in bundle_copy.rglob("*") if p.is_file()} == before
    out = json.loads((tmp_path / "bench" / "bench.json").read_text())
    assert {r["precision"] for r in out["results"]} == {"fp32", "fp16", "int8"} and os.path.getsize(tmp_path / "bench" / "bench.md")
