"""Every DBSCAN path, forced one by one, gives scikit-learn's label array on small hand-built
clouds that sit on the rules' boundaries (issue 17: the numpy grid path `_dbscan_grid`, the
all-pairs fallback `dbscan_pairs` and the exact cell-pair test were barely exercised, because
`dbscan_fast` prefers the C kernel).

The rules (clustering.py docstring, scikit-learn's DBSCAN):
- q is a neighbour of p when the squared distance is <= eps * eps (exactly eps counts); the
  point itself and each of its copies count towards min_samples;
- clusters are connected components of core points, numbered in the order of their
  lowest-index point; a border point joins the first-numbered cluster that reaches it;
- everything else is noise (-1); the labels are an int64 array.
Coordinates below are binary fractions (0.125, 0.25, ...), so every distance in a tie is exact.
"""
from __future__ import annotations

import numpy as np
import pytest

from squeeze_perception.segmentation import _dbscan_native as native
from squeeze_perception.segmentation import clustering as cl
from squeeze_perception.segmentation.clustering import (GRID_SHRINK, cluster_by_class, collapse_duplicates,
                                                        dbscan_fast, dbscan_pairs, dbscan_sklearn, same_partition)

HAVE_KERNEL = native.load() is not None


def _collapsed(pts):
    return collapse_duplicates(np.asarray(pts, dtype=np.float64))


def _grid_labels(pts, eps, ms):
    """The numpy grid path on the collapsed points, called directly."""
    uniq, first, inverse, weight = _collapsed(pts)
    grid = cl._grid_keys(uniq, eps / np.sqrt(3.0) * GRID_SHRINK)
    assert grid is not None
    return cl._dbscan_grid(uniq, eps, ms, first, weight, *grid)[inverse]


def _pairs_labels(pts, eps, ms):
    uniq, first, inverse, weight = _collapsed(pts)
    return dbscan_pairs(uniq, eps, ms, first, weight)[inverse]


def _native_labels(pts, eps, ms):
    lab = native.dbscan_native(np.asarray(pts, dtype=np.float64), eps, ms)
    assert lab is not None, "the kernel gave up on a small cloud"
    return lab


def _native_collapsed_labels(pts, eps, ms):
    uniq, first, inverse, weight = _collapsed(pts)
    lab = native.dbscan_native(uniq, eps, ms, first=first, weight=weight)
    assert lab is not None
    return lab[inverse]


PATHS = {
    "default": lambda p, e, m: dbscan_fast(p, e, m),
    "numpy": lambda p, e, m: dbscan_fast(p, e, m, native=False),
    "grid": _grid_labels,
    "pairs": _pairs_labels,
    "native": _native_labels,
    "native-collapsed": _native_collapsed_labels,
}


def _check_all_paths(pts, eps, ms, expected=None):
    """sklearn's labels (checked against the hand-derived ones when given) from every path."""
    pts = np.asarray(pts)
    ref = dbscan_sklearn(pts, eps, ms)
    assert ref.dtype == np.int64
    if expected is not None:
        np.testing.assert_array_equal(ref, expected, err_msg="hand-derived labels are not sklearn's")
    for name, fn in PATHS.items():
        if name.startswith("native") and not HAVE_KERNEL:
            continue
        got = fn(pts, eps, ms)
        assert got.dtype == np.int64, name
        np.testing.assert_array_equal(got, ref, err_msg=f"path {name}, eps {eps}, min_samples {ms}")
    return ref


class _Spy:
    """Wraps a module function, counting calls (the wrapped one still answers)."""

    def __init__(self, monkeypatch, module, name):
        self.calls = []
        inner = getattr(module, name)

        def spy(*args, **kwargs):
            out = inner(*args, **kwargs)
            self.calls.append((args, kwargs, out))
            return out

        monkeypatch.setattr(module, name, spy)


# --------------------------------------------------------------------------- exact eps
CHAIN_X = np.c_[-3.0 + 0.5 * np.arange(7), np.full(7, -1.25), np.full(7, -0.75)]  # steps of exactly 0.5


@pytest.mark.parametrize("ms, expected", [(1, [0] * 7), (2, [0] * 7), (3, [0] * 7), (4, [-1] * 7)])
def test_chain_with_steps_of_exactly_eps_along_an_axis(ms, expected):
    # Interior points: itself + 2 neighbours = 3; end points: 2 (border when ms = 3).
    _check_all_paths(CHAIN_X, 0.5, ms, expected)
    perm = np.array([3, 0, 6, 1, 5, 2, 4])
    _check_all_paths(CHAIN_X[perm], 0.5, ms, np.array(expected)[perm])


