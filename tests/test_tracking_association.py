"""Gating and Hungarian assignment on hand-computed cases."""
from __future__ import annotations

import numpy as np

from squeeze_perception.tracking.association import assign, gated_cost, mahalanobis_sq


def test_mahalanobis_with_identity_covariance_is_squared_distance():
    m2, logdet = mahalanobis_sq(np.array([[0.0, 0.0]]), np.eye(2)[None] * 0.5,
                                np.array([[3.0, 4.0]]), np.eye(2)[None] * 0.5)
    assert m2[0, 0] == 25.0 and abs(logdet[0, 0]) < 1e-12


def test_mahalanobis_uses_anisotropic_covariance():
    cov = np.diag([4.0, 1.0])[None]
    m2, _ = mahalanobis_sq(np.zeros((1, 2)), cov, np.array([[2.0, 1.0]]), np.zeros((1, 2, 2)))
    assert np.isclose(m2[0, 0], 2.0)  # 2^2/4 + 1^2/1


def test_assignment_is_globally_optimal_not_greedy():
    # Greedy would take (0,0)=1 and be left with (1,1)=10: total 11. Optimal: 2 + 3 = 5.
    cost = np.array([[1.0, 2.0], [3.0, 10.0]])
    result = assign(cost, np.ones_like(cost, bool))
    assert sorted(map(tuple, result.matches)) == [(0, 1), (1, 0)]


def test_gate_leaves_far_pairs_unmatched():
    pos_t = np.array([[0.0, 0.0], [10.0, 0.0]])
    cov_t = np.repeat(np.eye(2)[None] * 0.1, 2, axis=0)
    pos_m = np.array([[0.2, 0.0], [30.0, 0.0]])
    cov_m = np.repeat(np.eye(2)[None] * 0.1, 2, axis=0)
    cost, allowed = gated_cost(pos_t, cov_t, np.array([1, 1]), np.array([3.0, 3.0]), pos_m, cov_m,
                               np.array([1, 1]))
    result = assign(cost, allowed)
    assert result.matches.tolist() == [[0, 0]]
    assert result.unmatched_tracks.tolist() == [1] and result.unmatched_measurements.tolist() == [1]


def test_euclidean_gate_applies_even_when_covariance_is_huge():
    cost, allowed = gated_cost(np.zeros((1, 2)), np.eye(2)[None] * 1e4, np.array([1]), np.array([2.0]),
                               np.array([[5.0, 0.0]]), np.eye(2)[None] * 0.1, np.array([1]))
    assert not allowed[0, 0]


def test_class_mismatch_costs_but_unknown_does_not():
    pos = np.zeros((1, 2))
    cov = np.eye(2)[None]
    meas = np.zeros((3, 2))
    mcov = np.repeat(np.eye(2)[None], 3, axis=0)
    cost, allowed = gated_cost(pos, cov, np.array([1]), np.array([3.0]), meas, mcov, np.array([1, 2, 0]),
                               class_mismatch_cost=4.0)
    assert allowed.all()
    assert np.isclose(cost[0, 1] - cost[0, 0], 4.0) and np.isclose(cost[0, 2], cost[0, 0])


def test_empty_inputs():
    result = assign(np.zeros((0, 3)), np.zeros((0, 3), bool))
    assert result.unmatched_measurements.tolist() == [0, 1, 2] and len(result.matches) == 0
