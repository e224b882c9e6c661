"""Ground beyond the street and geometry in the middle distance, as the LiDAR sees them in KITTI.

Without these a synthetic scan is a flat disc of lawn with a row of buildings: real scans show
slopes, embankments and uneven verges past the sidewalk, and houses, trees, walls, fences and
guard rails 30-80 m out that the beams reach through every gap. Everything here is background
(class 0) and is drawn from random streams of its own, so the street, its roadside objects and the
road users of a seed stay where they were.

Terrain: per side of the street, a flat verge, then a slope up (cutting) or down (embankment, the
road on a dam), or rolling ground, with a gentle grade further out, long swells and short bumps.
``Terrain.height(x, y)`` is the surface's height; objects standing on it are lowered or raised
onto it with ``Terrain.settle``.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .materials import Material
from .meshes import Mesh, box, cylinder, frustum, merge, rot_z, sphere

TERRAIN_REACH_M = 160.0  # how far out the ground goes, as the flat verge did before
# Distance samples across the terrain beyond the sidewalk: fine where the low beams land, coarse far out.
TERRAIN_ACROSS_M = np.concatenate([np.arange(0.0, 12.0, 0.5), np.arange(12.0, 40.0, 1.5),
                                   np.arange(40.0, TERRAIN_REACH_M + 0.1, 5.0)])
TERRAIN_ALONG_STEP_M = 2.0
TERRAIN_HEIGHT_LIMIT_M = (-8.0, 12.0)
# Far surroundings: lateral distance from the street's centre line.
FAR_BAND_M = (30.0, 80.0)

# side kind -> probability by street style
SIDE_KINDS = ("flat", "cutting", "embankment", "rolling")
SIDE_KIND_P = {"city": (0.6, 0.2, 0.1, 0.1), "residential": (0.35, 0.25, 0.15, 0.25),
               "rural": (0.15, 0.3, 0.3, 0.25)}
GUARD_RAIL_P = {"embankment": 0.7, "rural": 0.35}
FAR_ELEMENTS = ("house", "trees", "wall", "fence", "none")
FAR_ELEMENT_P = {"city": (0.5, 0.2, 0.15, 0.05, 0.1), "residential": (0.45, 0.3, 0.1, 0.1, 0.05),
                 "rural": (0.25, 0.4, 0.05, 0.15, 0.15)}
ROOF_COLOURS = np.array([[150, 60, 45], [90, 50, 40], [70, 70, 75], [120, 115, 110], [60, 60, 55]])
GREY_METAL = (170, 172, 175)


def _smoothstep(u: np.ndarray) -> np.ndarray:
    u = np.clip(u, 0.0, 1.0)
    return u * u * (3 - 2 * u)


@dataclass
class SideProfile:
    """The ground on one side of the street, as a function of the distance d beyond the sidewalk."""

    side: int  # -1 right (y < 0), +1 left
    outer: float  # y of the sidewalk's outer edge, where the terrain starts
    kind: str
    verge: float  # flat width before the slope starts
    slope_width: float
    rise: float  # height gained (negative: lost) over the slope
    grade: float  # further rise per metre beyond the slope
    swell: float  # amplitude of the long swells
    bump: float  # amplitude of the short bumps (uneven, grassy ground)
    waves: np.ndarray  # (4, 3) wavelength along x, wavelength across, phase

    def height(self, x: np.ndarray, d: np.ndarray) -> np.ndarray:
        x = np.asarray(x, np.float64)
        d = np.maximum(np.asarray(d, np.float64), 0.0)
        base = self.rise * _smoothstep((d - self.verge) / self.slope_width)
        base = base + self.grade * np.maximum(d - self.verge - self.slope_width, 0.0)
        w = self.waves
        swell = np.sin(2 * np.pi * x / w[0, 0] + w[0, 2]) * np.sin(2 * np.pi * d / w[0, 1] + w[1, 2])
        swell = swell + 0.5 * np.sin(2 * np.pi * (x / w[1, 0] + d / w[1, 1]) + w[2, 2])
        bumps = np.sin(2 * np.pi * x / w[2, 0] + w[3, 2]) * np.sin(2 * np.pi * d / w[2, 1])
        bumps = bumps + np.sin(2 * np.pi * (x / w[3, 0] - d / w[3, 1]))
        # The verge next to the sidewalk stays level; swells grow in over the first 10 m past it.
        swell_in = _smoothstep((d - self.verge) / 10.0)
        bump_in = _smoothstep((d - 0.3) / 2.0)
        z = base + self.swell * swell_in * swell + 0.5 * self.bump * bump_in * bumps
        return np.clip(z, *TERRAIN_HEIGHT_LIMIT_M)


class Terrain:
    """Both sides of the street's ground; level (z = 0) between the sidewalks' outer edges."""

    def __init__(self, layout, rng: np.random.Generator):
        self.layout = layout
        self.sides: dict[int, SideProfile] = {}
        for side, edge in ((-1, layout.road_right), (1, layout.road_left)):
            outer = edge + side * (0.2 + layout.sidewalk_width)
            kind = SIDE_KINDS[rng.choice(len(SIDE_KINDS), p=SIDE_KIND_P[layout.style])]
            verge = rng.uniform(0.5, 4.0) if layout.style == "rural" else rng.uniform(2.0, 10.0)
            if kind == "flat":
                rise, width, grade, swell = 0.0, 10.0, rng.uniform(-0.005, 0.01), rng.uniform(0.0, 0.2)
            elif kind == "cutting":
                rise, width, grade, swell = rng.uniform(0.8, 5.0), rng.uniform(3, 12), rng.uniform(0, 0.05), \
                    rng.uniform(0.2, 1.0)
            elif kind == "embankment":
                rise, width, grade, swell = -rng.uniform(0.8, 3.5), rng.uniform(2, 8), rng.uniform(-0.01, 0.02), \
                    rng.uniform(0.2, 0.8)
            else:
                rise, width, grade, swell = rng.uniform(-0.5, 1.5), rng.uniform(5, 15), rng.uniform(-0.02, 0.04), \
                    rng.uniform(0.8, 2.5)
            waves = np.column_stack([np.array([rng.uniform(40, 120), rng.uniform(25, 70), rng.uniform(1.5, 4),
                                               rng.uniform(2, 5)]),
                                     np.array([rng.uniform(30, 90), rng.uniform(40, 110), rng.uniform(1.5, 4),
                                               rng.uniform(2, 5)]),
                                     rng.uniform(0, 2 * np.pi, 4)])
            self.sides[side] = SideProfile(side, float(outer), kind, float(verge), float(width), float(rise),
                                           float(grade), float(swell), float(rng.uniform(0.02, 0.08)), waves)

    def height(self, x, y) -> np.ndarray:
        """Ground height at world (x, y); 0 on the road and sidewalks."""
        x = np.asarray(x, np.float64)
        y = np.asarray(y, np.float64)
        z = np.zeros(np.broadcast(x, y).shape)
        for side, prof in self.sides.items():
            d = side * (y - prof.outer)
            beyond = d > 0
            if np.any(beyond):
                z = np.where(beyond, prof.height(x, d), z)
        return z

    def mesh(self, colour) -> Mesh:
        """Both sides as grass height fields from the sidewalk's outer edge out to TERRAIN_REACH_M."""
        lay = self.layout
        xs = np.arange(lay.x_min, lay.x_max + TERRAIN_ALONG_STEP_M / 2, TERRAIN_ALONG_STEP_M)
        parts = []
        for side, prof in self.sides.items():
            xx, dd = np.meshgrid(xs, TERRAIN_ACROSS_M, indexing="ij")
            zz = prof.height(xx, dd)
            # The old flat verge lay 2 cm above the road; keep that step at the sidewalk's edge.
            zz = zz + 0.02
            verts = np.column_stack([xx.ravel(), (prof.outer + side * dd).ravel(), zz.ravel()])
            nx, nd = xx.shape
            i, j = np.meshgrid(np.arange(nx - 1), np.arange(nd - 1), indexing="ij")
            a = (i * nd + j).ravel()
            b, c, e = a + nd, a + nd + 1, a + 1
            # Counter-clockwise seen from above on either side (the across axis flips with the side).
            tris = np.vstack([np.column_stack([a, b, c]), np.column_stack([a, c, e])]) if side > 0 else \
                np.vstack([np.column_stack([a, c, b]), np.column_stack([a, e, c])])
            mat = np.full(len(tris), Material.GRASS, np.uint8)
            col = np.empty((len(tris), 3), np.uint8)
            col[:] = np.asarray(colour).astype(np.uint8)
            parts.append(Mesh(verts, tris.astype(np.int64), mat, col))
        return merge(parts)

    def settle(self, meshes: list[Mesh], sink: float = 0.08) -> list[Mesh]:
        """The meshes moved up or down so each one's lowest point stands on the ground (never floating).

        The height is taken under each mesh's lowest vertices, at the lowest of them, and the mesh
        is sunk a few centimetres more where the ground is not level, so short bumps between
        terrain vertices cannot leave a gap under it. One height evaluation for all meshes.
        """
        feet, owner = [], []
        for k, mesh in enumerate(meshes):
            v = mesh.vertices
            if len(v):
                low = v[v[:, 2] <= v[:, 2].min() + 0.01]
                feet.append(low[:, :2])
                owner.append(np.full(len(low), k))
        if not feet:
            return list(meshes)
        xy, owner_of = np.concatenate(feet), np.concatenate(owner)
        ground = self.height(xy[:, 0], xy[:, 1])
        lowest = np.full(len(meshes), np.inf)
        np.minimum.at(lowest, owner_of, ground)
        steepest = np.zeros(len(meshes))
        np.maximum.at(steepest, owner_of, np.abs(ground))
        out = []
        for k, mesh in enumerate(meshes):
            lift = lowest[k] - (sink if steepest[k] > 0.01 else 0.0) if np.isfinite(lowest[k]) else 0.0
            out.append(mesh.translated([0.0, 0.0, lift]) if lift != 0.0 else mesh)
        return out


