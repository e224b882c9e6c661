"""Scans closer to real ones: terrain, middle-distance geometry, vehicles, ego attitude, measured dropout."""
from __future__ import annotations

import numpy as np
import pytest

from squeeze_perception.interfaces import CLASS_IDS
from squeeze_perception.kitti.hdl64e import HDL64E_ROWS, KITTI_VELODYNE_HEIGHT_M
from squeeze_perception.kitti.hdl64e_dropout import HDL64E_RING_DROPOUT
from squeeze_perception.kitti.noise_map import measure_ring_dropout
from squeeze_perception.offline.synth.frame import FrameRenderer
from squeeze_perception.offline.synth.lidar import KITTI_RECORDED_RANGE_M, Hdl64e, firing_dropout
from squeeze_perception.offline.synth.materials import Material
from squeeze_perception.offline.synth.meshes import CAR_STYLES, box, car_mesh, merge, truck_mesh
from squeeze_perception.offline.synth.raycast import RayScene
from squeeze_perception.offline.synth.scan_compare import ScanProfile, comparison_rows, total_variation
from squeeze_perception.offline.synth.terrain import FAR_BAND_M, Terrain, far_surroundings
from squeeze_perception.offline.synth.world import (EGO_ATTITUDE_LIMIT_STD, EGO_PITCH_STD_DEG, EGO_ROLL_STD_DEG,
                                                    FACADE_COLOURS, World)

STRUCTURES = [Material.FACADE, Material.ROOF, Material.WALL, Material.FOLIAGE, Material.BARK, Material.METAL]


def _static_scan(world: World, seed: int = 0):
    rotation, origin = world.sensor_pose(KITTI_VELODYNE_HEIGHT_M)
    scene = RayScene(world.static_mesh, [])
    return Hdl64e().scan(scene, rotation, origin, np.random.default_rng(seed), world.layout.on_lane_paint)


def test_far_surroundings_stand_30_to_80_m_out_and_the_lidar_sees_them():
    structure_returns = 0
    for seed in range(2):
        world = World(seed, length=0.0, style="rural")
        far = merge(far_surroundings(world.layout, world.terrain, np.random.default_rng(seed), FACADE_COLOURS))
        lateral = np.abs(far.vertices[:, 1])
        # Guard rails run along the verge; everything else stands in the far band (trees scatter a little).
        away = lateral > 20
        assert away.any()
        assert FAR_BAND_M[0] - 12 < np.percentile(lateral[away], 5)
        assert np.percentile(lateral[away], 95) < FAR_BAND_M[1] + 12
        # Seen over the terrain alone (the roadside rows of buildings and trees would hide much of it):
        # the pieces stand on the ground, not buried in it, and the beams reach them.
        rotation, origin = world.sensor_pose(KITTI_VELODYNE_HEIGHT_M)
        scene = RayScene(merge([world.terrain.mesh((90, 120, 60)), far]), [])
        scan = Hdl64e().scan(scene, rotation, origin, np.random.default_rng(seed))
        horizontal = np.hypot(scan.points[:, 0], scan.points[:, 1])
        band = (horizontal > 30) & (horizontal < 80)
        structure_returns += int(np.isin(scan.material[band], STRUCTURES).sum())
    assert structure_returns > 1000


def test_terrain_is_level_beside_the_street_and_slopes_beyond_it():
    kinds = set()
    for seed in range(12):
        world = World(seed, length=0.0)
        terrain = world.terrain
        inner = np.linspace(terrain.sides[-1].outer + 0.01, terrain.sides[1].outer - 0.01, 50)
        assert np.all(terrain.height(np.zeros(50), inner) == 0.0)
        for side, prof in terrain.sides.items():
            kinds.add(prof.kind)
            far = terrain.height(np.linspace(-50, 50, 20), prof.outer + side * 60.0)
            assert np.all((far >= -8.0) & (far <= 12.0))
            if prof.kind == "cutting":
                assert far.mean() > 0.3
            if prof.kind == "embankment":
                assert far.mean() < 0.3
    assert {"cutting", "embankment"} <= kinds


def test_objects_settled_on_sloping_ground_never_float():
    world = next(World(s, length=0.0) for s in range(40) if any(p.kind == "cutting" and p.rise > 2
                                                                 for p in World(s, length=0.0).terrain.sides.values()))
    side, prof = next((s, p) for s, p in world.terrain.sides.items() if p.kind == "cutting")
    y = prof.outer + side * (prof.verge + prof.slope_width / 2)
    house = box((10.0, 8.0, 4.0), (0.0, y, 2.0), Material.FACADE, (200, 200, 200))
    settled = world.terrain.settle([house])[0]
    corners = settled.vertices[settled.vertices[:, 2] <= settled.vertices[:, 2].min() + 1e-6]
    ground = world.terrain.height(corners[:, 0], corners[:, 1])
    assert np.all(corners[:, 2] <= ground + 1e-9)  # no gap under any corner
    assert np.ptp(ground) > 0.5  # and the ground under it really slopes


