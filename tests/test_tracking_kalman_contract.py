"""Kalman filter and association contract, from the Kalman / EKF equations and association.py's doc."""
from __future__ import annotations

import math

import numpy as np
import pytest

from squeeze_perception.tracking.association import assign, gated_cost
from squeeze_perception.tracking.kalman import CentreFilter, MotionNoise, ctrv_step


def _cv(p0=2.0, r=0.5):
    return CentreFilter("cv", (0.0, 0.0), MotionNoise((0, 0, 0, 0), (r, r), (p0, p0, 1.0, 1.0)))


# ---------------------------------------------------------------- CentreFilter
def test_update_with_explicit_std_is_the_scalar_kalman_step():
    f = _cv(p0=2.0, r=0.5)  # P = 4 per axis; the filter's own R (0.25) must not be used
    f.update((1.0, 1.0), (3.0, 1.0))
    np.testing.assert_allclose(f.position, [4 / (4 + 9), 4 / (4 + 1)])
    np.testing.assert_allclose(np.diag(f.kf.P)[:2], [4 * 9 / 13, 4 * 1 / 5])


def test_update_without_std_uses_the_filter_r():
    f = _cv(p0=2.0, r=1.0)
    f.update((1.0, 2.0))
    np.testing.assert_allclose(f.position, [0.8, 1.6])


def test_update_and_init_take_the_first_two_coordinates_of_a_longer_point():
    f = CentreFilter("cv", (1.0, 2.0, 99.0), MotionNoise((0, 0, 0, 0), (1.0, 1.0), (2.0, 2.0, 1.0, 1.0)))
    np.testing.assert_allclose(f.position, [1.0, 2.0])
    f.update((2.0, 3.0, -50.0), 1.0)
    np.testing.assert_allclose(f.position, [1.8, 2.8])
    assert f.noise == MotionNoise((0, 0, 0, 0), (1.0, 1.0), (2.0, 2.0, 1.0, 1.0))


def test_ctrv_heading_initialisation():
    noise = MotionNoise((0.1,) * 5, (0.3, 0.3), (0.3, 0.3, 2.0, 0.5, 0.3))
    assert CentreFilter("ctrv", (0, 0), noise).state.tolist() == [0, 0, 0, 0, 0]
    s = CentreFilter("ctrv", (0, 0), noise, heading=0.7).state
    assert s[3] == 0.7 and s[4] == 0.0  # heading is the yaw entry, the turn rate starts at zero
    assert CentreFilter("ctrv", (0, 0), noise, heading=float("nan")).state[3] == 0.0


def test_ctrv_update_keeps_the_heading_wrapped():
    noise = MotionNoise((0.1,) * 5, (0.3, 0.3), (0.3, 0.3, 2.0, 0.5, 0.3))
    f = CentreFilter("ctrv", (0, 0), noise, heading=3.5)
    f.update((0.1, 0.0))
    assert -math.pi <= f.state[3] < math.pi
    assert f.state[3] == pytest.approx(3.5 - 2 * math.pi)


@pytest.mark.parametrize("yaw", [0.4, 2.5])
def test_ctrv_jacobian_matches_finite_differences_in_the_small_turn_branch(yaw):
    x = np.array([1.0, -2.0, 6.0, yaw, 5e-5])  # |w| below the straight-line threshold
    dt = 2.0
    _, jac = ctrv_step(x, dt)
    eps = 1e-6
    for k in (2, 3):
        dx = np.zeros(5)
        dx[k] = eps
        num = (ctrv_step(x + dx, dt)[0][:2] - ctrv_step(x - dx, dt)[0][:2]) / (2 * eps)
        np.testing.assert_allclose(jac[:2, k], num, atol=1e-8)


# ---------------------------------------------------------------- association
def _one(track_cls, meas_cls, d=(1.0, 0.0), track_var=0.5, meas_var=0.5, gate=10.0, **kw):
    cost, allowed = gated_cost(np.zeros((1, 2)), np.eye(2)[None] * track_var, np.array([track_cls]),
                               np.array([gate]), np.array([d], float), np.eye(2)[None] * meas_var,
                               np.array([meas_cls]), **kw)
    return float(cost[0, 0]), bool(allowed[0, 0])