def test_chain_just_beyond_eps_is_noise():
    _check_all_paths(CHAIN_X, float(np.nextafter(0.5, 0.0)), 2, [-1] * 7)
    _check_all_paths(CHAIN_X, float(np.nextafter(0.5, 0.0)), 1, np.arange(7))


# (0.25, 0.5, 0.5): length 0.75 exactly; each step crosses cells diagonally (cell side 0.433).
CHAIN_DIAG = np.array([-1.0, -2.0, -0.5]) + np.arange(6)[:, None] * np.array([0.25, 0.5, 0.5])


@pytest.mark.parametrize("ms, expected", [(2, [0] * 6), (3, [0] * 6), (4, [-1] * 6)])
def test_chain_with_diagonal_steps_of_exactly_eps(ms, expected):
    _check_all_paths(CHAIN_DIAG, 0.75, ms, expected)
    _check_all_paths(CHAIN_DIAG[::-1], 0.75, ms, expected)


def test_exact_eps_pair_whatever_grid_cells_it_falls_in():
    """B - A = eps exactly along x, A just below a multiple of eps/2: in any grid finer than
    the one clustering.py uses the pair would be more than two cells apart."""
    s4 = 0.5 * GRID_SHRINK
    a = 4 * s4 - 1e-7
    b = a + 1.0
    assert (b - a) ** 2 <= 1.0
    pts = np.array([[0.0, 0.0, 0.0], [a, 0.0, 0.0], [b, 0.0, 0.0]])
    _check_all_paths(pts, 1.0, 2, [-1, 0, 0])


@pytest.mark.parametrize("scale, expected", [(1 + 0.5e-6, [-1, -1]), (1 - 0.5e-6, [0, 0])])
def test_cell_diagonal_just_beyond_and_just_within_eps(scale, expected):
    """(0,0,0) and (t,t,t) with 3 t^2 just above / below eps^2 = 1: a cell whose diagonal were
    not shorter than eps would hold both and make them core without a distance test."""
    t = scale / np.sqrt(3.0)
    _check_all_paths(np.array([[0.0, 0.0, 0.0], [t, t, t]]), 1.0, 2, expected)


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_two_blobs_apart_along_one_axis_only(axis):
    """Two 4-point blobs whose nearest points are 0.625 > eps = 0.5 apart along one axis, the
    other coordinates equal: every coordinate counts in the distance."""
    blob = np.array([[0.0, 0.0, 0.0], [0.0625, 0.0, 0.0], [0.0, 0.0625, 0.0], [0.0, 0.0, 0.0625]])
    shift = np.zeros(3)
    shift[axis] = 0.6875
    pts = np.concatenate([blob, blob + shift])
    _check_all_paths(pts, 0.5, 3, [0, 0, 0, 0, 1, 1, 1, 1])


# --------------------------------------------------------------------------- weights, min_samples
# Q P R S P R P: P (3 copies), Q 0.375 from P, S exactly 0.5 from Q (0.875 from P), R (2 copies) far.
P, Q, S, R = [0.0, 0.0, 0.0], [0.375, 0.0, 0.0], [0.875, 0.0, 0.0], [5.0, 5.0, 5.0]
WEIGHTED = np.array([Q, R, P, S, P, R, P])


@pytest.mark.parametrize("ms, expected", [
    (1, [0, 1, 0, 0, 0, 1, 0]),
    (2, [0, 1, 0, 0, 0, 1, 0]),        # all core: {Q, P, S} (Q lowest) and {R}
    (3, [0, -1, 0, 0, 0, -1, 0]),      # S: 2 (itself + Q): border; R: 2: noise
    (4, [0, -1, 0, 0, 0, -1, 0]),      # P: 3 copies + Q = 4: core
    (5, [0, -1, 0, 0, 0, -1, 0]),      # P: 4, border of Q (1 + 3 P + S = 5, core)
    (6, [-1] * 7),
])
def test_copies_count_towards_min_samples(ms, expected):
    _check_all_paths(WEIGHTED, 0.5, ms, expected)


# --------------------------------------------------------------------------- border points
A = np.array([[0.0, 0.0, 0.0], [0.0625, 0.0, 0.0], [0.125, 0.0, 0.0], [0.0625, 0.0625, 0.0]])
B = np.c_[1.0 - A[:, 0], A[:, 1:]]
X = np.array([[0.5, 0.0, 0.0]])  # exactly eps = 0.375 from (0.125, 0, 0) and from (0.875, 0, 0)


