"""``edgedistill doctor``: what this machine can do, in one table."""

from __future__ import annotations

import importlib
import os
import shutil
import sys
import warnings
from importlib import metadata


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def spconv_algorithm() -> tuple[str, str]:
    """(algorithm, reason): spconv's implicit GEMM needs CUDA; on CPU only Native runs."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # spconv uses deprecated torch.cuda.amp
            spconv = importlib.import_module("spconv.pytorch")
    except Exception as e:  # ImportError, or a CUDA library load error
        return "unavailable", f"spconv does not import: {e.__class__.__name__}: {e}"
    import torch

    if torch.cuda.is_available():
        algo, device, why = spconv.ConvAlgo.MaskImplicitGemm, "cuda", "CUDA device present"
    else:
        algo, device, why = spconv.ConvAlgo.Native, "cpu", "no CUDA device (implicit GEMM needs CUDA)"
    # Prove it: one tiny submanifold convolution with that algorithm on that device.
    try:
        conv = spconv.SubMConv3d(1, 2, 3, algo=algo).to(device)
        x = spconv.SparseConvTensor(
            torch.ones(2, 1, device=device), torch.tensor([[0, 0, 0, 0], [0, 0, 0, 1]], dtype=torch.int32, device=device),
            spatial_shape=[4, 4, 4], batch_size=1,
        )
        conv(x)
    except Exception as e:
        return f"{algo.name} (fails)", f"{e.__class__.__name__}: {e}"
    return f"ConvAlgo.{algo.name}", f"{why}; test convolution ran"


def checks() -> list[tuple[str, str]]:
    import torch

    rows: list[tuple[str, str]] = [("python", sys.version.split()[0]), ("torch", torch.__version__)]
    if torch.cuda.is_available():
        names = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        rows.append(("gpu", ", ".join(names)))
        rows.append(("bf16", str(torch.cuda.is_bf16_supported())))
    else:
        rows.append(("gpu", "none (CPU only)"))
    rows.append(("cpu cores", str(os.cpu_count())))
    algo, why = spconv_algorithm()
    spconv_dist = next((d for d in ("spconv-cu120", "spconv-cu126", "spconv") if _version(d)), None)
    rows.append(("spconv", f"{spconv_dist} {_version(spconv_dist)}" if spconv_dist else "not installed"))
    rows.append(("spconv algorithm", f"{algo} ({why})"))
    rows.append(("tensorrt", _version("tensorrt") or "not installed (optional extra; Jetson/GPU hosts)"))
    for dist in ("onnx", "onnxruntime", "ray", "open3d", "nuscenes-devkit"):
        rows.append((dist, _version(dist) or "not installed"))
    free = shutil.disk_usage(".").free / 2**30
    rows.append(("free disk (cwd)", f"{free:.1f} GiB"))
    return rows


def print_report() -> None:
    rows = checks()
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        print(f"{k:<{width}}  {v}")
