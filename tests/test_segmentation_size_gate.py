"""Size gate: limits from the KITTI size statistics, the gate on hand-made rows, the per-instance
top quantile against numpy, and the pipeline on a constructed scene (a wall labelled pedestrian and
a 3 m post labelled car are rejected and relabelled, a real car is kept; off keeps all three), and
the node's counters per class and cause."""
from __future__ import annotations

import numpy as np
import pytest

from squeeze_perception import interfaces as itf
from squeeze_perception.object_sizes import SIZE_STATS
from squeeze_perception.segmentation.size_gate import class_size_limits, gate_instances, instance_tops

CAR, PED, CYC = itf.CLASS_IDS["car"], itf.CLASS_IDS["pedestrian"], itf.CLASS_IDS["cyclist"]


def _rows(*rows):
    table = np.zeros(len(rows), dtype=itf.INSTANCE_DTYPE)
    for k, (cls, length, width) in enumerate(rows):
        table[k]["instance_id"], table[k]["class_id"] = k, cls
        table[k]["length"], table[k]["width"], table[k]["height"] = length, width, 1.5
    return table


def test_limits_are_mean_plus_sigmas_std_plus_slack():
    lim = class_size_limits(sigmas=4.0, slack_m=0.3)
    (h, w, l), (sh, sw, sl) = SIZE_STATS["Car"]
    assert lim[CAR].length_m == pytest.approx(l + 4 * sl + 0.3)
    assert lim[CAR].width_m == pytest.approx(w + 4 * sw + 0.3)
    assert lim[CAR].top_m == pytest.approx(h + 4 * sh + 0.3)
    assert set(lim) == {CAR, PED, CYC}
    assert class_size_limits(sigmas=0.0, slack_m=0.0)[PED].length_m == pytest.approx(SIZE_STATS["Pedestrian"][0][2])
    assert lim[PED].length_m < lim[CYC].length_m < lim[CAR].length_m


def test_gate_rejects_only_what_the_class_cannot_be():
    lim = class_size_limits()
    table = _rows((CAR, 4.2, 1.7), (PED, 7.0, 0.3), (CAR, 1.8, 4.5), (CYC, 1.6, 0.5), (CAR, 3.0, 1.5),
                  (itf.CLASS_IDS["unknown"], 30.0, 30.0))
    tops = np.array([1.5, 1.5, 1.5, 1.7, 3.2, 9.0])
    keep, causes = gate_instances(table, tops, lim)
    # the longer side is the length whatever the fit's order: a car fitted 1.8 x 4.5 is kept
    assert causes == [None, "too_long", None, None, "too_tall", None]
    assert keep.tolist() == [True, False, True, True, False, True]
    keep, causes = gate_instances(table, None, lim)  # no ground: the footprint alone
    assert causes == [None, "too_long", None, None, None, None]
    wide = _rows((CAR, 4.0, 2.6))
    assert gate_instances(wide, None, lim)[1] == ["too_wide"]


def test_instance_tops_are_the_lower_quantile_of_each_instance():
    rng = np.random.default_rng(0)
    instances = rng.integers(-1, 6, 2000)
    instances[instances == 3] = -1  # an id with no point is never asked for
    heights = rng.normal(1.0, 0.5, 2000)
    ids = np.unique(instances[instances >= 0])
    got = instance_tops(heights, instances, ids, 0.95)
    want = [np.percentile(heights[instances == i], 95, method="lower") for i in ids]
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-9)
    # heights outside any object (a multipath return 50 m below the road) cannot move a neighbour's group
    heights[0], instances[0] = -300.0, 4
    assert instance_tops(heights, instances, np.array([4]), 0.0)[0] == pytest.approx(-300.0, abs=1e-9)