def test_returns_off_cars_pedestrians_and_cyclists_are_never_labelled_as_them():
    renderer = FrameRenderer(nthreads=1)
    for seed in (1,):
        world = World(seed, length=0.0, density=1.2)
        scan = renderer.scan_only(world, np.random.default_rng(seed))
        agents = {a.instance_id: a for a in world.agents}
        background = np.isin(scan.material, [Material.GRASS, Material.ASPHALT, Material.SIDEWALK, Material.FACADE,
                                             Material.ROOF, Material.WALL, Material.BARK, Material.FOLIAGE])
        assert np.all(scan.class_id[background] == CLASS_IDS["unknown"])
        for cls, kitti_type in ((CLASS_IDS["car"], "Car"), (CLASS_IDS["pedestrian"], "Pedestrian"),
                                (CLASS_IDS["cyclist"], "Cyclist")):
            owners = np.unique(scan.instance_id[scan.class_id == cls])
            assert all(agents[i].kitti_type == kitti_type for i in owners)
        assert np.all(scan.instance_id[scan.class_id == CLASS_IDS["unknown"]] == -1)


def test_lidar_sees_every_car_style_vans_and_trucks_and_labels_only_cars_as_car():
    rng = np.random.default_rng(0)
    shapes = [(car_mesh(4.2, 1.7, 1.5, (150, 20, 25), rng, style=style), CLASS_IDS["car"]) for style in CAR_STYLES]
    shapes += [(car_mesh(5.1, 1.9, 2.2, (235, 235, 235), rng, kind="van"), CLASS_IDS["unknown"]),
               (truck_mesh(9.0, 2.5, 3.3, (25, 45, 110), rng), CLASS_IDS["unknown"])]
    objects = []
    for k, (mesh, cls) in enumerate(shapes):
        angle = 2 * np.pi * k / len(shapes)
        objects.append((mesh.translated([12 * np.cos(angle), 12 * np.sin(angle), 0.0]), cls, k + 1))
    ground = box((200, 200, 0.02), (0, 0, -0.01), Material.ASPHALT, (80, 80, 80))
    scan = Hdl64e().scan(RayScene(ground, objects), np.eye(3), np.array([0, 0, KITTI_VELODYNE_HEIGHT_M]), rng)
    for _, cls, instance in objects:
        mine = scan.instance_id == instance
        assert mine.sum() > 100, instance
        assert np.all(scan.class_id[mine] == cls)


def test_ego_pitch_and_roll_stay_bounded_and_move_smoothly():
    world = World(3, length=300.0, ego_speed=8.0)
    pitch, roll = [], []
    for _ in range(600):
        world.step(0.1)
        pitch.append(world.ego.pitch)
        roll.append(world.ego.roll)
    pitch, roll = np.degrees(pitch), np.degrees(roll)
    assert np.abs(pitch).max() <= EGO_PITCH_STD_DEG * EGO_ATTITUDE_LIMIT_STD + 1e-9
    assert np.abs(roll).max() <= EGO_ROLL_STD_DEG * EGO_ATTITUDE_LIMIT_STD + 1e-9
    assert 0.5 * EGO_PITCH_STD_DEG < pitch.std() < 1.5 * EGO_PITCH_STD_DEG
    assert 0.5 * EGO_ROLL_STD_DEG < roll.std() < 1.5 * EGO_ROLL_STD_DEG
    # Consecutive 10 Hz frames are strongly correlated (no jumps from frame to frame).
    assert np.corrcoef(pitch[:-1], pitch[1:])[0, 1] > 0.8 and np.corrcoef(roll[:-1], roll[1:])[0, 1] > 0.8
    rotation, _ = world.sensor_pose(KITTI_VELODYNE_HEIGHT_M)
    # The sensor's x axis tilts by the pitch; its y axis by the roll.
    assert np.degrees(np.arcsin(-rotation[2, 0])) == pytest.approx(pitch[-1], abs=1e-6)
    assert np.degrees(np.arcsin(rotation[2, 1] / np.cos(np.radians(pitch[-1])))) == pytest.approx(roll[-1], abs=1e-6)


def test_lost_firings_per_row_match_the_measured_map():
    # Inside a closed room every firing meets a bright, near surface: only the measured loss removes returns.
    room = box((24, 24, 12), (0, 0, 4.27), Material.WALL, (200, 200, 200))
    scene = RayScene(room, [])
    lidar = Hdl64e()
    rotation, origin = np.eye(3), np.array([0, 0, KITTI_VELODYNE_HEIGHT_M])
    fired_rays = lidar.beam_rays(0.0, np.random.default_rng(0))
    fired = np.bincount(fired_rays[2], minlength=HDL64E_ROWS)
    expected = np.zeros(HDL64E_ROWS)
    az = np.arctan2(fired_rays[1][:, 1], fired_rays[1][:, 0])
    np.add.at(expected, fired_rays[2], firing_dropout(fired_rays[2], az))
    expected /= fired
    lost, total = np.zeros(HDL64E_ROWS), np.zeros(HDL64E_ROWS)
    for seed in range(4):
        scan = lidar.scan(scene, rotation, origin, np.random.default_rng(seed))
        returns = np.bincount(scan.rows, minlength=HDL64E_ROWS)
        lost += fired - returns
        total += fired
    measured = lost / total
    sigma = np.sqrt(expected * (1 - expected) / total)
    assert np.all(np.abs(measured - expected) < 5 * sigma + 1e-3)
    # Rings that lose more on the real sensor than the physics explains lose the difference; the others nothing more.
    more, none = np.argmax(HDL64E_RING_DROPOUT[:32]), np.argmin(HDL64E_RING_DROPOUT[:32])
    assert measured[more] > 0.004 and measured[none] < 0.002
    lidar.ring_dropout = False
    scan = lidar.scan(scene, rotation, origin, np.random.default_rng(0))
    assert len(scan.points) >= 0.999 * fired.sum()