@pytest.mark.parametrize("order", ["ABX", "BAX", "XAB", "XBA"])
def test_border_point_reached_from_two_clusters_joins_the_first_numbered(order):
    parts = {"A": A, "B": B, "X": X}
    pts = np.concatenate([parts[k] for k in order])
    first, second = [k for k in order if k != "X"]
    label = {first: 0, second: 1, "X": 0}  # X: 3 neighbours < 4, border of both; cluster 0 wins
    expected = np.concatenate([[label[k]] * len(parts[k]) for k in order])
    _check_all_paths(pts, 0.375, 4, expected)


def test_border_point_with_a_copy_becomes_core_and_joins_both():
    pts = np.concatenate([A, X, B, X])  # X: 2 copies + 2 neighbours = 4
    _check_all_paths(pts, 0.375, 4, [0] * 10)


# --------------------------------------------------------------------------- trivial clouds
def test_empty_input():
    for out in (dbscan_fast(np.zeros((0, 3))), dbscan_fast(np.zeros((0, 3)), native=False),
                dbscan_fast(np.zeros((0, 2)), 0.5, 1), dbscan_sklearn(np.zeros((0, 3))),
                dbscan_sklearn(np.zeros((0, 3)), 0.5, 1)):
        assert out.shape == (0,) and out.dtype == np.int64


@pytest.mark.parametrize("ms, expected", [(1, [0]), (2, [-1])])
def test_single_point(ms, expected):
    _check_all_paths(np.array([[-2.5, 3.0, 0.25]]), 0.3, ms, expected)
    np.testing.assert_array_equal(dbscan_fast([[-2.5, 3.0, 0.25]], 0.3, ms), expected)  # a list works too


def test_all_noise_and_one_cluster_per_point():
    pts = np.array([[i, j, k] for i in (-1.0, 0.0, 1.0) for j in (0.0, 1.0) for k in (-2.0, 0.0)])
    pts = pts[np.random.default_rng(0).permutation(len(pts))]
    _check_all_paths(pts, 0.5, 2, [-1] * len(pts))  # no pair within eps at all
    _check_all_paths(pts, 0.5, 1, np.arange(len(pts)))  # every point its own cluster, in index order


def test_clusters_are_numbered_by_their_lowest_index_point():
    blob = np.array([[0.0, 0.0, 0.0], [0.125, 0.0, 0.0], [0.0, 0.125, 0.0]])
    c1, c2, c3 = blob + [4.0, 0.0, 0.0], blob + [-4.0, 2.0, 0.0], blob + [0.0, -3.0, 1.0]
    pts = np.array([c3[0], c1[0], c2[0], c1[1], c3[1], c2[1], c2[2], c1[2], c3[2]])
    _check_all_paths(pts, 0.25, 3, [0, 1, 2, 1, 0, 2, 2, 1, 0])


# --------------------------------------------------------------------------- grid internals
def _cells(pts_in_side_units, eps=1.0):
    """Points given in units of the grid's cell side (the lowest one defines the grid origin)."""
    return np.asarray(pts_in_side_units, dtype=np.float64) * (eps / np.sqrt(3.0))


# Two cells side by side along x, two core points each; the points of the two cells extreme
# towards each other (the witnesses) are more than eps apart, but another pair is within eps.
LINKED = _cells([[0.1, 0, 0], [0.05, 0.99, 0.99], [1.5, 0.99, 0.99], [1.6, 0, 0]])
# Same cells, but every pair across them more than eps apart (their boxes are within eps).
UNLINKED = _cells([[0.1, 0, 0], [0.1, 0.99, 0.99], [1.6, 0, 0.99], [1.6, 0.99, 0]])


def _big(linked: bool, rng, n_a=66, n_b=70):
    """The same with more than EXACT_BLOCK core pairs between the two cells: 66 x 70 points
    when linked, n_a x n_b (even numbers) when not."""
    lo, hi = (0.0, 0.04), (0.95, 0.99)
    if linked:
        a = np.c_[rng.uniform(0.05, 0.09, 65), rng.uniform(*hi, 65), rng.uniform(*hi, 65)]
        b = np.c_[rng.uniform(1.55, 1.6, 69), rng.uniform(*lo, 69), rng.uniform(*lo, 69)]
        return _cells(np.concatenate([[[0.1, 0, 0]], a, [[1.5, 0.99, 0.99]], b]))
    ha, hb = n_a // 2, n_b // 2
    a = np.concatenate([np.c_[rng.uniform(0.08, 0.1, ha), rng.uniform(*lo, ha), rng.uniform(*lo, ha)],
                        np.c_[rng.uniform(0.08, 0.1, ha), rng.uniform(*hi, ha), rng.uniform(*hi, ha)]])
    b = np.concatenate([np.c_[rng.uniform(1.6, 1.62, hb), rng.uniform(*lo, hb), rng.uniform(*hi, hb)],
                        np.c_[rng.uniform(1.6, 1.62, hb), rng.uniform(*hi, hb), rng.uniform(*lo, hb)]])
    return _cells(np.concatenate([a, b]))


