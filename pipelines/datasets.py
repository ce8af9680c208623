"""Named dataset specs: where a source lives, its cheap digest, and its train/held-out split.

A pipeline config names its datasets (``datasets: {driving: {kind: nuscenes, ...}}``) and
each stage that reads one names it (``dataset: driving``). A dataset either lives at an
existing ``root`` or is written by a stage of the pipeline (``from_stage: synth``).

A stage's cache key covers the dataset's identity (the files: the producing stage's output
digest, or the table files' names, sizes and mtimes) plus only the spec fields that the
stage kind declares it depends on (``StageKind.dataset_fields``): changing the held-out
split re-runs training and evaluation, not superpixels.

Kinds: ``nuscenes`` (any nuScenes-format root, the synthetic generator's included),
``keywords`` (labelled audio clips split into train / test plus an optional unlabelled pool,
as class folders or CSV manifests; the espeak-ng generator's layout) and ``egocentric``
(video + IMU recordings listed in a ``labels.csv``, split by subject). A new kind is one more
model here with its own ``kind`` literal, added to :data:`DATASET_KINDS`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal, Union

from pydantic import Field, model_validator

from modalities.fileio import sha256_json

from .config_base import StrictModel


class LocatedDatasetSpec(StrictModel):
    """Where a dataset lives: exactly one of an existing ``root`` and the ``from_stage`` of this pipeline that writes it."""

    root: Path | None = None
    from_stage: str | None = None

    @model_validator(mode="after")
    def _one_location(self) -> "LocatedDatasetSpec":
        if (self.root is None) == (self.from_stage is None):
            raise ValueError("set exactly one of root (an existing dataset) and from_stage (the stage that writes it)")
        return self


class NuScenesDatasetSpec(LocatedDatasetSpec):
    kind: Literal["nuscenes"] = "nuscenes"
    version: str = "v1.0-trainval"  # the table folder under the root
    # The last N scenes (in table order) are held out: never distilled on, used for evaluation.
    holdout_scenes: int = Field(default=1, ge=0)
    # Sensor model of the scans (range-view student, evaluation); preset name or YAML path.
    lidar_sensor: str = "hdl32e"

    def files_digest(self, root: Path) -> str:
        """Cheap identity of an existing root: its table files' names, sizes and mtimes."""
        table_dir = root / self.version
        if not table_dir.is_dir():
            raise FileNotFoundError(f"dataset tables not found: {table_dir} (check the dataset's root and version)")
        stats = {p.name: [p.stat().st_size, int(p.stat().st_mtime)] for p in sorted(table_dir.glob("*.json"))}
        return sha256_json({"root": str(root.resolve()), "tables": stats})


class KeywordsDatasetSpec(LocatedDatasetSpec):
    """Keyword audio: ``<root>/<split>.csv`` manifests (path,label[,speaker]) or ``<root>/<split>/<label>/*.wav``.

    ``train`` gives the labelled training clips (the few-label subsets are drawn from them),
    ``test`` the held-out clips (other speakers: the generator splits by voice), ``pool`` an
    optional unlabelled set (``<root>/<pool>.csv`` with a ``path`` column, or every audio file
    under ``<root>/<pool>/``) that pre-training uses beside the training clips' audio.
    """

    kind: Literal["keywords"] = "keywords"
    train: str = "train"
    test: str = "test"
    pool: str | None = "pool"

    def files_digest(self, root: Path) -> str:
        """Cheap identity of an existing root: names, sizes and mtimes of its manifests and audio files."""
        if not root.is_dir():
            raise FileNotFoundError(f"keyword dataset root not found: {root}")
        return _tree_digest(root)


class EgocentricDatasetSpec(LocatedDatasetSpec):
    """Egocentric recordings: ``<root>/<manifest>`` (``recording,label,subject[,video]``) listing IMU files
    (CSV/NPY, paths relative to the root) and their videos (MP4; empty for an IMU-only labelled set).

    The split is by subject, so that evaluation runs on people the students never saw:
    ``test_subjects`` names them, or else the last ``holdout_subjects`` subjects in sorted order
    are held out. ``imu`` declares the IMU files' columns and units
    (:class:`modalities.imu.io.ImuColumns`: time s/ms/us/ns, accelerometer m/s^2 or g,
    gyroscope rad/s or deg/s). Distillation reads the training subjects' videos and IMU (no
    labels); evaluation reads the labels.
    """

    kind: Literal["egocentric"] = "egocentric"
    manifest: str = "labels.csv"
    test_subjects: list[str] | None = None
    holdout_subjects: int = Field(default=2, ge=1)
    imu: dict[str, Any] = Field(default_factory=dict)  # ImuColumns fields; {} = t, ax..gz in s, m/s^2, rad/s

    def files_digest(self, root: Path) -> str:
        """Cheap identity of an existing root: names, sizes and mtimes of every file under it."""
        if not (root / self.manifest).is_file():
            raise FileNotFoundError(f"egocentric dataset manifest not found: {root / self.manifest}")
        return _tree_digest(root)


def _tree_digest(root: Path) -> str:
    stats = {str(p.relative_to(root)): [p.stat().st_size, int(p.stat().st_mtime)]
             for p in sorted(root.rglob("*")) if p.is_file()}
    return sha256_json({"root": str(root.resolve()), "files": stats})


DATASET_KINDS = {"nuscenes": NuScenesDatasetSpec, "keywords": KeywordsDatasetSpec, "egocentric": EgocentricDatasetSpec}
DatasetSpec = Annotated[Union[NuScenesDatasetSpec, KeywordsDatasetSpec, EgocentricDatasetSpec],
                        Field(discriminator="kind")]


def dataset_key(spec, files_digest: str, fields: tuple[str, ...]) -> str:
    """What a stage's cache key records for a dataset: its files plus the spec ``fields`` it depends on
    (fields the spec's kind does not have are left out)."""
    return sha256_json({"files": files_digest,
                        **{f: str(getattr(spec, f)) for f in sorted(fields) if hasattr(spec, f)}})
