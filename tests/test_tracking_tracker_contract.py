"""MultiObjectTracker and TrackerConfig contract, from the Kalman equations and docs/tracking.md.

Most tests use a constant-velocity car with zero process noise and feed measurements at the
same stamp (dt = 0: no prediction), so a track's position covariance stays at the initial
value and one update is the scalar Kalman step x' = x + P / (P + r^2) (z - x) per axis.
"""
from __future__ import annotations

import math

import numpy as np
import pytest

from squeeze_perception import interfaces as itf
from squeeze_perception.tracking.tracker import ClassParams, MultiObjectTracker, TrackerConfig


def _m(x, y, cls=1, score=0.9, z=0.0, l=4.0, w=1.8, h=1.5, yaw=0.0):
    row = np.zeros(1, itf.INSTANCE_DTYPE)
    row["x"], row["y"], row["z"] = x, y, z
    row["length"], row["width"], row["height"], row["yaw"] = l, w, h, yaw
    row["class_id"], row["score"] = cls, score
    return row


def _cat(*rows):
    return np.concatenate(rows)


def _car(**kw):
    base = dict(motion_model="cv", process_noise=(0.0, 0.0, 0.0, 0.0), initial_std=(2.0, 2.0, 1.0, 1.0),
                measurement_std=(0.5, 0.5), range_std_fraction=0.0, min_hits=1, confirm_min_score=0.0,
                birth_min_score=0.3, gate_m=10.0)
    base.update(kw)
    return ClassParams(**base)


def _tracker(car=None, **cfg):
    classes = {"unknown": ClassParams(birth_min_score=1.01), "car": car or _car(),
               "pedestrian": _car(), "cyclist": _car()}
    return MultiObjectTracker(TrackerConfig(classes=classes, **cfg))


def _kalman_step(x, z, p, r):
    return x + p / (p + r * r) * (z - x)


# ---------------------------------------------------------------- ClassParams / TrackerConfig validation
@pytest.mark.parametrize("kw, name", [
    ({"measurement_std": (0.3, 0.0)}, "measurement_std"),
    ({"measurement_std": (0.3, 0.3, 0.3)}, "measurement_std"),
    ({"range_std_fraction": -0.01}, "range_std_fraction"),
    ({"gate_m": 0.0}, "gate_m"),
    ({"min_hits": 0}, "min_hits"),
    ({"max_coast_s": -0.1}, "max_coast_s"),
    ({"output_coast_s": -0.1}, "output_coast_s"),
])
def test_invalid_class_params_are_refused_naming_the_parameter(kw, name):
    with pytest.raises(ValueError, match=name):
        ClassParams(**kw).validate()
    with pytest.raises(ValueError, match=f"class 'car'.*{name}"):
        TrackerConfig(classes={"car": ClassParams(**kw)}).validate()


@pytest.mark.parametrize("kw", [{"range_std_fraction": 0.0}, {"gate_m": 0.5}, {"min_hits": 1},
                                {"max_coast_s": 0.0, "output_coast_s": 0.0}])
def test_boundary_class_params_are_valid(kw):
    ClassParams(**kw).validate()


@pytest.mark.parametrize("kw, ok", [
    ({"box_smoothing": 0.0}, False), ({"box_smoothing": 1.0}, True), ({"box_smoothing": 1.5}, False),
    ({"class_vote_decay": 0.0}, False), ({"class_vote_decay": 1.0}, True), ({"class_vote_decay": 1.5}, False),
])
def test_smoothing_and_vote_decay_live_in_the_half_open_unit_interval(kw, ok):
    if ok:
        TrackerConfig(**kw).validate()
    else:
        with pytest.raises(ValueError, match=next(iter(kw))):
            TrackerConfig(**kw).validate()


def test_unknown_class_section_is_refused_naming_it():
    with pytest.raises(ValueError, match="truck"):
        TrackerConfig(classes={"truck": ClassParams()}).validate()


