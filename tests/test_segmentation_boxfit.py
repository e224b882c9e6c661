"""LATTE rectangle fitting (segmentation/boxfit.py; thesis ch. 5 after Zhang et al. 2017).

Every expectation comes from the definition, not from what the code prints today:
- candidate headings theta = 0, step, 2 step, ... < 90 degrees (a rectangle repeats every 90);
- per heading the top-view points are projected on e1 = (cos, sin) and e2 = (-sin, cos); a
  point's distance to its nearer e1-edge (d1) and e2-edge (d2); it counts for the e1 edge
  when d1 <= d2, else for the e2 edge; the cost is the (population) variance of the counted
  distances of each edge, summed; the first heading of least cost wins;
- the heading search sees the evenly strided subset xy[::ceil(N / max_search_points)] when
  N > max_search_points; the extents, the centre and z always use every point;
- length >= width; yaw is the heading of the long side, in (-pi/2, pi/2] (a box is the same
  turned by pi); when both extents are equal, the searched heading itself is the yaw;
- z is the middle of the z range of the points, height the z range.
`_reference_heading` below is a plain per-heading loop written from that definition.
"""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from squeeze_perception.segmentation.boxfit import Box, _wrap_half_pi, rectangle_fit


def _rot(yaw: float) -> np.ndarray:
    return np.array([[np.cos(yaw), -np.sin(yaw)], [np.sin(yaw), np.cos(yaw)]])


def _l_shape(yaw_deg, length, width, centre, n_long=60, n_short=25, noise=0.0, rng=None, far_sides=False):
    """Top-view points on two perpendicular sides of a known rectangle (what a LiDAR sees of a
    car): the full long side y' = -width/2 and the full short side x' = -length/2 (or the two
    opposite sides), rotated by yaw and moved to centre."""
    sy, sx = (1, 1) if far_sides else (-1, -1)
    side = np.c_[np.linspace(-length / 2, length / 2, n_long), np.full(n_long, sy * width / 2)]
    back = np.c_[np.full(n_short, sx * length / 2), np.linspace(-width / 2, width / 2, n_short)]
    local = np.concatenate([side, back])
    if noise:
        local = local + rng.normal(0.0, noise, local.shape)
    return local @ _rot(np.deg2rad(yaw_deg)).T + np.asarray(centre, dtype=float)


def _with_z(xy, z=None):
    z = np.linspace(-1.7, -0.2, len(xy)) if z is None else z
    return np.c_[xy, z]


def _wrapped(yaw: float) -> float:
    """(-pi/2, pi/2] representative of a heading, written independently of the module."""
    while yaw > np.pi / 2:
        yaw -= np.pi
    while yaw <= -np.pi / 2:
        yaw += np.pi
    return yaw


def _reference_costs(xy: np.ndarray, step_deg: float = 1.0):
    thetas = np.deg2rad(np.arange(0.0, 90.0, step_deg))
    costs = []
    for t in thetas:
        c1 = xy @ np.array([np.cos(t), np.sin(t)])
        c2 = xy @ np.array([-np.sin(t), np.cos(t)])
        d1 = np.minimum(c1 - c1.min(), c1.max() - c1)
        d2 = np.minimum(c2 - c2.min(), c2.max() - c2)
        on1 = d1 <= d2
        cost = 0.0
        for d in (d1[on1], d2[~on1]):
            if len(d):
                cost += float(np.var(d))
        costs.append(cost)
    return thetas, np.array(costs)


def _reference_heading(xy: np.ndarray, step_deg: float = 1.0, min_rel_gap: float = 1e-3) -> float:
    """Heading of least variance cost; asserts the runner-up is clearly worse, so floating
    point rounding cannot decide the answer."""
    thetas, costs = _reference_costs(xy, step_deg)
    best = int(np.argmin(costs))
    runner_up = np.partition(costs, 1)[1]
    assert runner_up - costs[best] > max(min_rel_gap * costs[best], 1e-12), "ambiguous test cloud"
    return float(thetas[best])


def _assert_not_best(xy: np.ndarray, theta: float):
    """Heading theta is clearly not the least-cost heading of xy."""
    thetas, costs = _reference_costs(xy)
    k = int(np.argmin(np.abs(thetas - theta)))
    assert costs[k] > costs.min() * (1 + 1e-3) + 1e-12


