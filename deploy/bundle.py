"""The deploy bundle: a folder of ONNX models + ``metadata.json`` + ``report.md``, checked on load.

Layout (``edgedistill export RUN_DIR`` writes it to ``RUN_DIR/bundle/<model name>/``)::

    model.onnx            fp32, static shapes, opset 17: (1, C, H, W) range image -> (1, K, H, W) logits
    model_fp16.onnx       \\ added by ``edgedistill quantize`` (fp16 weights, fp32 I/O;
    model_int8.onnx       /  INT8 explicit QDQ calibrated on the run's labeled training scans)
    metadata.json         everything needed to pre/post-process and to trust the files (below)
    report.md             human-readable summary (parity, TensorRT op check, per-precision mIoU)
    report/               benchmark JSON / Markdown / PNG (``edgedistill bench``)
    cache/                TensorRT timing + engine cache (not hashed: device-specific, rebuilt)

``metadata.json`` records ``files``: the sha256 of every other file of the bundle (except
``cache/``). :func:`load_bundle` verifies each one and every required field before anything
is run, so a tampered or truncated file, or a metadata file from an older tool, is a clear
error naming the file or field rather than wrong labels on a robot. This module imports
no torch (it runs on the Jetson).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from modalities.fileio import atomic_write_json, sha256_file
from modalities.versions import library_versions as _library_versions

BUNDLE_LIBRARIES = ("numpy", "torch", "onnx", "onnxruntime", "tensorrt", "edgedistill")

FORMAT_VERSION = 1
CACHE_DIR = "cache"
PRECISION_FILES = {"fp32": "model.onnx", "fp16": "model_fp16.onnx", "int8": "model_int8.onnx"}

# Dotted paths that every metadata.json must hold; load_bundle names the first one missing.
REQUIRED_FIELDS: tuple[str, ...] = (
    "format_version",
    "model.name", "model.student", "model.student_kwargs", "model.num_classes", "model.classes",
    "inputs", "outputs",
    "preprocessing.channels", "preprocessing.means", "preprocessing.stds", "preprocessing.intensity_scale",
    "preprocessing.sensor", "preprocessing.image_height", "preprocessing.image_width",
    "preprocessing.width_multiple", "preprocessing.height_multiple", "preprocessing.unknown_label",
    "source.run_dir", "source.model_sidecar", "source.weights",
    "metrics", "precisions", "files", "versions",
)


class BundleError(ValueError):
    """A bundle that cannot be trusted or used: names the file or field and what to do."""


@dataclass
class Bundle:
    path: Path
    metadata: dict[str, Any]

    def model_path(self, precision: str = "fp32") -> Path:
        if precision not in self.metadata["precisions"]:
            have = sorted(self.metadata["precisions"])
            hint = " (run `edgedistill quantize` first)" if precision in PRECISION_FILES else ""
            raise BundleError(f"{self.path}: no {precision!r} model in this bundle; it has {have}{hint}")
        return self.path / self.metadata["precisions"][precision]["file"]

    @property
    def input_spec(self) -> dict:
        return self.metadata["inputs"][0]

    @property
    def output_spec(self) -> dict:
        return self.metadata["outputs"][0]

    def cache_dir(self) -> Path:
        return self.path / CACHE_DIR


def get_field(meta: dict, dotted: str) -> Any:
    """``meta["a"]["b"]`` for ``"a.b"``; :class:`KeyError` naming the dotted field when absent."""
    node: Any = meta
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            raise KeyError(dotted)
        node = node[part]
    return node


def hash_files(folder: Path) -> dict[str, str]:
    """sha256 of every file under ``folder`` (POSIX relative path -> hex) except metadata.json and cache/."""
    out = {}
    for p in sorted(folder.rglob("*")):
        rel = p.relative_to(folder).as_posix()
        if not p.is_file() or rel == "metadata.json" or rel.split("/")[0] == CACHE_DIR or p.name.startswith("."):
            continue
        out[rel] = sha256_file(p)
    return out


def write_metadata(folder: Path, meta: dict) -> dict:
    """Refresh ``meta["files"]`` from the folder's content and write metadata.json atomically."""
    meta = dict(meta)
    meta["files"] = hash_files(folder)
    atomic_write_json(folder / "metadata.json", meta)
    return meta


def load_bundle(path: str | Path, verify: bool = True) -> Bundle:
    """Read ``metadata.json``, check its required fields and (``verify``) every file's sha256.

    Raises:
        FileNotFoundError: no bundle there.
        BundleError: a required field is missing, a listed file is missing or its hash
            differs (the file is named), or the format version is newer than this tool.
    """
    folder = Path(path)
    meta_path = folder / "metadata.json"
    if not meta_path.is_file():
        raise FileNotFoundError(f"not a deploy bundle: {meta_path} not found (create one with `edgedistill export`)")
    try:
        meta = json.loads(meta_path.read_text())
    except json.JSONDecodeError as e:
        raise BundleError(f"{meta_path}: not valid JSON ({e}); re-export the bundle") from e
    for field in REQUIRED_FIELDS:
        try:
            get_field(meta, field)
        except KeyError:
            raise BundleError(f"{meta_path}: missing field '{field}'; re-export the bundle with `edgedistill export`") from None
    if meta["format_version"] > FORMAT_VERSION:
        raise BundleError(f"{meta_path}: format_version {meta['format_version']} is newer than this tool ({FORMAT_VERSION})")
    if verify:
        for rel, digest in meta["files"].items():
            f = folder / rel
            if not f.is_file():
                raise BundleError(f"{f}: listed in metadata.json but missing from the bundle")
            actual = sha256_file(f)
            if actual != digest:
                raise BundleError(
                    f"{f}: sha256 mismatch (metadata.json {digest[:12]}..., file {actual[:12]}...): the file was "
                    "modified or corrupted after export; re-export or restore it"
                )
    return Bundle(folder, meta)


def staging_folder(final: Path) -> Path:
    """An empty hidden sibling of ``final`` to write a bundle into before :func:`publish`."""
    final.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent))


def publish(staging: Path, final: Path) -> None:
    """Move a finished staging folder to ``final``, replacing an older bundle there."""
    if final.exists():
        old = final.with_name(f".{final.name}.old-{os.getpid()}")
        final.rename(old)
        staging.rename(final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        staging.rename(final)


def library_versions() -> dict[str, str]:
    """Versions of the libraries that produced / run a bundle (absent ones are skipped)."""
    return _library_versions(BUNDLE_LIBRARIES)