# ------------------------------------------------------------------------------ middle distance

def tree(x: float, y: float, rng: np.random.Generator) -> list[Mesh]:
    """A tree (trunk and jittered crown) standing at (x, y, 0)."""
    trunk_h = rng.uniform(1.5, 4.5)
    crown = rng.uniform(1.5, 4.0)
    trunk = cylinder(rng.uniform(0.12, 0.35), trunk_h + crown * 0.5, 7, Material.BARK, (80, 62, 45))
    green = (int(rng.integers(40, 85)), int(rng.integers(75, 130)), int(rng.integers(30, 60)))
    leaves = sphere((crown, crown, crown * rng.uniform(0.9, 1.5)), (x, y, trunk_h + crown), 1, Material.FOLIAGE,
                    green, jitter=0.25, rng=rng)
    return [trunk.translated([x, y, 0]), leaves]


def house(x: float, y: float, length: float, depth: float, wall_h: float, yaw: float,
          rng: np.random.Generator, facade_colours: np.ndarray) -> Mesh:
    """A house: walls and a gable roof (ridge along its length), bottom centre at (x, y, 0)."""
    colour = facade_colours[rng.integers(len(facade_colours))]
    walls = box((length, depth, wall_h), (0.0, 0.0, wall_h / 2), Material.FACADE, colour)
    roof_h = depth * rng.uniform(0.2, 0.5) if rng.random() < 0.8 else 0.3  # some flat roofs
    overhang = rng.uniform(0.2, 0.5)
    roof = frustum((-length / 2 - overhang, length / 2 + overhang), (-length / 2 - overhang, length / 2 + overhang),
                   depth / 2 + overhang, 0.05, wall_h, wall_h + roof_h, Material.ROOF,
                   ROOF_COLOURS[rng.integers(len(ROOF_COLOURS))])
    return merge([walls, roof]).transformed(rot_z(yaw), np.array([x, y, 0.0]))