def _expected_box(points: np.ndarray, theta: float) -> dict:
    """The box a heading theta gives: extents and centre from all points, long side = yaw."""
    xy = points[:, :2]
    a1 = xy @ np.array([np.cos(theta), np.sin(theta)])
    a2 = xy @ np.array([-np.sin(theta), np.cos(theta)])
    e1, e2 = np.ptp(a1), np.ptp(a2)
    m = np.array([(a1.max() + a1.min()) / 2, (a2.max() + a2.min()) / 2])
    cx, cy = _rot(theta) @ m
    length, width, yaw = (e1, e2, theta) if e1 >= e2 else (e2, e1, theta + np.pi / 2)
    z = points[:, 2]
    return dict(x=cx, y=cy, z=(z.min() + z.max()) / 2, length=length, width=width,
                height=np.ptp(z), yaw=_wrapped(yaw))


def _assert_box(box: Box, tol=1e-9, **expected):
    for k, v in expected.items():
        assert getattr(box, k) == pytest.approx(v, abs=tol), (k, getattr(box, k), v)


# --------------------------------------------------------------------------- Box itself
def test_box_is_a_dataclass_of_seven_python_floats_in_order():
    pts = _with_z(_l_shape(25.0, 4.0, 1.6, [3.0, -2.0]))
    box = rectangle_fit(pts)
    names = [f.name for f in dataclasses.fields(Box)]
    assert names == ["x", "y", "z", "length", "width", "height", "yaw"]
    assert all(type(getattr(box, n)) is float for n in names), [type(getattr(box, n)) for n in names]


def test_corners_are_the_rotated_rectangle_in_order_front_left_front_right_rear_right_rear_left():
    box = Box(x=2.0, y=-3.0, z=0.5, length=4.0, width=2.0, height=1.5, yaw=np.pi / 6)
    c, s = np.cos(np.pi / 6), np.sin(np.pi / 6)
    expected = [[2.0 + u * c - v * s, -3.0 + u * s + v * c] for u, v in ((2, 1), (2, -1), (-2, -1), (-2, 1))]
    got = box.corners_xy()
    assert got.shape == (4, 2)
    np.testing.assert_allclose(got, expected, atol=1e-12)
    # Axis-aligned and quarter-turned boxes, checked by hand.
    np.testing.assert_allclose(Box(1.0, 1.0, 0, 4.0, 2.0, 1.0, 0.0).corners_xy(),
                               [[3, 2], [3, 0], [-1, 0], [-1, 2]], atol=1e-12)
    np.testing.assert_allclose(Box(0.0, 0.0, 0, 4.0, 2.0, 1.0, np.pi / 2).corners_xy(),
                               [[-1, 2], [1, 2], [1, -2], [-1, -2]], atol=1e-12)


def test_corners_of_a_fitted_box_enclose_the_points_tightly():
    pts = _with_z(_l_shape(37.0, 4.4, 1.9, [-12.5, 6.25]))
    box = rectangle_fit(pts)
    corners = box.corners_xy()
    # Every point inside the rectangle (local coordinates within the half extents) ...
    local = (pts[:, :2] - [box.x, box.y]) @ _rot(box.yaw)
    assert (np.abs(local[:, 0]) <= box.length / 2 + 1e-9).all()
    assert (np.abs(local[:, 1]) <= box.width / 2 + 1e-9).all()
    # ... and the L's corner point is a corner of the box.
    corner_of_l = _l_shape(37.0, 4.4, 1.9, [-12.5, 6.25], n_long=2, n_short=2)[0]
    assert np.min(np.linalg.norm(corners - corner_of_l, axis=1)) < 1e-9


