"""Street furniture next to the road: the near clutter real KITTI streets are full of.

Why: on the real object frames the segmentation network called parked bicycles "cyclist",
hedges "pedestrian" and a trailer, bins and cabinets "car", all within 5-12 m of the car
(docs/segmentation.md, "Street furniture"). The generator's near roadside had lamps, signs,
trees, walls and bushes only, so the network never saw a bicycle without a rider or a box the
size of a car's back that is not one. None of these objects is labelled: they are background
(class 0), as in KITTI, where parked bicycles are unlabelled and trailers are Misc.

Each object is placed on a sidewalk band or just beyond it and reports its footprint, so that
the world can keep pedestrians from standing inside it. Everything is drawn from the generator
passed in (the world gives this module a stream of its own, so adding furniture moves nothing
else in a scene).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .materials import Material
from .meshes import Mesh, bicycle_parts, box, cylinder, merge, rot_x, rot_z, sphere, wheel

BIN_COLOURS = np.array([[40, 40, 42], [70, 72, 75], [30, 90, 45], [40, 70, 140], [120, 80, 40], [200, 180, 40]])
CABINET_COLOURS = np.array([[170, 172, 168], [120, 130, 110], [200, 200, 195], [90, 110, 90]])
BIKE_COLOURS = np.array([[20, 20, 22], [200, 200, 205], [150, 20, 25], [25, 45, 110], [40, 90, 50], [90, 90, 95],
                         [210, 120, 20]])
TARP_COLOURS = np.array([[30, 40, 70], [60, 70, 60], [120, 120, 125], [150, 40, 30]])
HEDGE_GREENS = np.array([[45, 85, 35], [60, 100, 45], [35, 70, 30], [70, 95, 50]])

# Expected number of placements per 100 m of one side of the street, by style. A placement is
# one group (a bicycle stand, a row of bins or bollards, one cabinet, one hedge run).
RATES_PER_100M = {
    "city": {"bicycles": 2.0, "bins": 1.5, "bollards": 1.0, "cabinet": 2.0, "bench": 0.6, "pillar": 0.4,
             "hedge": 0.5, "trailer": 0.2},
    "residential": {"bicycles": 0.8, "bins": 2.5, "bollards": 0.4, "cabinet": 1.2, "bench": 0.3, "pillar": 0.0,
                    "hedge": 1.5, "trailer": 0.7},
    "rural": {"bicycles": 0.1, "bins": 0.5, "bollards": 0.1, "cabinet": 0.5, "bench": 0.1, "pillar": 0.0,
              "hedge": 0.8, "trailer": 0.4},
}


@dataclass
class Footprint:
    """Axis-aligned ground rectangle an object stands on (world x, y), for overlap checks."""
    x0: float
    x1: float
    y0: float
    y1: float

    def overlaps(self, x: float, y: float, half_length: float, half_width: float, clearance: float = 0.2) -> bool:
        return (x + half_length + clearance > self.x0 and x - half_length - clearance < self.x1
                and y + half_width + clearance > self.y0 and y - half_width - clearance < self.y1)


def _footprint(mesh: Mesh) -> Footprint:
    lo, hi = mesh.vertices[:, :2].min(0), mesh.vertices[:, :2].max(0)
    return Footprint(float(lo[0]), float(hi[0]), float(lo[1]), float(hi[1]))


def parked_bicycles(x: float, y: float, side: int, rng: np.random.Generator) -> list[Mesh]:
    """A bicycle stand: 1-8 bicycles side by side, across the sidewalk or along it."""
    across = rng.random() < 0.7
    yaw = (np.pi / 2 if across else 0.0) + rng.normal(0, 0.08)
    spacing = rng.uniform(0.55, 0.9) if across else rng.uniform(1.8, 2.2)
    out = []
    for k in range(int(rng.integers(1, 9))):
        length = rng.uniform(1.6, 1.85)
        parts, _, _ = bicycle_parts(length, BIKE_COLOURS[rng.integers(len(BIKE_COLOURS))])
        bike = merge(parts)
        if rng.random() < 0.3:  # leaning on its stand
            bike = bike.transformed(rot_x(rng.choice([-1, 1]) * rng.uniform(0.1, 0.25)), np.zeros(3))
        centre = np.array([x + k * spacing, y, 0.0])
        if across:  # wheels towards the street or away from it
            centre[1] = y - side * rng.normal(0, 0.1)
        out.append(bike.transformed(rot_z(yaw + (np.pi if rng.random() < 0.5 else 0.0)), centre))
    return out


def wheelie_bins(x: float, y: float, rng: np.random.Generator) -> list[Mesh]:
    """1-4 wheeled rubbish bins (0.5-0.8 m square, 0.9-1.3 m high) in a row."""
    out = []
    u = x
    for _ in range(int(rng.integers(1, 5))):
        w, d, h = rng.uniform(0.5, 0.8), rng.uniform(0.5, 0.8), rng.uniform(0.9, 1.3)
        colour = BIN_COLOURS[rng.integers(len(BIN_COLOURS))]
        body = box((w, d, h - 0.05), (0, 0, (h - 0.05) / 2), Material.WALL if rng.random() < 0.3 else Material.METAL,
                   colour)
        lid = box((w + 0.06, d + 0.06, 0.05), (0, 0, h - 0.025), Material.METAL, colour * 0.8)
        out.append(merge([body, lid]).transformed(rot_z(rng.normal(0, 0.15)), np.array([u + w / 2, y, 0.0])))
        u += w + rng.uniform(0.05, 0.4)
    return out


def bollards(x: float, y: float, rng: np.random.Generator) -> list[Mesh]:
    """A row of posts along the curb: 0.05-0.12 m thick, 0.6-1.1 m high, every 1.2-3 m for 4-30 m."""
    run, spacing = rng.uniform(4, 30), rng.uniform(1.2, 3.0)
    r, h = rng.uniform(0.05, 0.12), rng.uniform(0.6, 1.1)
    colour = (150, 150, 152) if rng.random() < 0.6 else (40, 40, 42)
    return [cylinder(r, h, 8, Material.METAL, colour).translated([px, y, 0.0]) for px in np.arange(x, x + run, spacing)]


def cabinet(x: float, y: float, rng: np.random.Generator) -> list[Mesh]:
    """A street cabinet, post box or ticket machine: a box 0.3-1.4 m wide and 0.6-1.7 m high."""
    w, d, h = rng.uniform(0.3, 1.4), rng.uniform(0.25, 0.6), rng.uniform(0.6, 1.7)
    colour = CABINET_COLOURS[rng.integers(len(CABINET_COLOURS))]
    return [box((w, d, h), (x, y, h / 2), Material.METAL, colour)]


def bench(x: float, y: float, side: int, rng: np.random.Generator) -> list[Mesh]:
    """A bench along the street: seat at 0.45 m, backrest to 0.85 m, 1.4-2.2 m long."""
    length = rng.uniform(1.4, 2.2)
    colour = (120, 90, 60) if rng.random() < 0.6 else (60, 90, 60)
    seat = box((length, 0.45, 0.06), (x, y, 0.45), Material.BARK, colour)
    back = box((length, 0.06, 0.4), (x, y + side * 0.22, 0.67), Material.BARK, colour)
    legs = [box((0.06, 0.4, 0.45), (x + u, y, 0.225), Material.METAL, (60, 60, 62)) for u in (-length / 2 + 0.1,
                                                                                          length / 2 - 0.1)]
    return [seat, back, *legs]


def advertising_pillar(x: float, y: float, rng: np.random.Generator) -> list[Mesh]:
    """A round advertising column: radius 0.5-0.7 m, 2.5-3.6 m high, with a cap."""
    r, h = rng.uniform(0.5, 0.7), rng.uniform(2.5, 3.6)
    body = cylinder(r, h, 14, Material.FACADE, (210, 200, 180)).translated([x, y, 0.0])
    cap = cylinder(r + 0.1, 0.2, 14, Material.METAL, (40, 70, 50)).translated([x, y, h])
    return [body, cap]


def hedge(x: float, y: float, rng: np.random.Generator) -> list[Mesh]:
    """A hedge run, 3-25 m: trimmed (even top, 0.6-2.2 m) or overgrown (lumps of 0.4-1.1 m radius
    whose tops wander between 0.8 and 2.6 m, gaps, single bushes standing out).

    Why overgrown ones: on the real object frames, untrimmed hedges and shrubs were called
    pedestrian; they break up into person-sized lumps, which a smooth trimmed run never does."""
    run = rng.uniform(3, 25)
    depth = rng.uniform(0.5, 1.2)
    green = HEDGE_GREENS[rng.integers(len(HEDGE_GREENS))]
    if rng.random() < 0.5:
        h = rng.uniform(0.6, 2.2)
        return [sphere((0.7, depth / 2, h / 2), (u, y, h / 2), 1, Material.FOLIAGE, green, jitter=0.12, rng=rng)
                for u in np.arange(x, x + run, 0.8)]
    lumps, u, top = [], x, rng.uniform(1.0, 2.2)
    while u < x + run:
        radius = rng.uniform(0.4, 1.1)
        top = float(np.clip(top + rng.normal(0, 0.35), 0.8, 2.6))
        shade = np.clip(green * rng.uniform(0.8, 1.2), 0, 255)
        lumps.append(sphere((radius, depth / 2 * rng.uniform(0.7, 1.3), top / 2), (u, y + rng.normal(0, 0.15), top / 2),
                            1, Material.FOLIAGE, shade, jitter=0.25, rng=rng))
        u += radius * rng.uniform(1.0, 1.8) + (rng.uniform(0.3, 1.2) if rng.random() < 0.15 else 0.0)
    return lumps


def trailer(x: float, y: float, rng: np.random.Generator) -> list[Mesh]:
    """A small car trailer (KITTI: Misc): a 1.8-3.2 m box body on two wheels, open or under a tarp."""
    length, width = rng.uniform(1.8, 3.2), rng.uniform(1.2, 1.7)
    floor, side_h = 0.55, rng.uniform(0.3, 0.5)
    metal = (150, 152, 155)
    parts = [box((length, width, 0.08), (0, 0, floor), Material.METAL, metal)]
    for sy in (-1, 1):
        parts.append(box((length, 0.04, side_h), (0, sy * width / 2, floor + side_h / 2), Material.METAL, metal))
        parts.append(wheel(0.28, 0.16, (0, sy * (width / 2 + 0.1) - (0.16 if sy < 0 else 0.0), 0.28)))
    for sx in (-1, 1):
        parts.append(box((0.04, width, side_h), (sx * length / 2, 0, floor + side_h / 2), Material.METAL, metal))
    parts.append(box((1.0, 0.08, 0.08), (length / 2 + 0.5, 0, floor), Material.METAL, (60, 60, 62)))  # drawbar
    if rng.random() < 0.5:  # a tarp cover over a frame
        tarp_h = rng.uniform(0.6, 1.2)
        parts.append(box((length, width, tarp_h), (0, 0, floor + side_h + tarp_h / 2), Material.CLOTH,
                         TARP_COLOURS[rng.integers(len(TARP_COLOURS))]))
    return [merge(parts).transformed(rot_z(rng.normal(0, 0.05) + (np.pi if rng.random() < 0.5 else 0.0)),
                                     np.array([x, y, 0.0]))]


def _off_the_road(group: list[Mesh], road_edge: float, side: int, clearance: float = 0.25) -> list[Mesh]:
    """The group moved away from the road until it keeps `clearance` from the road's edge (a wide
    bicycle stand on a narrow rural sidewalk would otherwise reach onto the carriageway)."""
    ys = np.concatenate([m.vertices[:, 1] for m in group])
    nearest = ys.min() if side > 0 else ys.max()
    intrusion = side * (road_edge + side * clearance - nearest)
    if intrusion <= 0:
        return group
    return [m.translated([0.0, side * intrusion, 0.0]) for m in group]


def street_furniture(layout, side: int, road_edge: float, outer: float, length_from: float, length_to: float,
                     rng: np.random.Generator) -> tuple[list[Mesh], list[Mesh], list[Footprint]]:
    """Furniture along one side of the street between x = length_from and length_to.

    road_edge: y of the road's edge on this side; outer: y where the sidewalk ends. Every mesh
    stands on z = 0. Returns (meshes on the sidewalk, for the caller to lift onto it; meshes beyond
    the sidewalk, for the caller to set on the terrain; the footprints of all of them).
    """
    rates = RATES_PER_100M[layout.style]
    curb_band = road_edge + side * rng.uniform(0.35, 0.6)  # bollards, cabinets at the curb
    width = abs(outer - road_edge)
    on_sidewalk: list[Mesh] = []
    beyond: list[Mesh] = []
    for kind, rate in rates.items():
        n = rng.poisson(rate * (length_to - length_from) / 100.0)
        for x in rng.uniform(length_from, length_to, n):
            # Most things stand at the back of the sidewalk, some at the curb; hedges and trailers beyond it.
            back = outer - side * rng.uniform(0.3, 0.7)
            if kind == "bicycles":
                group = parked_bicycles(x, back if rng.random() < 0.7 else curb_band, side, rng)
            elif kind == "bins":
                group = wheelie_bins(x, back if rng.random() < 0.6 else curb_band, rng)
            elif kind == "bollards":
                group = bollards(x, curb_band if width > 1.5 or rng.random() < 0.5 else road_edge + side * 0.3, rng)
            elif kind == "cabinet":
                group = cabinet(x, back if rng.random() < 0.5 else curb_band, rng)
            elif kind == "bench":
                group = bench(x, back, side, rng)
            elif kind == "pillar":
                group = advertising_pillar(x, (road_edge + outer) / 2, rng)
            elif kind == "hedge":
                group = hedge(x, outer + side * rng.uniform(0.3, 0.8), rng)
            else:
                group = trailer(x, outer + side * rng.uniform(1.0, 2.5), rng)
            group = _off_the_road(group, road_edge, side)
            (beyond if kind in ("hedge", "trailer") else on_sidewalk).extend(group)
    return on_sidewalk, beyond, [_footprint(m) for m in on_sidewalk + beyond]