def test_for_class_falls_back_to_the_unknown_section_then_to_defaults():
    special = ClassParams(gate_m=7.0)
    cfg = TrackerConfig(classes={"unknown": special, "car": ClassParams(gate_m=5.0)})
    assert cfg.for_class(1).gate_m == 5.0
    for cls in (0, 2, -1, 4, 99):  # missing section or out-of-range id -> unknown
        assert cfg.for_class(cls) is special
    bare = TrackerConfig(classes={})
    for cls in (1, 4, -1):
        assert bare.for_class(cls) == ClassParams()


def test_flat_params_are_scalars_and_lists_without_the_classes_field():
    flat = TrackerConfig().to_params()
    assert "classes" not in flat and flat["chi2_gate"] == TrackerConfig().chi2_gate
    assert isinstance(flat["car.process_noise"], list) and isinstance(flat["car.gate_m"], float)


def test_from_params_fills_missing_class_sections_from_defaults():
    cfg = TrackerConfig.from_params({"pedestrian.gate_m": 2.0}, base=TrackerConfig(classes={}))
    assert cfg.classes["pedestrian"] == ClassParams(gate_m=2.0)
    assert TrackerConfig.from_params({"classes": 1}) == TrackerConfig()  # not a flat parameter


# ---------------------------------------------------------------- measurement table and noise
def test_measurements_must_be_an_instance_table():
    with pytest.raises(ValueError, match="class_id"):
        MultiObjectTracker().step(np.zeros((2, 3)), 0.0)
    with pytest.raises(ValueError, match="class_id"):
        MultiObjectTracker().step(np.zeros(2, [("x", "f4"), ("y", "f4")]), 0.0)


def test_rows_with_any_non_finite_coordinate_are_dropped():
    rows = _cat(_m(np.nan, 1.0), _m(1.0, np.nan), _m(5.0, 5.0, z=np.nan), _m(8.0, 0.0))
    tr = _tracker()
    out = tr.step(rows, 0.0)
    assert len(tr.tracks) == 1 and out["x"].tolist() == [8.0]


def test_per_axis_measurement_std_is_the_update_noise():
    tr = _tracker()
    tr.step(_m(0.0, 0.0), 0.0, measurement_std=np.array([[0.1, 0.1]]))
    out = tr.step(_m(1.0, 1.0), 0.0, measurement_std=np.array([[1.0, 2.0]]))
    assert out["x"][0] == pytest.approx(_kalman_step(0.0, 1.0, 4.0, 1.0))  # 0.8
    assert out["y"][0] == pytest.approx(_kalman_step(0.0, 1.0, 4.0, 2.0))  # 0.5


def test_one_std_per_row_applies_to_both_axes():
    tr = _tracker()
    tr.step(_m(0.0, 0.0), 0.0, measurement_std=np.array([0.1]))
    out = tr.step(_m(1.0, 1.0), 0.0, measurement_std=np.array([2.0]))
    assert out["x"][0] == pytest.approx(0.5) and out["y"][0] == pytest.approx(0.5)


def test_nan_std_rows_use_class_std_plus_range_fraction():
    car = _car(measurement_std=(0.5, 1.0), range_std_fraction=0.02)
    tr = _tracker(car)
    tr.step(_m(30.0, 40.0), 0.0)
    std = np.array([[np.nan, np.nan], [0.1, 0.1]])
    out = tr.step(_cat(_m(33.0, 44.0), _m(-30.0, 0.0)), 0.0, measurement_std=std)  # range 55 m
    first = out[out["track_id"] == 1][0]
    assert first["x"] == pytest.approx(_kalman_step(30.0, 33.0, 4.0, 0.5 + 0.02 * 55), abs=1e-4)
    assert first["y"] == pytest.approx(_kalman_step(40.0, 44.0, 4.0, 1.0 + 0.02 * 55), abs=1e-4)


def test_birth_std_becomes_the_filter_measurement_noise():
    tr = _tracker()
    tr.step(_m(0.0, 0.0), 0.0, measurement_std=np.array([[0.3, 0.7]]))
    s = tr.tracks[0].filter.innovation_covariance()
    np.testing.assert_allclose(s, np.diag([4.0 + 0.09, 4.0 + 0.49]))


def test_allow_birth_false_rows_never_start_tracks():
    tr = _tracker()
    tr.step(_cat(_m(0.0, 0.0), _m(10.0, 0.0)), 0.0, allow_birth=np.array([False, True]))
    assert [t.position[0] for t in tr.tracks] == [10.0]


