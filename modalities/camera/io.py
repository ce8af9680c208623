"""Camera image readers.

Images are returned as ``(H, W, 3) uint8`` RGB arrays, row 0 at the top::

    (0,0) ---- u (column, right) ---->  W-1
      |
      v (row, down)
      |
     H-1

Grayscale, palette and RGBA images are converted to RGB (alpha is dropped); 16-bit
images are scaled to 8 bits. Errors (:class:`modalities.errors.DataError`, or
:class:`~modalities.errors.MissingDataError` for a missing file) name the file and the
problem.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from modalities.errors import DataError, require_file
from modalities.fileio import atomic_open


def _open(path: str | Path) -> tuple[Path, Image.Image]:
    p = require_file(path, "image")
    if p.stat().st_size == 0:
        raise DataError(p, "image file is empty")
    try:
        return p, Image.open(p)
    except UnidentifiedImageError as e:
        raise DataError(p, "not a readable image (unknown or corrupt format)") from e
    except OSError as e:
        raise DataError(p, f"cannot open image: {e}") from e


def image_size(path: str | Path) -> tuple[int, int]:
    """(width, height) of an image file, read from its header without decoding the pixels."""
    p, im = _open(path)
    with im:
        return im.size


def read_image(path: str | Path) -> np.ndarray:
    """Decode an image file to an ``(H, W, 3) uint8`` RGB array."""
    p, im = _open(path)
    with im:
        try:
            im.load()  # decodes now, so truncated files fail here with a clear message
        except (OSError, SyntaxError, ValueError) as e:
            raise DataError(p, f"image is truncated or corrupt: {e}") from e
        if im.mode in ("I;16", "I;16B", "I;16L", "I"):
            a = np.asarray(im, dtype=np.float64)
            hi = 65535.0 if im.mode.startswith("I;16") or a.max() > 255 else 255.0
            gray = np.clip(np.round(a * (255.0 / hi)), 0, 255).astype(np.uint8)
            rgb = np.repeat(gray[..., None], 3, axis=2)
        elif im.mode == "F":
            raise DataError(p, "floating-point image (mode 'F'); expected an 8-bit or 16-bit camera image")
        else:
            rgb = np.asarray(im.convert("RGB"), dtype=np.uint8)
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.shape[0] == 0 or rgb.shape[1] == 0:
        raise DataError(p, f"decoded to an unexpected shape {rgb.shape}")
    return np.ascontiguousarray(rgb)


def check_image_matches_calibration(
    image_path_or_array: str | Path | np.ndarray, width: int, height: int
) -> tuple[int, int]:
    """Raise DataError unless the image is ``width`` x ``height`` pixels; returns (width, height).

    An image whose size differs from the size its intrinsics were calibrated at projects
    points to the wrong pixels without any other symptom, so readers check it up front.
    A path is checked from the file header (no decoding).
    """
    if isinstance(image_path_or_array, np.ndarray):
        a = image_path_or_array
        if a.ndim not in (2, 3):
            raise DataError(None, f"image array must be (H, W) or (H, W, C), got shape {a.shape}")
        w, h, where = a.shape[1], a.shape[0], None
    else:
        where = Path(image_path_or_array)
        w, h = image_size(where)
    if (w, h) != (int(width), int(height)):
        raise DataError(
            where,
            f"image is {w}x{h} (WxH) but its calibration is for {int(width)}x{int(height)}; "
            "the intrinsics do not apply to this image (resized or wrong camera?)",
        )
    return w, h


def write_image(path: str | Path, image_rgb: np.ndarray) -> None:
    """Write an ``(H, W, 3) uint8`` RGB array atomically; the format follows the suffix (.png, .jpg)."""
    a = np.asarray(image_rgb)
    if a.dtype != np.uint8 or a.ndim != 3 or a.shape[2] != 3:
        raise ValueError(f"image_rgb must be (H, W, 3) uint8, got {a.shape} {a.dtype}")
    p = Path(path)
    fmt = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG"}.get(p.suffix.lower())
    if fmt is None:
        raise ValueError(f"{p}: unsupported image suffix {p.suffix!r} (use .png or .jpg)")
    with atomic_open(p, "wb") as f:
        Image.fromarray(a, "RGB").save(f, format=fmt, **({"quality": 95} if fmt == "JPEG" else {}))
