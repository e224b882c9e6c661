"""Triangle meshes of the synthetic world: primitives and the shapes of cars, people and bicycles.

Every mesh carries one material id and one RGB colour per triangle, so a ray hit tells the
LiDAR model how much light comes back and the camera shader what to paint. Shapes are built in
an object's own frame: x forward, y left, z up, origin at the centre of the box's bottom face
(where KITTI puts an object's location).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .materials import Material


@dataclass
class Mesh:
    vertices: np.ndarray  # (V, 3) float64
    triangles: np.ndarray  # (T, 3) int64
    material: np.ndarray  # (T,) uint8 material id
    colour: np.ndarray  # (T, 3) uint8 base colour

    @staticmethod
    def empty() -> "Mesh":
        return Mesh(np.zeros((0, 3)), np.zeros((0, 3), np.int64), np.zeros(0, np.uint8), np.zeros((0, 3), np.uint8))

    def transformed(self, rotation: np.ndarray, translation: np.ndarray) -> "Mesh":
        return Mesh(self.vertices @ np.asarray(rotation).T + translation, self.triangles, self.material, self.colour)

    def translated(self, translation) -> "Mesh":
        return Mesh(self.vertices + np.asarray(translation, np.float64), self.triangles, self.material, self.colour)

    def painted(self, material: int, colour) -> "Mesh":
        return Mesh(self.vertices, self.triangles, *_paint(len(self.triangles), material, colour))


def _paint(n: int, material: int, colour) -> tuple[np.ndarray, np.ndarray]:
    """(material (n,), colour (n, 3)) arrays of one material and colour (fresh arrays: callers edit them)."""
    mat = np.empty(n, np.uint8)
    mat.fill(material)
    col = np.empty((n, 3), np.uint8)
    col[:] = np.asarray(colour).astype(np.uint8, copy=False)
    return mat, col


def merge(meshes: list[Mesh]) -> Mesh:
    meshes = [m for m in meshes if len(m.triangles)]
    if not meshes:
        return Mesh.empty()
    offsets = np.cumsum([0] + [len(m.vertices) for m in meshes[:-1]])
    return Mesh(np.concatenate([m.vertices for m in meshes]),
                np.concatenate([m.triangles + o for m, o in zip(meshes, offsets)]),
                np.concatenate([m.material for m in meshes]), np.concatenate([m.colour for m in meshes]))


def rot_z(yaw: float) -> np.ndarray:
    c, s = np.cos(yaw), np.sin(yaw)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def rot_y(pitch: float) -> np.ndarray:
    c, s = np.cos(pitch), np.sin(pitch)
    return np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])


def rot_x(roll: float) -> np.ndarray:
    c, s = np.cos(roll), np.sin(roll)
    return np.array([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]])


# Faces of a hexahedron whose 8 corners are ordered bottom (z-) ring then top (z+) ring, each
# ring counter-clockwise seen from above starting at (-x, -y): outward-facing triangles.
_HEX_FACES = np.array([
    [0, 2, 1], [0, 3, 2],  # bottom
    [4, 5, 6], [4, 6, 7],  # top
    [0, 1, 5], [0, 5, 4],  # -y side
    [1, 2, 6], [1, 6, 5],  # +x front
    [2, 3, 7], [2, 7, 6],  # +y side
    [3, 0, 4], [3, 4, 7],  # -x back
])
HEX_FACE_NAMES = ("bottom", "bottom", "top", "top", "right", "right", "front", "front", "left", "left",
                  "back", "back")
_HEX_FACE_INDEX = {name: [i for i, n in enumerate(HEX_FACE_NAMES) if n == name] for name in set(HEX_FACE_NAMES)}
_HEX_FACES.setflags(write=False)  # shared by every hexahedron: offsets are added on merge, never in place
_BOX_CORNERS = np.array([[-1, -1, -1], [1, -1, -1], [1, 1, -1], [-1, 1, -1],
                         [-1, -1, 1], [1, -1, 1], [1, 1, 1], [-1, 1, 1]], np.float64)


def hexahedron(bottom: np.ndarray, top: np.ndarray, material: int, colour,
               face_materials: dict[str, int] | None = None) -> Mesh:
    """A closed 6-faced solid from its 4 bottom and 4 top corners (see _HEX_FACES for order)."""
    vertices = np.empty((8, 3), np.float64)
    vertices[:4] = bottom
    vertices[4:] = top
    mesh = Mesh(vertices, _HEX_FACES, *_paint(12, material, colour))
    for name, mat in (face_materials or {}).items():
        mesh.material[_HEX_FACE_INDEX[name]] = mat
    return mesh


def box(size, centre=(0.0, 0.0, 0.0), material: int = 0, colour=(128, 128, 128),
        face_materials: dict[str, int] | None = None) -> Mesh:
    """Axis-aligned box of size (lx, ly, lz) around centre."""
    vertices = _BOX_CORNERS * (np.asarray(size, np.float64) / 2)
    vertices += np.asarray(centre, np.float64)
    mesh = Mesh(vertices, _HEX_FACES, *_paint(12, material, colour))
    for name, mat in (face_materials or {}).items():
        mesh.material[_HEX_FACE_INDEX[name]] = mat
    return mesh


def frustum(bottom_x: tuple[float, float], top_x: tuple[float, float], bottom_half_width: float,
            top_half_width: float, z0: float, z1: float, material: int, colour,
            face_materials: dict[str, int] | None = None) -> Mesh:
    """A box whose top face is shorter/narrower than its bottom (a car cabin with sloped glass)."""
    (bx0, bx1), (tx0, tx1) = bottom_x, top_x
    bw, tw = bottom_half_width, top_half_width
    bottom = np.array([[bx0, -bw, z0], [bx1, -bw, z0], [bx1, bw, z0], [bx0, bw, z0]])
    top = np.array([[tx0, -tw, z1], [tx1, -tw, z1], [tx1, tw, z1], [tx0, tw, z1]])
    return hexahedron(bottom, top, material, colour, face_materials)


def cylinder(radius: float, length: float, segments: int = 12, material: int = 0, colour=(128, 128, 128)) -> Mesh:
    """Closed cylinder along z from 0 to length."""
    unit, tris = _cylinder_template(segments)
    verts = unit * np.array([radius, radius, length])
    return Mesh(verts, tris, *_paint(len(tris), material, colour))


_CYLINDERS: dict[int, tuple[np.ndarray, np.ndarray]] = {}


def _cylinder_template(segments: int) -> tuple[np.ndarray, np.ndarray]:
    """(vertices of radius 1 and length 1, triangles), built once per segment count."""
    if segments not in _CYLINDERS:
        angles = np.linspace(0, 2 * np.pi, segments, endpoint=False)
        ring = np.column_stack([np.cos(angles), np.sin(angles)])
        verts = np.vstack([np.column_stack([ring, np.zeros(segments)]), np.column_stack([ring, np.ones(segments)]),
                           [[0, 0, 0], [0, 0, 1]]])
        i = np.arange(segments)
        j = (i + 1) % segments
        sides = np.vstack([np.column_stack([i, j, j + segments]), np.column_stack([i, j + segments, i + segments])])
        caps = np.vstack([np.column_stack([np.full(segments, 2 * segments), j, i]),
                          np.column_stack([np.full(segments, 2 * segments + 1), i + segments, j + segments])])
        tris = np.vstack([sides, caps])
        verts.setflags(write=False)
        tris.setflags(write=False)
        _CYLINDERS[segments] = (verts, tris)
    return _CYLINDERS[segments]


def _icosphere_template(subdivisions: int) -> tuple[np.ndarray, np.ndarray]:
    t = (1 + 5 ** 0.5) / 2
    verts = np.array([[-1, t, 0], [1, t, 0], [-1, -t, 0], [1, -t, 0], [0, -1, t], [0, 1, t], [0, -1, -t], [0, 1, -t],
                      [t, 0, -1], [t, 0, 1], [-t, 0, -1], [-t, 0, 1]], dtype=np.float64)
    faces = np.array([[0, 11, 5], [0, 5, 1], [0, 1, 7], [0, 7, 10], [0, 10, 11], [1, 5, 9], [5, 11, 4], [11, 10, 2],
                      [10, 7, 6], [7, 1, 8], [3, 9, 4], [3, 4, 2], [3, 2, 6], [3, 6, 8], [3, 8, 9], [4, 9, 5],
                      [2, 4, 11], [6, 2, 10], [8, 6, 7], [9, 8, 1]])
    for _ in range(subdivisions):
        v = list(map(tuple, verts))
        cache: dict[tuple[int, int], int] = {}

        def midpoint(a: int, b: int) -> int:
            key = (min(a, b), max(a, b))
            if key not in cache:
                v.append(tuple((np.array(v[a]) + np.array(v[b])) / 2))
                cache[key] = len(v) - 1
            return cache[key]

        new = []
        for a, b, c in faces:
            ab, bc, ca = midpoint(a, b), midpoint(b, c), midpoint(c, a)
            new += [[a, ab, ca], [b, bc, ab], [c, ca, bc], [ab, bc, ca]]
        verts, faces = np.array(v), np.array(new)
    verts /= np.linalg.norm(verts, axis=1, keepdims=True)
    return verts, faces


_ICO = {n: _icosphere_template(n) for n in (0, 1, 2)}
for _v, _f in _ICO.values():  # shared by every sphere
    _v.setflags(write=False)
    _f.setflags(write=False)


def sphere(radius, centre=(0.0, 0.0, 0.0), subdivisions: int = 1, material: int = 0, colour=(128, 128, 128),
           jitter: float = 0.0, rng: np.random.Generator | None = None) -> Mesh:
    """Icosphere; radius may be (rx, ry, rz) for an ellipsoid; jitter roughens it (tree crowns)."""
    verts, faces = _ICO[subdivisions]
    verts = verts * np.asarray(radius, np.float64)
    if jitter and rng is not None:
        verts = verts * (1 + rng.uniform(-jitter, jitter, size=(len(verts), 1)))
    return Mesh(verts + np.asarray(centre), faces, *_paint(len(faces), material, colour))


def wheel(radius: float, width: float, centre, material: int = Material.TYRE, colour=(25, 25, 25)) -> Mesh:
    """A wheel: cylinder with its axis along y."""
    m = cylinder(radius, width, 10, material, colour)
    m = m.transformed(rot_x(np.pi / 2), np.zeros(3))  # z axis -> -y
    return Mesh(m.vertices + np.asarray(centre) + [0, width / 2, 0], m.triangles, m.material, m.colour)


# ----------------------------------------------------------------------------------------- objects

CAR_STYLES = ("sedan", "hatchback", "estate", "suv")
VAN_STYLES = ("panel", "minibus")
TRUCK_STYLES = ("box", "cab_over", "tanker")
GLASS_TINTS = np.array([[35, 40, 48], [20, 22, 26], [55, 66, 78], [40, 52, 48], [70, 75, 80]])
HUB_COLOURS = np.array([[175, 177, 180], [60, 60, 62], [125, 125, 130], [205, 205, 205], [30, 30, 32]])


def _paint_finish(paint, rng: np.random.Generator) -> tuple[np.ndarray, int]:
    """A car's own shade of its base colour, and its gloss (matte, normal or glossy paint)."""
    colour = np.clip(np.asarray(paint, np.float64) * rng.uniform(0.85, 1.15) + rng.normal(0, 8, 3), 0, 255)
    material = (Material.PAINT, Material.PAINT_MATTE, Material.PAINT_GLOSSY)[rng.choice(3, p=[0.55, 0.2, 0.25])]
    return colour.astype(np.uint8), int(material)