@pytest.mark.parametrize("case", ["linked", "unlinked", "big-linked", "big-unlinked", "big-unlinked-a-larger"])
def test_cell_pairs_whose_witnesses_are_too_far_are_tested_exactly(case, monkeypatch):
    """Big cells: the nearest-neighbour search runs from the smaller cell, whichever it is."""
    rng = np.random.default_rng(1)
    pts = {"linked": LINKED, "unlinked": UNLINKED, "big-linked": _big(True, rng), "big-unlinked": _big(False, rng),
           "big-unlinked-a-larger": _big(False, rng, 70, 66)}[case]
    linked = case in ("linked", "big-linked")
    n_a = {"linked": 2, "unlinked": 2, "big-unlinked-a-larger": 70}.get(case, 66)
    expected = [0] * len(pts) if linked else [0] * n_a + [1] * (len(pts) - n_a)
    spy = _Spy(monkeypatch, cl, "_exact_cell_pairs")
    _check_all_paths(pts, 1.0, 2, expected)
    assert len(spy.calls) == 2, "the exact cell-pair test was not reached"  # numpy and grid paths
    assert all(out.tolist() == [linked] for _, _, out in spy.calls)


@pytest.mark.parametrize("n_more", [0, 64])
def test_cells_linked_only_by_a_pair_exactly_eps_apart(n_more, monkeypatch):
    """Two cells of 2 (or 66) core points each (eps = 1); the only pair across them within eps is
    (0, 0, 0) - (1, 0, 0), exactly eps apart; the witnesses (0.03, 0.5, 0.5) and (1, 0, 0) are not."""
    rng = np.random.default_rng(3)
    a = np.concatenate([[[0.0, 0.0, 0.0], [0.03, 0.5, 0.5]],
                        np.c_[rng.uniform(0.0, 0.025, n_more), rng.uniform(0.3, 0.55, (n_more, 2))]])
    b = np.concatenate([[[1.0, 0.0, 0.0], [1.05, 0.05, 0.05]],
                        np.c_[rng.uniform(1.02, 1.1, n_more), rng.uniform(0.0, 0.1, (n_more, 2))]])
    pts = np.concatenate([a, b])
    d2 = ((a[:, None, :] - b[None, :, :]) ** 2).sum(-1)
    assert (d2 <= 1.0).sum() == 1 and d2[0, 0] == 1.0
    spy = _Spy(monkeypatch, cl, "_exact_cell_pairs")
    _check_all_paths(pts, 1.0, 2, [0] * len(pts))
    assert len(spy.calls) == 2 and all(out.tolist() == [True] for _, _, out in spy.calls)
    _check_all_paths(pts, float(np.nextafter(1.0, 0.0)), 2, [0] * len(a) + [1] * len(b))


def test_many_cell_pairs_of_different_sizes_tested_exactly_at_once(monkeypatch):
    """Several witness-failing cell pairs (2x2, 3x2, 2x4 points, linked or not, and a big
    pair) in one cloud, 20 cells apart: one batched exact test must keep them apart."""
    side = 1.0 / np.sqrt(3.0) * GRID_SHRINK
    extra_a = _cells([[0.06, 0.97, 0.9]])  # near the other a point: linked as that one is
    extra_u = _cells([[0.09, 0.02, 0.03]])  # near the (0, 0) corner: unlinked as that one is
    extra_b = _cells([[1.58, 0.02, 0.03], [1.57, 0.03, 0.01]])
    parts = [LINKED, UNLINKED, np.concatenate([LINKED[:2], extra_a, LINKED[2:]]),
             np.concatenate([UNLINKED[:2], extra_u, UNLINKED[2:]]),
             np.concatenate([LINKED, extra_b]), _big(True, np.random.default_rng(2))]
    pts = np.concatenate([p + [20 * side * k, 0.0, 0.0] for k, p in enumerate(parts)])
    spy = _Spy(monkeypatch, cl, "_exact_cell_pairs")
    ref = _check_all_paths(pts, 1.0, 2)
    assert ref.max() + 1 == 8  # 4 linked pairs of cells, 2 unlinked ones
    assert len(spy.calls) == 2  # numpy and grid paths, each one batched call
    for _, _, out in spy.calls:
        assert sorted(out.tolist()) == [False, False, True, True, True, True]


