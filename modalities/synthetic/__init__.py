"""Synthetic driving data in the nuScenes layout (see ``nuscenes_writer``)."""

from modalities.synthetic.config import SynthConfig
from modalities.synthetic.nuscenes_writer import generate_dataset, generate_scene, write_tables

__all__ = ["SynthConfig", "generate_dataset", "generate_scene", "write_tables"]