def _car_style(height: float, rng: np.random.Generator) -> str:
    """Body style for a car of this height: tall cars are more often SUVs (sizes keep KITTI's statistics)."""
    p_suv = float(np.clip(0.08 + 0.25 * (height - 1.526) / 0.136, 0.02, 0.6))
    rest = (1 - p_suv) / 3
    return CAR_STYLES[rng.choice(4, p=[rest * 1.2, rest * 0.9, rest * 0.9, p_suv])]


def _lights(l2: float, w2: float, belt: float, clearance: float, rng: np.random.Generator,
            tail_z: float | None = None) -> list[Mesh]:
    """Head lights, tail lights (sometimes lit) and number plates, just outside the body's ends."""
    hw, hh = rng.uniform(0.16, 0.34), rng.uniform(0.06, 0.14)
    head_z = max(belt - rng.uniform(0.06, 0.16), clearance + hh / 2 + 0.12)
    head_colour = (235, 235, 220) if rng.random() < 0.8 else (250, 235, 150)
    tw, th = rng.uniform(0.12, 0.3), rng.uniform(0.08, 0.2)
    tail_z = max(tail_z if tail_z is not None else belt - rng.uniform(0.05, 0.14), clearance + th / 2 + 0.12)
    tail_colour = (190, 20, 20) if rng.random() < 0.7 else (255, 60, 45)  # lit: braking or lights on
    parts = [box((0.03, hw, hh), (l2 + 0.005, sy * (w2 - 0.06 - hw / 2), head_z), Material.LAMP, head_colour)
             for sy in (-1, 1)]
    parts += [box((0.03, tw, th), (-l2 - 0.005, sy * (w2 - 0.05 - tw / 2), tail_z), Material.LAMP, tail_colour)
              for sy in (-1, 1)]
    parts.append(box((0.02, 0.5, 0.12), (-l2 - 0.01, 0, clearance + rng.uniform(0.15, 0.35)), Material.PLATE,
                     (230, 230, 220)))
    if rng.random() < 0.7:
        parts.append(box((0.02, 0.5, 0.12), (l2 + 0.01, 0, clearance + rng.uniform(0.15, 0.3)), Material.PLATE,
                         (230, 230, 220)))
    return parts


