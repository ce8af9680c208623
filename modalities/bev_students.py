"""BEV students by name: the networks a ``bev_features`` student record rebuilds (CALICO, DESIGN 5.3).

``pillar_bev``: :class:`modalities.lidar.bev_net.PillarBevNet` (lidar pillars -> BEV map);
``camera_bev``: :class:`modalities.camera.bev_lift.CameraBevNet` (camera images -> BEV map).
Both return (B, C, ny, nx) maps on the grid of their input spec.
"""

from __future__ import annotations

from modalities.registry import resolve

STUDENTS: dict[str, str] = {
    "pillar_bev": "modalities.lidar.bev_net:PillarBevNet",
    "camera_bev": "modalities.camera.bev_lift:CameraBevNet",
}


def build_bev_student(kind: str, kwargs: dict):
    """A BEV student from its record's ``kind`` and ``kwargs``; a ValueError naming the known kinds otherwise."""
    return resolve(STUDENTS, kind, "unknown BEV student")(**kwargs)
