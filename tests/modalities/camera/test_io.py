"""Camera image reader: formats and modes to RGB uint8, and one test per kind of bad input."""

from __future__ import annotations

import contextlib

import numpy as np
import pytest
from PIL import Image

from modalities.camera.io import check_image_matches_calibration, image_size, read_image, write_image
from modalities.errors import DataError, MissingDataError


@contextlib.contextmanager
def _raises_naming(path, exc=DataError, match=None):
    """The block raises ``exc`` and its message names ``path`` (and contains ``match``)."""
    with pytest.raises(exc) as info:
        yield info
    message = str(info.value)
    assert str(path) in message, message
    assert match is None or match in message, message


@pytest.fixture
def rgb():
    return np.random.default_rng(0).integers(0, 256, (37, 53, 3), dtype=np.uint8)


def test_png_round_trip_exact(tmp_path, rgb):
    path = tmp_path / "cam.png"
    write_image(path, rgb)
    out = read_image(path)
    assert out.dtype == np.uint8 and out.shape == (37, 53, 3)
    assert np.array_equal(out, rgb)
    assert image_size(path) == (53, 37)


def test_jpeg_round_trip_close(tmp_path):
    smooth = np.zeros((32, 48, 3), np.uint8)
    smooth[..., 0] = np.linspace(0, 255, 48, dtype=np.uint8)[None]
    smooth[..., 1] = 128
    path = tmp_path / "cam.jpg"
    write_image(path, smooth)
    out = read_image(path)
    assert out.shape == smooth.shape and np.abs(out.astype(int) - smooth).mean() < 3


@pytest.mark.parametrize("mode", ["L", "RGBA", "P"])
def test_modes_become_rgb(tmp_path, rgb, mode):
    path = tmp_path / f"img_{mode}.png"
    Image.fromarray(rgb, "RGB").convert(mode).save(path)
    out = read_image(path)
    assert out.shape == (37, 53, 3) and out.dtype == np.uint8
    if mode == "RGBA":
        assert np.array_equal(out, rgb)  # alpha dropped, colours untouched
    if mode == "L":
        assert np.array_equal(out[..., 0], out[..., 2])


def test_16bit_gray_scaled_to_8bit(tmp_path):
    a = np.array([[0, 65535], [257 * 100, 257 * 200]], dtype=np.uint16)
    path = tmp_path / "depthish.png"
    Image.fromarray(a).save(path)
    out = read_image(path)
    assert out[..., 0].tolist() == [[0, 255], [100, 200]]


def test_missing_image(tmp_path):
    path = tmp_path / "CAM_FRONT" / "missing.jpg"
    with _raises_naming(path, MissingDataError, "not found"):
        read_image(path)
    with pytest.raises(FileNotFoundError):
        image_size(path)


def test_empty_image(tmp_path):
    path = tmp_path / "empty.jpg"
    path.write_bytes(b"")
    with _raises_naming(path, match="empty"):
        read_image(path)


def test_corrupt_image(tmp_path):
    path = tmp_path / "noise.png"
    path.write_bytes(np.random.default_rng(1).integers(0, 256, 500, dtype=np.uint8).tobytes())
    with _raises_naming(path, match="not a readable image"):
        read_image(path)


@pytest.mark.parametrize("suffix", [".png", ".jpg"])
def test_truncated_image(tmp_path, rgb, suffix):
    path = tmp_path / f"cut{suffix}"
    write_image(path, np.tile(rgb, (4, 4, 1)))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with _raises_naming(path, match="truncated or corrupt"):
        read_image(path)


def test_image_must_match_calibration(tmp_path, rgb):
    path = tmp_path / "cam.png"
    write_image(path, rgb)
    assert check_image_matches_calibration(path, 53, 37) == (53, 37)
    with _raises_naming(path, match="53x37 (WxH) but its calibration is for 1600x900"):
        check_image_matches_calibration(path, 1600, 900)
    assert check_image_matches_calibration(rgb, 53, 37) == (53, 37)
    with pytest.raises(DataError, match="53x37"):
        check_image_matches_calibration(rgb, 37, 53)  # transposed W/H is caught too


def test_write_image_validates(tmp_path, rgb):
    with pytest.raises(ValueError, match="uint8"):
        write_image(tmp_path / "x.png", rgb.astype(np.float32))
    with pytest.raises(ValueError, match="suffix"):
        write_image(tmp_path / "x.bmp", rgb)
    assert not list(tmp_path.iterdir())  # nothing half-written
