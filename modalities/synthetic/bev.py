"""BEV semantic ground truth of a synthetic world, by vertical rays (format: ``modalities.bev_labels``).

For every BEV cell of a key frame, the cell centre (x, y, 0) in LIDAR_TOP is taken to the
road frame and a vertical line is cast down from ``COLUMN_TOP_M`` to ``COLUMN_BOTTOM_M``
(road-frame z, the road surface at 0)::

        z = 2.0 m  o  o  o  o  o      one ray per cell centre, straight down
                   |  |  |  |  |      every surface crossed is listed (open3d list_intersections),
        car roof   |  ####  |  |      inside-out faces and coplanar faces included
        road ______|__####__|__|___
        z = -0.5 m

and the cell gets the ``PRIORITY``-highest BEV class among all surfaces crossed (things before
stuff: a car under a low tree crown is a vehicle cell, a trunk on the sidewalk a vegetation
cell). What counts is the band a 2 m high vehicle would sweep: tree crowns above 2 m and
street-light arms are not obstacles; buildings and poles are (they reach the ground).
Listing every crossing, not only the first hit, is what makes a building's bottom face
(coplanar with the grass at z = 0) count as the building. A cell whose centre meets nothing
is 255 (unknown). Exactness: a cell is labelled by its centre, so objects thinner than a
cell (0.2 m poles at 0.5 m cells) show up only where they cover a centre.
"""

from __future__ import annotations

import numpy as np
import open3d as o3d

from modalities.bev_labels import BevGridSpec, category_lut, highest_priority
from modalities.synthetic.classes import CATEGORIES

COLUMN_TOP_M = 2.0  # road-frame z where the vertical rays start: vehicle height
COLUMN_BOTTOM_M = -0.5  # below the road surface (z = 0), so the ground is always crossed
_LUT = category_lut({c.index: c.name for c in CATEGORIES})


def bev_labels_of_scene(scene: o3d.t.geometry.RaycastingScene, geometry_class: np.ndarray,
                        T_road_from_lidar: np.ndarray, spec: BevGridSpec) -> np.ndarray:
    """(ny, nx) uint8 BEV class ids of the world around one lidar pose.

    Args:
        scene: the world's ray-casting scene (geometry ids 0..G-1 in mesh order).
        geometry_class: (G,) nuScenes category index of each geometry.
        T_road_from_lidar: (4, 4) pose of the key frame's LIDAR_TOP in the road frame.
        spec: the grid, in the lidar frame.
    """
    centers = spec.cell_centers_lidar().reshape(-1, 2)
    n = len(centers)
    p_lidar = np.concatenate([centers, np.zeros((n, 1)), np.ones((n, 1))], axis=1)
    xy_road = (p_lidar @ np.asarray(T_road_from_lidar, dtype=np.float64).T)[:, :2]
    rays = np.zeros((n, 6), dtype=np.float32)
    rays[:, :2] = xy_road
    rays[:, 2] = COLUMN_TOP_M
    rays[:, 5] = -1.0
    hits = scene.list_intersections(o3d.core.Tensor(rays), nthreads=0)
    ray_ids = hits["ray_ids"].numpy().astype(np.int64)
    gid = hits["geometry_ids"].numpy().astype(np.int64)
    within = hits["t_hit"].numpy() <= COLUMN_TOP_M - COLUMN_BOTTOM_M
    category = np.asarray(geometry_class, dtype=np.int64)[gid[within]]
    labels = highest_priority(ray_ids[within], _LUT[category], n)
    return labels.reshape(spec.shape)