# --------------------------------------------------------------------------- yaw range
@pytest.mark.parametrize("angle, expected", [
    (0.0, 0.0), (0.3, 0.3), (-0.3, -0.3), (np.pi / 2, np.pi / 2), (-np.pi / 2, np.pi / 2),
    (np.pi, 0.0), (-np.pi, 0.0), (3 * np.pi / 4, -np.pi / 4), (-3 * np.pi / 4, np.pi / 4),
    (np.pi / 2 + 1e-3, -np.pi / 2 + 1e-3), (np.deg2rad(179.0), np.deg2rad(-1.0)), (2 * np.pi + 0.5, 0.5),
])
def test_wrap_half_pi_maps_into_the_half_open_range(angle, expected):
    got = _wrap_half_pi(angle)
    assert got == pytest.approx(expected, abs=1e-12)
    assert -np.pi / 2 < got <= np.pi / 2


def test_wrap_half_pi_boundary_is_plus_half_pi_exactly():
    assert _wrap_half_pi(-np.pi / 2) == np.pi / 2
    assert _wrap_half_pi(np.pi / 2) == np.pi / 2
    assert _wrap_half_pi(3 * np.pi / 2) == np.pi / 2


# --------------------------------------------------------------------------- exact fits
@pytest.mark.parametrize("far_sides", [False, True])
@pytest.mark.parametrize("yaw_deg", [0.0, 1.0, 17.0, 45.0, 60.0, 89.0, 90.0, -1.0, -30.0, -45.0, -89.0])
def test_l_shape_at_a_searched_heading_is_fitted_exactly(yaw_deg, far_sides):
    """Noise-free sides of a 4.6 x 1.7 rectangle: at the true heading every point lies on an
    edge (cost 0), so the box is the rectangle (to rounding)."""
    centre = [-7.25, 12.5]
    xy = _l_shape(yaw_deg, 4.6, 1.7, centre, far_sides=far_sides)
    z = np.linspace(-1.9, 0.3, len(xy))
    box = rectangle_fit(_with_z(xy, z))
    _assert_box(box, x=centre[0], y=centre[1], z=-0.8, length=4.6, width=1.7, height=2.2,
                yaw=_wrapped(np.deg2rad(yaw_deg)))
    assert box.length >= box.width
    assert -np.pi / 2 < box.yaw <= np.pi / 2


def test_long_side_along_y_gives_yaw_plus_half_pi_exactly():
    # Heading 0 is searched; the e2 extent is the long one: yaw = 0 + pi/2, the range's closed end.
    xy = _l_shape(90.0, 5.0, 2.0, [1.0, 2.0])
    box = rectangle_fit(_with_z(xy))
    assert box.yaw == np.pi / 2
    _assert_box(box, x=1.0, y=2.0, length=5.0, width=2.0)


def test_off_grid_heading_is_within_one_search_step_and_the_box_is_close():
    true = 33.4
    xy = _l_shape(true, 4.2, 1.8, [12.0, -3.0], n_long=120, n_short=50)
    box = rectangle_fit(_with_z(xy))
    deg = np.rad2deg(box.yaw)
    assert deg == pytest.approx(round(deg), abs=1e-9)  # a searched heading (1 degree grid)
    assert abs(deg - true) <= 1.0
    _assert_box(box, tol=0.1, x=12.0, y=-3.0, length=4.2, width=1.8)


def test_step_deg_sets_the_heading_grid():
    xy = _l_shape(30.5, 4.0, 1.6, [0.0, 0.0])
    fine = rectangle_fit(_with_z(xy), step_deg=0.5)  # 30.5 is on the 0.5 degree grid: exact
    _assert_box(fine, yaw=np.deg2rad(30.5), length=4.0, width=1.6, x=0.0, y=0.0)
    default = rectangle_fit(_with_z(xy))  # 1 degree grid: 30 or 31, not 30.5
    assert np.rad2deg(default.yaw) == pytest.approx(round(np.rad2deg(default.yaw)), abs=1e-9)
    assert abs(np.rad2deg(default.yaw) - 30.5) <= 1.0
    coarse = rectangle_fit(_with_z(_l_shape(35.0, 4.0, 1.6, [2.0, 1.0])), step_deg=5.0)
    _assert_box(coarse, yaw=np.deg2rad(35.0), length=4.0, width=1.6, x=2.0, y=1.0)
    c2 = rectangle_fit(_with_z(_l_shape(32.0, 4.0, 1.6, [2.0, 1.0])), step_deg=5.0)
    assert np.rad2deg(c2.yaw) / 5.0 == pytest.approx(round(np.rad2deg(c2.yaw) / 5.0), abs=1e-9)