# --------------------------------------------------------------------------- random small clouds
def _random_cloud(kind, rng):
    if kind == "lattice":  # integer coordinates: ties at eps = 1, 2 everywhere, duplicates
        return rng.integers(-4, 4, (180, 3)).astype(np.float64)
    if kind == "blobs":
        centres = rng.uniform(-3, 3, (4, 3))
        pts = np.concatenate([c + rng.normal(0, 0.3, (40, 3)) for c in centres] + [rng.uniform(-4, 4, (40, 3))])
        return np.round(pts * 8) / 8  # multiples of 0.125: exact ties and duplicates
    if kind == "negative":  # sparse, far from the origin, all coordinates negative
        return np.round(rng.uniform(-3, 0, (150, 3)) * 4) / 4 - [1000.0, 250.0, 10.0]
    raise ValueError(kind)


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("kind", ["lattice", "blobs", "negative"])
def test_random_small_clouds_every_path_equals_sklearn(kind, seed):
    pts = _random_cloud(kind, np.random.default_rng(seed))
    for eps, ms in ((1.0, 2), (1.0, 5), (0.5, 3), (0.75, 8), (2.0, 30), (0.25, 1)):
        _check_all_paths(pts, eps, ms)


def test_integer_typed_points_on_the_numpy_paths():
    pts = np.random.default_rng(3).integers(0, 6, (150, 3)).astype(np.uint16)
    for eps, ms in ((1.0, 4), (1.5, 10)):
        ref = dbscan_sklearn(pts, eps, ms)
        np.testing.assert_array_equal(dbscan_fast(pts, eps, ms, native=False), ref)
        np.testing.assert_array_equal(dbscan_fast(pts[:, :2], eps, ms), dbscan_sklearn(pts[:, :2], eps, ms))


# --------------------------------------------------------------------------- path selection
def test_default_uses_the_kernel_and_returns_its_labels(monkeypatch):
    pts = CHAIN_X.copy()
    seen = []

    def fake_kernel(p, eps, ms, *args, **kwargs):
        seen.append((p.shape, eps, ms))
        return np.arange(len(p), dtype=np.int64) + 100

    monkeypatch.setattr(native, "dbscan_native", fake_kernel)
    np.testing.assert_array_equal(dbscan_fast(pts, 0.5, 2), np.arange(7) + 100)
    np.testing.assert_array_equal(dbscan_fast(pts), np.arange(7) + 100)
    assert seen == [((7, 3), 0.5, 2), ((7, 3), 0.3, 20)]
    # Not for native=False, nor for points that are not 3-D.
    np.testing.assert_array_equal(dbscan_fast(pts, 0.5, 2, native=False), [0] * 7)
    np.testing.assert_array_equal(dbscan_fast(pts[:, :2], 0.5, 2), [0] * 7)
    np.testing.assert_array_equal(dbscan_fast(np.c_[pts, np.full(7, 2.0)], 0.5, 2), [0] * 7)
    assert len(seen) == 2


def test_kernel_giving_up_falls_back_to_the_numpy_grid(monkeypatch):
    monkeypatch.setattr(native, "dbscan_native", lambda *a, **k: None)
    grid, pairs = _Spy(monkeypatch, cl, "_dbscan_grid"), _Spy(monkeypatch, cl, "dbscan_pairs")
    for ms, expected in ((4, [0, -1, 0, 0, 0, -1, 0]), (2, [0, 1, 0, 0, 0, 1, 0])):
        np.testing.assert_array_equal(dbscan_fast(WEIGHTED, 0.5, ms), expected)
        np.testing.assert_array_equal(dbscan_sklearn(WEIGHTED, 0.5, ms), expected)
    assert len(grid.calls) == 2 and not pairs.calls


@pytest.mark.parametrize("dims", [2, 4])
def test_points_that_are_not_3d_use_the_pairs_path(dims, monkeypatch):
    rng = np.random.default_rng(dims)
    pts = np.round(rng.uniform(-2, 2, (120, dims)) * 4) / 4
    kernel, grid = _Spy(monkeypatch, native, "dbscan_native"), _Spy(monkeypatch, cl, "_dbscan_grid")
    pairs = _Spy(monkeypatch, cl, "dbscan_pairs")
    for eps, ms in ((0.5, 3), (0.25, 2), (1.0, 12)):
        np.testing.assert_array_equal(dbscan_fast(pts, eps, ms), dbscan_sklearn(pts, eps, ms))
        np.testing.assert_array_equal(_pairs_labels(pts, eps, ms), dbscan_sklearn(pts, eps, ms))
    assert not kernel.calls and not grid.calls and len(pairs.calls) == 3
    line = np.c_[np.arange(6) * 0.5, np.zeros(6)] - [7.0, 1.0]  # exactly eps apart, in 2-D
    np.testing.assert_array_equal(dbscan_fast(line, 0.5, 3), [0] * 6)