def _wheels(xs, w2: float, r: float, tyre_width: float, inset: float, rng: np.random.Generator) -> list[Mesh]:
    """Tyres at the given axle positions with hub caps that stay inside the body's width."""
    hub_r = r * rng.uniform(0.5, 0.72)
    hub_colour = HUB_COLOURS[rng.integers(len(HUB_COLOURS))]
    parts = []
    for x in xs:
        for sy in (-1, 1):
            parts.append(wheel(r, tyre_width, (x, sy * (w2 - inset), r)))
            outer = w2 - inset + tyre_width / 2  # the tyre's outer face
            parts.append(wheel(hub_r, 0.012, (x, sy * outer, r), Material.METAL, hub_colour))
    return parts


def car_mesh(length: float, width: float, height: float, paint, rng: np.random.Generator,
             kind: str = "car", style: str | None = None) -> Mesh:
    """A car (sedan, hatchback, estate, SUV) or van (panel, minibus) filling its l x w x h box.

    Wheels with hub caps, a glass cabin (tinted), head and tail lights, number plates; the paint's
    shade and gloss vary per car. style=None draws one (cars: by height, see _car_style).
    """
    l2, w2 = length / 2, width / 2
    paint, paint_mat = _paint_finish(paint, rng)
    glass = GLASS_TINTS[rng.integers(len(GLASS_TINTS))]
    if kind == "van":
        style = style or VAN_STYLES[rng.integers(len(VAN_STYLES))]
        r = float(np.clip(0.15 * height + rng.uniform(-0.02, 0.02), 0.3, 0.4))
        clearance = rng.uniform(0.28, 0.38)
        belt = height * rng.uniform(0.45, 0.55)
        body = frustum((-l2, l2), (-l2, l2 - 0.25), w2, w2 * 0.98, clearance, belt, paint_mat, paint)
        faces = {"front": Material.GLASS}
        if style == "minibus":
            faces.update({"left": Material.GLASS, "right": Material.GLASS})
        cabin = frustum((-l2 + 0.05, l2 - 0.3), (-l2 + 0.1, l2 - rng.uniform(0.7, 1.1)), w2 * 0.98, w2 * 0.93, belt,
                        height, paint_mat, paint, faces)
        cabin.colour[cabin.material == Material.GLASS] = glass
        axle_front, axle_rear = l2 - max(0.65, 0.17 * length), -l2 + max(0.7, 0.2 * length)
        tail_z = belt + rng.uniform(-0.15, 0.3)
    else:
        style = style or _car_style(height, rng)
        suv = style == "suv"
        r = float(np.clip(0.19 * height + rng.uniform(-0.02, 0.03 if suv else 0.02), 0.28, 0.44 if suv else 0.42))
        # The body's lower edge is the bumpers' (0.25-0.35 m on cars, higher on SUVs): seen from behind or
        # ahead, a real car ends in dark underbody and tyres well above the road, not in paint down to it.
        clearance = rng.uniform(0.36, 0.48) if suv else rng.uniform(0.25, 0.35)
        belt = height * (rng.uniform(0.58, 0.66) if suv else rng.uniform(0.52, 0.6))
        hood = (rng.uniform(0.2, 0.3) if style == "sedan" else rng.uniform(0.18, 0.27)) * length
        trunk = {"sedan": rng.uniform(0.12, 0.22), "hatchback": rng.uniform(0.02, 0.06),
                 "estate": rng.uniform(0.0, 0.03), "suv": rng.uniform(0.0, 0.03)}[style] * length
        body = frustum((-l2, l2), (-l2 + 0.05, l2 - 0.08), w2, w2 * 0.97, clearance, belt, paint_mat, paint)
        front_glass = l2 - hood
        rear_glass = -l2 + trunk
        cab = front_glass - rear_glass
        # How far the roof's ends sit inside the cabin's base: windscreen and rear window slopes.
        rear_slope = {"sedan": rng.uniform(0.13, 0.2), "hatchback": rng.uniform(0.18, 0.3),
                      "estate": rng.uniform(0.02, 0.06), "suv": rng.uniform(0.03, 0.08)}[style]
        front_slope = rng.uniform(0.12, 0.2) if suv else rng.uniform(0.2, 0.3)
        roof_w = {"sedan": 0.78, "hatchback": 0.8, "estate": 0.8, "suv": 0.86}[style]
        cabin = frustum((rear_glass, front_glass), (rear_glass + rear_slope * cab, front_glass - front_slope * cab),
                        w2 * 0.93, w2 * roof_w, belt, height, Material.GLASS, glass, {"top": paint_mat})
        cabin.colour[cabin.material == paint_mat] = paint
        front_overhang = max(0.6, rng.uniform(0.17, 0.22) * length)
        rear_overhang = max(0.6, rng.uniform(0.17, 0.24) * length)
        axle_front, axle_rear = l2 - front_overhang, -l2 + rear_overhang
        tail_z = None
    r = min(r, belt - 0.05)
    wheels = _wheels((axle_rear, axle_front), w2, r, 0.22, 0.12, rng)
    return merge([body, cabin, _underbody(l2, w2, clearance, rng), *wheels,
                  *_lights(l2, w2, belt, clearance, rng, tail_z)])


