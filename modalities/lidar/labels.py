"""Label mappings for lidar semantic segmentation.

``NUSCENES_LIDARSEG_16``: the 16 classes of the nuScenes-lidarseg benchmark (Fong et al.,
"Panoptic nuScenes", RA-L 2022; nuscenes-devkit ``eval/lidarseg``), mapped from the 32
general category indices stored in ``lidarseg/*.bin``. Everything else is ``IGNORE``.
"""

from __future__ import annotations

import numpy as np

IGNORE = 255

NUSCENES_LIDARSEG_16: tuple[tuple[str, tuple[int, ...]], ...] = (
    ("barrier", (9,)),
    ("bicycle", (14,)),
    ("bus", (15, 16)),
    ("car", (17,)),
    ("construction_vehicle", (18,)),
    ("motorcycle", (21,)),
    ("pedestrian", (2, 3, 4, 6)),
    ("traffic_cone", (12,)),
    ("trailer", (22,)),
    ("truck", (23,)),
    ("driveable_surface", (24,)),
    ("other_flat", (25,)),
    ("sidewalk", (26,)),
    ("terrain", (27,)),
    ("manmade", (28,)),
    ("vegetation", (30,)),
)

CLASS_NAMES: tuple[str, ...] = tuple(name for name, _ in NUSCENES_LIDARSEG_16)


def lidarseg_to_16(category_index: np.ndarray) -> np.ndarray:
    """Map nuScenes general category indices (0..31) to the 16 benchmark classes (IGNORE otherwise)."""
    lut = np.full(256, IGNORE, dtype=np.int64)
    for cls, (_, sources) in enumerate(NUSCENES_LIDARSEG_16):
        lut[list(sources)] = cls
    return lut[np.asarray(category_index, dtype=np.int64)]