# ---------------------------------------------------------------- birth and confirmation
def test_birth_score_threshold_is_inclusive_and_nan_score_never_births():
    tr = _tracker(_car(birth_min_score=0.5))
    tr.step(_cat(_m(0.0, 0.0, score=0.5), _m(10.0, 0.0, score=np.nan), _m(20.0, 0.0, score=0.49)), 0.0)
    assert [t.position[0] for t in tr.tracks] == [0.0]


def test_min_hits_one_confirms_at_birth_when_the_score_reaches_the_threshold():
    tr = _tracker(_car(min_hits=1, confirm_min_score=0.5))
    out = tr.step(_cat(_m(0.0, 0.0, score=0.5), _m(10.0, 0.0, score=0.45)), 1.0)
    assert out["x"].tolist() == [0.0] and out["score"].tolist() == [0.5]
    t = tr.tracks[0]
    assert t.born_s == 1.0 and t.last_update_s == 1.0


def test_min_hits_two_is_not_confirmed_at_birth_but_at_the_second_hit():
    tr = _tracker(_car(min_hits=2, confirm_min_score=0.5))
    assert len(tr.step(_m(0.0, 0.0, score=0.5), 0.0)) == 0
    out = tr.step(_m(0.0, 0.0, score=0.5), 0.1)  # averaged score exactly 0.5 reaches the threshold
    assert out["track_id"].tolist() == [1]


def test_birth_box_fields_and_nan_yaw():
    tr = _tracker()
    out = tr.step(_cat(_m(0.0, 0.0, z=0.7, yaw=0.7, l=4.0, w=1.8, h=1.5), _m(20.0, 0.0, yaw=np.nan)), 0.0)
    assert out["yaw"].tolist() == pytest.approx([0.7, 0.0])
    assert (out["z"][0], out["length"][0], out["width"][0], out["height"][0]) == pytest.approx((0.7, 4.0, 1.8, 1.5))


def test_out_of_range_class_starts_an_unknown_track():
    cfg = {"unknown": _car(), "car": _car(), "pedestrian": _car(), "cyclist": _car()}
    tr = MultiObjectTracker(TrackerConfig(classes=cfg))
    out = tr.step(_cat(_m(0.0, 0.0, cls=7), _m(10.0, 0.0, cls=4)), 0.0)
    assert out["class_id"].tolist() == [0, 0]


def test_trail_starts_at_birth_and_keeps_trail_length_positions():
    tr = _tracker(trail_length=3)
    for k in range(5):
        tr.step(_m(0.1 * k, 0.0), 0.0)
    trail = list(tr.tracks[0].trail)
    assert len(trail) == 3 and len(tr.tracks) == 1
    np.testing.assert_allclose(trail[-1], tr.tracks[0].position)
    assert trail[0][0] < trail[1][0] < trail[2][0]
    tr2 = _tracker()
    tr2.step(_m(3.0, 4.0), 0.0)
    np.testing.assert_allclose(np.array(list(tr2.tracks[0].trail)), [[3.0, 4.0]])


# ---------------------------------------------------------------- update: smoothing and votes
def test_box_fields_are_exponential_averages_with_box_smoothing():
    tr = _tracker(box_smoothing=0.4)
    tr.step(_m(0.0, 0.0, z=1.0, l=4.0, w=0.5, h=1.0, score=0.5), 0.0)
    out = tr.step(_m(0.0, 0.0, z=2.0, l=2.0, w=0.9, h=0.6, score=1.0), 0.0)
    assert out["z"][0] == pytest.approx(1.4)
    assert (out["length"][0], out["width"][0], out["height"][0]) == pytest.approx((3.2, 0.66, 0.84))
    assert out["score"][0] == pytest.approx(0.7)


def test_degenerate_measured_size_leaves_the_size_alone_and_nan_score_counts_as_zero():
    tr = _tracker(box_smoothing=0.5)
    tr.step(_m(0.0, 0.0, l=4.0, w=2.0, h=1.0, score=0.8), 0.0)
    out = tr.step(_m(0.0, 0.0, l=0.0, w=2.0, h=1.0, score=np.nan), 0.0)
    assert (out["length"][0], out["width"][0], out["height"][0]) == pytest.approx((4.0, 2.0, 1.0))
    assert out["score"][0] == pytest.approx(0.4)