def _underbody(l2: float, w2: float, clearance: float, rng: np.random.Generator) -> Mesh:
    """Floor pan, exhaust and suspension as one dark block between the tyres, under the body.

    The renderer has no ambient occlusion, so without it the road would show bright under the bumpers."""
    shade = rng.uniform(12, 30)
    return box((2 * l2 - 0.5, 2 * (w2 - 0.24), clearance - 0.1), (0.0, 0.0, (clearance + 0.1) / 2), Material.TYRE,
               (shade, shade, shade * 1.05))


def truck_mesh(length: float, width: float, height: float, paint, rng: np.random.Generator,
               style: str | None = None) -> Mesh:
    """A truck filling its l x w x h box: box body behind a bonneted cab, a cab-over box truck, or a tanker."""
    style = style or TRUCK_STYLES[rng.choice(3, p=[0.45, 0.35, 0.2])]
    w2 = width / 2
    paint, paint_mat = _paint_finish(paint, rng)
    glass = GLASS_TINTS[rng.integers(len(GLASS_TINTS))]
    cab_len = min(2.2, 0.3 * length) if style == "box" else min(2.0, 0.25 * length)
    front = length / 2
    if style == "box":
        cab = frustum((front - cab_len, front), (front - cab_len, front - 0.2), w2, w2 * 0.95, 0.5, height * 0.75,
                      paint_mat, paint, {"front": Material.GLASS})
        cab.colour[cab.material == Material.GLASS] = glass
        cab_parts = [cab]
    else:
        cab_h = height * rng.uniform(0.78, 0.9) if style == "cab_over" else height * rng.uniform(0.7, 0.85)
        split = 0.5 + (cab_h - 0.5) * 0.55
        lower = box((cab_len, width, split - 0.5), (front - cab_len / 2, 0, 0.5 + (split - 0.5) / 2), paint_mat, paint)
        upper = frustum((front - cab_len, front), (front - cab_len, front - 0.12), w2, w2 * 0.96, split, cab_h,
                        paint_mat, paint, {"front": Material.GLASS, "left": Material.GLASS, "right": Material.GLASS})
        upper.colour[upper.material == Material.GLASS] = glass
        cab_parts = [lower, upper]
    cargo_len = length - cab_len - 0.15
    cargo_x = -cab_len / 2 - 0.07
    if rng.random() < 0.6:
        cargo_colour = rng.integers(150, 245, 3)
    else:
        cargo_colour = rng.integers(40, 245, 3)
    if style == "tanker":
        rc = min(w2 * 0.97, (height - 0.9) / 2)
        tank = cylinder(rc, cargo_len, 14, Material.METAL, cargo_colour).transformed(rot_y(np.pi / 2), np.zeros(3))
        tank = tank.translated([cargo_x - cargo_len / 2, 0, height - rc])
        chassis = box((cargo_len, width * 0.8, 0.3), (cargo_x, 0, 0.75), Material.METAL, (40, 40, 42))
        cargo_parts = [tank, chassis]
    else:
        cargo_parts = [box((cargo_len, width, height - 0.7), (cargo_x, 0, 0.7 + (height - 0.7) / 2),
                           Material.PAINT if rng.random() < 0.7 else paint_mat, cargo_colour)]
    r = 0.48
    axles = [front - 1.0, -length / 2 + 1.4]
    if length > 8.0 and rng.random() < 0.6:
        axles.append(-length / 2 + 1.4 + 2 * r + 0.15)
    wheels = [wheel(r, 0.3, (x, sy * (w2 - 0.2) - 0.15, r)) for x in axles for sy in (-1, 1)]
    lights = [box((0.03, 0.3, 0.14), (front + 0.005, sy * (w2 - 0.3), 0.9), Material.LAMP, (235, 235, 220))
              for sy in (-1, 1)]
    return merge([*cab_parts, *cargo_parts, *wheels, *lights])


