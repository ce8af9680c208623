"""One small synthetic nuScenes set, generated once per test session."""

from __future__ import annotations

from pathlib import Path

import pytest

from modalities.synthetic.config import SynthConfig
from modalities.synthetic.nuscenes_writer import generate_dataset

SMALL = dict(seed=3, scenes=1, samples_per_scene=3, sweeps_per_sample=1, image_width=400, image_height=225)


@pytest.fixture(scope="session")
def synth_set(tmp_path_factory) -> tuple[Path, SynthConfig, dict]:
    cfg = SynthConfig(**SMALL)
    root = tmp_path_factory.mktemp("synth_a")
    summary = generate_dataset(root, cfg)
    return root, cfg, summary