def test_coordinates_beyond_the_grid_range_use_the_pairs_path(monkeypatch):
    """|coordinate| / cell side > 1e7: the grid could misplace points; 2^23 + integers stay exact."""
    pts = np.random.default_rng(5).integers(0, 6, (150, 3)).astype(np.float64) + 2.0 ** 23
    grid, pairs = _Spy(monkeypatch, cl, "_dbscan_grid"), _Spy(monkeypatch, cl, "dbscan_pairs")
    for eps, ms in ((1.0, 4), (1.0, 8), (1.25, 6)):  # cell side <= 1.25 / sqrt(3): > 1e7 cells
        np.testing.assert_array_equal(dbscan_fast(pts, eps, ms, native=False), dbscan_sklearn(pts, eps, ms))
    assert not grid.calls and len(pairs.calls) == 3


@pytest.mark.parametrize("eps", [0.0, -0.5, float("nan")])
@pytest.mark.parametrize("use_kernel", [True, False])
def test_eps_must_be_positive(eps, use_kernel):
    with pytest.raises(ValueError, match="eps must be > 0"):
        dbscan_fast(CHAIN_X, eps, 2, native=use_kernel)


def _twenty_point_blob(offset):
    """20 points within 0.17 of each other (a 0.05 lattice)."""
    g = np.array([[i, j, k] for i in range(3) for j in range(3) for k in range(3)], dtype=np.float64)[:20] * 0.05
    return g + offset


def test_defaults_are_eps_0_3_and_min_samples_20():
    # Two blobs of exactly 20 points, 1.0 apart: clusters at (0.3, 20); noise at 21; merged at eps >= 1.
    pts = np.concatenate([_twenty_point_blob([0.0, 0.0, 0.0]), _twenty_point_blob([1.0, 0.0, 0.0])])
    expected = [0] * 20 + [1] * 20
    np.testing.assert_array_equal(dbscan_sklearn(pts, 0.3, 20), expected)
    np.testing.assert_array_equal(dbscan_sklearn(pts), expected)
    np.testing.assert_array_equal(dbscan_fast(pts), expected)
    np.testing.assert_array_equal(dbscan_fast(pts, native=False), expected)
    assert (dbscan_sklearn(pts, 0.3, 21) == -1).all()


# --------------------------------------------------------------------------- stencil, grid keys
def test_stencil_directions_are_the_sign_patterns_of_the_offsets():
    offsets = cl._STENCIL
    assert len(offsets) == 62 and len({tuple(o) for o in offsets} | {tuple(-o) for o in offsets}) == 124
    idx, pos = cl._dir_index(offsets)
    assert idx.dtype == np.int64 and pos.dtype == bool
    signed = np.where(pos[:, None], cl._DIRS[idx], -cl._DIRS[idx])
    np.testing.assert_array_equal(signed, np.sign(offsets))
    np.testing.assert_array_equal(idx, cl._STENCIL_DIR)
    np.testing.assert_array_equal(pos, cl._STENCIL_POS)
    # Mirrored offsets: the same directions, the other way round.
    idx2, pos2 = cl._dir_index(-offsets)
    np.testing.assert_array_equal(idx2, idx)
    np.testing.assert_array_equal(pos2, ~pos)
    assert pos.all()  # the stencil is the half of {-2..2}^3 whose sign patterns are the directions


