"""Deploy adapters: one per deployable task kind, chosen by ``metadata.json``'s ``task.kind``.

An adapter is everything task-specific between a raw file and an engine and back; the
rest of :mod:`deploy` (export, quantize, bench, verify, infer, TensorRT) only moves named
arrays. Each adapter module defines a class with the interface of
:class:`deploy.tasks.base.TaskAdapter` (numpy only at import: it runs on the robot) and
the export-side functions ``task_metadata``, ``io_metadata``, ``write_samples`` and
``torch_module`` (torch imported lazily), the constant ``DEPLOYED_GRAPH`` (one line naming
the exported network) and ``describe_input(task) -> str`` (report.md's line on the input).

Adding a task kind (e.g. BEV segmentation): write
``deploy/tasks/<kind>.py`` and add one line to :data:`ADAPTERS`.
"""

from __future__ import annotations

import importlib

from modalities.registry import resolve

from .base import TaskAdapter

# task kind -> "module:class"
ADAPTERS: dict[str, str] = {
    "point_segmentation": "deploy.tasks.point_segmentation:PointSegmentation",
    "keyword_spotting": "deploy.tasks.keyword_spotting:KeywordSpotting",
    "imu_activity": "deploy.tasks.imu_activity:ImuActivity",
    "bev_segmentation": "deploy.tasks.bev_segmentation:BevSegmentation",
    "camera_bev_segmentation": "deploy.tasks.camera_bev_segmentation:CameraBevSegmentation",
}


def adapter_class(kind: str) -> type[TaskAdapter]:
    """The adapter class of a task kind; a ValueError naming the known kinds otherwise."""
    return resolve(ADAPTERS, kind, "no deploy adapter for task kind")


def task_module(kind: str):
    """The module of a task kind's adapter: its export-side functions (``task_metadata``, ``io_metadata``,
    ``write_samples``, ``torch_module``) live beside the adapter class."""
    return importlib.import_module(adapter_class(kind).__module__)


def adapter_for(metadata: dict, bundle_dir=None) -> TaskAdapter:
    """The adapter of a bundle's metadata (``task.kind``), bound to its folder."""
    return adapter_class(metadata["task"]["kind"])(metadata, bundle_dir)
