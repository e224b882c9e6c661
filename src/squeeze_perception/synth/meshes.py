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

def car_mesh(length: float, width: float, height: float, paint, rng: np.random.Generator,
             kind: str = "car") -> Mesh:
    """A car (or van) with wheels, a body and a glass cabin, filling its l x w x h box."""
    l2, w2 = length / 2, width / 2
    r = float(np.clip(0.19 * height + rng.uniform(-0.02, 0.02), 0.28, 0.42))
    clearance = 0.18
    if kind == "van":
        belt = height * 0.5
        body = frustum((-l2, l2), (-l2, l2 - 0.25), w2, w2 * 0.98, clearance, belt, Material.PAINT, paint)
        cabin = frustum((-l2 + 0.05, l2 - 0.3), (-l2 + 0.1, l2 - 0.9), w2 * 0.98, w2 * 0.93, belt, height,
                        Material.PAINT, paint, {"front": Material.GLASS})
    else:
        belt = height * rng.uniform(0.52, 0.6)
        hood = rng.uniform(0.2, 0.3) * length
        trunk = rng.uniform(0.12, 0.22) * length
        body = frustum((-l2, l2), (-l2 + 0.05, l2 - 0.08), w2, w2 * 0.97, clearance, belt, Material.PAINT, paint)
        front_glass = l2 - hood
        rear_glass = -l2 + trunk
        cabin = frustum((rear_glass, front_glass), (rear_glass + 0.35 * (front_glass - rear_glass) * 0.45,
                                                    front_glass - 0.35 * (front_glass - rear_glass) * 0.7),
                        w2 * 0.93, w2 * 0.78, belt, height, Material.GLASS, (35, 40, 48), {"top": Material.PAINT})
        cabin.colour[cabin.material == Material.PAINT] = paint
    axle = l2 - max(0.6, 0.2 * length)
    wheels = [wheel(r, 0.22, (sx * axle, sy * (w2 - 0.12), r)) for sx in (-1, 1) for sy in (-1, 1)]
    lights = [box((0.03, 0.25, 0.1), (l2 + 0.005, sy * (w2 - 0.2), belt - 0.12), Material.LAMP, (235, 235, 220))
              for sy in (-1, 1)]
    lights += [box((0.03, 0.25, 0.1), (-l2 - 0.005, sy * (w2 - 0.2), belt - 0.1), Material.LAMP, (190, 20, 20))
               for sy in (-1, 1)]
    plate = box((0.02, 0.5, 0.12), (-l2 - 0.01, 0, clearance + 0.35), Material.PLATE, (230, 230, 220))
    return merge([body, cabin, *wheels, *lights, plate])


def truck_mesh(length: float, width: float, height: float, paint, rng: np.random.Generator) -> Mesh:
    w2 = width / 2
    cab_len = min(2.2, 0.3 * length)
    cab = frustum((length / 2 - cab_len, length / 2), (length / 2 - cab_len, length / 2 - 0.2), w2, w2 * 0.95, 0.5,
                  height * 0.75, Material.PAINT, paint, {"front": Material.GLASS})
    cargo_colour = rng.integers(150, 240, 3)
    cargo = box((length - cab_len - 0.15, width, height - 0.7), (-cab_len / 2 - 0.07, 0, 0.7 + (height - 0.7) / 2),
                Material.PAINT, cargo_colour)
    r = 0.48
    wheels = [wheel(r, 0.3, (x, sy * (w2 - 0.2) - 0.15, r)) for x in (length / 2 - 1.0, -length / 2 + 1.4)
              for sy in (-1, 1)]
    return merge([cab, cargo, *wheels])


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


def cyclist_mesh(length: float, height: float, bike_colour, shirt, trousers, skin, phase: float) -> Mesh:
    """A bicycle and its rider, facing +x."""
    r = 0.34
    axle = length / 2 - r
    parts = [wheel(r, 0.05, (sx * axle, 0, r), Material.TYRE, (20, 20, 20)) for sx in (-1, 1)]
    # Thin rims keep the disc see-through where a real wheel is spokes: only a ring of tyre is solid.
    frame_h = 2 * r + 0.1
    parts.append(box((2 * axle * 0.8, 0.05, 0.05), (0, 0, frame_h - 0.05), Material.METAL, bike_colour))
    parts.append(box((0.05, 0.05, frame_h - r), (-axle * 0.3, 0, r + (frame_h - r) / 2), Material.METAL, bike_colour))
    parts.append(box((0.05, 0.5, 0.04), (axle * 0.8, 0, frame_h + 0.15), Material.METAL, (40, 40, 40)))
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