def test_class_votes_decay_and_are_score_weighted():
    # car 0.5 at birth; after one decay it is worth 0.45 < a pedestrian vote of 0.47.
    tr = _tracker(class_vote_decay=0.9)
    tr.step(_m(0.0, 0.0, cls=1, score=0.5), 0.0)
    assert tr.step(_m(0.0, 0.0, cls=2, score=0.47), 0.0)["class_id"].tolist() == [2]
    # two car votes accumulate: 0.5 * 0.9 + 0.5 = 0.95, then * 0.9 = 0.855 > 0.6
    tr = _tracker(class_vote_decay=0.9)
    tr.step(_m(0.0, 0.0, cls=1, score=0.5), 0.0)
    tr.step(_m(0.0, 0.0, cls=1, score=0.5), 0.0)
    assert tr.step(_m(0.0, 0.0, cls=2, score=0.6), 0.0)["class_id"].tolist() == [1]


def test_out_of_range_class_measurement_adds_no_vote():
    tr = _tracker()
    tr.step(_m(0.0, 0.0, cls=2), 0.0)
    assert tr.step(_m(0.0, 0.0, cls=4), 0.0)["class_id"].tolist() == [2]


# ---------------------------------------------------------------- yaw
def _yaw_after(track_yaw, measured):
    tr = _tracker(box_smoothing=0.4)
    tr.step(_m(0.0, 0.0, yaw=track_yaw), 0.0)
    return float(tr.step(_m(0.0, 0.0, yaw=measured), 0.0)["yaw"][0])


def test_yaw_blends_towards_the_measurement_without_folding_below_ninety_degrees():
    assert _yaw_after(0.5, 1.7) == pytest.approx(0.5 + 0.4 * 1.2, abs=1e-5)


def test_yaw_measurement_flipped_by_pi_is_folded_to_the_nearer_side():
    assert _yaw_after(0.5, 0.5 + math.pi - 0.2) == pytest.approx(0.5 - 0.4 * 0.2, abs=1e-5)
    assert _yaw_after(0.5, 0.5 - math.pi + 0.2) == pytest.approx(0.5 + 0.4 * 0.2, abs=1e-5)


def _moving(vx, vy, yaw, n=12):
    car = _car(process_noise=(0.01, 0.01, 0.1, 0.1), initial_std=(0.1, 0.1, 10.0, 10.0))
    tr = _tracker(car, heading_min_speed=1.5)
    out = None
    for k in range(n):
        t = 0.1 * k
        out = tr.step(_m(vx * t, vy * t, yaw=yaw), t, measurement_std=np.array([0.01]))
    return out[0]


@pytest.mark.parametrize("vx, vy, box_yaw, heading", [(5.0, 0.0, math.pi, 0.0), (0.0, 5.0, -math.pi / 2, math.pi / 2),
                                                     (-5.0, 0.0, 0.0, math.pi)])
def test_fast_track_yaw_is_flipped_to_face_its_motion(vx, vy, box_yaw, heading):
    row = _moving(vx, vy, box_yaw)
    assert math.hypot(row["vx"], row["vy"]) > 3.0
    assert math.cos(row["yaw"] - heading) == pytest.approx(1.0, abs=1e-3)


def test_fast_track_facing_its_motion_is_not_flipped():
    row = _moving(5.0, 0.0, 0.1)
    assert row["yaw"] == pytest.approx(0.1, abs=1e-3)


def test_slow_track_keeps_the_box_yaw():
    row = _moving(0.5, 0.0, math.pi)
    assert math.hypot(row["vx"], row["vy"]) < 1.5
    assert math.cos(row["yaw"] - math.pi) == pytest.approx(1.0, abs=1e-3)


