"""The synthetic driving world: a straight street with its surroundings and moving road users.

World frame: x along the street (the ego car drives towards +x), y to the left, z up, road
surface at z = 0. Traffic keeps to the right: lanes towards +x lie at y < 0, oncoming lanes at
y > 0. Everything is drawn from one ``numpy.random.Generator``, so a seed fixes a scene.

Object sizes follow the KITTI object-label statistics (mean, standard deviation in metres):
car h 1.53 +- 0.14, w 1.63 +- 0.10, l 3.88 +- 0.43; van h 2.21 +- 0.32, w 1.90 +- 0.17,
l 5.08 +- 0.65; truck h 3.25 +- 0.48, w 2.59 +- 0.22, l 10.1 +- 2.8; pedestrian h 1.76 +- 0.11,
w 0.66 +- 0.14, l 0.84 +- 0.23; cyclist h 1.74 +- 0.10, w 0.60 +- 0.12, l 1.76 +- 0.18.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ...interfaces import CLASS_IDS
from ...object_sizes import SIZE_STATS
from .materials import Material
from .meshes import (Mesh, box, car_mesh, cyclist_mesh, cylinder, merge, pedestrian_mesh, rot_x, rot_y, rot_z,
                     sphere, truck_mesh)
from .street_furniture import Footprint, street_furniture
from .terrain import Terrain, far_surroundings

KITTI_TYPE_CLASS = {"Car": CLASS_IDS["car"], "Pedestrian": CLASS_IDS["pedestrian"], "Cyclist": CLASS_IDS["cyclist"],
                    "Van": CLASS_IDS["unknown"], "Truck": CLASS_IDS["unknown"]}

CAR_PAINTS = np.array([[235, 235, 235], [20, 20, 22], [120, 122, 128], [175, 178, 182], [150, 20, 25],
                       [25, 45, 110], [40, 70, 50], [200, 180, 140], [90, 60, 40], [210, 120, 20],
                       [60, 90, 140], [245, 245, 240], [35, 35, 40], [225, 195, 40], [150, 195, 215],
                       [95, 30, 55], [70, 75, 60], [180, 60, 30], [20, 60, 80]])
FACADE_COLOURS = np.array([[205, 190, 160], [180, 175, 170], [160, 80, 60], [225, 220, 205], [140, 140, 150],
                           [200, 160, 120], [120, 110, 100], [230, 200, 150], [170, 185, 190]])
CLOTH_COLOURS = np.array([[30, 30, 35], [60, 60, 70], [20, 40, 90], [120, 20, 20], [200, 200, 200],
                          [90, 70, 50], [40, 80, 40], [150, 150, 160], [210, 170, 40], [80, 30, 90]])
SKIN_COLOURS = np.array([[224, 185, 160], [198, 150, 110], [141, 95, 70], [95, 65, 45]])


@dataclass
class StreetLayout:
    lane_width: float
    lanes_forward: int
    lanes_backward: int
    parking_right: bool
    parking_left: bool
    sidewalk_width: float
    curb_height: float
    style: str  # city, residential, rural
    x_min: float
    x_max: float

    @property
    def road_right(self) -> float:
        """y of the right road edge (negative)."""
        return -(self.lanes_forward * self.lane_width + (2.3 if self.parking_right else 0.3))

    @property
    def road_left(self) -> float:
        return self.lanes_backward * self.lane_width + (2.3 if self.parking_left else 0.3)

    def lane_centre(self, forward: bool, index: int) -> float:
        """index 0 = lane next to the centre line."""
        return -(index + 0.5) * self.lane_width if forward else (index + 0.5) * self.lane_width

    def on_lane_paint(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Lane markings (German style: 6 m dashes, 12 m gaps; solid edge and centre lines)."""
        half = 0.075
        paint = np.zeros(np.shape(x), dtype=bool)
        centre_lines = [0.0]
        dashed = [-(i + 1) * self.lane_width for i in range(self.lanes_forward - 1)]
        dashed += [(i + 1) * self.lane_width for i in range(self.lanes_backward - 1)]
        edges = [-self.lanes_forward * self.lane_width - 0.2, self.lanes_backward * self.lane_width + 0.2]
        for c in centre_lines:
            paint |= (np.abs(y - c - 0.1) < half) | (np.abs(y - c + 0.1) < half)
        dash_on = np.mod(x, 18.0) < 6.0
        for c in dashed:
            paint |= (np.abs(y - c) < half) & dash_on
        for c in edges:
            paint |= np.abs(y - c) < half
        return paint