def test_grid_keys_index_cells_with_a_two_cell_margin():
    rng = np.random.default_rng(0)
    pts = rng.uniform(-3, 5, (200, 3))
    side = 0.4
    keys, strides = cl._grid_keys(pts, side)
    assert keys.dtype == np.int64 and strides.dtype == np.int64 and strides[2] == 1
    cell = np.floor((pts - pts.min(0)) / side).astype(np.int64)
    # Same key <=> same cell.
    _, by_key = np.unique(keys, return_inverse=True)
    _, by_cell = np.unique(cell, axis=0, return_inverse=True)
    assert same_partition(by_key.ravel(), by_cell.ravel())
    # Keys decode to (cell + 2) with room for two more cells above: stencil offsets never wrap.
    g = np.c_[keys // strides[0], keys % strides[0] // strides[1], keys % strides[1]]
    np.testing.assert_array_equal(g, cell + 2)
    dims = np.array([g[:, 0].max() + 3, strides[0] // strides[1], strides[1]])
    assert (g + 2 < dims).all()


@pytest.mark.parametrize("pts, side, indexable", [
    ([[0.0, 0.0, 0.0], [5e6, 0.0, 0.0]], 0.5, True),        # |coordinate| / side = 1e7 exactly
    ([[0.0, 0.0, 0.0], [5.5e6, 0.0, 0.0]], 0.5, False),
    ([[-5.5e6, 0.0, 0.0], [0.0, 0.0, 0.0]], 0.5, False),
    ([[0.0, 0.0, 0.0], [0.0, 0.0, 6e6]], 0.5, False),
    ([[0.0, 0.0, 0.0], [1.6e6, 1.6e6, 1.6e6]], 1.0, True),   # 1.6e6^3 cells < 2^62
    ([[0.0, 0.0, 0.0], [1.7e6, 1.7e6, 1.7e6]], 1.0, False),  # 1.7e6^3 cells > 2^62
])
def test_grid_keys_refuse_clouds_they_cannot_index_exactly(pts, side, indexable):
    out = cl._grid_keys(np.array(pts), side)
    assert (out is not None) == indexable


# --------------------------------------------------------------------------- collapse_duplicates
def test_collapse_duplicates_compares_every_coordinate():
    pts = np.array([[0.0, 1.0, 0.0], [0.0, 2.0, 0.0], [0.0, 1.0, 0.0], [0.0, 2.0, 1.0], [0.0, 1.0, 0.0]])
    uniq, first, inverse, counts = collapse_duplicates(pts)
    assert len(uniq) == 3 and len(np.unique(uniq, axis=0)) == 3
    np.testing.assert_array_equal(uniq[inverse], pts)
    assert sorted(zip(first.tolist(), counts.tolist())) == [(0, 3), (1, 1), (3, 1)]
    assert counts.dtype.kind == "i" and inverse.dtype.kind == "i" and first.dtype.kind == "i"


def test_collapse_duplicates_without_duplicates_returns_the_same_kinds():
    pts = np.array([[0.0, 1.0, 0.0], [0.0, 2.0, 0.0], [3.0, 1.0, 0.0]])
    uniq, first, inverse, counts = collapse_duplicates(pts)
    np.testing.assert_array_equal(uniq[inverse], pts)
    np.testing.assert_array_equal(first[inverse], [0, 1, 2])
    np.testing.assert_array_equal(counts, [1, 1, 1])
    assert counts.dtype == np.int64 and inverse.dtype.kind == "i" and first.dtype.kind == "i"


# --------------------------------------------------------------------------- same_partition
def test_same_partition_edge_cases():
    assert same_partition(np.array([-1, -1]), np.array([-1, -1]))  # all noise
    assert same_partition(np.array([0, 1, -1]), np.array([1, 0, -1]))  # cluster 0 renamed
    assert not same_partition(np.array([5, -1]), np.array([3, 0]))  # noise must match
    assert not same_partition(np.array([0, 0]), np.array([0, 0, 0]))
    assert not same_partition(np.array([0, 1]), np.array([0, 0]))


# --------------------------------------------------------------------------- cluster_by_class
def test_cluster_by_class_defaults_and_numbering_across_classes():
    """Default eps 0.3, min_samples 20, method 'fast', classes (1, 2, 3); ids numbered class by
    class, each class's clusters in its own order; class 0 and noise -1."""
    b = _twenty_point_blob
    parts = [  # (points, class, expected id)
        (b([0.0, 0.0, 0.0]), 2, 1), (b([1.0, 0.0, 0.0]), 2, 2),  # two class-2 clusters, 1.0 apart
        (b([0.0, 5.0, 0.0]), 1, 0),
        (b([0.0, -5.0, 0.0]), 3, 3),
        (b([5.0, 5.0, 0.0]), 0, -1),  # unknown class: never clustered
        (b([9.0, 9.0, 0.0])[:19], 3, -1),  # 19 points: noise
    ]
    pts = np.concatenate([p for p, _, _ in parts])
    labels = np.concatenate([[c] * len(p) for p, c, _ in parts])
    expected = np.concatenate([[e] * len(p) for p, _, e in parts])
    np.testing.assert_array_equal(cluster_by_class(pts, labels), expected)
    np.testing.assert_array_equal(cluster_by_class(pts, labels, method="sklearn"), expected)
    got = cluster_by_class(pts, labels, 0.3, 20, "fast", (1, 2, 3))
    assert got.dtype == np.int64
    np.testing.assert_array_equal(got, expected)


def test_cluster_by_class_passes_eps_and_min_samples_and_uses_xyz_only():
    chain = np.c_[np.arange(6) * 0.4, np.zeros(6), np.zeros(6)]  # needs eps >= 0.4
    far = chain + [0.0, 3.0, 0.0]
    intensity = np.tile([0.0, 100.0], 6)[:, None]  # a 4th column must not be clustered on
    pts = np.c_[np.concatenate([chain, far]), intensity]
    labels = np.array([1] * 6 + [2] * 6)
    np.testing.assert_array_equal(cluster_by_class(pts, labels, 0.5, 3), [0] * 6 + [1] * 6)
    np.testing.assert_array_equal(cluster_by_class(pts, labels, 0.5, 3, "sklearn"), [0] * 6 + [1] * 6)
    assert (cluster_by_class(pts, labels, 0.3, 3) == -1).all()


def test_cluster_by_class_skips_small_classes_and_keeps_going():
    blob = np.array([[0.0, 0.0, 0.0], [0.125, 0.0, 0.0], [0.0, 0.125, 0.0], [0.0, 0.0, 0.125], [0.125, 0.125, 0.0]])
    pts = np.concatenate([blob[:2], blob + 3.0, blob + 6.0, blob[:4] - 3.0])
    labels = np.array([1] * 2 + [2] * 5 + [3] * 5 + [1] * 4)
    # min_samples 5: class 1 has 6 points but no core ... and then class 2, 3 still clustered.
    np.testing.assert_array_equal(cluster_by_class(pts, labels, 0.3, 5), [-1] * 2 + [0] * 5 + [1] * 5 + [-1] * 4)
    # Class 1 with fewer points than min_samples first: skipped, the others still clustered.
    labels2 = np.array([1] * 2 + [2] * 5 + [3] * 5 + [0] * 4)
    np.testing.assert_array_equal(cluster_by_class(pts, labels2, 0.3, 5), [-1] * 2 + [0] * 5 + [1] * 5 + [-1] * 4)
    # Exactly min_samples points of a class, all within eps: a cluster.
    np.testing.assert_array_equal(cluster_by_class(pts[2:7], np.full(5, 3), 0.3, 5), [0] * 5)
    # The classes argument picks (and orders) the classes.
    np.testing.assert_array_equal(cluster_by_class(pts, labels2, 0.3, 5, classes=(3, 2)),
                                  [-1] * 2 + [1] * 5 + [0] * 5 + [-1] * 4)
    np.testing.assert_array_equal(cluster_by_class(pts, labels2, 0.3, 5, classes=(2,)),
                                  [-1] * 2 + [0] * 5 + [-1] * 5 + [-1] * 4)
    with pytest.raises(ValueError, match="clustering must be one of"):
        cluster_by_class(pts, labels, method="FAST")


def test_cell_pair_with_exactly_exact_block_core_pairs_is_still_tested(monkeypatch):
    """64 x 64 = EXACT_BLOCK core pairs between two witness-failing cells: the boundary case must
    go to one of the two exact tests (all pairs or nearest neighbour), not to neither."""
    assert cl.EXACT_BLOCK == 64 * 64
    rng = np.random.default_rng(4)
    lo, hi = (0.0, 0.04), (0.95, 0.99)
    a = np.c_[rng.uniform(0.05, 0.09, 63), rng.uniform(*hi, 63), rng.uniform(*hi, 63)]
    b = np.c_[rng.uniform(1.55, 1.6, 63), rng.uniform(*lo, 63), rng.uniform(*lo, 63)]
    pts = _cells(np.concatenate([[[0.1, 0, 0]], a, [[1.5, 0.99, 0.99]], b]))
    spy = _Spy(monkeypatch, cl, "_exact_cell_pairs")
    _check_all_paths(pts, 1.0, 2, [0] * len(pts))
    assert len(spy.calls) == 2 and all(out.tolist() == [True] for _, _, out in spy.calls)


def test_float32_points_are_clustered_by_their_exact_values():
    """A float32 pair whose exact distance is 1e-9 (relative) above eps is not a neighbour pair,
    on the reference path as on the others (float32 arithmetic would round it to within eps)."""
    pts = np.array([[-4.063199043273926, 1.1609781980514526, -1.9825419187545776],
                    [0.666426956653595, -2.4547111988067627, -4.9821858406066895]], dtype=np.float32)
    d = float(np.sqrt(((pts[0].astype(np.float64) - pts[1]) ** 2).sum()))
    eps = d * (1 - 1e-9)
    np.testing.assert_array_equal(dbscan_sklearn(pts, eps, 2), [-1, -1])
    np.testing.assert_array_equal(dbscan_fast(pts, eps, 2, native=False), [-1, -1])
    np.testing.assert_array_equal(dbscan_sklearn(pts, d * (1 + 1e-9), 2), [0, 0])