def fence(x0: float, x1: float, y: float, rng: np.random.Generator) -> list[Mesh]:
    """Posts and two rails (wood or metal) along x at y."""
    wooden = rng.random() < 0.5
    material, colour = (Material.BARK, (120, 95, 70)) if wooden else (Material.METAL, GREY_METAL)
    height = rng.uniform(1.0, 1.8)
    spacing = rng.uniform(2.0, 3.5)
    parts = [box((0.1, 0.1, height), (px, y, height / 2), material, colour) for px in np.arange(x0, x1, spacing)]
    for rail_z in (0.35 * height, 0.85 * height):
        parts.append(box((x1 - x0, 0.05, 0.1), ((x0 + x1) / 2, y, rail_z), material, colour))
    return parts


def guard_rail(x0: float, x1: float, y: float, rng: np.random.Generator) -> list[Mesh]:
    """A steel guard rail: a 0.3 m beam at 0.45-0.75 m on posts every 2-4 m."""
    spacing = rng.uniform(2.0, 4.0)
    parts = [box((0.1, 0.1, 0.75), (px, y, 0.375), Material.METAL, GREY_METAL) for px in np.arange(x0, x1, spacing)]
    parts.append(box((x1 - x0, 0.06, 0.3), ((x0 + x1) / 2, y, 0.6), Material.METAL, GREY_METAL))
    return parts


