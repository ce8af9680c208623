"""The student record: what a training stage hands to evaluation and deploy.

Every training stage writes ``student.json`` beside its weights: the student's kind and
constructor arguments, the task its features serve, how an input is built (``input``),
the teacher, and the sha256 of the weights. Evaluation and deploy read only this record,
never another stage's config class, so a new method's students plug in unchanged.
"""

from __future__ import annotations

import json
from pathlib import Path

from modalities.fileio import sha256_file

STUDENT_RECORD = "student.json"
REQUIRED = ("format", "kind", "kwargs", "task", "input", "teacher", "weights", "weights_sha256")


def read_student_record(stage_dir: Path) -> dict:
    """The record of ``stage_dir``; raises naming the file when it is missing, incomplete or its weights changed."""
    path = Path(stage_dir) / STUDENT_RECORD
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no student record (re-run the training stage that writes it)")
    try:
        record = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON: {e}") from e
    missing = [k for k in REQUIRED if k not in record]
    if missing:
        raise ValueError(f"{path}: missing field(s) {missing}")
    weights = path.parent / record["weights"]
    if not weights.is_file():
        raise FileNotFoundError(f"{weights}: the weights named by {path} are missing")
    if sha256_file(weights) != record["weights_sha256"]:
        raise ValueError(f"{weights}: sha256 does not match the one recorded in {path} (the weights changed)")
    return record
