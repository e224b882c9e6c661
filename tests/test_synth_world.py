"""The synthetic world: reproducible from a seed, KITTI-like object sizes, plausible motion."""
from __future__ import annotations

import numpy as np
import pytest

from squeeze_perception.offline.synth.materials import PAINTS, Material
from squeeze_perception.offline.synth.raycast import RayScene
from squeeze_perception.offline.synth.meshes import (CAR_STYLES, TRUCK_STYLES, VAN_STYLES, _car_style, box, car_mesh,
                                                     cylinder, merge, truck_mesh)
from squeeze_perception.offline.synth.world import SIZE_STATS, World


def test_same_seed_same_world_and_different_seed_different_world():
    a, b, c = World(3, length=20.0), World(3, length=20.0), World(4, length=20.0)
    np.testing.assert_array_equal(a.static_mesh.vertices, b.static_mesh.vertices)
    assert [(x.kitti_type, x.x, x.y) for x in a.agents] == [(x.kitti_type, x.x, x.y) for x in b.agents]
    assert len(a.static_mesh.vertices) != len(c.static_mesh.vertices) or \
        not np.array_equal(a.static_mesh.vertices, c.static_mesh.vertices)


def test_object_sizes_follow_kitti_statistics():
    sizes: dict[str, list] = {}
    for seed in range(6):
        for agent in World(seed, length=60.0).agents:
            sizes.setdefault(agent.kitti_type, []).append((agent.height, agent.width, agent.length))
    cars = np.array(sizes["Car"])
    assert len(cars) > 50
    mean, std = np.array(SIZE_STATS["Car"][0]), np.array(SIZE_STATS["Car"][1])
    # The label box is the mesh's tight extent, so it stays within a few sigma of KITTI's figures.
    assert np.all(np.abs(cars.mean(0) - mean) < 2 * std)
    peds = np.array(sizes["Pedestrian"])
    assert 1.4 < peds[:, 0].mean() < 2.0 and 0.3 < peds[:, 1].mean() < 0.9


def test_road_users_do_not_overlap_at_the_start():
    world = World(11, length=50.0)
    for i, a in enumerate(world.agents):
        for b in world.agents[i + 1:]:
            overlap_x = abs(a.x - b.x) < (a.length + b.length) / 2
            overlap_y = abs(a.y - b.y) < (a.width + b.width) / 2
            assert not (overlap_x and overlap_y), (a.kitti_type, b.kitti_type)


def test_motion_follows_speed_and_heading():
    world = World(5, length=40.0, ego_speed=10.0)
    before = {a.instance_id: (a.x, a.y, a.speed, a.behaviour, a.yaw) for a in world.agents}
    ego_x = world.ego.x
    world.step(0.1)
    assert world.ego.x == pytest.approx(ego_x + 1.0)
    for a in world.agents:
        x0, y0, v0, behaviour, yaw = before[a.instance_id]
        if behaviour in ("parked", "stand"):
            assert (a.x, a.y) == (x0, y0)
        else:
            travelled = np.hypot(a.x - x0, a.y - y0)
            assert travelled == pytest.approx(a.speed * 0.1, abs=1e-9)
            if travelled > 0:
                heading = np.arctan2(a.y - y0, a.x - x0)
                assert np.angle(np.exp(1j * (heading - yaw))) == pytest.approx(0.0, abs=1e-6)


def test_car_following_never_drives_into_the_leader():
    world = World(8, length=80.0)
    lanes = {}
    for _ in range(100):
        world.step(0.1)
    for a in world.agents:
        if a.behaviour == "lane":
            lanes.setdefault(a.lane_key, []).append(a)
    for cars in lanes.values():
        cars.sort(key=lambda c: c.x)
        for back, front in zip(cars, cars[1:]):
            assert front.x - back.x > (front.length + back.length) / 2


def test_mesh_helpers_keep_materials_per_triangle():
    m = merge([box((2, 1, 1), material=3, colour=(1, 2, 3)), cylinder(0.5, 2.0, 8, material=5)])
    assert len(m.triangles) == 12 + 8 * 4
    assert m.material.tolist().count(3) == 12 and m.material.tolist().count(5) == 32
    assert m.triangles.max() == len(m.vertices) - 1
    car = car_mesh(4.0, 1.7, 1.5, (200, 0, 0), np.random.default_rng(0))
    lo, hi = car.vertices.min(0), car.vertices.max(0)
    assert hi[2] == pytest.approx(1.5) and hi[0] - lo[0] == pytest.approx(4.0, abs=0.05)


