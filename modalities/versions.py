"""Library versions recorded in manifests and bundles, so a result can be traced to its stack."""

from __future__ import annotations

import platform
from functools import lru_cache
from importlib import metadata

# What a pipeline run records; a deploy bundle passes its own, shorter list.
TRACKED = (
    "edgedistill", "torch", "torchvision", "torchaudio", "numpy", "scikit-image", "open3d",
    "ray", "pydantic", "spconv-cu120", "spconv-cu126", "onnx", "onnxruntime", "tensorrt", "opencv-contrib-python-headless",
    "soundfile", "scikit-learn",
)


@lru_cache(maxsize=8)
def library_versions(dists: tuple[str, ...] = TRACKED) -> dict[str, str]:
    """Python, platform and the version of every installed distribution in ``dists``."""
    out = {"python": platform.python_version(), "platform": platform.platform()}
    for dist in dists:
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return out
