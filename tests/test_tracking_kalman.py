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