def pedestrian_mesh(height: float, width: float, shirt, trousers, skin, phase: float, walking: bool) -> Mesh:
    """A person: legs and arms that swing with the walking phase, torso, head."""
    leg_len = 0.47 * height
    torso_h = 0.3 * height
    head_r = 0.065 * height
    torso_w = max(0.3, 0.55 * width)
    swing = 0.35 * np.sin(phase) if walking else 0.0
    parts = []
    for side, sign in ((-1, 1.0), (1, -1.0)):
        leg = box((0.15, 0.14, leg_len), (0, 0, -leg_len / 2), Material.CLOTH, trousers)
        leg = leg.transformed(rot_y(sign * swing), np.array([0, side * 0.1, leg_len]))
        arm = box((0.1, 0.09, 0.36 * height), (0, 0, -0.18 * height), Material.CLOTH, shirt)
        arm = arm.transformed(rot_y(-sign * swing * 0.8), np.array([0, side * (torso_w / 2 + 0.06), leg_len + torso_h]))
        shoe = box((0.26, 0.11, 0.07), (0.05, 0, 0.035), Material.CLOTH, (30, 30, 30))
        shoe = shoe.transformed(np.eye(3), np.array([np.sin(sign * swing) * leg_len * 0.9, side * 0.1, 0]))
        parts += [leg, arm, shoe]
    torso = box((0.24, torso_w, torso_h), (0, 0, leg_len + torso_h / 2), Material.CLOTH, shirt)
    neck = box((0.1, 0.1, 0.05), (0, 0, leg_len + torso_h + 0.025), Material.SKIN, skin)
    head = sphere((head_r * 0.9, head_r * 0.85, head_r), (0.0, 0, height - head_r), 1, Material.SKIN, skin)
    return merge(parts + [torso, neck, head])