def test_ring_dropout_counts_single_lost_firings_but_not_open_space():
    firings = 2000
    az = (np.arange(firings) + 0.5) * 2 * np.pi / firings
    distance = np.full(firings, 20.0)
    distance[1000:] = 40.0  # a range jump: the gap there is open space, not a lost firing
    keep = np.ones(firings, bool)
    keep[[100, 500, 501, 700]] = False  # three lost firings on one surface (gaps of 1, 2 and 1)
    keep[999] = False  # at the jump
    keep[1500:1510] = False  # a long gap (more than DROPOUT_MAX_MISSING)
    pts = np.column_stack([distance * np.cos(az), distance * np.sin(az), np.zeros(firings), np.zeros(firings)])[keep]
    counts = measure_ring_dropout(pts, rows=np.full(len(pts), 10), firings_per_rev=firings)
    assert counts.holes.sum() == 4 and counts.holes[10].sum() == 4
    assert counts.firings[10].sum() == keep.sum() + 4


def test_real_ring_dropout_table_has_the_upper_block_losing_more():
    assert HDL64E_RING_DROPOUT.shape == (HDL64E_ROWS,)
    assert np.all((HDL64E_RING_DROPOUT >= 0) & (HDL64E_RING_DROPOUT < 0.05))
    assert HDL64E_RING_DROPOUT[:32].mean() > 2 * HDL64E_RING_DROPOUT[32:].mean()


def test_scans_keep_kitti_recorded_range():
    ground = box((600, 600, 0.02), (0, 0, -0.01), Material.LANE_PAINT, (230, 230, 230))
    wall = box((1, 600, 40), (100, 0, 20), Material.WALL, (200, 200, 200))
    scan = Hdl64e().scan(RayScene(merge([ground, wall]), []), np.eye(3), np.array([0, 0, KITTI_VELODYNE_HEIGHT_M]),
                         np.random.default_rng(0))
    assert np.linalg.norm(scan.points[:, :3], axis=1).max() <= KITTI_RECORDED_RANGE_M + 0.1


def test_scan_comparison_table_is_zero_distance_against_itself():
    world = World(4, length=0.0)
    scan = _static_scan(world)
    a, b = ScanProfile(), ScanProfile()
    a.add(scan.points, scan.rows)
    b.add(scan.points)  # rings from the geometry: the same cells
    assert total_variation(a.range_density(), b.range_density()) == 0.0
    np.testing.assert_allclose(a.row_return_rate(), b.row_return_rate(), atol=0.01)
    rows = dict((name, (s, r)) for name, s, r in comparison_rows(a, b))
    assert rows["range histogram, total variation"][0] == "0.000"
    other = ScanProfile()
    other.add(scan.points[::2])
    assert total_variation(a.intensity_density(), other.intensity_density()) < 0.05
    assert abs(other.row_return_rate().mean() - a.row_return_rate().mean()) > 0.2


def test_synth_stats_compares_generated_scans_with_real_ones(kitti_real, tmp_path, capsys):
    from squeeze_perception.offline.synth.stats import main

    real = tmp_path / "real" / "object" / "training" / "velodyne"
    real.mkdir(parents=True)
    (real / "000000.bin").symlink_to(kitti_real / "object" / "training" / "velodyne" / "000000.bin")
    figure = tmp_path / "cmp.png"
    assert main(["--generate", "1", "--seed", "0", "--real", str(tmp_path / "real"), "--figure", str(figure)]) == 0
    out = capsys.readouterr().out
    assert "front 64x512 return rate, rows 0-31" in out and "points at 30-80 m" in out
    assert figure.stat().st_size > 10_000


def test_lidar_only_scan_is_the_scan_of_the_full_frame():
    from squeeze_perception.offline.synth.generate import object_frame, object_scan

    full = object_frame(0, "testing", 2, nthreads=1)
    alone = object_scan(0, "testing", 2, nthreads=1)
    np.testing.assert_array_equal(full.scan.points, alone.points)
    np.testing.assert_array_equal(full.scan.class_id, alone.class_id)
    np.testing.assert_array_equal(full.scan.instance_id, alone.instance_id)
