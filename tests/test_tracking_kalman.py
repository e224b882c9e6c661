"""Kalman motion models: LATTE's constant-acceleration F, Q scaling, update behaviour."""
from __future__ import annotations

import numpy as np
import pytest

from squeeze_perception.tracking.kalman import CentreFilter, MotionNoise, transition_matrix


def test_constant_acceleration_matrix_matches_latte():
    dt = 0.5
    f = transition_matrix("ca", dt)
    expected = np.array([
        [1, 0, dt, 0, dt * dt / 2, 0],
        [0, 1, 0, dt, 0, dt * dt / 2],
        [0, 0, 1, 0, dt, 0],
        [0, 0, 0, 1, 0, dt],
        [0, 0, 0, 0, 1, 0],
        [0, 0, 0, 0, 0, 1]])
    np.testing.assert_allclose(f, expected)
    np.testing.assert_allclose(transition_matrix("cv", dt)[:2, 2:], np.eye(2) * dt)


def test_predict_moves_state_by_kinematics():
    filt = CentreFilter("ca", (1.0, 2.0), MotionNoise())
    filt.kf.x[2:, 0] = [3.0, -1.0, 2.0, 4.0]  # v, a
    filt.predict(2.0)
    # p + v t + a t^2 / 2 ; v + a t
    np.testing.assert_allclose(filt.position, [1 + 6 + 4, 2 - 2 + 8])
    np.testing.assert_allclose(filt.velocity, [3 + 4, -1 + 8])


def test_process_noise_scales_with_time_step():
    noise = MotionNoise(process=(0.1, 0.2, 1, 1, 1, 1), initial_std=(0, 0, 0, 0, 0, 0))
    filt = CentreFilter("ca", (0, 0), noise)
    filt.predict(0.5)
    np.testing.assert_allclose(np.diag(filt.kf.P)[:2], [0.05, 0.1])


def test_update_pulls_towards_measurement_and_shrinks_covariance():
    filt = CentreFilter("cv", (0.0, 0.0), MotionNoise(measurement_std=(0.5, 0.5),
                                                       initial_std=(0.5, 0.5, 1.0, 1.0)))
    before = filt.kf.P[0, 0]
    filt.update((1.0, 0.0))
    # equal prior and measurement variance: the estimate lands half way
    np.testing.assert_allclose(filt.position, [0.5, 0.0], atol=1e-9)
    assert filt.kf.P[0, 0] == pytest.approx(before / 2)


def test_velocity_is_learned_from_a_moving_target():
    filt = CentreFilter("ca", (0.0, 0.0), MotionNoise())
    for k in range(1, 40):
        filt.predict(0.1)
        filt.update((0.1 * k * 5.0, 0.0))
    assert filt.velocity[0] == pytest.approx(5.0, abs=0.2)


def test_bad_model_and_noise_are_refused():
    with pytest.raises(ValueError, match="unknown motion model"):
        CentreFilter("ctrv9", (0, 0), MotionNoise())
    with pytest.raises(ValueError, match="at least 6"):
        CentreFilter("ca", (0, 0), MotionNoise(process=(1, 1, 1, 1)))


def test_ctrv_prediction_follows_the_circle():
    from squeeze_perception.tracking.kalman import ctrv_step

    # v = 2 m/s, yaw 0, yaw rate pi/2 rad/s for 1 s: a quarter circle of radius 4/pi.
    x, _ = ctrv_step(np.array([0.0, 0.0, 2.0, 0.0, np.pi / 2]), 1.0)
    r = 2.0 / (np.pi / 2)
    np.testing.assert_allclose(x[:4], [r, r, 2.0, np.pi / 2], atol=1e-12)
    # straight line when the yaw rate is ~0
    x, _ = ctrv_step(np.array([1.0, 1.0, 3.0, np.pi / 2, 0.0]), 2.0)
    np.testing.assert_allclose(x[:2], [1.0, 7.0], atol=1e-12)


@pytest.mark.parametrize("w", [0.4, 0.0])
def test_ctrv_jacobian_matches_finite_differences(w):
    from squeeze_perception.tracking.kalman import ctrv_step

    x0 = np.array([1.0, -2.0, 5.0, 0.3, w])
    _, jac = ctrv_step(x0, 0.1)
    eps = 1e-6
    num = np.zeros((5, 5))
    for i in range(5):
        d = np.zeros(5)
        d[i] = eps
        num[:, i] = (ctrv_step(x0 + d, 0.1)[0] - ctrv_step(x0 - d, 0.1)[0]) / (2 * eps)
    np.testing.assert_allclose(jac, num, atol=1e-4)


def test_ctrv_filter_tracks_a_turning_car_better_than_cv():
    noise = MotionNoise(process=(0.05, 0.05, 1.0, 0.1, 0.5), measurement_std=(0.1, 0.1),
                        initial_std=(0.1, 0.1, 5.0, 0.2, 0.5))
    ctrv = CentreFilter("ctrv", (0.0, 0.0), noise, heading=0.0)
    cv = CentreFilter("cv", (0.0, 0.0), MotionNoise(process=(0.05, 0.05, 2.0, 2.0),
                                                     measurement_std=(0.1, 0.1), initial_std=(0.1, 0.1, 5, 5)))
    v, w, dt = 8.0, 0.5, 0.1
    errs = {"ctrv": [], "cv": []}
    for k in range(1, 60):
        t = k * dt
        z = (v / w * np.sin(w * t), v / w * (1 - np.cos(w * t)))
        for name, f in (("ctrv", ctrv), ("cv", cv)):
            f.predict(dt)
            if k > 20:
                errs[name].append(np.hypot(*(f.position - z)))
            f.update(z)
    assert np.mean(errs["ctrv"]) < 0.5 * np.mean(errs["cv"])
    assert abs(ctrv.state[4] - w) < 0.05 and np.hypot(*ctrv.velocity) == pytest.approx(v, abs=0.2)
