"""Semantic classes of the synthetic world: the nuScenes-lidarseg categories, same indices.

Every label the generator writes (``lidarseg/*.bin`` per point, ``groundtruth/*_semantic.png``
per pixel) is a nuScenes-lidarseg category index (Fong et al., "Panoptic nuScenes", 2021;
the table is in the nuScenes devkit's ``category.json`` and ``utils/color_map.py``), so a
label mapping written for real nuScenes (e.g. the 16-class lidarseg benchmark) applies
unchanged. The world uses a subset of them; street poles and buildings are both
``static.manmade`` as in nuScenes. Pixels that see no surface (sky) get ``SKY_ID`` = 255,
which is not a nuScenes category.

Reflectivity is the fraction of the lidar pulse a surface returns at normal incidence
(intensity ~ 255 * reflectivity * albedo term * cos(incidence)): asphalt is dark, lane
paint, traffic cones and barriers are retro-reflective-ish, cars are metallic.
"""

from __future__ import annotations

from dataclasses import dataclass

SKY_ID = 255


@dataclass(frozen=True)
class Category:
    index: int
    name: str
    description: str
    color_rgb: tuple[int, int, int]
    reflectivity: float  # used only by the classes the world contains


# (index, name, description, colour from the devkit's colormap, reflectivity)
CATEGORIES: tuple[Category, ...] = tuple(
    Category(*row)
    for row in [
        (0, "noise", "Any lidar return that does not correspond to a physical object.", (0, 0, 0), 0.0),
        (1, "animal", "All animals, e.g. cats, rats, dogs, deer, birds.", (70, 130, 180), 0.2),
        (2, "human.pedestrian.adult", "Adult subcategory.", (0, 0, 230), 0.25),
        (3, "human.pedestrian.child", "Child subcategory.", (135, 206, 235), 0.25),
        (4, "human.pedestrian.construction_worker", "Construction worker.", (100, 149, 237), 0.25),
        (5, "human.pedestrian.personal_mobility", "Small personal mobility device.", (219, 112, 147), 0.25),
        (6, "human.pedestrian.police_officer", "Police officer.", (0, 0, 128), 0.25),
        (7, "human.pedestrian.stroller", "Strollers.", (240, 128, 128), 0.25),
        (8, "human.pedestrian.wheelchair", "Wheelchairs.", (138, 43, 226), 0.25),
        (9, "movable_object.barrier", "Temporary road barrier to redirect traffic.", (112, 128, 144), 0.7),
        (10, "movable_object.debris", "Movable object that is left on the driveable surface.", (210, 105, 30), 0.3),
        (11, "movable_object.pushable_pullable", "Objects that a pedestrian may push or pull.", (105, 105, 105), 0.3),
        (12, "movable_object.trafficcone", "All types of traffic cone.", (47, 79, 79), 0.85),
        (13, "static_object.bicycle_rack", "Area or device intended to park or secure bicycles.", (188, 143, 143), 0.4),
        (14, "vehicle.bicycle", "Human or electric powered 2-wheeled vehicle.", (220, 20, 60), 0.4),
        (15, "vehicle.bus.bendy", "Bendy bus subcategory.", (255, 127, 80), 0.5),
        (16, "vehicle.bus.rigid", "Rigid bus subcategory.", (255, 69, 0), 0.5),
        (17, "vehicle.car", "Vehicle designed primarily for personal use.", (255, 158, 0), 0.55),
        (18, "vehicle.construction", "Vehicles primarily designed for construction.", (233, 150, 70), 0.5),
        (19, "vehicle.emergency.ambulance", "All types of ambulances.", (255, 83, 0), 0.5),
        (20, "vehicle.emergency.police", "All types of police vehicles.", (255, 215, 0), 0.5),
        (21, "vehicle.motorcycle", "Gasoline or electric powered 2-wheeled vehicle.", (255, 61, 99), 0.5),
        (22, "vehicle.trailer", "Any vehicle trailer.", (255, 140, 0), 0.5),
        (23, "vehicle.truck", "Vehicles primarily designed to haul cargo.", (255, 99, 71), 0.5),
        (24, "flat.driveable_surface", "All paved or unpaved surfaces that a car can drive on.", (0, 207, 191), 0.12),
        (25, "flat.other", "All other forms of horizontal ground-level structures.", (175, 0, 75), 0.2),
        (26, "flat.sidewalk", "Sidewalk, pedestrian walkways, bike paths, etc.", (75, 0, 75), 0.3),
        (27, "flat.terrain", "Natural horizontal surfaces such as ground level horizontal vegetation.", (112, 180, 60), 0.45),
        (28, "static.manmade", "Includes man-made structures but not limited to: buildings, walls, poles.", (222, 184, 135), 0.35),
        (29, "static.other", "Points in the background that are not distinguishable.", (255, 228, 196), 0.2),
        (30, "static.vegetation", "Any vegetation in the frame that is higher than the ground.", (0, 175, 0), 0.6),
        (31, "vehicle.ego", "The vehicle on which the sensors are mounted.", (255, 240, 245), 0.5),
    ]
)

BY_NAME: dict[str, Category] = {c.name: c for c in CATEGORIES}

# Short names used by the world builder.
ROAD = BY_NAME["flat.driveable_surface"].index
SIDEWALK = BY_NAME["flat.sidewalk"].index
TERRAIN = BY_NAME["flat.terrain"].index
VEGETATION = BY_NAME["static.vegetation"].index
MANMADE = BY_NAME["static.manmade"].index
CAR = BY_NAME["vehicle.car"].index
PEDESTRIAN = BY_NAME["human.pedestrian.adult"].index
TRAFFIC_CONE = BY_NAME["movable_object.trafficcone"].index
BARRIER = BY_NAME["movable_object.barrier"].index

USED_CLASSES: tuple[int, ...] = (ROAD, SIDEWALK, TERRAIN, VEGETATION, MANMADE, CAR, PEDESTRIAN, TRAFFIC_CONE, BARRIER)


def reflectivity_table() -> "list[float]":
    """Reflectivity indexed by category index (length 32)."""
    return [c.reflectivity for c in CATEGORIES]


def classes_json() -> dict:
    """The ``groundtruth/classes.json`` document: id -> name, colour, reflectivity."""
    classes = {
        str(c.index): {
            "name": c.name,
            "color_rgb": list(c.color_rgb),
            "reflectivity": c.reflectivity,
            "in_world": c.index in USED_CLASSES,
        }
        for c in CATEGORIES
    }
    classes[str(SKY_ID)] = {"name": "sky", "color_rgb": [135, 190, 235], "reflectivity": 0.0, "in_world": True}
    return {
        "description": "Semantic ids of lidarseg/*.bin and groundtruth/*_semantic.png: nuScenes-lidarseg"
        " category indices; 255 = sky (no surface, camera only).",
        "depth": "groundtruth/*_depth.npy: float32 (H, W) camera-frame z in metres of the surface seen at"
        " each pixel centre; 0.0 where no surface is hit (sky).",
        "classes": classes,
    }
