"""Procedural driving worlds: a straight street with everything a nuScenes scan contains.

A world lives in its own *road frame* (x along the road, y to the left, z up, the road
surface at z = 0); ``T_global_from_road`` places it in the nuScenes global (map) frame,
whose origin is the bottom-left corner of the scene's map image::

        y (left)
        ^   building  tree  building        pole
        |   ------------- sidewalk -------------------
        |   parked car           parked car
        |   - - - - - - - - lane marking - - - - - - -
        |       ego -> (drives along +x in the right lane)
        |   ------------- sidewalk -------------------
        +----------------------------------------------> x (road direction)

Objects (cars, pedestrians, cones, barriers) stand still; the ego moves at a constant
speed with a gentle lateral weave, so every sensor at every timestamp sees the same world.
All randomness comes from one ``numpy.random.Generator`` seeded by (seed, scene index).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import open3d as o3d

from modalities.synthetic import classes as C
from modalities.synthetic.textures import TEX, Material

MAP_RESOLUTION_M = 0.1  # nuScenes semantic-prior maps are 10 px per metre
MAP_MARGIN_M = 20.0


@dataclass
class Mesh:
    vertices: np.ndarray  # (V, 3) float32, road frame
    triangles: np.ndarray  # (F, 3) int32
    class_id: int
    material: Material
    instance: int = -1  # index into World.objects, -1 for stuff


@dataclass
class Object:
    """An annotated thing: a nuScenes ``instance`` with one box per sample where it is near."""

    class_id: int
    center_road: np.ndarray  # (3,) box centre
    size_wlh: tuple[float, float, float]  # nuScenes order: width, length, height
    yaw_rad: float  # heading of the box length axis in the road frame
    attribute: str | None  # nuScenes attribute name, e.g. "vehicle.parked"


@dataclass
class World:
    meshes: list[Mesh]
    objects: list[Object]
    road_half_width_m: float
    sidewalk_width_m: float
    x_range_m: tuple[float, float]
    ego_lane_y_m: float
    ego_speed_mps: float
    weave_amplitude_m: float
    weave_period_s: float
    sun_dir_road: np.ndarray  # (3,) unit vector towards the sun
    T_global_from_road: np.ndarray  # (4, 4)
    map_size_px: tuple[int, int]  # (width, height) of the semantic prior map
    map_polygons_road: list[np.ndarray] = field(default_factory=list)  # (4, 2) quads: road + sidewalks

    def T_road_from_ego(self, t_s: float) -> np.ndarray:
        """(4, 4) ego pose at time ``t_s`` seconds after the scene start, road frame."""
        w = 2 * np.pi / self.weave_period_s
        x = self.x_range_m[0] + self.ego_speed_mps * t_s
        y = self.ego_lane_y_m + self.weave_amplitude_m * np.sin(w * t_s)
        yaw = np.arctan2(self.weave_amplitude_m * w * np.cos(w * t_s), self.ego_speed_mps)
        T = np.eye(4)
        T[:3, :3] = rot_z(yaw)
        T[:3, 3] = (x, y, 0.0)
        return T


def rot_z(yaw: float) -> np.ndarray:
    c, s = np.cos(yaw), np.sin(yaw)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


# ---------------------------------------------------------------- primitive meshes


def _legacy(mesh: o3d.geometry.TriangleMesh) -> tuple[np.ndarray, np.ndarray]:
    return np.asarray(mesh.vertices, dtype=np.float64), np.asarray(mesh.triangles, dtype=np.int32)


def box(size_xyz, center_xyz) -> tuple[np.ndarray, np.ndarray]:
    v, f = _legacy(o3d.geometry.TriangleMesh.create_box(*size_xyz))
    return v - np.asarray(size_xyz) / 2 + np.asarray(center_xyz), f


def cylinder(radius, height, base_xyz, resolution=12) -> tuple[np.ndarray, np.ndarray]:
    v, f = _legacy(o3d.geometry.TriangleMesh.create_cylinder(radius, height, resolution, 1))
    return v + np.asarray(base_xyz) + (0, 0, height / 2), f


def cone(radius, height, base_xyz, resolution=12) -> tuple[np.ndarray, np.ndarray]:
    v, f = _legacy(o3d.geometry.TriangleMesh.create_cone(radius, height, resolution, 1))
    return v + np.asarray(base_xyz), f


def sphere(radius, center_xyz, resolution=6) -> tuple[np.ndarray, np.ndarray]:
    v, f = _legacy(o3d.geometry.TriangleMesh.create_sphere(radius, resolution))
    return v + np.asarray(center_xyz), f


def quad(x0, x1, y0, y1, z) -> tuple[np.ndarray, np.ndarray]:
    v = np.array([[x0, y0, z], [x1, y0, z], [x1, y1, z], [x0, y1, z]], dtype=np.float64)
    return v, np.array([[0, 1, 2], [0, 2, 3]], dtype=np.int32)


def _place(parts, yaw, position) -> list[tuple[np.ndarray, np.ndarray]]:
    R = rot_z(yaw)
    return [(v @ R.T + np.asarray(position), f) for v, f in parts]


# ---------------------------------------------------------------- world builder


class _Builder:
    def __init__(self, rng: np.random.Generator):
        self.rng = rng
        self.meshes: list[Mesh] = []
        self.objects: list[Object] = []

    def stuff(self, parts, class_id, material):
        for v, f in parts:
            self.meshes.append(Mesh(v.astype(np.float32), f, class_id, material))

    def thing(self, parts_with_materials, class_id, yaw, position, attribute):
        """Add an annotated object built in its local frame (x = length axis, z up from 0)."""
        instance = len(self.objects)
        local = np.concatenate([v for (v, _), _ in parts_with_materials])
        lo, hi = local.min(axis=0), local.max(axis=0)
        center_local = (lo + hi) / 2
        center = rot_z(yaw) @ center_local + np.asarray(position)
        size = (float(hi[1] - lo[1]), float(hi[0] - lo[0]), float(hi[2] - lo[2]))
        self.objects.append(Object(class_id, center, size, float(yaw), attribute))
        for (v, f), mat in parts_with_materials:
            (vw, fw), = _place([(v, f)], yaw, position)
            self.meshes.append(Mesh(vw.astype(np.float32), fw, class_id, mat, instance))

    def color(self, lo=0.1, hi=0.9) -> tuple[float, float, float]:
        return tuple(float(c) for c in self.rng.uniform(lo, hi, size=3))


def _car(b: _Builder, position, yaw):
    rng = b.rng
    length, width = rng.uniform(3.9, 4.9), rng.uniform(1.7, 1.95)
    paint = Material(TEX[rng.choice(["coffee", "rocket", "moon"])], b.color(0.15, 0.95), 0.35, 3.0)
    glass = Material(TEX["hubble_deep_field"], (0.35, 0.4, 0.45), 0.6, 1.5)
    tyre = Material(TEX["gravel"], (0.12, 0.12, 0.12), 0.5, 0.5)
    cabin_l = length * rng.uniform(0.45, 0.6)
    parts = [
        (box((length, width, 0.75), (0, 0, 0.35 + 0.375)), paint),
        (box((cabin_l, width * 0.88, 0.6), (-0.15 * length + 0.1, 0, 1.1 + 0.3)), glass),
    ]
    for sx in (-1, 1):
        for sy in (-1, 1):
            v, f = cylinder(0.33, 0.22, (0, 0, -0.11), resolution=10)
            v = v @ np.array([[1, 0, 0], [0, 0, 1], [0, -1, 0]], dtype=np.float64).T  # axis along y
            v = v + (sx * length * 0.32, sy * (width / 2 - 0.1), 0.33)
            parts.append(((v, f), tyre))
    b.thing(parts, C.CAR, yaw, position, "vehicle.parked")


def _pedestrian(b: _Builder, position, yaw):
    rng = b.rng
    h = rng.uniform(1.55, 1.9)
    clothes = Material(TEX[rng.choice(["astronaut", "chelsea", "coffee", "immunohistochemistry"])],
                       (1.0, 1.0, 1.0), 0.9, 0.8)
    trousers = Material(TEX["moon"], b.color(0.05, 0.5), 0.4, 0.5)
    skin = Material(TEX["chelsea"], (0.9, 0.7, 0.55), 0.2, 0.3)
    leg_h, torso_h, head_r = 0.47 * h, 0.33 * h, 0.065 * h
    parts = [
        (box((0.16, 0.14, leg_h), (0, 0.1, leg_h / 2)), trousers),
        (box((0.16, 0.14, leg_h), (0, -0.1, leg_h / 2)), trousers),
        (box((0.26, 0.44, torso_h), (0, 0, leg_h + torso_h / 2)), clothes),
        (sphere(head_r, (0, 0, leg_h + torso_h + head_r * 1.1), resolution=5), skin),
    ]
    b.thing(parts, C.PEDESTRIAN, yaw, position, "pedestrian.standing")


def _cone(b: _Builder, position):
    orange = Material(TEX["moon"], (1.0, 0.42, 0.05), 0.25, 0.5, reflect_mult=1.0)
    parts = [
        (box((0.4, 0.4, 0.04), (0, 0, 0.02)), orange),
        (cone(0.16, 0.66, (0, 0, 0.04), resolution=12), orange),
    ]
    b.thing(parts, C.TRAFFIC_CONE, float(b.rng.uniform(0, 2 * np.pi)), position, None)


def _barrier(b: _Builder, position, yaw):
    mat = Material(TEX["brick"], (0.95, 0.95, 0.92), 0.3, 1.0)
    foot = Material(TEX["gravel"], (0.8, 0.15, 0.1), 0.4, 1.0)
    parts = [
        (box((1.6, 0.18, 0.45), (0, 0, 0.75)), mat),
        (box((0.12, 0.5, 0.55), (-0.7, 0, 0.275)), foot),
        (box((0.12, 0.5, 0.55), (0.7, 0, 0.275)), foot),
    ]
    b.thing(parts, C.BARRIER, yaw, position, None)


def _tree(b: _Builder, x, y, z0):
    rng = b.rng
    trunk_h, crown_r = rng.uniform(1.8, 3.0), rng.uniform(1.3, 2.8)
    bark = Material(TEX["brick"], (0.35, 0.25, 0.15), 0.6, 0.6)
    leaves = Material(TEX["grass"], (0.35, rng.uniform(0.6, 0.9), 0.25), 1.0, 1.5)
    b.stuff([cylinder(rng.uniform(0.12, 0.25), trunk_h, (x, y, z0), resolution=8)], C.VEGETATION, bark)
    b.stuff([sphere(crown_r, (x, y, z0 + trunk_h + crown_r * 0.7), resolution=6)], C.VEGETATION, leaves)


def _pole(b: _Builder, x, y, z0, side):
    metal = Material(TEX["moon"], (0.55, 0.57, 0.6), 0.4, 1.0)
    h = b.rng.uniform(6.0, 8.5)
    b.stuff([cylinder(0.1, h, (x, y, z0), resolution=8)], C.MANMADE, metal)
    b.stuff([box((0.5, 1.6, 0.18), (x, y - side * 0.8, z0 + h - 0.09))], C.MANMADE, metal)


def _buildings(b: _Builder, side, y_front, x0, x1, hw):
    """A row of buildings (or park with trees) along one side; side = +1 left, -1 right."""
    rng = b.rng
    x = x0 + rng.uniform(0, 10)
    while x < x1:
        width = rng.uniform(8, 30)
        if rng.random() < 0.18:  # a park instead of a building
            for _ in range(int(rng.integers(1, 4))):
                _tree(b, x + rng.uniform(0, width), side * (y_front + rng.uniform(1, 8)), 0.0)
        else:
            depth, height = rng.uniform(8, 20), rng.uniform(5, 28)
            setback = rng.uniform(0, 4)
            tex = rng.choice(["brick", "brick", "camera", "moon", "coffee"])
            tint = (rng.uniform(0.6, 1.0), rng.uniform(0.45, 0.85), rng.uniform(0.35, 0.75)) \
                if tex == "brick" else b.color(0.55, 1.0)
            mat = Material(TEX[tex], tint, 0.9, rng.uniform(2.5, 6.0))
            yc = side * (y_front + setback + depth / 2)
            b.stuff([box((width, depth, height), (x + width / 2, yc, height / 2))], C.MANMADE, mat)
        x += width + rng.uniform(2, 10)


def build_world(rng: np.random.Generator, length_m: float, ego_speed_mps: float,
                cars_per_100m: float, pedestrians_per_100m: float, trees_per_100m: float) -> World:
    """A street long enough for the ego to drive ``length_m`` with 80 m of world around it."""
    b = _Builder(rng)
    hw = rng.uniform(5.5, 7.0)  # road half width: two lanes + parking
    sw = rng.uniform(2.5, 4.0)  # sidewalk width
    curb = 0.15
    x0, x1 = -80.0, length_m + 80.0
    road = Material(TEX["gravel"], (0.55, 0.55, 0.57), 1.0, 3.0)
    paint = Material(TEX["moon"], (1.0, 1.0, 0.95), 0.1, 1.0, reflect_mult=4.0)
    walk = Material(TEX["brick"], (0.8, 0.78, 0.75), 1.0, 1.5)
    grass = Material(TEX["grass"], (0.5, 0.75, 0.3), 1.0, 2.0)
    far = 60.0
    b.stuff([quad(x0, x1, -hw, hw, 0.0)], C.ROAD, road)
    for xs in np.arange(x0, x1, 9.0):  # dashed centre line, 1 cm above the asphalt
        b.stuff([quad(xs, xs + 4.5, -0.08, 0.08, 0.01)], C.ROAD, paint)
    for side in (-1, 1):
        y_in, y_out = side * hw, side * (hw + sw)
        b.stuff([box((x1 - x0, sw, curb), ((x0 + x1) / 2, (y_in + y_out) / 2, curb / 2))], C.SIDEWALK, walk)
        b.stuff([quad(x0, x1, min(y_out, side * far), max(y_out, side * far), 0.0)], C.TERRAIN, grass)
        _buildings(b, side, hw + sw + 1.0, x0, x1, hw)
        for xp in np.arange(x0 + rng.uniform(0, 20), x1, rng.uniform(22, 35)):  # street lights
            _pole(b, xp, side * (hw + 0.4), curb, side)
        n_trees = rng.poisson(trees_per_100m * (x1 - x0) / 100 / 2)
        for xt in np.sort(rng.uniform(x0, x1, n_trees)):  # trees in the sidewalk's outer edge
            _tree(b, xt, side * (hw + sw - 0.6), curb)
        n_cars = rng.poisson(cars_per_100m * (x1 - x0) / 100 / 2)
        last = -1e9
        for xc in np.sort(rng.uniform(x0, x1, n_cars)):
            if xc - last < 5.5:
                continue
            last = xc
            yaw = (0.0 if side < 0 else np.pi) + rng.normal(0, 0.05)
            _car(b, (xc, side * (hw - 1.15), 0.0), yaw)
        n_ped = rng.poisson(pedestrians_per_100m * (x1 - x0) / 100 / 2)
        for xq in rng.uniform(x0, x1, n_ped):
            _pedestrian(b, (xq, side * (hw + rng.uniform(0.8, sw - 1.2)), curb), rng.uniform(0, 2 * np.pi))
    for _ in range(int(rng.integers(1, 4))):  # road works: a few cones and barriers on the left
        xw = rng.uniform(x0 + 60, x1 - 60)
        for k in range(int(rng.integers(2, 6))):
            _cone(b, (xw + 2.0 * k, hw - 0.5, 0.0))
        if rng.random() < 0.7:
            _barrier(b, (xw + rng.uniform(-4, 8), hw + sw - 0.5, curb), rng.normal(0, 0.1))

    # place the road frame in a global frame whose origin is the map's bottom-left corner
    yaw_g = rng.uniform(-np.pi, np.pi)
    corners = np.array([[x0, -(hw + sw)], [x1, -(hw + sw)], [x1, hw + sw], [x0, hw + sw]])
    rotated = corners @ rot_z(yaw_g)[:2, :2].T
    offset = MAP_MARGIN_M - rotated.min(axis=0) + rng.uniform(0, 5, size=2)
    T = np.eye(4)
    T[:3, :3] = rot_z(yaw_g)
    T[:2, 3] = offset
    extent = rotated.max(axis=0) + offset + MAP_MARGIN_M
    map_size = (int(np.ceil(extent[0] / MAP_RESOLUTION_M)), int(np.ceil(extent[1] / MAP_RESOLUTION_M)))
    sun = np.array([rng.uniform(-0.6, 0.6), rng.uniform(-0.6, 0.6), 1.0])
    return World(
        meshes=b.meshes,
        objects=b.objects,
        road_half_width_m=float(hw),
        sidewalk_width_m=float(sw),
        x_range_m=(0.0, float(length_m)),
        ego_lane_y_m=float(-(hw - 2.0) / 2),
        ego_speed_mps=float(ego_speed_mps),
        weave_amplitude_m=float(rng.uniform(0.0, 0.4)),
        weave_period_s=float(rng.uniform(6.0, 12.0)),
        sun_dir_road=sun / np.linalg.norm(sun),
        T_global_from_road=T,
        map_size_px=map_size,
        map_polygons_road=[corners],
    )