# ---------------------------------------------------------------- association
def _gate_case(dx, dy, sx, sy):
    """A precise car track at the origin, one measurement (dx, dy) with std (sx, sy): matched?"""
    tr = _tracker(_car(initial_std=(1e-3, 1e-3, 1.0, 1.0)))
    tr.step(_m(0.0, 0.0), 0.0)
    tr.step(_m(dx, dy), 0.0, measurement_std=np.array([[sx, sy]]))
    return len(tr.tracks) == 1


@pytest.mark.parametrize("axis", [0, 1])
def test_chi_square_gate_uses_each_axis_own_std(axis):
    def case(k_sigma):
        d = [0.0, 0.0]
        d[axis] = 0.2 * k_sigma
        s = [0.01, 0.01]
        s[axis] = 0.2
        return _gate_case(d[0], d[1], s[0], s[1])

    assert case(2.0) and case(3.0)  # d^2 = 4, 9 < 13.8 (chi-square 2 dof, 99.9 %)
    assert not case(4.5)  # d^2 = 20.25


def test_class_mismatch_cost_comes_from_the_config():
    # A car track at 0 and a pedestrian track at 1; a car measurement at 0.9. Without a
    # mismatch penalty the pedestrian track is nearer; a large penalty hands it to the car.
    def run(cost):
        tr = _tracker(class_mismatch_cost=cost)
        tr.step(_cat(_m(0.0, 0.0, cls=1), _m(1.0, 0.0, cls=2)), 0.0)
        out = tr.step(_m(0.9, 0.0, cls=1), 0.0)
        return float(out[out["track_id"] == 1]["x"][0])

    assert run(100.0) > 0.3
    assert run(0.0) == 0.0


def test_confirmed_tracks_are_associated_before_tentative_ones():
    car = _car(min_hits=1, confirm_min_score=0.5, initial_std=(0.5, 0.5, 1.0, 1.0))
    tr = _tracker(car)
    tr.step(_cat(_m(0.0, 0.0, score=0.9), _m(2.0, 0.0, score=0.45)), 0.0)
    assert [t.confirmed for t in tr.tracks] == [True, False]
    out = tr.step(_m(1.2, 0.0, score=0.9), 0.1)  # nearer to the tentative track
    assert out["track_id"].tolist() == [1] and out["x"][0] > 0.5
    assert [t.track_id for t in tr.tracks] == [1]


# ---------------------------------------------------------------- time, coasting, publishing
def test_late_frames_are_counted_one_each():
    tr = _tracker()
    tr.step(_m(0.0, 0.0), 10.0)
    tr.step(_m(0.0, 0.0), 9.9)
    tr.step(_m(0.0, 0.0), 9.8)
    assert tr.late_frames == 2 and tr.resets == 0


def test_jump_back_of_exactly_reset_jump_back_s_is_late_not_a_reset():
    tr = _tracker(reset_jump_back_s=0.5)
    tr.step(_m(0.0, 0.0), 10.0)
    tr.step(_m(0.0, 0.0), 9.5)
    assert tr.resets == 0 and tr.late_frames == 1


def test_gap_of_exactly_reset_gap_s_is_not_a_reset():
    tr = _tracker(_car(max_coast_s=10.0, output_coast_s=10.0), reset_gap_s=5.0)
    tr.step(_m(0.0, 0.0), 0.0)
    out = tr.step(_m(0.0, 0.0), 5.0)
    assert tr.resets == 0 and out["track_id"].tolist() == [1]


def test_same_stamp_frame_is_processed_not_late():
    tr = _tracker()
    tr.step(_m(0.0, 0.0), 1.0)
    out = tr.step(_m(1.0, 0.0), 1.0)
    assert tr.late_frames == 0 and out["x"][0] > 0.0


def test_published_score_fades_linearly_over_max_coast():
    tr = _tracker(_car(max_coast_s=2.0, output_coast_s=1.0))
    tr.step(_m(0.0, 0.0, score=0.8), 0.0)
    out = tr.step(np.zeros(0, itf.INSTANCE_DTYPE), 0.5)
    assert out["score"][0] == pytest.approx(0.8 * (1 - 0.5 / 2.0))


def test_zero_max_coast_publishes_without_fading():
    tr = _tracker(_car(max_coast_s=0.0, output_coast_s=0.0))
    out = tr.step(_m(0.0, 0.0, score=0.8), 0.0)
    assert out["score"].tolist() == pytest.approx([0.8])