def bicycle_parts(length: float, bike_colour, r: float = 0.34) -> tuple[list[Mesh], float, float]:
    """A bicycle without rider, facing +x, wheels on z = 0: (parts, half axle distance, frame height)."""
    axle = length / 2 - r
    parts = [wheel(r, 0.05, (sx * axle, 0, r), Material.TYRE, (20, 20, 20)) for sx in (-1, 1)]
    # Thin rims keep the disc see-through where a real wheel is spokes: only a ring of tyre is solid.
    frame_h = 2 * r + 0.1
    parts.append(box((2 * axle * 0.8, 0.05, 0.05), (0, 0, frame_h - 0.05), Material.METAL, bike_colour))
    parts.append(box((0.05, 0.05, frame_h - r), (-axle * 0.3, 0, r + (frame_h - r) / 2), Material.METAL, bike_colour))
    parts.append(box((0.05, 0.5, 0.04), (axle * 0.8, 0, frame_h + 0.15), Material.METAL, (40, 40, 40)))
    return parts, axle, frame_h


def cyclist_mesh(length: float, height: float, bike_colour, shirt, trousers, skin, phase: float) -> Mesh:
    """A bicycle and its rider, facing +x."""
    parts, axle, frame_h = bicycle_parts(length, bike_colour)
    seat_z = frame_h + 0.1
    torso_len = 0.3 * height
    lean = np.radians(35)
    torso = box((0.22, 0.36, torso_len), (0, 0, torso_len / 2), Material.CLOTH, shirt)
    parts.append(torso.transformed(rot_y(lean), np.array([-axle * 0.3, 0, seat_z])))
    top = np.array([-axle * 0.3, 0, seat_z]) + rot_y(lean) @ np.array([0, 0, torso_len])
    head_r = 0.11
    parts.append(sphere((head_r, head_r * 0.9, head_r * 1.05), top + [0.08, 0, head_r + 0.06], 1, Material.CLOTH,
                        (min(255, bike_colour[0] + 40), 60, 60)))  # helmet
    for side, sign in ((-1, 1.0), (1, -1.0)):
        pedal = 0.4 * np.sin(phase) * sign
        leg = box((0.13, 0.13, 0.8), (0, 0, -0.4), Material.CLOTH, trousers)
        parts.append(leg.transformed(rot_y(0.35 + pedal), np.array([-axle * 0.3, side * 0.12, seat_z])))
        arm = box((0.08, 0.08, 0.55), (0, 0, -0.27), Material.CLOTH, shirt)
        parts.append(arm.transformed(rot_y(-np.radians(55)), top + [0, side * 0.2, -0.05]))
    mesh = merge(parts)
    # Scale the rider so the whole object matches the sampled height.
    zmax = mesh.vertices[:, 2].max()
    mesh.vertices[:, 2] *= height / zmax
    return mesh
