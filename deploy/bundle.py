"""The deploy bundle: a self-contained folder of ONNX models + data + ``metadata.json``, checked on load.

Layout (``edgedistill export RUN_DIR`` and the ``deploy`` stage both write it to
``RUN_DIR/deploy/<model name>/``)::

    model.onnx            fp32, static shapes, opset 17, named inputs -> named outputs
    model_fp16.onnx       \\ added by ``edgedistill quantize`` (fp16 weights, fp32 I/O;
    model_int8.onnx       /  INT8 explicit QDQ calibrated on data/calibration)
    torch/model.safetensors   the PyTorch weights of the exported graph (parity, torch bench)
    data/calibration/     labelled training samples (raw input files + targets) for INT8
    data/heldout/         held-out samples for parity and each precision's metric
    metadata.json         format version, task (adapter kind + pre-processing spec), I/O, metrics, hashes
    report.md             human-readable summary (parity, TensorRT op check, per-precision metric)
    report/               benchmark JSON / Markdown / PNG (``edgedistill bench``)
    cache/                TensorRT timing + engine cache (not hashed: device-specific, rebuilt)

A bundle needs nothing outside its folder: ``quantize``, ``bench``, ``verify`` and ``infer``
read only the bundle. ``metadata.json`` records ``files``: the sha256 of every other file
(except ``cache/``). :func:`load_bundle` verifies each one, the format version and every
required field before anything is run, so a tampered or truncated file, or a bundle from an
older tool, is a clear error naming the file or field (and how to re-export) rather than
wrong results on a robot. This module imports no torch (it runs on the Jetson).
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

FORMAT_VERSION = 2  # 2: task adapters, named multi-input/output, self-contained data (1: range-view only)
CACHE_DIR = "cache"
PRECISION_FILES = {"fp32": "model.onnx", "fp16": "model_fp16.onnx", "int8": "model_int8.onnx"}

# Dotted paths that every metadata.json must hold; load_bundle names the first one missing.
REQUIRED_FIELDS: tuple[str, ...] = (
    "format_version", "task.kind", "task.input",
    "model.name", "model.student", "model.student_kwargs", "model.num_classes", "model.classes", "model.torch_weights",
    "inputs", "outputs", "data.calibration", "data.heldout",
    "metrics.heldout", "precisions", "files", "versions",
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
    def inputs(self) -> list[dict]:
        """Named input specs ({name, shape, dtype, ...}) of the deployed graph, in order."""
        return self.metadata["inputs"]

    @property
    def outputs(self) -> list[dict]:
        return self.metadata["outputs"]

    def torch_weights(self) -> Path:
        return self.path / self.metadata["model"]["torch_weights"]

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
    version = meta.get("format_version") if isinstance(meta, dict) else None
    if not isinstance(version, int):
        raise BundleError(f"{meta_path}: no integer format_version; not a bundle of this tool (re-export it)")
    if version > FORMAT_VERSION:
        raise BundleError(f"{meta_path}: format_version {version} is newer than this tool ({FORMAT_VERSION}); "
                          "upgrade edgedistill on this machine")
    if version < FORMAT_VERSION:
        run = (meta.get("source") or {}).get("run_dir") or "RUN_DIR"
        name = (meta.get("model") or {}).get("name")
        raise BundleError(
            f"{meta_path}: bundle format {version} was written by an older edgedistill; this one reads format "
            f"{FORMAT_VERSION} (self-contained data, task adapters, named inputs and outputs). Re-export it: "
            f"`edgedistill export {run}" + (f" --model {name}" if name else "") + " --quantize`")
    for field in REQUIRED_FIELDS:
        try:
            get_field(meta, field)
        except KeyError:
            raise BundleError(f"{meta_path}: missing field '{field}'; re-export the bundle with `edgedistill export`") from None
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


def default_bundle_dir(run_dir: str | Path, model_name: str) -> Path:
    """The one place a run's bundle lives, for the CLI and the pipeline stage: ``RUN_DIR/deploy/<model>``."""
    return Path(run_dir) / "deploy" / model_name


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
