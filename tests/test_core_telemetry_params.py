"""Telemetry statistics, rate limiting and ParamSpec validation (ROS-free parts of the node base)."""
from __future__ import annotations

import numpy as np
import pytest

from squeeze_perception.node_base import ParamSpec
from squeeze_perception.telemetry import RateLimiter, StageStats


def test_stage_stats_summary_matches_numpy():
    st = StageStats("net", window=4)
    for v in [1.0, 2.0, 3.0, 4.0, 100.0]:  # the first value falls out of the window
        st.add_processing(v)
    st.frames_in, st.frames_out = 5, 4
    s = st.summary()
    assert s["processing_ms_mean"] == pytest.approx(np.mean([2, 3, 4, 100]))
    assert s["processing_ms_p99"] == pytest.approx(np.percentile([2, 3, 4, 100], 99))
    assert s["frames_in"] == 5 and s["frames_out"] == 4
    assert "latency_ms_mean" not in s


def test_errors_count_drops_and_keep_last_message():
    st = StageStats("points")
    st.error("bad cloud")
    st.error("NaNs removed", dropped=False)
    s = st.summary()
    assert s["errors"] == 2 and s["frames_dropped"] == 1 and s["last_error"] == "NaNs removed"


def test_energy_per_frame():
    st = StageStats("fpga")
    st.frames_out = 4
    for _ in range(4):
        st.add_energy(2.5)
    assert st.summary()["energy_mj_per_frame"] == pytest.approx(2.5)


def test_rate_limiter_allows_once_per_period():
    now = [0.0]
    rl = RateLimiter(5.0, clock=lambda: now[0])
    assert rl.ready("a") and not rl.ready("a") and rl.ready("b")
    now[0] = 4.9
    assert not rl.ready("a")
    now[0] = 5.0
    assert rl.ready("a")


@pytest.mark.parametrize("spec, value, expect_ok, coerced", [
    (ParamSpec("rate", 1.0, "", min=0.01, max=100.0), 2, True, 2.0),
    (ParamSpec("rate", 1.0, "", min=0.01, max=100.0), 0.0, False, None),
    (ParamSpec("rate", 1.0, "", min=0.01, max=100.0), "fast", False, None),
    (ParamSpec("top_k", 64, "", min=1, max=1000), True, False, None),
    (ParamSpec("top_k", 64, "", min=1, max=1000), 2.5, False, None),
    (ParamSpec("fov", "front", "", choices=("front", "full")), "full", True, "full"),
    (ParamSpec("fov", "front", "", choices=("front", "full")), "rear", False, None),
    (ParamSpec("loop", False, "", check=lambda v: None), True, True, True),
    (ParamSpec("bag", "", "", check=lambda v: "no such bag" if v == "x" else None), "x", False, None),
])
def test_param_validation(spec, value, expect_ok, coerced):
    got, reason = spec.validate(value)
    assert (reason is None) == expect_ok, reason
    if expect_ok:
        assert got == coerced and type(got) is type(coerced)
    else:
        assert spec.name in reason
