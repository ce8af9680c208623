"""Library versions recorded in every manifest, so a result can be traced to its stack."""

from __future__ import annotations

import platform
import sys
from functools import lru_cache
from importlib import metadata

TRACKED = (
    "edgedistill", "torch", "torchvision", "torchaudio", "numpy", "scikit-image", "open3d",
    "ray", "pydantic", "spconv-cu120", "spconv-cu126", "onnx", "onnxruntime", "tensorrt",
)


@lru_cache(maxsize=1)
def library_versions() -> dict[str, str]:
    out = {"python": sys.version.split()[0], "platform": platform.platform()}
    for dist in TRACKED:
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return out
