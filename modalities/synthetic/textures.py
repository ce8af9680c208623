"""Photographic surface textures from scikit-image's bundled (offline) images.

Every texture is resampled once to ``TEXTURE_SIZE`` x ``TEXTURE_SIZE`` RGB uint8 and
stacked, so the renderer samples any surface with one fancy-indexing gather. A surface's
albedo is ``tint * ((1 - mix) + mix * texture)``: grey textures (gravel, brick, grass)
take their colour from the tint, photos (coffee, astronaut, ...) keep their own colours
when ``mix`` is near 1.

Textures are mapped by world-space planar coordinates at the hit point (tri-planar: the
plane orthogonal to the dominant axis of the surface normal), ``scale_m`` metres per tile.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

TEXTURE_SIZE = 256

# name -> index into the texture stack; the order is part of the reproducible output.
TEXTURE_NAMES: tuple[str, ...] = (
    "gravel",  # asphalt
    "brick",  # sidewalks, brick facades
    "grass",  # terrain, foliage
    "coffee",
    "rocket",
    "astronaut",
    "chelsea",
    "camera",  # concrete-looking grey facade
    "moon",  # rough grey surfaces
    "immunohistochemistry",
    "hubble_deep_field",  # dark glass
    "coins",
)
TEX = {name: i for i, name in enumerate(TEXTURE_NAMES)}


@dataclass(frozen=True)
class Material:
    texture: int  # index into TEXTURE_NAMES
    tint_rgb: tuple[float, float, float]  # multiplies the texture, 0..1 (may exceed 1 slightly)
    mix: float = 1.0  # 0: flat tint colour, 1: tint * texture
    scale_m: float = 2.0  # metres per texture tile
    reflect_mult: float = 1.0  # multiplies the class reflectivity (lane paint > asphalt)


def _to_rgb_uint8(img: np.ndarray) -> np.ndarray:
    if img.dtype == bool:
        img = img.astype(np.uint8) * 255
    if img.ndim == 2:
        img = np.repeat(img[:, :, None], 3, axis=2)
    return np.ascontiguousarray(img[:, :, :3]).astype(np.uint8)


@lru_cache(maxsize=1)
def texture_stack() -> np.ndarray:
    """(T, S, S, 3) uint8 stack of all textures, loaded once per process."""
    import skimage.data
    from PIL import Image

    out = np.empty((len(TEXTURE_NAMES), TEXTURE_SIZE, TEXTURE_SIZE, 3), dtype=np.uint8)
    for i, name in enumerate(TEXTURE_NAMES):
        img = _to_rgb_uint8(getattr(skimage.data, name)())
        h, w = img.shape[:2]
        side = min(h, w)  # centre square crop, then a deterministic PIL resample
        y0, x0 = (h - side) // 2, (w - side) // 2
        square = Image.fromarray(img[y0 : y0 + side, x0 : x0 + side])
        out[i] = np.asarray(square.resize((TEXTURE_SIZE, TEXTURE_SIZE), Image.BILINEAR))
    return out


def sample_albedo(
    points_world: np.ndarray,
    normals_world: np.ndarray,
    texture: np.ndarray,
    tint_rgb: np.ndarray,
    mix: np.ndarray,
    scale_m: np.ndarray,
) -> np.ndarray:
    """Tri-planar texture lookup at hit points.

    Args:
        points_world: (N, 3) hit points.
        normals_world: (N, 3) surface normals.
        texture: (N,) texture index; tint_rgb (N, 3); mix (N,); scale_m (N,) per hit.

    Returns:
        (N, 3) float32 albedo in [0, ~1].
    """
    stack = texture_stack()
    axis = np.argmax(np.abs(normals_world), axis=1)
    # plane coordinates: normal along z -> (x, y); along x -> (y, z); along y -> (x, z)
    a = np.where(axis == 0, points_world[:, 1], points_world[:, 0])
    b = np.where(axis == 2, points_world[:, 1], points_world[:, 2])
    u = np.floor(a / scale_m * TEXTURE_SIZE).astype(np.int64) % TEXTURE_SIZE
    v = np.floor(-b / scale_m * TEXTURE_SIZE).astype(np.int64) % TEXTURE_SIZE
    tex = stack[texture, v, u].astype(np.float32) * (1.0 / 255.0)
    m = mix[:, None].astype(np.float32)
    return tint_rgb.astype(np.float32) * ((1.0 - m) + m * tex)