# --------------------------------------------------------------------------- criterion
def _criterion_clouds():
    rng = np.random.default_rng(0)
    out = []
    for k, yaw in enumerate([7.0, 33.3, 58.6, 81.2, -21.7, -66.4]):
        xy = _l_shape(yaw, rng.uniform(3, 5), rng.uniform(1.4, 2.0), rng.uniform(-20, 20, 2), noise=0.04, rng=rng)
        out.append((f"noisy-L-{k}", xy))
    for k in range(8):  # a handful of points: edges with one member, corners, ties between edges
        xy = np.round(rng.uniform(-2, 2, (int(rng.integers(3, 8)), 2)), 3)
        out.append((f"few-{k}", xy))
    for k in range(3):  # a filled disc: no rectangle at all, the criterion still ranks headings
        r, a = rng.uniform(0, 1.5, 200), rng.uniform(0, 2 * np.pi, 200)
        out.append((f"disc-{k}", np.c_[r * np.cos(a), r * np.sin(a)] + [5, -3]))
    return [(name, xy) for name, xy in out if _unambiguous(xy)]


def _unambiguous(xy):
    _, costs = _reference_costs(xy)
    s = np.sort(costs)
    return s[1] - s[0] > max(1e-3 * s[0], 1e-12)


CLOUDS = _criterion_clouds()


def test_criterion_clouds_cover_the_cases():
    names = [n for n, _ in CLOUDS]
    assert sum(n.startswith("noisy-L") for n in names) == 6
    assert sum(n.startswith("few") for n in names) >= 4
    assert sum(n.startswith("disc") for n in names) == 3


@pytest.mark.parametrize("name, xy", CLOUDS, ids=[n for n, _ in CLOUDS])
def test_heading_and_box_follow_the_variance_criterion(name, xy):
    pts = _with_z(xy)
    theta = _reference_heading(xy)
    _assert_box(rectangle_fit(pts), tol=1e-7, **_expected_box(pts, theta))


@pytest.mark.parametrize("name, xy", CLOUDS[:6], ids=[n for n, _ in CLOUDS[:6]])
def test_noisy_l_shapes_are_fitted_within_a_degree(name, xy):
    box = rectangle_fit(_with_z(xy))
    yaws = [7.0, 33.3, 58.6, 81.2, -21.7, -66.4]
    true = np.deg2rad(yaws[int(name.rsplit("-", 1)[1])])
    assert abs(_wrapped(box.yaw - true)) <= np.deg2rad(1.5)


def test_only_the_four_corners_of_an_axis_aligned_rectangle():
    """Every point is a corner: every heading costs 0 (each edge's distances are all 0, one
    edge may get no point at all), so the first heading, 0, wins and the box is exact."""
    xy = np.array([[-1.0, -0.5], [3.0, -0.5], [3.0, 1.5], [-1.0, 1.5]])
    _, costs = _reference_costs(xy)
    assert np.allclose(costs, 0.0, atol=1e-24)
    box = rectangle_fit(_with_z(xy, np.array([0.0, 1.0, 2.0, 0.5])))
    _assert_box(box, x=1.0, y=0.5, z=1.0, length=4.0, width=2.0, height=2.0, yaw=0.0)


def test_three_points_a_lone_point_on_an_edge_has_zero_variance():
    """Three points, two of them opposite corners of the axis-aligned bounding box: at heading 0
    the corners count for the x-edges with distance 0 and (2, 0.5), nearer a y-edge (0.5 < 2),
    is that edge's only point, whose variance is 0. Cost exactly 0, the least possible, at the
    first heading: it wins, the box is the bounding box (other headings may tie, never win)."""
    xy = np.array([[0.0, 0.0], [4.0, 2.0], [2.0, 0.5]])
    _, costs = _reference_costs(xy)
    assert costs[0] == 0.0 and costs.min() == 0.0
    box = rectangle_fit(_with_z(xy, np.array([0.0, 0.0, 1.0])))
    _assert_box(box, tol=0.0, x=2.0, y=1.0, z=0.5, length=4.0, width=2.0, height=1.0, yaw=0.0)


