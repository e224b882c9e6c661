"""Kalman motion models for box centres in the ground plane, built on filterpy.

Two linear models share one small interface (`predict(dt)`, `update(z, R)`, gating helpers):

* ``ca`` - LATTE's constant-acceleration model (thesis section 5.3): state
  [px, py, vx, vy, ax, ay], observation H picks [px, py], Q and R diagonal, velocity and
  acceleration start at zero, and the update uses the Joseph form (filterpy's default).
* ``cv`` - constant velocity, state [px, py, vx, vy]; steadier for slow, erratic movers
  such as pedestrians.
* ``ctrv`` - constant turn rate and velocity, state [px, py, v, yaw, yaw_rate], an extended
  Kalman filter (our own prediction and Jacobian, filterpy's update): follows turning cars.
  The speed may go negative, so a heading initialised backwards (box yaw is ambiguous by pi)
  does not matter.

LATTE's Q is a fixed diagonal tuned at the sensor rate. Our inputs may arrive at any rate
(dropped frames, bags played slower), so the diagonal given here is per second and scaled
by dt: Q(dt) = diag(q) * dt, which equals LATTE's matrix at the nominal step.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
from filterpy.kalman import KalmanFilter

MOTION_MODELS = ("ca", "cv", "ctrv")
STATE_SIZE = {"ca": 6, "cv": 4, "ctrv": 5}
_YAW_RATE_EPS = 1e-4  # below this the turn is treated as a straight line


def transition_matrix(model: str, dt: float) -> np.ndarray:
    """F for a time step dt (seconds); block layout [p, v, a] per axis pair as in LATTE."""
    if model not in ("ca", "cv"):
        raise ValueError(f"no linear transition matrix for motion model '{model}'; linear ones are ca, cv")
    n = STATE_SIZE[model]
    f = np.eye(n)
    f[0, 2] = f[1, 3] = dt
    if model == "ca":
        f[0, 4] = f[1, 5] = 0.5 * dt * dt
        f[2, 4] = f[3, 5] = dt
    return f


def ctrv_step(x: np.ndarray, dt: float) -> tuple[np.ndarray, np.ndarray]:
    """CTRV prediction of state [px, py, v, yaw, yaw_rate] over dt and its Jacobian."""
    px, py, v, yaw, w = (float(c) for c in x)
    s0, c0 = np.sin(yaw), np.cos(yaw)
    jac = np.eye(5)
    if abs(w) > _YAW_RATE_EPS:
        yaw1 = yaw + w * dt
        s1, c1 = np.sin(yaw1), np.cos(yaw1)
        nx = px + v / w * (s1 - s0)
        ny = py + v / w * (c0 - c1)
        jac[0, 2], jac[1, 2] = (s1 - s0) / w, (c0 - c1) / w
        jac[0, 3], jac[1, 3] = v / w * (c1 - c0), v / w * (s1 - s0)
        jac[0, 4] = v * dt * c1 / w - v / (w * w) * (s1 - s0)
        jac[1, 4] = v * dt * s1 / w - v / (w * w) * (c0 - c1)
    else:
        # Second-order expansion of the arc in the yaw rate, so the model stays smooth at w = 0.
        yaw1 = yaw + w * dt
        h = 0.5 * w * dt * dt
        nx = px + v * (c0 * dt - s0 * h)
        ny = py + v * (s0 * dt + c0 * h)
        jac[0, 2], jac[1, 2] = c0 * dt - s0 * h, s0 * dt + c0 * h
        jac[0, 3], jac[1, 3] = -v * (s0 * dt + c0 * h), v * (c0 * dt - s0 * h)
        jac[0, 4], jac[1, 4] = -0.5 * v * s0 * dt * dt, 0.5 * v * c0 * dt * dt
    jac[3, 4] = dt
    return np.array([nx, ny, v, _wrap(yaw1), w]), jac


def _wrap(a: float) -> float:
    return (a + np.pi) % (2 * np.pi) - np.pi


@dataclass(frozen=True)
class MotionNoise:
    """Diagonals of Q (per second), R (metres^2) and P0 for one class.

    process: one value per state entry (6 for ca, 4 for cv, 5 for ctrv [px py v yaw yaw_rate];
    a longer list is truncated).
    measurement_std: LiDAR centre resolution in x and y (LATTE's Delta x, Delta y).
    initial_std: standard deviation of the initial state (position from the first box,
    velocity and acceleration unknown around zero).
    """

    process: tuple[float, ...] = (0.1, 0.1, 2.0, 2.0, 10.0, 10.0)
    measurement_std: tuple[float, float] = (0.25, 0.25)
    initial_std: tuple[float, ...] = (0.3, 0.3, 5.0, 5.0, 3.0, 3.0)

    def q_diag(self, model: str) -> np.ndarray:
        return _fit(self.process, STATE_SIZE[model], "process")

    def p0_diag(self, model: str) -> np.ndarray:
        return _fit(self.initial_std, STATE_SIZE[model], "initial_std") ** 2

    def r_matrix(self) -> np.ndarray:
        return np.diag(np.asarray(self.measurement_std, dtype=float) ** 2)


def _fit(values: Sequence[float], n: int, what: str) -> np.ndarray:
    arr = np.asarray(values, dtype=float)
    if arr.size < n:
        raise ValueError(f"{what} needs at least {n} values for this model, got {arr.size}")
    if np.any(arr[:n] < 0) or not np.all(np.isfinite(arr[:n])):
        raise ValueError(f"{what} values must be finite and >= 0, got {arr[:n].tolist()}")
    return arr[:n]


class CentreFilter:
    """One object's ground-plane centre under the chosen linear motion model."""

    def __init__(self, model: str, position: Sequence[float], noise: MotionNoise, heading: float = 0.0):
        if model not in STATE_SIZE:
            raise ValueError(f"unknown motion model '{model}'; choose one of {MOTION_MODELS}")
        n = STATE_SIZE[model]
        self.model = model
        self.noise = noise
        self._q_diag = noise.q_diag(model)
        self.kf = KalmanFilter(dim_x=n, dim_z=2)
        self.kf.x = np.zeros((n, 1))
        self.kf.x[:2, 0] = np.asarray(position, dtype=float)[:2]
        if model == "ctrv":
            self.kf.x[3, 0] = heading if np.isfinite(heading) else 0.0
        self.kf.P = np.diag(noise.p0_diag(model))
        self.kf.H = np.zeros((2, n))
        self.kf.H[0, 0] = self.kf.H[1, 1] = 1.0
        self.kf.R = noise.r_matrix()

    # ------------------------------------------------------------------ state access
    @property
    def position(self) -> np.ndarray:
        return self.kf.x[:2, 0].copy()

    @property
    def velocity(self) -> np.ndarray:
        if self.model == "ctrv":
            v, yaw = self.kf.x[2, 0], self.kf.x[3, 0]
            return np.array([v * np.cos(yaw), v * np.sin(yaw)])
        return self.kf.x[2:4, 0].copy()

    @property
    def state(self) -> np.ndarray:
        return self.kf.x[:, 0].copy()

    # ------------------------------------------------------------------ filter steps
    def predict(self, dt: float) -> None:
        if dt <= 0:
            return  # same stamp twice (two updates in one frame): nothing to propagate
        q = np.diag(self._q_diag * dt)
        if self.model == "ctrv":
            x, jac = ctrv_step(self.kf.x[:, 0], dt)
            self.kf.x = x.reshape(-1, 1)
            self.kf.P = jac @ self.kf.P @ jac.T + q
            return
        self.kf.predict(F=transition_matrix(self.model, dt), Q=q)

    def update(self, z: Sequence[float], measurement_std: float | Sequence[float] | None = None) -> None:
        r = None
        if measurement_std is not None:
            std = np.broadcast_to(np.asarray(measurement_std, dtype=float), (2,))
            r = np.diag(std ** 2)
        self.kf.update(np.asarray(z, dtype=float)[:2].reshape(2, 1), R=r)
        if self.model == "ctrv":
            self.kf.x[3, 0] = _wrap(self.kf.x[3, 0])

    # ------------------------------------------------------------------ gating helpers
    def innovation_covariance(self, measurement_std: float | Sequence[float] | None = None) -> np.ndarray:
        """S = H P H^T + R for the current (predicted) state."""
        p_pos = self.kf.P[:2, :2]
        if measurement_std is None:
            return p_pos + self.kf.R
        std = np.broadcast_to(np.asarray(measurement_std, dtype=float), (2,))
        return p_pos + np.diag(std ** 2)