@pytest.mark.parametrize("kind,style", [("car", s) for s in CAR_STYLES] + [("van", s) for s in VAN_STYLES])
def test_every_car_and_van_style_fills_its_label_box(kind, style):
    length, width, height = (4.1, 1.7, 1.55) if kind == "car" else (5.1, 1.9, 2.2)
    mesh = car_mesh(length, width, height, (30, 60, 150), np.random.default_rng(1), kind=kind, style=style)
    lo, hi = mesh.vertices.min(0), mesh.vertices.max(0)
    # Wheels, hub caps, lights and plates stay inside the box (lamps and plates add 2 cm at the ends),
    # so the label box fitted to the mesh keeps the sampled KITTI size.
    assert hi[0] - lo[0] == pytest.approx(length, abs=0.05)
    assert hi[1] - lo[1] == pytest.approx(width, abs=1e-6)
    assert hi[2] == pytest.approx(height) and lo[2] == pytest.approx(0.0, abs=0.02)
    assert np.isin(mesh.material, [Material.GLASS]).any() and np.isin(mesh.material, PAINTS).any()
    assert (mesh.material == Material.TYRE).sum() and (mesh.material == Material.LAMP).sum()
    # Seen from behind, paint ends at the bumper (>= 0.25 m) and a dark underbody fills the gap to the road
    # between the tyres: a ray along the car's axis at 15 cm height hits near-black, not the road behind it.
    paint_vertices = np.unique(mesh.triangles[np.isin(mesh.material, PAINTS)])
    assert mesh.vertices[paint_vertices, 2].min() >= 0.25
    hit = RayScene(mesh, []).cast(np.array([[-20.0, 0.0, 0.15]]), np.array([[1.0, 0.0, 0.0]]))
    assert hit.hit[0] and mesh.colour[hit.triangle[0]].max() <= 32
    again = car_mesh(length, width, height, (30, 60, 150), np.random.default_rng(1), kind=kind, style=style)
    np.testing.assert_array_equal(mesh.vertices, again.vertices)
    np.testing.assert_array_equal(mesh.colour, again.colour)


@pytest.mark.parametrize("style", TRUCK_STYLES)
def test_every_truck_style_fills_its_length_and_height(style):
    mesh = truck_mesh(9.0, 2.5, 3.2, (200, 30, 30), np.random.default_rng(2), style=style)
    lo, hi = mesh.vertices.min(0), mesh.vertices.max(0)
    assert hi[0] - lo[0] == pytest.approx(9.0, abs=0.05)
    assert hi[2] == pytest.approx(3.2) and 2.4 < hi[1] - lo[1] < 2.7


def test_worlds_vary_car_styles_paint_and_surface_tones():
    styles, tones, glosses = set(), set(), set()
    for seed in range(4):
        world = World(seed, length=30.0)
        tones.add(tuple(np.round(world.tones["asphalt"]).astype(int)))
        for a in world.agents:
            if a.kitti_type == "Car":
                mesh = a.local_mesh()
                glosses |= set(np.unique(mesh.material[np.isin(mesh.material, PAINTS)]).tolist())
    for seed in range(40):
        styles.add(_car_style(1.526 + 0.136 * (seed % 5 - 2), np.random.default_rng(seed)))
    assert styles == set(CAR_STYLES)
    assert len(tones) == 4 and glosses == {int(m) for m in PAINTS}