@dataclass
class Agent:
    instance_id: int
    kitti_type: str
    length: float
    width: float
    height: float
    x: float
    y: float
    yaw: float
    speed: float
    behaviour: str  # parked, lane, walk, stand, ride
    lane_key: tuple = ()
    colours: dict = field(default_factory=dict)
    phase: float = 0.0
    desired_speed: float = 0.0
    shape_seed: int = 0
    # Height of the surface the object stands on: 0 on the carriageway, the sidewalk's top for
    # pedestrians (otherwise their feet sink into the kerb-high sidewalk, hidden from camera and
    # LiDAR, while their boxes reach down to the road level under it).
    ground_z: float = 0.0
    _mesh: Mesh | None = None

    @property
    def class_id(self) -> int:
        return KITTI_TYPE_CLASS[self.kitti_type]

    @property
    def vx(self) -> float:
        return self.speed * np.cos(self.yaw)

    @property
    def vy(self) -> float:
        return self.speed * np.sin(self.yaw)

    def local_mesh(self) -> Mesh:
        """Mesh in the object's frame, centred on its box (bottom centre at the origin)."""
        animated = self.kitti_type in ("Pedestrian", "Cyclist")
        if self._mesh is not None and not animated:
            return self._mesh
        rng = np.random.default_rng(self.shape_seed)
        c = self.colours
        if self.kitti_type == "Car":
            mesh = car_mesh(self.length, self.width, self.height, c["paint"], rng)
        elif self.kitti_type == "Van":
            mesh = car_mesh(self.length, self.width, self.height, c["paint"], rng, kind="van")
        elif self.kitti_type == "Truck":
            mesh = truck_mesh(self.length, self.width, self.height, c["paint"], rng)
        elif self.kitti_type == "Pedestrian":
            mesh = pedestrian_mesh(self.height, self.width, c["shirt"], c["trousers"], c["skin"], self.phase,
                                   self.behaviour == "walk")
        else:
            mesh = cyclist_mesh(self.length, self.height, c["paint"], c["shirt"], c["trousers"], c["skin"], self.phase)
        if not animated:
            # Fit the label box to the shape once: the box is the mesh's tight extent.
            lo, hi = mesh.vertices.min(0), mesh.vertices.max(0)
            mesh.vertices -= [(lo[0] + hi[0]) / 2, (lo[1] + hi[1]) / 2, 0.0]
            self.length, self.width, self.height = (hi - lo)
            self._mesh = mesh
        return mesh

    def box_extent_local(self, mesh: Mesh) -> tuple[np.ndarray, np.ndarray]:
        """(centre offset, size l w h) of the tight box around an animated mesh in the object frame."""
        lo, hi = mesh.vertices.min(0), mesh.vertices.max(0)
        return np.array([(lo[0] + hi[0]) / 2, (lo[1] + hi[1]) / 2, 0.0]), hi - np.array([lo[0], lo[1], 0.0])

    def world_mesh(self) -> tuple[Mesh, np.ndarray, np.ndarray]:
        """(mesh in the world, box bottom-centre in the world, box size l w h) at the current state."""
        mesh = self.local_mesh()
        offset, size = self.box_extent_local(mesh)
        rot = rot_z(self.yaw)
        base = np.array([self.x, self.y, self.ground_z])
        return mesh.transformed(rot, base), base + rot @ offset, size


@dataclass
class EgoState:
    x: float
    y: float
    yaw: float
    speed: float
    pitch: float = 0.0  # body attitude over the road (radians): braking, bumps, load, camber
    roll: float = 0.0