def far_surroundings(layout, terrain: Terrain, rng: np.random.Generator, facade_colours: np.ndarray) -> list[Mesh]:
    """Houses, tree groups, walls and fences 30-80 m from the street, and guard rails along the verge."""
    parts: list[Mesh] = []
    standing: list[Mesh] = []  # set on the ground at the end, all at once
    trees: list[tuple[tuple[float, float], list[Mesh]]] = []  # trunk and crown move together
    for side, prof in terrain.sides.items():
        # Guard rails on the verge where the road runs on an embankment, and on some rural roads.
        p_rail = GUARD_RAIL_P["embankment"] if prof.kind == "embankment" else \
            (GUARD_RAIL_P["rural"] if layout.style == "rural" else 0.0)
        if rng.random() < p_rail:
            rail_y = prof.outer + side * min(rng.uniform(0.4, 0.9), prof.verge * 0.8)
            x = layout.x_min
            while x < layout.x_max:
                run = rng.uniform(30, 150)
                parts += terrain.settle(guard_rail(x, min(x + run, layout.x_max), rail_y, rng))
                x += run + (rng.uniform(5, 30) if rng.random() < 0.3 else 0.0)
        near = max(FAR_BAND_M[0], abs(prof.outer) + 15.0)
        far = max(FAR_BAND_M[1], near + 10.0)
        x = layout.x_min + rng.uniform(0, 15)
        while x < layout.x_max:
            element = FAR_ELEMENTS[rng.choice(len(FAR_ELEMENTS), p=FAR_ELEMENT_P[layout.style])]
            span = rng.uniform(8, 30)
            y = side * rng.uniform(near, far)
            if element == "house":
                tall = layout.style == "city"
                wall_h = rng.uniform(8, 22) if tall else rng.uniform(3, 7)
                standing.append(house(x + span / 2, y, span, rng.uniform(7, 14), wall_h, rng.normal(0, 0.15), rng,
                                      facade_colours))
            elif element == "trees":
                for _ in range(int(rng.integers(2, 7))):
                    tx, ty = x + rng.uniform(0, span), y + rng.normal(0, 4)
                    trees.append(((tx, ty), tree(tx, ty, rng)))
            elif element == "wall":
                height = rng.uniform(1.5, 3.0)
                standing.append(box((span, 0.3, height), (x + span / 2, y, height / 2), Material.WALL,
                                    facade_colours[rng.integers(len(facade_colours))]))
            elif element == "fence":
                standing += fence(x, x + span, y, rng)
            x += span + rng.uniform(2, 25)
    parts += terrain.settle(standing)
    if trees:
        at = np.array([xy for xy, _ in trees])
        ground = terrain.height(at[:, 0], at[:, 1]) - 0.05
        parts += [m.translated([0.0, 0.0, g]) for g, (_, meshes) in zip(ground, trees) for m in meshes]
    return parts