def test_square_keeps_the_searched_heading_as_yaw():
    """Equal extents: no quarter turn, yaw is the heading found (0 for an axis-aligned square)."""
    t = np.linspace(-1.0, 1.0, 9)
    xy = np.concatenate([np.c_[t, np.full(9, -1.0)], np.c_[t, np.full(9, 1.0)],
                         np.c_[np.full(9, -1.0), t], np.c_[np.full(9, 1.0), t]]) + [4.0, 4.0]
    box = rectangle_fit(_with_z(xy))
    assert box.length == box.width == 2.0
    assert box.yaw == 0.0
    _assert_box(box, x=4.0, y=4.0)


# --------------------------------------------------------------------------- subsample
def _two_l_cloud(n: int, stride: int):
    """Rows 0, stride, 2 stride, ... hold an L at 20 degrees, the other rows an L at 55 degrees
    (shifted): the strided subset alone says 20, the whole cloud says something else."""
    idx = np.arange(n)
    sub = idx[::stride]
    rest = np.setdiff1d(idx, sub)
    xy = np.empty((n, 2))
    xy[sub] = _l_shape(20.0, 4.0, 1.8, [0.0, 0.0], n_long=len(sub) - len(sub) // 3, n_short=len(sub) // 3)
    xy[rest] = _l_shape(55.0, 4.0, 1.8, [0.3, 0.2], n_long=len(rest) - len(rest) // 3, n_short=len(rest) // 3)
    return xy, sub


@pytest.mark.parametrize("n, max_search_points, stride", [(513, 512, 2), (1024, 512, 2), (1100, 512, 3),
                                                          (250, 100, 3)])
def test_heading_search_uses_the_strided_subset_and_extents_use_all_points(n, max_search_points, stride):
    assert stride == int(np.ceil(n / max_search_points))
    xy, sub = _two_l_cloud(n, stride)
    theta = _reference_heading(xy[sub])
    assert theta == pytest.approx(np.deg2rad(20.0))
    _assert_not_best(xy, theta)  # the test can tell the subset from all points
    pts = _with_z(xy)
    kwargs = {} if max_search_points == 512 else {"max_search_points": max_search_points}
    box = rectangle_fit(pts, **kwargs)
    _assert_box(box, **_expected_box(pts, theta))
    # The extents are those of every point, wider than the subset's own rectangle.
    assert box.width > 1.8 + 0.1


def test_at_most_max_search_points_the_search_uses_every_point():
    xy, sub = _two_l_cloud(512, 2)
    theta = _reference_heading(xy)
    _assert_not_best(xy[sub], theta)
    pts = _with_z(xy)
    _assert_box(rectangle_fit(pts), **_expected_box(pts, theta))


# --------------------------------------------------------------------------- degenerate
def test_zero_points_raise():
    with pytest.raises(ValueError, match="^cannot fit a box to zero points$"):
        rectangle_fit(np.zeros((0, 3)))


def test_one_point_is_a_zero_size_box_at_that_point():
    box = rectangle_fit(np.array([[2.5, -1.5, 0.75]]))
    _assert_box(box, tol=0.0, x=2.5, y=-1.5, z=0.75, length=0.0, width=0.0, height=0.0, yaw=0.0)


def test_copies_of_one_point_are_a_zero_size_box_at_that_point():
    box = rectangle_fit(np.tile([[-4.0, 8.0, -1.0]], (7, 1)))
    _assert_box(box, x=-4.0, y=8.0, z=-1.0, length=0.0, width=0.0, height=0.0, yaw=0.0)


def test_two_points_along_x():
    box = rectangle_fit(np.array([[1.0, 2.0, -1.0], [4.0, 2.0, 0.0]]))
    _assert_box(box, x=2.5, y=2.0, z=-0.5, length=3.0, width=0.0, height=1.0, yaw=0.0)


@pytest.mark.parametrize("yaw_deg", [0.0, 30.0, 72.0, 90.0, -40.0])
def test_collinear_points_give_a_zero_width_box_along_the_line(yaw_deg):
    t = np.linspace(-2.0, 3.0, 41)
    yaw = np.deg2rad(yaw_deg)
    xy = np.c_[t * np.cos(yaw), t * np.sin(yaw)] + [-3.0, 5.0]
    box = rectangle_fit(_with_z(xy))
    mid = 0.5 * np.array([np.cos(yaw), np.sin(yaw)]) + [-3.0, 5.0]
    _assert_box(box, x=mid[0], y=mid[1], length=5.0, width=0.0, yaw=_wrapped(yaw))


def test_duplicated_points_change_nothing():
    xy = _l_shape(24.0, 4.0, 1.7, [6.0, 6.0], noise=0.03, rng=np.random.default_rng(4))
    pts = _with_z(xy)
    once = rectangle_fit(pts)
    thrice = rectangle_fit(np.concatenate([pts, pts, pts]))  # 255 points: no subsampling
    _assert_box(thrice, tol=1e-9, **dataclasses.asdict(once))


def test_z_comes_from_all_points_and_does_not_steer_the_heading():
    xy = _l_shape(12.0, 3.6, 1.5, [0.0, 0.0])
    z = np.full(len(xy), -0.5)
    z[7], z[40] = -2.25, 1.75
    box = rectangle_fit(_with_z(xy, z))
    _assert_box(box, z=-0.25, height=4.0, yaw=np.deg2rad(12.0), length=3.6, width=1.5)


def test_input_forms_list_float32_and_extra_columns():
    xy = _l_shape(40.0, 4.0, 2.0, [1.0, -1.0])
    pts = _with_z(xy)
    ref = rectangle_fit(pts)
    _assert_box(rectangle_fit(pts.tolist()), tol=0.0, **dataclasses.asdict(ref))
    with_intensity = np.c_[pts, np.linspace(0, 255, len(pts))]
    _assert_box(rectangle_fit(with_intensity), tol=0.0, **dataclasses.asdict(ref))
    _assert_box(rectangle_fit(pts.astype(np.float32)), tol=1e-5, **dataclasses.asdict(ref))


def test_ninety_degrees_is_not_searched_even_where_ties_make_it_cheaper_than_zero():
    """Exact ties (d1 == d2) go to the e1 edge, so the cost at 90 degrees (e1 = y) can differ from
    the cost at 0 degrees (e1 = x) for the same rectangle; here it would beat every searched
    heading. Only [0, 90) is searched: the 45 degree box wins."""
    xy = np.array([[1.0, 2.0], [2.0, 3.0], [1.0, 3.0], [0.0, 1.0]])
    theta = _reference_heading(xy)
    assert theta == pytest.approx(np.pi / 4)
    pts = _with_z(xy)
    _assert_box(rectangle_fit(pts), tol=1e-9, **_expected_box(pts, theta))


def test_boxes_for_instances_groups_points_as_a_mask_per_instance_would():
    """The table from one sort of the instance ids equals fitting each instance's mask in turn:
    same rows in id order, same points per box (cloud order), same label vote and confidence."""
    import numpy as np

    from squeeze_perception import interfaces as itf
    from squeeze_perception.segmentation.boxfit import rectangle_fit
    from squeeze_perception.segmentation.pipeline import boxes_for_instances

    rng = np.random.default_rng(3)
    n = 5000
    points = (rng.normal(size=(n, 4)) * 15).astype(np.float32)
    instances = np.full(n, -1)
    picked = rng.choice(n, 3000, replace=False)
    instances[picked] = rng.choice([0, 2, 3, 9, 40], len(picked))  # gaps in the ids
    labels = rng.integers(0, 4, n)
    confidence = rng.uniform(size=n).astype(np.float32)
    expected = np.zeros(5, dtype=itf.INSTANCE_DTYPE)
    for row, inst in enumerate((0, 2, 3, 9, 40)):
        sel = instances == inst
        box = rectangle_fit(points[sel, :3])
        expected[row] = (inst, np.bincount(labels[sel]).argmax(), box.x, box.y, box.z, box.length, box.width,
                         box.height, box.yaw, sel.sum(), confidence[sel].mean())
    got = boxes_for_instances(points, labels, instances, confidence)
    assert got.tobytes() == expected.tobytes()
    assert len(boxes_for_instances(points, labels, np.full(n, -1), confidence)) == 0