# The KITTI car's attitude wanders around level (suspension, road camber, bumps): a first-order
# random process per angle with this standard deviation and correlation time, clipped to the limit,
# so consecutive frames of a drive move smoothly and independent frames differ.
EGO_PITCH_STD_DEG = 0.5
EGO_ROLL_STD_DEG = 0.4
EGO_ATTITUDE_LIMIT_STD = 2.5
EGO_ATTITUDE_CORRELATION_S = 1.0


class World:
    """A street scene that can be advanced in time; owns the static mesh and the road users."""

    def __init__(self, seed: int, length: float = 200.0, style: str | None = None,
                 ego_speed: float | None = None, density: float | None = None):
        self.rng = np.random.default_rng(seed)
        rng = self.rng
        self.time = 0.0
        style = style or rng.choice(["city", "city", "residential", "residential", "rural"])
        forward = int(rng.choice([1, 1, 2, 2, 3]))
        self.layout = StreetLayout(
            lane_width=float(rng.uniform(3.1, 3.7)), lanes_forward=forward,
            lanes_backward=int(max(1, forward + rng.integers(-1, 1))),
            parking_right=bool(rng.random() < (0.55 if style != "rural" else 0.1)),
            parking_left=bool(rng.random() < (0.4 if style != "rural" else 0.1)),
            sidewalk_width=float(rng.uniform(2.0, 5.0) if style != "rural" else rng.uniform(0.8, 1.6)),
            curb_height=float(rng.uniform(0.10, 0.18)), style=str(style), x_min=-120.0, x_max=length + 150.0)
        lane = int(rng.integers(0, forward))
        speed = float(ego_speed if ego_speed is not None else rng.choice([0.0, rng.uniform(3, 8), rng.uniform(8, 14),
                                                                         rng.uniform(8, 14)]))
        self.ego = EgoState(0.0, self.layout.lane_centre(True, lane) + rng.normal(0, 0.15), 0.0, speed)
        self.density = float(density if density is not None else rng.uniform(0.4, 1.2))
        self._next_instance = 1
        # Surface tones from their own stream, so they vary without moving anything else in the scene.
        tone = np.random.default_rng([seed, 1])
        self.tones = {"asphalt": np.clip(np.array([78, 78, 82]) * tone.uniform(0.7, 1.35) + tone.normal(0, 3, 3), 0, 255),
                      "curb": np.array([160, 160, 155]) * tone.uniform(0.8, 1.1),
                      "sidewalk": np.clip(np.array([172, 166, 158]) * tone.uniform(0.75, 1.15) + tone.normal(0, 6, 3), 0,
                                          255),
                      "grass": np.clip(np.array([88, 118, 58]) * tone.uniform(0.75, 1.15)
                                       + np.array([1.0, 0.5, 0.0]) * tone.uniform(-10, 35), 0, 255)}
        # Ground beyond the sidewalks and the middle distance, each from its own stream (nothing else moves).
        self.terrain = Terrain(self.layout, np.random.default_rng([seed, 2]))
        self._far_rng = np.random.default_rng([seed, 3])
        self._furniture_rng = np.random.default_rng([seed, 5])
        self.furniture_footprints: list[Footprint] = []
        self.static_mesh = self._build_static()
        self.agents: list[Agent] = []
        self._spawn_agents(length)
        self._attitude_rng = np.random.default_rng([seed, 4])
        self.ego.pitch, self.ego.roll = self._attitude_rng.normal(0.0, 1.0, 2) * np.radians(
            [EGO_PITCH_STD_DEG, EGO_ROLL_STD_DEG])
        self._clip_attitude()

    # --------------------------------------------------------------------------------- static
    def _build_static(self) -> Mesh:
        rng, lay = self.rng, self.layout
        x0, x1 = lay.x_min, lay.x_max
        xc, xl = (x0 + x1) / 2, x1 - x0
        parts = []
        road_w = lay.road_left - lay.road_right
        parts.append(box((xl, road_w, 0.02), (xc, (lay.road_left + lay.road_right) / 2, -0.01), Material.ASPHALT,
                         self.tones["asphalt"]))
        for side, edge in ((-1, lay.road_right), (1, lay.road_left)):
            curb_y = edge + side * 0.1
            parts.append(box((xl, 0.2, lay.curb_height), (xc, curb_y, lay.curb_height / 2), Material.CONCRETE,
                             self.tones["curb"]))
            sw_in = edge + side * 0.2
            sw_c = sw_in + side * lay.sidewalk_width / 2
            parts.append(box((xl, lay.sidewalk_width, lay.curb_height - 0.01),
                             (xc, sw_c, (lay.curb_height - 0.01) / 2), Material.SIDEWALK, self.tones["sidewalk"]))
            outer = sw_in + side * lay.sidewalk_width
            # Roadside objects stand on the terrain (which is level next to the sidewalk).
            parts += self.terrain.settle(self._roadside(side, outer))
            on_sidewalk, beyond, footprints = street_furniture(lay, side, edge, outer, x0 + 5.0, x1 - 5.0,
                                                               self._furniture_rng)
            parts += [m.translated([0.0, 0.0, lay.curb_height - 0.01]) for m in on_sidewalk]
            parts += self.terrain.settle(beyond)
            self.furniture_footprints += footprints
        # Grass out to 160 m so far beams find ground (rural roads: grass right at the curb).
        parts.append(self.terrain.mesh(self.tones["grass"]))
        parts += far_surroundings(lay, self.terrain, self._far_rng, FACADE_COLOURS)
        return merge(parts)

    def _roadside(self, side: int, outer: float) -> list[Mesh]:
        rng, lay = self.rng, self.layout
        parts: list[Mesh] = []
        # Street lamps and sign posts at the curb.
        x = lay.x_min + rng.uniform(0, 20)
        curb = outer - side * (lay.sidewalk_width - 0.4)
        while x < lay.x_max:
            height = rng.uniform(5.5, 8.0)
            pole = cylinder(0.09, height, 8, Material.METAL, (110, 112, 115)).translated([x, curb, 0])
            arm = box((0.3, 1.6, 0.12), (x, curb - side * 0.8, height), Material.METAL, (110, 112, 115))
            parts += [pole, arm]
            if rng.random() < 0.35:
                sx = x + rng.uniform(3, 10)
                parts.append(cylinder(0.04, 2.6, 6, Material.METAL, (150, 150, 150)).translated([sx, curb, 0]))
                colour = [(200, 30, 30), (30, 60, 160), (230, 200, 30), (240, 240, 240)][rng.integers(0, 4)]
                parts.append(box((0.05, 0.65, 0.65), (sx, curb, 2.6), Material.METAL, colour))
            x += rng.uniform(20, 40)
        # Trees along the sidewalk.
        if lay.style != "city" or rng.random() < 0.5:
            x = lay.x_min + rng.uniform(0, 10)
            while x < lay.x_max:
                y = outer - side * rng.uniform(0.6, 1.2) if lay.style != "rural" else outer + side * rng.uniform(1, 6)
                parts += self._tree(x, y)
                x += rng.uniform(7, 18) if lay.style != "rural" else rng.uniform(4, 14)
        x = lay.x_min
        while x < lay.x_max:
            seg = rng.uniform(8, 35)
            gap = rng.uniform(0, 4) if lay.style == "city" else rng.uniform(3, 15)
            if lay.style == "city":
                setback = rng.uniform(0, 2.5)
                parts.append(self._building(x, seg, outer + side * setback, side, rng.uniform(8, 24), rng.uniform(8, 16)))
            elif lay.style == "residential":
                setback = rng.uniform(4, 12)
                if rng.random() < 0.6:
                    wall_h = rng.uniform(0.8, 1.8)
                    parts.append(box((seg, 0.25, wall_h), (x + seg / 2, outer + side * 0.3, wall_h / 2), Material.WALL,
                                     FACADE_COLOURS[rng.integers(len(FACADE_COLOURS))]))
                else:
                    parts += [self._bush(x + u, outer + side * rng.uniform(0.5, 1.5)) for u in np.arange(0, seg, 1.6)]
                parts.append(self._building(x + 2, max(6.0, seg - 4), outer + side * setback, side, rng.uniform(5, 10),
                                            rng.uniform(8, 12)))
                if rng.random() < 0.5:
                    parts += self._tree(x + rng.uniform(0, seg), outer + side * rng.uniform(2, setback))
            else:
                if rng.random() < 0.25:
                    parts.append(self._building(x, min(seg, 15), outer + side * rng.uniform(10, 30), side,
                                                rng.uniform(4, 9), rng.uniform(8, 12)))
                for _ in range(int(seg / 4)):
                    parts += self._tree(x + rng.uniform(0, seg), outer + side * rng.uniform(4, 25))
                if rng.random() < 0.3:
                    parts.append(box((seg, 0.1, 1.0), (x + seg / 2, outer + side * 0.5, 0.5), Material.METAL,
                                     (150, 150, 150)))
            x += seg + gap
        return parts

    def _building(self, x: float, length: float, front_y: float, side: int, height: float, depth: float) -> Mesh:
        colour = FACADE_COLOURS[self.rng.integers(len(FACADE_COLOURS))]
        b = box((length, depth, height), (x + length / 2, front_y + side * depth / 2, height / 2), Material.FACADE,
                colour, {"top": Material.ROOF})
        return b

    def _tree(self, x: float, y: float) -> list[Mesh]:
        rng = self.rng
        trunk_h = rng.uniform(1.5, 3.5)
        crown = rng.uniform(1.2, 3.2)
        trunk = cylinder(rng.uniform(0.1, 0.28), trunk_h + crown * 0.5, 7, Material.BARK, (80, 62, 45))
        green = (int(rng.integers(40, 80)), int(rng.integers(80, 130)), int(rng.integers(30, 60)))
        leaves = sphere((crown, crown, crown * rng.uniform(0.9, 1.4)), (x, y, trunk_h + crown), 1, Material.FOLIAGE,
                        green, jitter=0.25, rng=rng)
        return [trunk.translated([x, y, 0]), leaves]

    def _bush(self, x: float, y: float) -> Mesh:
        r = self.rng.uniform(0.5, 0.9)
        return sphere((r, r, r * 0.8), (x, y, r * 0.6), 1, Material.FOLIAGE, (50, 95, 40), jitter=0.2, rng=self.rng)

    # --------------------------------------------------------------------------------- agents
    def _new_agent(self, kitti_type: str, x: float, y: float, yaw: float, speed: float, behaviour: str,
                   lane_key: tuple = ()) -> Agent:
        rng = self.rng
        mean, std = SIZE_STATS[kitti_type]
        h, w, length = (np.clip(rng.normal(mean, std), np.array(mean) * 0.75, np.array(mean) * 1.3))
        colours = {"paint": CAR_PAINTS[rng.integers(len(CAR_PAINTS))],
                   "shirt": CLOTH_COLOURS[rng.integers(len(CLOTH_COLOURS))],
                   "trousers": CLOTH_COLOURS[rng.integers(len(CLOTH_COLOURS))],
                   "skin": SKIN_COLOURS[rng.integers(len(SKIN_COLOURS))]}
        if kitti_type == "Cyclist":
            colours["paint"] = CAR_PAINTS[rng.integers(len(CAR_PAINTS))]
        agent = Agent(self._next_instance, kitti_type, float(length), float(w), float(h), float(x), float(y),
                      float(yaw), float(speed), behaviour, lane_key, colours, float(rng.uniform(0, 2 * np.pi)),
                      float(speed), int(rng.integers(1 << 31)))
        self._next_instance += 1
        if kitti_type not in ("Pedestrian", "Cyclist"):
            agent.local_mesh()  # fixes the box size of rigid shapes (animated ones are built per frame)
        return agent

    def _spawn_agents(self, route_length: float) -> None:
        rng, lay, d = self.rng, self.layout, self.density
        lo, hi = self.ego.x - 70.0, self.ego.x + route_length + 100.0
        style_peds = {"city": 1.0, "residential": 0.5, "rural": 0.1}[lay.style]
        # Parked cars along the curbs.
        for side, present in ((-1, lay.parking_right), (1, lay.parking_left)):
            if not present:
                continue
            y = (lay.road_right + 1.15) if side < 0 else (lay.road_left - 1.15)
            x = lo + rng.uniform(0, 6)
            while x < hi:
                kind = "Car" if rng.random() < 0.85 else "Van"
                a = self._new_agent(kind, x, y + rng.normal(0, 0.1), (0.0 if rng.random() < 0.8 else np.pi)
                                    + rng.normal(0, 0.03), 0.0, "parked")
                x += a.length + (rng.uniform(0.6, 2.5) if rng.random() < 0.35 * d else rng.uniform(8, 40))
                self.agents.append(a)
        # Moving traffic, lane by lane.
        for forward, lanes in ((True, lay.lanes_forward), (False, lay.lanes_backward)):
            for k in range(lanes):
                y = lay.lane_centre(forward, k)
                lane_speed = rng.uniform(6, 15) if self.ego.speed > 0 or rng.random() < 0.5 else 0.0
                x = lo + rng.uniform(0, 20)
                while x < hi:
                    if forward and abs(y - self.ego.y) < 1.0 and abs(x - self.ego.x) < 12:
                        x = self.ego.x + 12
                        continue
                    r = rng.random()
                    kind = "Car" if r < 0.82 else ("Van" if r < 0.94 else "Truck")
                    v = max(0.0, lane_speed + rng.normal(0, 1.0)) if lane_speed > 0 else 0.0
                    a = self._new_agent(kind, x, y + rng.normal(0, 0.12), (0.0 if forward else np.pi)
                                        + rng.normal(0, 0.015), v, "lane", ("lane", forward, k))
                    self.agents.append(a)
                    x += a.length + rng.uniform(12, 60) / d
        # Cyclists along the right edge of the outer lanes.
        for forward in (True, False):
            n = rng.poisson(1.2 * d * (route_length + 170) / 100)
            edge = lay.lane_centre(forward, (lay.lanes_forward if forward else lay.lanes_backward) - 1)
            edge += (-1 if forward else 1) * (lay.lane_width / 2 - 0.7)
            for _ in range(n):
                x = rng.uniform(lo, hi)
                v = rng.uniform(2.5, 7.0)
                self.agents.append(self._new_agent("Cyclist", x, edge + rng.normal(0, 0.2),
                                                   (0.0 if forward else np.pi) + rng.normal(0, 0.03), v, "ride"))
        # Pedestrians on the sidewalks (standing on them: ground_z): walkers and small standing groups.
        first_pedestrian = len(self.agents)
        for side, edge in ((-1, lay.road_right), (1, lay.road_left)):
            n = rng.poisson(4.0 * d * style_peds * (route_length + 170) / 100)
            for _ in range(n):
                x = rng.uniform(lo, hi)
                y = edge + side * (0.2 + rng.uniform(0.4, max(0.5, lay.sidewalk_width - 0.4)))
                if rng.random() < 0.7:
                    direction = 0.0 if rng.random() < 0.5 else np.pi
                    self.agents.append(self._new_agent("Pedestrian", x, y, direction + rng.normal(0, 0.05),
                                                       rng.uniform(0.8, 1.7), "walk"))
                else:
                    for g in range(int(rng.integers(1, 4))):
                        self.agents.append(self._new_agent("Pedestrian", x + g * rng.uniform(0.6, 1.0),
                                                           y + rng.normal(0, 0.3), rng.uniform(-np.pi, np.pi), 0.0,
                                                           "stand"))
        for a in self.agents[first_pedestrian:]:
            a.ground_z = lay.curb_height - 0.01  # the sidewalk slab's top (world._build_static)
        self._remove_overlaps()

    def _remove_overlaps(self) -> None:
        """Drop road users whose footprints overlap an earlier one (a crude but sufficient check)."""
        kept: list[Agent] = []
        for a in self.agents:
            ok = True
            for b in kept:
                if abs(a.x - b.x) < (a.length + b.length) / 2 + 0.3 and abs(a.y - b.y) < (a.width + b.width) / 2 + 0.2:
                    ok = False
                    break
            if ok and abs(a.y - self.ego.y) < 1.8 and abs(a.x - self.ego.x) < 6.0:
                ok = False
            if ok and a.behaviour != "lane" and any(f.overlaps(a.x, a.y, a.length / 2, a.width / 2)
                                                    for f in self.furniture_footprints):
                ok = False  # a pedestrian standing inside a bin, a parked car on a bollard
            if ok:
                kept.append(a)
        self.agents = kept

    # --------------------------------------------------------------------------------- motion
    def step(self, dt: float) -> None:
        """Advance every road user and the ego car by dt seconds."""
        self.time += dt
        lanes: dict[tuple, list[Agent]] = {}
        for a in self.agents:
            if a.behaviour == "lane":
                lanes.setdefault(a.lane_key, []).append(a)
        # Car following: keep a 1.5 s time gap (plus 4 m) to the car ahead in the same lane.
        for key, cars in lanes.items():
            forward = key[1]
            cars.sort(key=lambda c: c.x, reverse=forward)
            for i, car in enumerate(cars):
                target = car.desired_speed
                if i > 0:
                    lead = cars[i - 1]
                    gap = abs(lead.x - car.x) - (lead.length + car.length) / 2
                    safe = max(0.0, (gap - 4.0) / 1.5)
                    target = min(target, safe if gap < 4.0 + 1.5 * car.speed else target)
                if forward and abs(car.y - self.ego.y) < 1.5 and car.x < self.ego.x:
                    gap = (self.ego.x - car.x) - car.length / 2 - 2.5
                    target = min(target, max(0.0, (gap - 4.0) / 1.5))
                accel = np.clip((target - car.speed) / 1.0, -6.0, 2.0)
                car.speed = max(0.0, car.speed + accel * dt)
        for a in self.agents:
            if a.behaviour in ("lane", "walk", "ride"):
                a.x += a.vx * dt
                a.y += a.vy * dt
            if a.behaviour == "walk":
                a.phase += dt * a.speed * 2.4
            elif a.behaviour == "ride":
                a.phase += dt * a.speed * 1.2
        self.ego.x += self.ego.speed * np.cos(self.ego.yaw) * dt
        self.ego.y += self.ego.speed * np.sin(self.ego.yaw) * dt
        keep = np.exp(-dt / EGO_ATTITUDE_CORRELATION_S)
        fresh = self._attitude_rng.normal(0.0, 1.0, 2) * np.radians([EGO_PITCH_STD_DEG, EGO_ROLL_STD_DEG])
        self.ego.pitch = keep * self.ego.pitch + np.sqrt(1 - keep ** 2) * fresh[0]
        self.ego.roll = keep * self.ego.roll + np.sqrt(1 - keep ** 2) * fresh[1]
        self._clip_attitude()

    def _clip_attitude(self) -> None:
        limit = np.radians([EGO_PITCH_STD_DEG, EGO_ROLL_STD_DEG]) * EGO_ATTITUDE_LIMIT_STD
        self.ego.pitch = float(np.clip(self.ego.pitch, -limit[0], limit[0]))
        self.ego.roll = float(np.clip(self.ego.roll, -limit[1], limit[1]))

    # --------------------------------------------------------------------------------- views
    def sensor_pose(self, mount_height: float) -> tuple[np.ndarray, np.ndarray]:
        """(rotation, origin) of the Velodyne frame in the world at the current ego state.

        The sensors are fixed to the car body, so its pitch and roll tilt the LiDAR and the camera
        alike (about the sensor, whose height stays at the mount height)."""
        rotation = rot_z(self.ego.yaw) @ rot_y(self.ego.pitch) @ rot_x(self.ego.roll)
        return rotation, np.array([self.ego.x, self.ego.y, mount_height])

    def agents_near(self, radius: float) -> list[Agent]:
        return [a for a in self.agents if np.hypot(a.x - self.ego.x, a.y - self.ego.y) < radius]
