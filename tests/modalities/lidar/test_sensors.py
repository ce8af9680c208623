"""Sensor models as data: presets load, custom YAML files load, bad files name themselves."""

from __future__ import annotations

import numpy as np
import pytest

from modalities.lidar.sensors import LidarSensor, available_presets, load_sensor


def test_presets_load_and_are_consistent():
    assert set(available_presets()) >= {"vlp16", "hdl32e", "hdl64e", "os1_64"}
    for name in available_presets():
        s = load_sensor(name)
        el = s.elevations_deg()
        assert el.shape == (s.beams,) and np.all(np.diff(el) > 0)
        assert np.isclose(el[0], s.vertical_fov_deg[0]) and np.isclose(el[-1], s.vertical_fov_deg[1])
        az = s.azimuths_rad()
        assert az.shape == (s.columns,) and az.min() >= -np.pi and az.max() < np.pi


def test_hdl32e_beam_spacing():
    el = load_sensor("hdl32e").elevations_deg()
    assert np.allclose(np.diff(el), 1.3333, atol=1e-3)


def test_custom_yaml_with_beam_table(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text(
        "name: mine\nbeams: 3\nvertical_fov_deg: [-10, 5]\ncolumns: 360\n"
        "min_range_m: 0.5\nmax_range_m: 50\nbeam_elevations_deg: [5, -10, -2]\n"
    )
    s = load_sensor(path)
    assert s.elevations_deg().tolist() == [-10, -2, 5]
    assert LidarSensor(**{**s.to_dict(), "vertical_fov_deg": tuple(s.vertical_fov_deg),
                          "beam_elevations_deg": tuple(s.beam_elevations_deg)}) == s


def test_bad_sensor_files(tmp_path):
    with pytest.raises(ValueError, match="unknown lidar sensor preset"):
        load_sensor("hdl999")
    missing = tmp_path / "missing.yaml"
    with pytest.raises(FileNotFoundError, match="missing.yaml"):
        load_sensor(missing)
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nbeams: 0\nvertical_fov_deg: [1, -1]\ncolumns: 10\nmin_range_m: 0\nmax_range_m: 1\n")
    with pytest.raises(ValueError, match="beams must be >= 1"):
        load_sensor(bad)
    extra = tmp_path / "extra.yaml"
    extra.write_text("name: x\nbeams: 2\nvertical_fov_deg: [-1, 1]\ncolumns: 10\nmin_range_m: 0\nmax_range_m: 1\nfoo: 1\n")
    with pytest.raises(ValueError, match="extra.yaml.*foo"):
        load_sensor(extra)