def _scene(rng):
    n = 60000
    r = np.sqrt(rng.uniform(4 ** 2, 30 ** 2, n))
    az = rng.uniform(-np.pi / 4, np.pi / 4, n)
    road = np.c_[r * np.cos(az), r * np.sin(az), -1.73 + rng.normal(0, 0.02, n)]
    car = np.c_[rng.uniform(9, 13, 3000), rng.uniform(-1, 1, 3000), rng.uniform(-1.4, -0.2, 3000)]  # 4 x 2 x 1.5 m
    wall = np.c_[rng.uniform(14, 24, 4000), rng.uniform(6, 6.2, 4000), rng.uniform(-1.4, 0.3, 4000)]  # 10 m long
    post = np.c_[rng.uniform(16, 16.6, 1500), rng.uniform(-5, -4.4, 1500), rng.uniform(-1.4, 1.6, 1500)]  # 3.3 m high
    pts = np.concatenate([road, car, wall, post])
    pts = np.c_[pts, rng.uniform(0, 1, len(pts))].astype(np.float32)
    parts = {"car": np.arange(n, n + 3000), "wall": np.arange(n + 3000, n + 7000), "post": np.arange(n + 7000, len(pts))}
    return pts, parts


def test_pipeline_rejects_the_wall_and_the_post_and_keeps_the_car(v1_weights):
    from squeeze_perception.segmentation.pipeline import SegmentationPipeline

    pts, parts = _scene(np.random.default_rng(5))
    pl = SegmentationPipeline("squeezeseg", weights=v1_weights, crf=False, num_threads=1)

    def fake_network(batch):  # car on the car and the post, pedestrian on the wall
        logits = np.zeros((len(batch), 4, 64, 512), np.float32)
        x, y, z, rng_ = batch[:, 0], batch[:, 1], batch[:, 2], batch[:, 4]
        above = (rng_ > 0) & (z > -1.6)
        car = above & (((x > 8.5) & (x < 13.5) & (np.abs(y) < 1.5)) | ((np.abs(x - 16.3) < 0.6) & (np.abs(y + 4.7) < 0.6)))
        ped = above & (x > 13.5) & (x < 24.5) & (np.abs(y - 6.1) < 0.4)
        logits[:, CAR][car] = 10.0
        logits[:, PED][ped] = 10.0
        logits[:, 0][~(car | ped)] = 10.0
        return logits
    pl.run_network = fake_network

    pl.size_gate = False
    off = pl.process(pts)
    assert off.size_rejected is None
    assert sorted(off.table["class_id"].tolist()) == [CAR, CAR, PED]

    pl.size_gate = True
    on = pl.process(pts)
    assert len(on.table) == 1 and on.table["class_id"][0] == CAR and abs(on.table["x"][0] - 11) < 0.5
    assert sorted(zip(on.size_rejected["class_id"].tolist(), on.size_rejected_causes)) == [
        (CAR, "too_tall"), (PED, "too_long")]
    for part in ("wall", "post"):  # relabelled: no object label without an instance
        sel = parts[part][off.labels[parts[part]] > 0]
        assert len(sel) > 1000
        assert (on.labels[sel] == 0).all() and (on.instances[sel] == -1).all()
    kept = parts["car"][off.labels[parts["car"]] == CAR]
    assert (on.labels[kept] == CAR).all() and (on.instances[kept] == off.instances[kept]).all()

    pl.ground_removal = False  # no ground fitted: the footprint alone is tested, never the height
    no_ground = pl.process(pts)
    assert "too_long" in no_ground.size_rejected_causes and "too_tall" not in no_ground.size_rejected_causes


def test_node_counts_rejections_per_class_and_cause():
    from squeeze_perception.nodes.squeezeseg_node import count_size_rejections
    from squeeze_perception.segmentation.pipeline import SegmentationResult
    from squeeze_perception.telemetry import StageStats

    stats = StageStats("size_gate")
    result = SegmentationResult.empty(0)
    count_size_rejections(stats, result)  # gate off: nothing
    assert not stats.counters
    result.size_rejected = _rows((PED, 7.0, 0.3), (PED, 9.0, 0.3), (CAR, 3.0, 1.5))
    result.size_rejected_causes = ["too_long", "too_long", "too_tall"]
    count_size_rejections(stats, result)
    assert stats.counters == {"instances_rejected_pedestrian_too_long": 2, "instances_rejected_car_too_tall": 1}