def test_cost_is_mahalanobis_plus_log_det_plus_default_mismatch_penalty_of_four():
    # S = 2 I: d^2 = 9 / 2, log det S = log 4.
    assert _one(1, 1, d=(3.0, 0.0), track_var=1.0, meas_var=1.0)[0] == pytest.approx(4.5 + math.log(4.0))
    assert _one(1, 2, d=(3.0, 0.0), track_var=1.0, meas_var=1.0)[0] == pytest.approx(4.5 + math.log(4.0) + 4.0)


def test_unknown_class_on_either_side_pays_no_mismatch():
    base = _one(1, 1)[0]
    assert _one(0, 1)[0] == pytest.approx(base) and _one(1, 0)[0] == pytest.approx(base)
    assert _one(2, 1)[0] == pytest.approx(base + 4.0)


def test_gates_are_inclusive():
    # S = I, distance 3: d^2 = 9 exactly at the chi-square gate and 3 m exactly at the Euclidean gate.
    assert _one(1, 1, d=(3.0, 0.0), gate=3.0, chi2_gate=9.0)[1]
    assert not _one(1, 1, d=(3.0, 0.0), gate=2.999, chi2_gate=9.0)[1]
    assert not _one(1, 1, d=(3.0, 0.0), gate=3.0, chi2_gate=8.999)[1]


def test_empty_assignment_has_typed_empty_matches():
    a = assign(np.zeros((2, 3)), np.zeros((2, 3), bool))
    assert a.matches.shape == (0, 2) and np.issubdtype(a.matches.dtype, np.integer)
    assert a.unmatched_tracks.tolist() == [0, 1] and a.unmatched_measurements.tolist() == [0, 1, 2]


# ---------------------------------------------------------------- added after the 93 % mutation rerun
def test_innovation_covariance_with_explicit_std_is_p_plus_diag_std_squared():
    f = _cv(p0=2.0, r=1.0)  # P_pos = 4 I; the filter's own R must not be used when std is given
    np.testing.assert_allclose(f.innovation_covariance(), [[5.0, 0.0], [0.0, 5.0]])
    np.testing.assert_allclose(f.innovation_covariance(0.5), [[4.25, 0.0], [0.0, 4.25]])
    np.testing.assert_allclose(f.innovation_covariance((0.3, 3.0)), [[4.09, 0.0], [0.0, 13.0]])


@pytest.mark.parametrize("field, model", [("process", "ca"), ("initial_std", "cv")])
@pytest.mark.parametrize("bad", [-0.1, math.nan, math.inf])
def test_negative_or_non_finite_noise_is_refused_naming_the_field(field, model, bad):
    values = [1.0] * 6
    values[1] = bad
    noise = MotionNoise(**{field: tuple(values)})
    call = noise.q_diag if field == "process" else noise.p0_diag
    with pytest.raises(ValueError, match=field):
        call(model)


def test_too_short_noise_is_refused_naming_the_field():
    with pytest.raises(ValueError, match="initial_std"):
        MotionNoise(initial_std=(1.0, 1.0, 1.0)).p0_diag("cv")
    with pytest.raises(ValueError, match="process"):
        MotionNoise(process=(1.0,) * 5).q_diag("ca")


def test_no_linear_transition_matrix_for_ctrv_names_the_model():
    from squeeze_perception.tracking.kalman import transition_matrix
    with pytest.raises(ValueError, match="ctrv"):
        transition_matrix("ctrv", 0.1)


def test_mahalanobis_with_correlated_covariance_matches_the_matrix_inverse():
    from squeeze_perception.tracking.association import mahalanobis_sq
    track_cov = np.array([[[2.0, 0.8], [0.8, 1.0]]])
    meas_cov = np.array([[[0.5, 0.3], [0.3, 0.25]], [[0.1, 0.0], [0.0, 0.1]]])
    track_pos = np.array([[1.0, -1.0]])
    meas_pos = np.array([[2.0, 0.5], [-0.5, 0.0]])
    m2, logdet = mahalanobis_sq(track_pos, track_cov, meas_pos, meas_cov)
    for j in range(2):
        s = track_cov[0] + meas_cov[j]
        d = meas_pos[j] - track_pos[0]
        assert m2[0, j] == pytest.approx(d @ np.linalg.solve(s, d))
        assert logdet[0, j] == pytest.approx(np.log(np.linalg.det(s)))
