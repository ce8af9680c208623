"""A tiny synthetic set with superpixels, shared by the SLidR tests of one session."""

from __future__ import annotations

from pathlib import Path

import pytest

from modalities.camera.io import read_image
from modalities.camera.superpixels import compute_superpixels, save_superpixels
from modalities.synthetic.config import SynthConfig
from modalities.synthetic.nuscenes_writer import generate_dataset
from pipelines.data.superpixels_stage import list_camera_jobs

VERSION = "v1.0-synthetic"
BUDGET = 256


@pytest.fixture(scope="session")
def slidr_set(tmp_path_factory) -> tuple[Path, Path]:
    """(dataset root, superpixel folder) of 2 scenes x 2 samples at 320x180."""
    base = tmp_path_factory.mktemp("slidr_set")
    root, sp_dir = base / "nuscenes", base / "superpixels"
    generate_dataset(root, SynthConfig(seed=5, scenes=2, samples_per_scene=2, sweeps_per_sample=0,
                                       image_width=320, image_height=180))
    for image_path, sp_path, _, _ in list_camera_jobs(root, VERSION, sp_dir):
        save_superpixels(sp_path, compute_superpixels(read_image(image_path), "slic_downsampled", BUDGET))
    return root, sp_dir
