"""Box completion: partly seen boxes grow to their class's mean footprint, away from the sensor."""
from __future__ import annotations

import numpy as np
import pytest

from squeeze_perception.interfaces import INSTANCE_DTYPE
from squeeze_perception.object_sizes import SIZE_STATS
from squeeze_perception.segmentation.box_completion import class_mean_footprints, complete_boxes

CAR_L, CAR_W = SIZE_STATS["Car"][0][2], SIZE_STATS["Car"][0][1]


def _row(cls, x, y, length, width, yaw):
    r = np.zeros(1, INSTANCE_DTYPE)
    r["class_id"], r["x"], r["y"], r["z"] = cls, x, y, -0.8
    r["length"], r["width"], r["height"], r["yaw"] = length, width, 1.4, yaw
    return r


def test_a_car_seen_from_behind_grows_its_length_away_from_the_sensor():
    # 12 m straight ahead; the fitted box is the rear face: 1.8 m across (along y), 0.3 m deep.
    out = complete_boxes(_row(1, 12.0, 0.0, 1.8, 0.3, np.pi / 2))[0]
    assert out["length"] == pytest.approx(CAR_L) and out["width"] == pytest.approx(1.8)
    assert np.cos(out["yaw"]) == pytest.approx(1.0, abs=1e-6) or np.cos(out["yaw"]) == pytest.approx(-1.0, abs=1e-6)
    # the rear face stays at x = 12 - 0.15; the centre moves half the gained depth further away
    assert out["x"] == pytest.approx(12.0 + (CAR_L - 0.3) / 2, abs=1e-5) and out["y"] == pytest.approx(0.0, abs=1e-6)
    assert out["z"] == pytest.approx(-0.8) and out["height"] == pytest.approx(1.4)


def test_a_car_seen_from_the_side_grows_its_width_away_from_the_sensor():
    # 10 m to the left, its flank seen: 3.5 m along x, 0.4 m deep.
    out = complete_boxes(_row(1, 0.0, 10.0, 3.5, 0.4, 0.0))[0]
    assert out["length"] == pytest.approx(CAR_L) and out["width"] == pytest.approx(CAR_W)
    assert abs(np.sin(out["yaw"])) == pytest.approx(0.0, abs=1e-6)
    assert out["y"] == pytest.approx(10.0 + (CAR_W - 0.4) / 2, abs=1e-5) and out["x"] == pytest.approx(0.0, abs=1e-6)


def test_boxes_never_shrink_and_other_classes_are_left_alone():
    big = _row(1, 20.0, -5.0, 4.6, 2.0, 0.3)
    out = complete_boxes(big)[0]
    assert (out["length"], out["width"], out["x"], out["y"]) == pytest.approx((4.6, 2.0, 20.0, -5.0), abs=1e-5)
    wall = _row(0, 8.0, 3.0, 0.5, 0.2, 0.0)
    np.testing.assert_array_equal(complete_boxes(wall), wall)
    assert len(complete_boxes(np.zeros(0, INSTANCE_DTYPE))) == 0


def test_a_pedestrian_grows_to_its_class_not_to_a_car():
    ped_l, ped_w = class_mean_footprints()[2]
    out = complete_boxes(_row(2, 9.0, 1.0, 0.5, 0.2, 0.0))[0]
    assert out["length"] == pytest.approx(ped_l) and out["width"] == pytest.approx(ped_w)
    assert np.hypot(out["x"], out["y"]) > np.hypot(9.0, 1.0)  # moved away from the sensor


def test_yaw_stays_in_the_box_fits_range():
    # Every ray direction and fitted heading: the completed yaw is the long side's, in (-pi/2, pi/2].
    for bearing in np.linspace(-np.pi, np.pi, 13):
        for yaw in np.linspace(-np.pi / 2 + 0.01, np.pi / 2, 7):
            out = complete_boxes(_row(1, 15 * np.cos(bearing), 15 * np.sin(bearing), 1.5, 0.3, yaw))[0]
            assert -np.pi / 2 < out["yaw"] <= np.pi / 2 + 1e-6 and out["length"] >= out["width"]


def test_the_input_table_is_not_modified():
    t = _row(1, 12.0, 0.0, 1.8, 0.3, np.pi / 2)
    before = t.copy()
    complete_boxes(t)
    np.testing.assert_array_equal(t, before)
