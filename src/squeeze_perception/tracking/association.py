"""Gating and optimal one-to-one assignment of measurements to tracks.

Cost of pairing track i with measurement j: the squared Mahalanobis distance of the
innovation under S_ij = P_i + R_j plus log det S_ij (the negative log-likelihood of a
Gaussian up to a constant, so a vague track does not win every pairing), plus a penalty
when the classes disagree. A pair is allowed only inside the chi-square gate AND within a
Euclidean radius (the second guards against a freshly born track whose velocity variance
is still huge). The optimal assignment is scipy's Hungarian solver.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import linear_sum_assignment

# chi-square quantiles for 2 degrees of freedom
CHI2_2DOF = {0.95: 5.991, 0.99: 9.210, 0.999: 13.816}
_FORBIDDEN = 1e9


@dataclass
class Assignment:
    matches: np.ndarray  # (K, 2) int: track index, measurement index
    unmatched_tracks: np.ndarray  # (T-K,) int
    unmatched_measurements: np.ndarray  # (D-K,) int


def mahalanobis_sq(track_pos: np.ndarray, track_cov: np.ndarray, meas_pos: np.ndarray,
                   meas_cov: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(T, D) squared Mahalanobis distances and log det S for 2D positions.

    track_pos (T,2), track_cov (T,2,2) position covariance, meas_pos (D,2), meas_cov (D,2,2).
    The 2x2 inverse is written out (closed form) to stay vectorised over all pairs.
    """
    s = track_cov[:, None, :, :] + meas_cov[None, :, :, :]  # (T, D, 2, 2)
    d = meas_pos[None, :, :] - track_pos[:, None, :]  # (T, D, 2)
    a, b, c, e = s[..., 0, 0], s[..., 0, 1], s[..., 1, 0], s[..., 1, 1]
    det = np.maximum(a * e - b * c, 1e-12)
    dx, dy = d[..., 0], d[..., 1]
    m2 = (e * dx * dx - (b + c) * dx * dy + a * dy * dy) / det
    return m2, np.log(det)


def gated_cost(track_pos: np.ndarray, track_cov: np.ndarray, track_class: np.ndarray,
               track_gate_m: np.ndarray, meas_pos: np.ndarray, meas_cov: np.ndarray,
               meas_class: np.ndarray, chi2_gate: float = CHI2_2DOF[0.999],
               class_mismatch_cost: float = 4.0) -> tuple[np.ndarray, np.ndarray]:
    """(cost, allowed) matrices of shape (T, D).

    Class 0 (unknown) is compatible with every class; two different known classes pay
    `class_mismatch_cost` (LiDAR class labels flicker, so a mismatch is not forbidden).
    """
    m2, logdet = mahalanobis_sq(track_pos, track_cov, meas_pos, meas_cov)
    dist = np.linalg.norm(meas_pos[None, :, :] - track_pos[:, None, :], axis=-1)
    allowed = (m2 <= chi2_gate) & (dist <= track_gate_m[:, None])
    tc, mc = track_class[:, None], meas_class[None, :]
    mismatch = (tc != mc) & (tc > 0) & (mc > 0)
    cost = m2 + logdet + class_mismatch_cost * mismatch
    return cost, allowed


def assign(cost: np.ndarray, allowed: np.ndarray) -> Assignment:
    """Minimum-cost one-to-one assignment restricted to allowed pairs."""
    n_tracks, n_meas = cost.shape
    if n_tracks == 0 or n_meas == 0 or not allowed.any():
        return Assignment(np.zeros((0, 2), int), np.arange(n_tracks), np.arange(n_meas))
    # Shift so every allowed cost is positive and below the forbidden value.
    finite = np.where(allowed, cost, np.inf)
    shifted = np.where(allowed, finite - finite[allowed].min() + 1.0, _FORBIDDEN)
    rows, cols = linear_sum_assignment(shifted)
    keep = allowed[rows, cols]
    matches = np.stack([rows[keep], cols[keep]], axis=1).astype(int)
    unmatched_t = np.setdiff1d(np.arange(n_tracks), matches[:, 0])
    unmatched_m = np.setdiff1d(np.arange(n_meas), matches[:, 1])
    return Assignment(matches, unmatched_t, unmatched_m)
