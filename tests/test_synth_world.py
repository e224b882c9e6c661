"""The synthetic world: reproducible from a seed, KITTI-like object sizes, plausible motion."""
from __future__ import annotations

import numpy as np
import pytest

from squeeze_perception.synth.meshes import box, car_mesh, cylinder, merge
from squeeze_perception.synth.world import SIZE_STATS, World


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