def test_track_coasting_exactly_max_coast_is_kept_longer_is_deleted():
    tr = _tracker(_car(max_coast_s=1.0, output_coast_s=0.3))
    tr.step(_m(0.0, 0.0), 0.0)
    tr.step(np.zeros(0, itf.INSTANCE_DTYPE), 1.0)
    assert len(tr.tracks) == 1
    tr.step(np.zeros(0, itf.INSTANCE_DTYPE), 1.1)
    assert len(tr.tracks) == 0


def test_expired_and_missed_tracks_do_not_take_later_tracks_with_them():
    car = _car(min_hits=1, confirm_min_score=0.5, max_coast_s=0.5, output_coast_s=0.5)
    tr = _tracker(car)
    tr.step(_m(0.0, 0.0, score=0.9), 0.0)  # track 1: confirmed, will expire
    tr.step(_m(20.0, 0.0, score=0.45), 0.4)  # track 2: tentative, will miss
    tr.step(_m(40.0, 0.0, score=0.9), 0.4)  # track 3: confirmed
    tr.step(_m(40.0, 0.0, score=0.9), 0.6)  # 1 coasted 0.6 > 0.5, 2 missed: both go, 3 stays
    assert [t.track_id for t in tr.tracks] == [3]


def test_tentative_track_is_dropped_at_its_first_miss_even_a_short_one():
    tr = _tracker(_car(min_hits=3))
    tr.step(_m(0.0, 0.0), 0.0)
    tr.step(np.zeros(0, itf.INSTANCE_DTYPE), 0.1)
    assert tr.tracks == []


def test_every_reset_is_counted():
    tr = _tracker()
    for stamp in (10.0, 1.0, 20.0):  # back 9 s (bag loop), then a 19 s gap
        tr.step(_m(0.0, 0.0), stamp)
    assert tr.resets == 2 and [t.track_id for t in tr.tracks] == [1]


# ---------------------------------------------------------------- added after the 93 % mutation rerun
@pytest.mark.parametrize("a", [4.0, -4.0, 7.0, 10.0, -10.0, 3.0])
def test_wrap_angle_lands_in_minus_pi_to_pi_on_the_same_direction(a):
    from squeeze_perception.tracking.tracker import wrap_angle
    w = wrap_angle(a)
    assert -math.pi <= w < math.pi
    assert (math.cos(w), math.sin(w)) == pytest.approx((math.cos(a), math.sin(a)))


def test_class_params_noise_carries_all_three_noise_settings():
    p = ClassParams(process_noise=(1.0, 2.0, 3.0, 4.0), measurement_std=(0.3, 0.4),
                    initial_std=(5.0, 6.0, 7.0, 8.0))
    n = p.noise()
    assert (n.process, n.measurement_std, n.initial_std) == ((1.0, 2.0, 3.0, 4.0), (0.3, 0.4), (5.0, 6.0, 7.0, 8.0))


def test_default_one_second_max_coast_fades_the_published_score():
    tr = _tracker(_car(max_coast_s=1.0, output_coast_s=0.5))
    tr.step(_m(0.0, 0.0, score=0.8), 0.0)
    out = tr.step(np.zeros(0, itf.INSTANCE_DTYPE), 0.25)
    assert out["score"][0] == pytest.approx(0.8 * 0.75)


def test_a_low_score_vote_weighs_its_score_not_one():
    # car 0.9 at birth decays to 0.81 > one pedestrian vote of 0.5
    tr = _tracker(class_vote_decay=0.9)
    tr.step(_m(0.0, 0.0, cls=1, score=0.9), 0.0)
    assert tr.step(_m(0.0, 0.0, cls=2, score=0.5), 0.0)["class_id"].tolist() == [1]


def test_nan_size_at_birth_is_published_as_zero_like_nan_yaw():
    tr = _tracker()
    out = tr.step(_m(0.0, 0.0, l=np.nan, w=1.8, h=np.nan), 0.0)
    assert (out["length"][0], out["width"][0], out["height"][0]) == pytest.approx((0.0, 1.8, 0.0))
