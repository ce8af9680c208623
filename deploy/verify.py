"""Checks that an exported model computes what PyTorch computes, and how accurate each precision is.

Parity (DESIGN.md 6: "verify every export against PyTorch with ONNX Runtime"): the same
real, pre-processed held-out samples go through the PyTorch module and the ONNX model;
for every named output we report (worst case over outputs and samples)

- ``max_abs_err``  = max over samples and elements of |ort - torch|;
- ``max_rel_err``  = max over samples of max|ort - torch| / max|torch|  (the gate: a
  per-element ratio explodes on logits near 0, a per-tensor scale does not);
- ``max_elem_rel_err`` = max |ort - torch| / (|torch| + 1e-3 * max|torch|), for information;
- ``argmax_agreement`` = fraction of predictions (pixels, clips: argmax over axis 1 of a
  (B, K, ...) output) whose class is the same; NaN for an output without a class axis.

fp32 must satisfy ``max_rel_err <= 1e-4`` or the export fails.

Accuracy: the task adapter's metric (``deploy.tasks``) on the bundle's held-out samples.

``edgedistill verify BUNDLE`` (:func:`verify_bundle`) re-checks a bundle from its own files
only: every sha256, fp32 parity against the bundle's PyTorch weights (when torch is
installed), and each precision's held-out metric against the one recorded at export.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

log = logging.getLogger("edgedistill.deploy")

FP32_REL_TOLERANCE = 1e-4


class ParityError(ValueError):
    """The exported model disagrees with PyTorch beyond the tolerance (a ValueError so CLIs print it)."""


def compare_outputs(actual: np.ndarray, reference: np.ndarray) -> dict[str, float]:
    """Error statistics of one output pair (same shape), as defined in the module docstring."""
    if actual.shape != reference.shape:
        raise ParityError(f"output shape {actual.shape} != PyTorch {reference.shape}")
    a, b = actual.astype(np.float64), reference.astype(np.float64)
    diff = np.abs(a - b)
    scale = float(np.abs(b).max())
    return {
        "max_abs_err": float(diff.max()),
        "max_rel_err": float(diff.max() / max(scale, 1e-12)),
        "max_elem_rel_err": float((diff / (np.abs(b) + 1e-3 * max(scale, 1e-12))).max()),
        "argmax_agreement": float((a.argmax(1) == b.argmax(1)).mean()) if a.ndim >= 2 else float("nan"),
    }


def worst_case(stats: list[dict]) -> dict:
    """The worst of several :func:`compare_outputs` results."""
    worst = {"max_abs_err": 0.0, "max_rel_err": 0.0, "max_elem_rel_err": 0.0, "argmax_agreement": 1.0}
    for st in stats:
        for k in ("max_abs_err", "max_rel_err", "max_elem_rel_err"):
            worst[k] = max(worst[k], st[k]) if not np.isnan(st[k]) else float("nan")
        if not np.isnan(st["argmax_agreement"]):
            worst["argmax_agreement"] = min(worst["argmax_agreement"], st["argmax_agreement"])
    return worst


def torch_parity(torch_model, run_engine: Callable[[dict], dict], feeds: Sequence[dict[str, np.ndarray]]) -> dict:
    """Worst-case :func:`compare_outputs` over every named output of every sample (``feeds``, batch 1)."""
    import torch  # noqa: PLC0415
    from tqdm import tqdm  # noqa: PLC0415

    stats = []
    for f in tqdm(feeds, desc="parity ORT vs torch", unit="sample"):
        with torch.no_grad():
            ref = torch_model(*(torch.from_numpy(v) for v in f.values()))
        ref = ref if isinstance(ref, (tuple, list)) else (ref,)
        out = run_engine(f)
        if len(out) != len(ref):
            raise ParityError(f"the ONNX model has {len(out)} outputs, PyTorch {len(ref)}")
        stats += [compare_outputs(o, r.numpy()) for o, r in zip(out.values(), ref, strict=True)]
    return {**worst_case(stats), "samples": len(feeds)}


def check_fp32_parity(stats: dict, tolerance: float = FP32_REL_TOLERANCE) -> None:
    if not stats["max_rel_err"] <= tolerance:  # also catches NaN
        raise ParityError(
            f"ONNX Runtime vs PyTorch: max relative error {stats['max_rel_err']:.3g} > {tolerance:g} "
            f"(max abs {stats['max_abs_err']:.3g}) on {stats['samples']} held-out samples; the export is wrong"
        )


def verify_bundle(bundle_dir: str | Path, tolerance: float = FP32_REL_TOLERANCE, metric_tolerance: float = 1e-6) -> dict:
    """Re-verify a bundle from its own files; raises :class:`ParityError` on any disagreement.

    Checks every file's sha256 (``load_bundle``), fp32 parity ONNX Runtime vs the bundle's
    PyTorch weights on the held-out samples (skipped, and said so, without torch), and that
    each precision's held-out metric equals the one recorded in metadata.json.
    """
    from .bundle import load_bundle  # noqa: PLC0415
    from .runtime import OrtEngine  # noqa: PLC0415
    from .tasks import adapter_for, task_module  # noqa: PLC0415

    bundle = load_bundle(bundle_dir)
    meta = bundle.metadata
    adapter = adapter_for(meta, bundle.path)
    held = adapter.samples("heldout")
    out: dict = {"bundle": str(bundle.path), "hashes": f"{len(meta['files'])} files verified", "precisions": {}}
    try:
        import torch  # noqa: F401, PLC0415

        module = task_module(meta["task"]["kind"]).torch_module(bundle.torch_weights(), meta)
        feeds = [adapter.preprocess(adapter.read(s.path))[0] for s in held]
        stats = torch_parity(module, OrtEngine(bundle.model_path("fp32")).run, feeds)
        check_fp32_parity(stats, tolerance)
        out["parity_fp32"] = stats
    except ImportError as e:
        out["parity_fp32"] = f"skipped: {e}"
    for prec, info in meta["precisions"].items():
        value = adapter.metric(OrtEngine(bundle.model_path(prec)).run, held)["value"]
        recorded = info["heldout_metric"]
        if not abs(value - recorded) <= metric_tolerance:
            raise ParityError(f"{bundle.model_path(prec)}: held-out {meta['metrics']['heldout']['metric']} {value:.4f} "
                              f"differs from the {recorded:.4f} recorded at export")
        out["precisions"][prec] = value
        log.info("%s: held-out %s %.2f (recorded %.2f)", prec, meta["metrics"]["heldout"]["metric"], value, recorded)
    return out
