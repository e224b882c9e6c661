"""The compiled box-fit kernel (segmentation/_stages_native.py) gives rectangle_fit's boxes bit for
bit: every heading's cost equals `boxfit.heading_costs`, the chosen heading is the same, and
`boxes_for_instances` writes the same table bytes as its per-instance numpy loop, on random
clouds, L-shaped cars, one- and two-point instances, collinear and duplicated points, squares
whose headings tie, instances around the 512-point search subset, far-away coordinates and,
where the real KITTI scans are present, DBSCAN clusters of those. Non-finite coordinates, and
SQUEEZE_PERCEPTION_NATIVE_STAGES=0, take the numpy loop."""
from __future__ import annotations

import numpy as np
import pytest

from squeeze_perception import interfaces as itf
from squeeze_perception.segmentation import _stages_native as native
from squeeze_perception.segmentation.boxfit import heading_costs, rectangle_fit
from squeeze_perception.segmentation.pipeline import boxes_for_instances

needs_kernel = pytest.mark.skipif(native.load() is None, reason=f"no native stages kernel: {native.load_error()}")


def _l_shape(rng, n):
    yaw = rng.uniform(0, np.pi)
    length, width = rng.uniform(3, 5), rng.uniform(1.4, 2)
    a = max(n * 2 // 3, 1)
    b = n - a
    local = np.concatenate([np.c_[rng.uniform(-length / 2, length / 2, a), np.full(a, -width / 2)],
                            np.c_[np.full(b, -length / 2), rng.uniform(-width / 2, width / 2, b)]])
    local += rng.normal(0, 0.03, local.shape)
    c, s = np.cos(yaw), np.sin(yaw)
    xy = local @ np.array([[c, s], [-s, c]]) + rng.uniform(-40, 40, 2)
    return np.c_[xy, rng.uniform(-1.8, 0.2, len(xy))]


def _instances(rng, sizes, kind="mixed"):
    """(points float32 (N, 4), labels, instances, confidence) with one instance per size."""
    parts = []
    for n in sizes:
        k = kind if kind != "mixed" else ("l", "blob", "line", "grid")[int(rng.integers(0, 4))]
        if k == "l":
            p = _l_shape(rng, n)
        elif k == "blob":
            p = rng.normal(0, rng.uniform(0.2, 3), (n, 3)) + np.r_[rng.uniform(-60, 60, 2), 0]
        elif k == "line":  # collinear in the top view
            t = rng.uniform(-3, 3, n)
            d = rng.normal(size=2)
            p = np.c_[t * d[0] + 5, t * d[1] - 7, rng.uniform(-1, 0, n)]
        else:  # integer lattice: many equal distances
            p = np.c_[rng.integers(0, 4, (n, 2)), rng.integers(0, 2, n)].astype(float) + [20, 3, 0]
        parts.append(p)
    pts = np.concatenate(parts)
    inst = np.repeat(np.arange(len(sizes)) * 3 + 1, sizes)  # ids with gaps
    perm = rng.permutation(len(pts))
    pts = np.c_[pts, rng.uniform(0, 1, len(pts))].astype(np.float32)[perm]
    inst = inst[perm]
    noise = rng.random(len(pts)) < 0.1
    inst[noise] = -1
    labels = rng.integers(0, 4, len(pts))
    conf = rng.uniform(size=len(pts)).astype(np.float32)
    return pts, labels, inst, conf


def _assert_same_table(points, labels, instances, conf):
    ref = boxes_for_instances(points, labels, instances, conf, native=False)
    got = boxes_for_instances(points, labels, instances, conf)
    assert got.dtype == ref.dtype and len(got) == len(ref)
    for name in ref.dtype.names:
        np.testing.assert_array_equal(got[name], ref[name], err_msg=name)
    assert got.tobytes() == ref.tobytes()
    return ref


def _groups(points, instances):
    clustered = np.flatnonzero(instances >= 0)
    order = clustered[np.argsort(instances[clustered], kind="stable")]
    ids, starts = np.unique(instances[order], return_index=True)
    counts = np.diff(np.append(starts, len(order)))
    return order, starts, counts


@needs_kernel
@pytest.mark.parametrize("seed", range(6))
def test_every_heading_cost_and_box_equal_the_numpy_definition(seed):
    rng = np.random.default_rng(seed)
    sizes = [1, 2, 3, 5, 20, 77, 511, 512, 513, 1024, 1025, 1600, 4000]
    pts, labels, inst, conf = _instances(rng, sizes)
    inst[inst < 0] = 1  # every point in an instance: the exact sizes above
    order, starts, counts = _groups(pts, inst)
    grouped = pts[order, :3]
    best, thetas, ext1, ext2, m1, m2, z_min, z_max, costs = native.rectangle_fits(grouped, starts, counts,
                                                                                   with_costs=True)
    for j, (a, c) in enumerate(zip(starts, counts)):
        p = grouped[a:a + c].astype(np.float64)
        xy = p[:, :2][:: int(np.ceil(c / 512))] if c > 512 else p[:, :2]
        assert costs[j].tobytes() == heading_costs(xy).tobytes(), f"instance of {c} points"
        assert best[j] == np.argmin(heading_costs(xy))
    _assert_same_table(pts, labels, inst, conf)


@needs_kernel
@pytest.mark.parametrize("kind", ["l", "blob", "line", "grid"])
@pytest.mark.parametrize("seed", range(3))
def test_tables_equal_the_per_instance_loop(kind, seed):
    rng = np.random.default_rng(100 + seed)
    sizes = list(rng.integers(1, 700, 25)) + [1, 2, 2, 3]
    _assert_same_table(*_instances(rng, sizes, kind))


@needs_kernel
def test_degenerate_instances():
    rng = np.random.default_rng(7)
    square = np.array([[0, 0], [1, 0], [1, 1], [0, 1]], float)  # headings tie: the first must win
    cases = [
        np.array([[3.0, 4.0, -1.0]]),  # one point
        np.array([[3.0, 4.0, -1.0], [5.0, 4.0, -0.5]]),  # two points, axis-aligned
        np.array([[3.0, 4.0, -1.0], [4.0, 5.0, -0.5]]),  # two points at 45 degrees
        np.repeat([[7.5, -2.25, 0.0]], 40, 0),  # all the same point
        np.c_[np.linspace(0, 5, 30), np.linspace(0, 5, 30) * 0.3, np.zeros(30)],  # collinear
        np.c_[square, np.zeros(4)], np.c_[square * 2 + 10, np.ones(4)],
        np.c_[np.repeat(square, 200, 0), np.zeros(800)],  # > 512 points, strided subset
        np.c_[rng.normal(0, 0.5, (50, 2)) + [1e4, -1e4], np.zeros(50)],  # far from the origin
    ]
    pts = np.concatenate(cases)
    inst = np.repeat(np.arange(len(cases)), [len(c) for c in cases])
    pts = np.c_[pts, np.zeros(len(pts))].astype(np.float32)
    labels = np.zeros(len(pts), dtype=np.int64)
    labels[::2] = 2  # equal votes in the two-point instances: the smaller label wins
    conf = rng.uniform(size=len(pts)).astype(np.float32)
    table = _assert_same_table(pts, labels, inst, conf)
    for row, case in zip(table, cases):
        box = rectangle_fit(case.astype(np.float32))
        assert np.float32(box.yaw) == row["yaw"] and np.float32(box.length) == row["length"]
    assert table["yaw"][0] == 0.0 and table["length"][0] == 0.0  # one point: heading 0, no extent
    # no instance at all
    assert len(boxes_for_instances(pts, labels, np.full(len(pts), -1), conf)) == 0
    assert len(boxes_for_instances(pts[:0], labels[:0], inst[:0], conf[:0])) == 0


@needs_kernel
@pytest.mark.filterwarnings("ignore:invalid value encountered")
def test_non_finite_coordinates_take_the_numpy_loop():
    rng = np.random.default_rng(8)
    pts, labels, inst, conf = _instances(rng, [30, 40, 50])
    pts[np.flatnonzero(inst == 4)[0], 0] = np.nan
    pts[np.flatnonzero(inst == 7)[0], 1] = np.inf
    order, starts, counts = _groups(pts, inst)
    assert native.rectangle_fits(pts[order, :3], starts, counts) is None
    _assert_same_table(pts, labels, inst, conf)


def test_fallback_switch(monkeypatch):
    rng = np.random.default_rng(9)
    pts, labels, inst, conf = _instances(rng, [10, 300, 900])
    ref = boxes_for_instances(pts, labels, inst, conf, native=False)
    monkeypatch.setenv(native.ENV_SWITCH, "0")
    assert native.load() is None
    order, starts, counts = _groups(pts, inst)
    assert native.rectangle_fits(pts[order, :3], starts, counts) is None
    assert boxes_for_instances(pts, labels, inst, conf).tobytes() == ref.tobytes()
    assert ref.dtype == itf.INSTANCE_DTYPE and len(ref) == 3


@needs_kernel
def test_real_kitti_clusters(real_bench_scans):
    from squeeze_perception.segmentation.clustering import dbscan_fast

    scans = real_bench_scans
    rng = np.random.default_rng(10)
    for scan in scans[:3]:
        pts = np.array(scan[:, :4], dtype=np.float32)
        # objects above the road within 40 m, clustered as the pipeline would (real shapes and sizes)
        sel = np.flatnonzero((np.abs(pts[:, 0]) < 40) & (np.abs(pts[:, 1]) < 40) & (pts[:, 2] > -1.3))
        inst = np.full(len(pts), -1)
        inst[sel] = dbscan_fast(pts[sel, :3].astype(np.float64), 0.5, 10)
        assert inst.max() > 5
        labels = rng.integers(0, 4, len(pts))
        conf = rng.uniform(size=len(pts)).astype(np.float32)
        _assert_same_table(pts, labels, inst, conf)