# ------------------------------------------------------------------ street furniture
def test_street_furniture_is_unlabelled_background_next_to_the_road():
    """Bicycles without riders, bins, bollards, cabinets, hedges and trailers are drawn in every
    style, stand beside the road (never on it) and carry no object label: a LiDAR scan gives their
    points class 0, so the network learns that a bicycle without a rider is not a cyclist."""
    from squeeze_perception.offline.synth.generate import object_scan

    kinds_seen = 0
    for seed in range(3):
        world = World(seed, length=0.0)
        assert world.furniture_footprints, "no street furniture drawn"
        lay = world.layout
        for f in world.furniture_footprints:
            # Nothing stands on the carriageway: every footprint keeps 0.25 m from the road's edge.
            assert f.y0 >= lay.road_left + 0.24 or f.y1 <= lay.road_right - 0.24, (f, lay.road_right, lay.road_left)
        kinds_seen += len(world.furniture_footprints)
        # No pedestrian stands inside a piece of furniture.
        for a in world.agents:
            if a.behaviour in ("walk", "stand"):
                assert not any(f.overlaps(a.x, a.y, a.length / 2, a.width / 2) for f in world.furniture_footprints)
    assert kinds_seen > 20
    scan = object_scan(3, "training", 0)
    assert (scan.class_id == 0).any()


def test_parked_bicycle_is_a_cyclists_bicycle_without_the_rider():
    from squeeze_perception.offline.synth.meshes import bicycle_parts, cyclist_mesh, merge
    from squeeze_perception.offline.synth.street_furniture import parked_bicycles

    parts, axle, frame_h = bicycle_parts(1.76, (200, 0, 0))
    bike = merge(parts)
    rider = cyclist_mesh(1.76, 1.74, (200, 0, 0), (0, 0, 0), (0, 0, 0), (0, 0, 0), 0.0)
    assert bike.vertices[:, 2].max() < 1.2 < rider.vertices[:, 2].max()  # no rider above the handlebar
    assert np.ptp(bike.vertices[:, 0]) == pytest.approx(1.76, abs=0.05)
    stand = parked_bicycles(0.0, -5.0, -1, np.random.default_rng(0))
    assert 1 <= len(stand) <= 8
    assert all(m.vertices[:, 2].min() > -0.3 for m in stand)


def test_hedges_are_trimmed_runs_or_overgrown_lumps():
    """Half the hedges are overgrown: lumps of varying height and width, the person-sized shapes
    that a trimmed run (one height all along) never has."""
    from squeeze_perception.offline.synth.street_furniture import hedge

    trimmed = overgrown = 0
    for seed in range(20):
        lumps = hedge(10.0, 5.0, np.random.default_rng(seed))
        tops = np.array([m.vertices[:, 2].max() for m in lumps])
        xs = np.concatenate([m.vertices[:, 0] for m in lumps])
        assert 3.0 - 1.2 <= xs.max() - xs.min() <= 25.0 + 2.4 and tops.max() <= 2.6 * 1.26
        assert all(np.isin(m.material, [Material.FOLIAGE]).all() for m in lumps)
        if np.ptp(tops) > 0.4:
            overgrown += 1
        else:
            trimmed += 1
    assert trimmed >= 4 and overgrown >= 4


def test_pedestrians_stand_on_the_sidewalk_so_their_feet_are_seen():
    """Pedestrians walk on the kerb-high sidewalk: their mesh and their label box start on its top,
    not at road level under it, where the feet were hidden and the camera box reached below them."""
    from squeeze_perception.offline.synth.generate import object_frame

    world = World(3, length=0.0)
    pedestrians = [a for a in world.agents if a.kitti_type == "Pedestrian"]
    assert pedestrians
    top = world.layout.curb_height - 0.01
    for a in pedestrians:
        mesh, bottom, _ = a.world_mesh()
        assert mesh.vertices[:, 2].min() == pytest.approx(top, abs=1e-6) and bottom[2] == pytest.approx(top)
    # In the camera: an unoccluded pedestrian's label box ends where its pixels end (within a pixel).
    fitted = 0
    for index in range(6):
        frame = object_frame(1, "testing", index, lidar=False, nthreads=1)
        for t in frame.truths:
            if t.label is None or t.agent.kitti_type != "Pedestrian" or t.label.occluded or t.label.truncated > 0:
                continue
            rows = np.nonzero((frame.instance_image == t.agent.instance_id).any(axis=1))[0]
            assert abs(t.label.bbox[3] - (rows.max() + 1)) < 1.5 and abs(t.label.bbox[1] - rows.min()) < 1.5
            fitted += 1
    assert fitted >= 2
