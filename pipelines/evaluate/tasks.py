"""Evaluation tasks: what a student's features are evaluated on, one class per task kind.

The evaluate stage (:mod:`pipelines.evaluate.stage`) is generic: for every student record it
asks the task of the record's ``task`` for labelled data, per-init prepared features, a
fine-tuned model and where to save it, and runs the protocols (linear probe, fine-tune) as
paired comparisons against random initialisation. A task returns confusion matrices, so
every task reports the same records (mIoU / mean accuracy, gains with 95% intervals).

Adding a task kind (clip classification of keyword audio, BEV segmentation): write
``pipelines/evaluate/<task>.py`` with a class of this interface and add one line to
:data:`TASKS`.
"""

from __future__ import annotations

from modalities.registry import resolve

# student record "task" -> "module:class"
TASKS: dict[str, str] = {
    "point_features": "pipelines.evaluate.point_segmentation:PointSegmentationTask",
    "clip_features": "pipelines.evaluate.clip_classification:ClipClassificationTask",
    "window_features": "pipelines.evaluate.window_classification:WindowClassificationTask",
    "bev_features": "pipelines.evaluate.bev_segmentation:BevSegmentationTask",
}


def evaluation_task(record_task: str, where: str):
    """The evaluation task class for a student record's ``task``; a ValueError naming the known ones otherwise."""
    return resolve(TASKS, record_task, f"{where}: no evaluation task for student task")
