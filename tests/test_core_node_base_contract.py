"""PerceptionNode / ParamSpec contract, in-process (issue 17: node_base mutation group).

Written from node_base's docstrings, docs/interfaces.md (Telemetry) and docs/reliability.md:
parameter descriptors and validation (inclusive bounds, the refusal reason, overrides outside the
declared range), runtime changes and their hooks, QoS of subscriptions / publishers and the
incompatible-QoS warning, monitored inputs (skipped frames per publisher, stamp gaps, silence),
latency from header stamps with implausible stamps rejected, one log line per stage and cause per
5 s, diagnostics (levels, name, hardware_id, KeyValue keys and strings) and the telemetry JSON.

One rclpy context for the module; nodes are created in it and never spun: callbacks (the wrapped
subscription callback, QoS event handlers) are called directly, clocks are replaced where a
number must be exact.
"""
from __future__ import annotations

import array
import itertools
import json
import time
import types

import numpy as np
import pytest
import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rclpy.event_handler import QoSPublisherEventType, QoSSubscriptionEventType
from rclpy.parameter import Parameter
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSPolicyKind, ReliabilityPolicy

from squeeze_perception import node_base
from squeeze_perception.node_base import (COMMON_PARAMS, LATCHED_QOS, RESULT_QOS, SENSOR_QOS, FrameContext,
                                          ParamSpec, PerceptionNode, plain_value)

_ids = itertools.count()


class _Log:
    """Stands in for the node's rclpy logger: keeps (level, text)."""

    def __init__(self):
        self.lines: list[tuple[str, object]] = []

    def __getattr__(self, level):  # debug / info / warning / warn / error / fatal
        return lambda msg, *a, **k: self.lines.append((level, msg))

    def at(self, level):
        return [m for lv, m in self.lines if lv == level]


class _Node(PerceptionNode):
    def __init__(self, *args, **kwargs):
        self.log = _Log()  # before Node.__init__: the parameter loop already logs
        super().__init__(*args, **kwargs)

    def get_logger(self):
        return self.log


@pytest.fixture(scope="module")
def ctx():
    context = rclpy.context.Context()
    rclpy.init(context=context)
    yield context
    if context.ok():
        rclpy.shutdown(context=context)


@pytest.fixture()
def make(ctx):
    nodes = []

    def _make(params=(), stages=("points",), cls=_Node, overrides=None, **kwargs):
        node = cls(f"nb_contract_{next(_ids)}", list(params), list(stages), context=ctx,
                   parameter_overrides=[Parameter(k, value=v) for k, v in (overrides or {}).items()], **kwargs)
        nodes.append(node)
        return node

    yield _make
    for node in nodes:
        node.destroy_node()


@pytest.fixture()
def clock(monkeypatch):
    """node_base's monotonic clock, set by the test (perf_counter stays real)."""
    now = [1000.0]
    monkeypatch.setattr(node_base, "time", types.SimpleNamespace(monotonic=lambda: now[0],
                                                                 perf_counter=time.perf_counter))
    return now


def _values(status: DiagnosticStatus) -> dict[str, str]:
    return {kv.key: kv.value for kv in status.values}


def _fake_limiter_clock(node):
    now = [0.0]
    node._log_limiter._clock = lambda: now[0]
    return now


# ====================================================================== ParamSpec.descriptor
def test_descriptor_carries_description_read_only_and_dynamic_typing():
    d = ParamSpec("rate", 1.0, "frames per second", read_only=True).descriptor()
    assert d.description == "frames per second" and d.read_only is True and d.dynamic_typing is True
    d = ParamSpec("rate", 1.0, "frames per second").descriptor()
    assert d.read_only is False
    assert list(d.floating_point_range) == [] and list(d.integer_range) == [] and d.additional_constraints == ""


def test_descriptor_ranges_only_with_both_bounds_and_of_the_default_type():
    [r] = ParamSpec("rate", 1.0, "", min=0.5, max=20.0).descriptor().floating_point_range
    assert (r.from_value, r.to_value) == (0.5, 20.0)
    d = ParamSpec("rate", 1.0, "", min=0, max=20).descriptor()
    assert [(r.from_value, r.to_value) for r in d.floating_point_range] == [(0.0, 20.0)]
    assert list(d.integer_range) == []
    [r] = ParamSpec("top_k", 64, "", min=1, max=1000).descriptor().integer_range
    assert (r.from_value, r.to_value) == (1, 1000)
    for spec in (ParamSpec("rate", 1.0, "", min=0.5), ParamSpec("rate", 1.0, "", max=9.0),
                 ParamSpec("top_k", 64, "", min=1), ParamSpec("top_k", 64, "", max=9),
                 ParamSpec("flag", False, "", min=0, max=1), ParamSpec("name", "a", "", min=0, max=1)):
        d = spec.descriptor()
        assert list(d.floating_point_range) == [] and list(d.integer_range) == [], spec


def test_descriptor_lists_fixed_choices_only():
    d = ParamSpec("fov", "front", "", choices=("front", "full")).descriptor()
    assert d.additional_constraints == "one of ['front', 'full']"
    d = ParamSpec("model", "a", "", choices=lambda: ["a", "b"]).descriptor()  # known only at runtime
    assert d.additional_constraints == ""


# ====================================================================== ParamSpec.validate
@pytest.mark.parametrize("default, kind", [(1.0, "a double"), (1, "an integer"), (True, "a bool"),
                                           ("x", "a string"), ([1.0], "a list"), (b"", "a bytes")])
def test_type_refusal_names_the_wanted_and_the_given_type(default, kind):
    value, reason = ParamSpec("p", default, "").validate({"k": 1})
    assert reason == f"parameter 'p' must be {kind}, got dict {{'k': 1}}"


def test_a_list_value_for_a_scalar_parameter_is_refused():
    assert "must be a double" in ParamSpec("rate", 1.0, "").validate([1.0])[1]
    assert "must be a string" in ParamSpec("name", "a", "").validate(["a"])[1]


def test_bounds_are_inclusive_and_both_are_checked():
    spec = ParamSpec("rate", 1.0, "", min=0.5, max=20.0)
    assert spec.validate(0.5) == (0.5, None) and spec.validate(20.0) == (20.0, None)
    assert spec.validate(20.5)[1] == "parameter 'rate' = 20.5 is above the maximum 20.0"
    assert spec.validate(0.25)[1] == "parameter 'rate' = 0.25 is below the minimum 0.5"
    ints = ParamSpec("top_k", 64, "", min=1, max=1000)
    assert ints.validate(1) == (1, None) and ints.validate(1000) == (1000, None)
    assert "above the maximum" in ints.validate(1001)[1] and "below the minimum" in ints.validate(0)[1]


@pytest.mark.parametrize("spec", [ParamSpec("t", 1.0, "", min=0.0), ParamSpec("t", 1.0, "", max=10.0),
                                  ParamSpec("t", 1.0, "", min=0.0, max=10.0)])
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_refused_when_any_bound_is_set(spec, bad):
    assert spec.validate(bad)[1] == f"parameter 't' = {bad} is not a finite number"


def test_non_finite_allowed_without_bounds():
    value, reason = ParamSpec("t", 1.0, "").validate(float("inf"))
    assert reason is None and value == float("inf")


def test_choices_fixed_or_callable():
    fixed = ParamSpec("fov", "front", "", choices=("front", "full"))
    assert fixed.validate("full") == ("full", None)
    assert fixed.validate("rear")[1] == "parameter 'fov' = 'rear' is not one of ['front', 'full']"
    calls = []

    def registry():
        calls.append(1)
        return ["a", "b"]

    spec = ParamSpec("model", "a", "", choices=registry)
    assert spec.validate("b") == ("b", None) and calls  # asked at validation time
    assert spec.validate("c")[1] == "parameter 'model' = 'c' is not one of ['a', 'b']"


def test_check_reason_is_prefixed_with_the_parameter():
    spec = ParamSpec("bag", "", "", check=lambda v: "no such bag" if v == "x" else None)
    assert spec.validate("x")[1] == "parameter 'bag' = 'x': no such bag"
    assert spec.validate("y") == ("y", None)


def test_values_rclpy_delivers_become_plain_python():
    got, reason = ParamSpec("k", [0.0], "").validate(array.array("d", [1.5, 2.5]))
    assert reason is None and got == [1.5, 2.5] and all(type(v) is float for v in got)
    got, reason = ParamSpec("k", [0], "").validate((np.int64(3), 4))
    assert reason is None and got == [3, 4] and all(type(v) is int for v in got)
    assert plain_value(np.arange(3)) == [0, 1, 2] and type(plain_value(np.float32(0.5))) is float
    assert plain_value([np.bool_(True), (1, 2)]) == [True, [1, 2]]
    got, reason = ParamSpec("rate", 1.0, "").validate(np.int32(2))
    assert reason is None and got == 2.0 and type(got) is float


def test_list_entries_typed_like_the_default():
    doubles = ParamSpec("xs", [0.5, 1.5], "")
    got, reason = doubles.validate([1, 2.5])
    assert reason is None and got == [1.0, 2.5] and all(type(v) is float for v in got)
    assert doubles.validate([1.0, "a"])[1] == "parameter 'xs': entry 1 must be a double, got str 'a'"
    assert doubles.validate([True])[1] == "parameter 'xs': entry 0 must be a double, got bool True"
    ints = ParamSpec("ns", [1, 2], "")
    assert ints.validate([3, 4]) == ([3, 4], None)
    assert ints.validate([3, True])[1] == "parameter 'ns': entry 1 must be an integer, got bool True"
    assert ints.validate([3.0])[1] == "parameter 'ns': entry 0 must be an integer, got float 3.0"
    names = ParamSpec("topics", ["a"], "")
    assert names.validate(["x", "y"]) == (["x", "y"], None)
    assert names.validate(["x", 1])[1] == "parameter 'topics': entry 1 must be a string, got int 1"
    flags = ParamSpec("on", [True], "")
    assert flags.validate([False]) == ([False], None) and "entry 0 must be a bool" in flags.validate([1])[1]
    for default in ([], [1, "a"]):  # empty or mixed default: any entries
        assert ParamSpec("any", default, "").validate([1, "b", 2.5]) == ([1, "b", 2.5], None)
    assert ParamSpec("xs", [0.5], "", min=0.0, max=1.0).validate([5.0]) == ([5.0], None)  # bounds: scalars only
    assert "must be a list" in doubles.validate(1.0)[1]


# ====================================================================== PerceptionNode.__init__
def test_parameters_declared_with_descriptors_and_common_ones(make):
    spec = ParamSpec("top_k", 64, "boxes kept", min=1, max=1000)
    node = make([spec, ParamSpec("input_timeout_s", 2.0, "own", min=0.0, max=60.0)])
    assert node.p == {"top_k": 64, "input_timeout_s": 2.0, "stamp_max_age_s": 10.0,
                      "stamp_max_ahead_s": 0.5, "input_period_s": 0.0}  # a node's own spec wins
    d = node.describe_parameter("top_k")
    assert d.description == "boxes kept" and [(r.from_value, r.to_value) for r in d.integer_range] == [(1, 1000)]
    assert node.describe_parameter("input_timeout_s").description == "own"
    assert node.describe_parameter("stamp_max_age_s").description == COMMON_PARAMS[1].description
    assert node.get_parameter("top_k").value == 64
    assert not node.log.at("error") and not node.log.at("warning")
    assert node.stats["points"].name == "points"


def test_override_is_validated_and_coerced(make):
    node = make([ParamSpec("rate", 1.0, "", min=0.5, max=20.0)], overrides={"rate": 2, "input_period_s": 0.1})
    assert node.p["rate"] == 2.0 and type(node.p["rate"]) is float and node.p["input_period_s"] == 0.1
    assert not node.log.at("error")


def test_override_refused_by_validation_falls_back_to_the_default_with_the_reason(make):
    spec = ParamSpec("bag", "none", "bag name", check=lambda v: "no such bag" if v == "x" else None)
    node = make([ParamSpec("rate", 1.0, ""), spec], overrides={"bag": "x"})
    assert node.p["bag"] == "none" and node.get_parameter("bag").value == "none"
    assert node.log.at("error") == ["parameter 'bag' = 'x': no such bag; using the default 'none'"]


def test_override_outside_the_declared_range_falls_back_to_the_default(make):
    specs = [ParamSpec("rate", 1.0, "", min=0.5, max=20.0),
             ParamSpec("top_k", 64, "boxes kept", min=1, max=1000)]
    node = make(specs, overrides={"rate": 3.0, "top_k": 5000})  # rclpy refuses 5000 at declaration
    assert node.p["top_k"] == 64 and node.get_parameter("top_k").value == 64
    assert node.p["rate"] == 3.0
    d = node.describe_parameter("top_k")  # declared all the same, with its descriptor
    assert d.description == "boxes kept" and [(r.from_value, r.to_value) for r in d.integer_range] == [(1, 1000)]
    [line] = node.log.at("error")
    assert line.startswith("parameter 'top_k': ") and line.endswith("; using the default 64")


def test_publishers_timer_and_hardware_id(make):
    node = make(stages=("points", "image"))
    assert node._diag_pub.topic_name == "/diagnostics"
    assert node._telemetry_pub.topic_name == f"{node.get_fully_qualified_name()}/telemetry"
    for pub in (node._diag_pub, node._telemetry_pub):
        assert pub.qos_profile.reliability == ReliabilityPolicy.RELIABLE and pub.qos_profile.depth == 10
    assert node.hardware_id == "cpu"
    [timer] = [t for t in node.timers if t.callback == node.publish_telemetry]
    assert timer.timer_period_ns == 1_000_000_000  # once per second
    assert timer.clock is node.steady_clock  # wall clock, whatever use_sim_time says
    assert node.steady_clock.clock_type == rclpy.clock.ClockType.STEADY_TIME
    node2 = make(telemetry_period_s=0.25)
    [timer] = [t for t in node2.timers if t.callback == node2.publish_telemetry]
    assert timer.timer_period_ns == 250_000_000
    assert node._log_limiter.period_s == 5.0


def test_qos_profiles():
    assert SENSOR_QOS.reliability == ReliabilityPolicy.BEST_EFFORT
    assert RESULT_QOS.reliability == ReliabilityPolicy.RELIABLE and RESULT_QOS.depth == 10
    assert RESULT_QOS.durability == DurabilityPolicy.VOLATILE and RESULT_QOS.history == HistoryPolicy.KEEP_LAST
    assert LATCHED_QOS.durability == DurabilityPolicy.TRANSIENT_LOCAL and LATCHED_QOS.depth == 1


# ====================================================================== runtime parameter changes
class _Hooked(_Node):
    def __init__(self, *args, **kwargs):
        self.changing, self.changed = [], []
        super().__init__(*args, **kwargs)

    def on_parameters_changing(self, changes):
        self.changing.append(dict(changes))
        return "rate 13 is unlucky" if changes.get("rate") == 13.0 else None

    def on_parameters_changed(self, changes):
        self.changed.append(dict(changes))


def test_runtime_change_validated_coerced_and_hooks_called(make):
    node = make([ParamSpec("rate", 1.0, "", min=0.5, max=20.0)], cls=_Hooked)
    result = node.set_parameters([Parameter("rate", value=4)])[0]  # an int for a double
    assert result.successful is True
    assert node.p["rate"] == 4.0 and type(node.p["rate"]) is float
    assert node.changing == [{"rate": 4.0}] and node.changed == [{"rate": 4.0}]


def test_runtime_change_refused_by_validation(make):
    node = make([ParamSpec("rate", 1.0, "", min=0.5, max=20.0)], cls=_Hooked)
    result = node.set_parameters([Parameter("rate", value="fast")])[0]
    assert result.successful is False and result.reason == "parameter 'rate' must be a double, got str 'fast'"
    assert node.p["rate"] == 1.0 and node.changing == [] and node.changed == []
    assert node.log.at("warning") == [f"refused: {result.reason}"]


def test_runtime_change_refused_by_the_hook(make):
    node = make([ParamSpec("rate", 1.0, "", min=0.5, max=20.0)], cls=_Hooked)
    result = node.set_parameters([Parameter("rate", value=13.0)])[0]
    assert result.successful is False and result.reason == "rate 13 is unlucky"
    assert node.p["rate"] == 1.0 and node.get_parameter("rate").value == 1.0 and node.changed == []
    assert node.log.at("warning") == ["refused: rate 13 is unlucky"]


def test_rclpy_owned_parameters_pass_and_do_not_stop_the_rest(make):
    node = make([ParamSpec("rate", 1.0, "", min=0.5, max=20.0)], cls=_Hooked)
    result = node.set_parameters_atomically([Parameter("use_sim_time", value=False), Parameter("rate", value=2.0)])
    assert result.successful is True and node.p["rate"] == 2.0 and node.changed == [{"rate": 2.0}]
    assert "use_sim_time" not in node.p
    result = node.set_parameters([Parameter("use_sim_time", value=False)])[0]
    assert result.successful is True and node.changing == [{"rate": 2.0}]  # nothing of ours changed: no hook


# ====================================================================== subscribe / advertise / QoS warning
def _handler(entity, event_type):
    [h] = [h for h in entity.event_handlers if h.event_type == event_type]
    return h


def test_subscribe_default_qos_and_incompatible_qos_warning(make):
    node = make()
    got = []
    sub = node.subscribe(KeyValue, "/in_kv", got.append)
    assert sub.qos_profile.reliability == ReliabilityPolicy.BEST_EFFORT and sub.qos_profile.depth == SENSOR_QOS.depth
    assert node.inputs == {}  # no stage: not monitored
    sub.callback(KeyValue(key="a"))
    assert [m.key for m in got] == ["a"]
    h = _handler(sub, QoSSubscriptionEventType.RCL_SUBSCRIPTION_REQUESTED_INCOMPATIBLE_QOS)
    h.callback(types.SimpleNamespace(total_count=2, last_policy_kind=QoSPolicyKind.RELIABILITY))
    [line] = node.log.at("warning")
    assert line.startswith("incompatible QoS on '/in_kv' (2 peer(s)), policy RELIABILITY: ")
    assert "this node requests reliability=best_effort, durability=volatile." in line


def test_advertise_default_qos_and_incompatible_qos_warning(make):
    node = make()
    pub = node.advertise(KeyValue, "/out_kv")
    assert pub.qos_profile.reliability == ReliabilityPolicy.RELIABLE and pub.qos_profile.depth == 10
    latched = node.advertise(KeyValue, "/out_latched", LATCHED_QOS)
    assert latched.qos_profile.durability == DurabilityPolicy.TRANSIENT_LOCAL
    h = _handler(latched, QoSPublisherEventType.RCL_PUBLISHER_OFFERED_INCOMPATIBLE_QOS)
    h.callback(types.SimpleNamespace(total_count=1, last_policy_kind=QoSPolicyKind.DURABILITY))
    [line] = node.log.at("warning")
    assert line.startswith("incompatible QoS on '/out_latched' (1 peer(s)), policy DURABILITY: ")
    assert "this node offers reliability=reliable, durability=transient_local." in line


def _gid(c):
    return {"data": [c] * 16}


def test_monitored_input_counts_sequence_gaps_per_publisher(make):
    node = make(stages=("points", "image"))
    got = []
    sub = node.subscribe(KeyValue, "/in_a", got.append, stage="points")
    [monitor] = node.inputs["points"]
    assert monitor.topic == "/in_a" and monitor.period_s == 0.0 and "image" not in node.inputs
    st = node.stats["points"]
    for seq, gid in [(10, 1), (1, 2), (11, 1), (14, 1), (2, 2), (6, 2)]:  # gaps: 2 (pub 1), 3 (pub 2)
        sub.callback(KeyValue(key=str(seq)), {"publication_sequence_number": seq, "publisher_gid": _gid(gid)})
    assert st.frames_skipped == 5 and len(got) == 6 and got[0].key == "10"
    assert node.stats["image"].frames_skipped == 0


def test_monitored_input_without_header_or_gid(make):
    node = make()
    sub = node.subscribe(KeyValue, "/in_b", lambda m: None, stage="points")
    for seq in (1, 3):
        sub.callback(KeyValue(), {"publication_sequence_number": seq})
    assert node.stats["points"].frames_skipped == 1
    assert not node.log.at("debug")


def test_monitored_input_uses_header_stamps_at_a_known_period(make):
    node = make(overrides={"input_period_s": 0.1})
    sub = node.subscribe(DiagnosticArray, "/in_c", lambda m: None, stage="points")
    [monitor] = node.inputs["points"]
    assert monitor.period_s == 0.1
    for stamp_s in (5.0, 5.3, 5.4, 2.0):  # 2 skipped, none, then a backward jump (bag loop)
        msg = DiagnosticArray()
        msg.header.stamp.sec, msg.header.stamp.nanosec = int(stamp_s), int(round(stamp_s % 1 * 1e9))
        sub.callback(msg, {"publication_sequence_number": 0})  # 0: RMW gives no sequence numbers
    assert node.stats["points"].frames_skipped == 2 and monitor.jumps_back == 1 and monitor.received == 4


def test_monitor_bookkeeping_failure_never_costs_the_frame(make):
    node = make()
    got = []
    sub = node.subscribe(KeyValue, "/in_d", got.append, stage="points")
    sub.callback(KeyValue(key="x"), None)  # no message info at all
    assert [m.key for m in got] == ["x"]
    [line] = node.log.at("debug")
    assert "'/in_d'" in line


# ====================================================================== latency
def _header(sec, nanosec=0):
    h = DiagnosticArray().header
    h.stamp.sec, h.stamp.nanosec = sec, nanosec
    return h


def test_latency_is_node_clock_minus_header_stamp(make):
    node = make()
    node.get_clock = lambda: types.SimpleNamespace(now=lambda: types.SimpleNamespace(nanoseconds=10_000_000_000))
    assert node.latency_ms(_header(8, 500_000_000)) == 1500.0
    assert node.latency_ms(_header(10, 250_000_000)) == -250.0


def test_latency_samples_within_limits_inclusive_others_rejected(make):
    node = make(overrides={"stamp_max_age_s": 3.0, "stamp_max_ahead_s": 0.2})
    lat = [0.0]
    node.latency_ms = lambda header: lat[0]
    st = node.stats["points"]
    for ms in (3000.0, -200.0, 12.5):
        lat[0] = ms
        node.add_latency("points", object())
    assert st.stamps_rejected == 0 and st.warnings == 0 and sorted(st._latency_ms) == [-200.0, 12.5, 3000.0]
    for ms in (3000.5, -200.5):
        lat[0] = ms
        node.add_latency("points", object())
    assert st.stamps_rejected == 2 and st.warnings == 2 and len(st._latency_ms) == 3
    assert st.last_warning.startswith("header stamp 0.201 s ahead of the node clock (limit 0.2 s): "
                                      "not a latency sample (stamp 0, a bag loop")
    assert node.log.at("warning")[0].startswith("[points] header stamp 3 s behind the node clock (limit 3 s)")


def test_latency_defaults_ten_s_behind_half_a_second_ahead(make):
    node = make()
    lat = [0.0]
    node.latency_ms = lambda header: lat[0]
    st = node.stats["points"]
    for ms in (10_000.0, -500.0, -400.0, 5.0):
        lat[0] = ms
        node.add_latency("points", object())
    assert st.stamps_rejected == 0
    for ms in (10_000.5, -500.5):
        lat[0] = ms
        node.add_latency("points", object())
    assert st.stamps_rejected == 2


def test_frame_adds_latency_from_the_header(make):
    node = make()
    node.get_clock = lambda: types.SimpleNamespace(now=lambda: types.SimpleNamespace(nanoseconds=10_000_000_000))
    with node.frame("points", _header(9, 900_000_000)) as ctx:
        ctx.published = 1
    s = node.stats["points"].summary()
    assert s["latency_ms_mean"] == pytest.approx(100.0) and s["frames_out"] == 1 and s["frames_processed"] == 1


# ====================================================================== errors, warnings, dropped points
def test_report_error_counts_logs_once_per_cause_and_flags_at_once(make):
    node = make(stages=("points", "image"))
    now = _fake_limiter_clock(node)
    sent = []
    node._diag_pub.publish = sent.append
    node._telemetry_pub.publish = lambda arr: None
    node.report_error("points", "bad input: no intensity")
    st = node.stats["points"]
    assert st.errors == 1 and st.frames_failed == 1 and st.last_error == "bad input: no intensity"
    assert len(sent) == 1 and sent[0].status[0].level == DiagnosticStatus.ERROR  # flagged now
    node.report_error("points", "bad input: no intensity")  # same cause: no second line
    node.report_error("points", "NaNs removed", dropped=False)  # another cause: its own line
    node.report_error("image", "bad input: no intensity")  # another stage: its own line
    assert node.log.at("error") == ["[points] bad input: no intensity (dropped)", "[points] NaNs removed",
                                    "[image] bad input: no intensity (dropped)"]
    assert st.errors == 3 and st.frames_failed == 2
    assert sent[-1].status[1].level == DiagnosticStatus.ERROR  # image's first error flagged at once too
    now[0] = 4.9
    node.report_error("points", "bad input: no intensity")
    assert len(node.log.at("error")) == 3
    now[0] = 5.0  # 5 s later: logged again
    node.report_error("points", "bad input: no intensity")
    assert node.log.at("error")[-1] == "[points] bad input: no intensity (dropped)"
    node.publish_telemetry()
    n = len(sent)
    node.report_error("points", "late")  # first error since that report: flagged at once again
    assert len(sent) == n + 1 and sent[-1].status[0].level == DiagnosticStatus.ERROR


def test_report_error_cause_groups_messages(make):
    node = make()
    _fake_limiter_clock(node)
    head = "x" * 60
    node.report_error("points", head + "1 detail")  # no cause: the first 60 characters are the cause
    node.report_error("points", head + "2 detail")
    node.report_error("points", "frame 1 too big", cause="size")
    node.report_error("points", "frame 2 too big", cause="size")
    node.report_error("points", "frame 3 too big")
    assert node.log.at("error") == [f"[points] {head}1 detail (dropped)", "[points] frame 1 too big (dropped)",
                                    "[points] frame 3 too big (dropped)"]


def test_report_warning_counts_and_logs_once_per_cause(make):
    node = make()
    _fake_limiter_clock(node)
    node.report_warning("points", "stamp", "stamp 0")
    node.report_warning("points", "stamp", "stamp 1")
    node.report_warning("points", "clock", "clock jumped")
    st = node.stats["points"]
    assert st.warnings == 3 and st.last_warning == "clock jumped"
    assert node.log.at("warning") == ["[points] stamp 0", "[points] clock jumped"]


def test_report_dropped_points_counts_per_cause_one_line_each(make):
    node = make(stages=("points", "instances"))
    now = _fake_limiter_clock(node)
    node.report_dropped_points("points", {"range": 3, "intensity": 0, "non_finite": 2}, 120)
    st = node.stats["points"]
    assert st.counters == {"points_dropped_range": 3, "points_dropped_non_finite": 2}
    assert st.errors == 2 and st.frames_failed == 0 and st.frames_dropped == 0  # the frame is still processed
    assert st.last_error == "2 of 120 points dropped: non_finite"
    node.report_dropped_points("points", {"range": 4}, 130)  # same cause, other numbers: no new line
    assert st.counters["points_dropped_range"] == 7 and st.last_error == "4 of 130 points dropped: range"
    assert node.log.at("error") == ["[points] 3 of 120 points dropped: range",
                                    "[points] 2 of 120 points dropped: non_finite"]
    node.report_dropped_points("instances", {"size": 1}, 9, what="rows")
    assert node.stats["instances"].counters == {"rows_dropped_size": 1}
    assert node.log.at("error")[-1] == "[instances] 1 of 9 rows dropped: size"
    now[0] = 5.0
    node.report_dropped_points("points", {"range": 1}, 10)
    assert node.log.at("error")[-1] == "[points] 1 of 10 points dropped: range"


# ====================================================================== silence
class _Optional(_Node):
    def input_expected(self, stage):
        return stage != "camera"


def test_silent_inputs_longer_than_the_timeout(make, clock):
    node = make(stages=("points", "camera", "other"), overrides={"input_timeout_s": 2.0}, cls=_Optional)
    node.subscribe(KeyValue, "/a", lambda m: None, stage="points")
    node.subscribe(KeyValue, "/b", lambda m: None, stage="points")
    node.subscribe(KeyValue, "/cam", lambda m: None, stage="camera")
    a, b = node.inputs["points"]
    a.last_arrival_s, b.last_arrival_s = 97.5, 98.0  # silent 2.5 s and exactly the timeout
    assert node.silent_inputs("points", now_s=100.0) == [("/a", 2.5)]
    assert node.silent_inputs("points", now_s=101.0) == [("/a", 3.5), ("/b", 3.0)]
    clock[0] = 100.0  # now_s defaults to the monotonic clock
    assert node.silent_inputs("points") == [("/a", 2.5)]
    node.inputs["camera"][0].last_arrival_s = 0.0
    assert node.silent_inputs("camera", now_s=100.0) == []  # not expected (e.g. camera off)
    assert node.silent_inputs("other", now_s=100.0) == []  # nothing monitored
    assert PerceptionNode.input_expected(node, "points") is True


def test_no_silence_warning_with_timeout_zero(make):
    node = make(overrides={"input_timeout_s": 0.0})
    node.subscribe(KeyValue, "/a", lambda m: None, stage="points")
    node.inputs["points"][0].last_arrival_s = 0.0
    assert node.silent_inputs("points", now_s=1e6) == []


# ====================================================================== diagnostics
def test_diagnostic_status_ok_fields_and_value_strings(make, clock):
    node = make(stages=("points", "image"))
    st = node.stats["points"]
    st.add_processing(1.23456)
    st.frames_in = 3
    st.count("points_dropped_range", 4)
    status = node.diagnostic_status("points")
    assert status.level == DiagnosticStatus.OK and isinstance(status.level, bytes) and status.message == "ok"
    assert status.name == f"{node.get_fully_qualified_name()}: points" and status.hardware_id == "cpu"
    v = _values(status)
    assert v["frames_in"] == "3" and v["frames_dropped"] == "0" and v["points_dropped_range"] == "4"
    assert v["processing_ms_mean"] == "1.235" and v["processing_ms_max"] == "1.235"
    assert set(v) == set(st.summary()) and all(isinstance(x, str) for x in v.values())
    node.hardware_id = "cuda:0"
    assert node.diagnostic_status("image").hardware_id == "cuda:0"


def test_diagnostic_status_input_keys_per_monitored_input(make, clock):
    node = make(stages=("points", "image"))
    node.subscribe(KeyValue, "/a", lambda m: None, stage="points")
    node.subscribe(KeyValue, "/b", lambda m: None, stage="points")
    a, b = node.inputs["points"]
    clock[0] = 100.0
    a.last_arrival_s, b.last_arrival_s = 100.0 - 0.00046, 100.0 - 1.25
    b.jumps_back = 2
    v = _values(node.diagnostic_status("points"))
    assert v["input_silent_s"] == "0.000" and v["input_stamp_jumps_back"] == "0"
    assert v["input_silent_s_1"] == "1.250" and v["input_stamp_jumps_back_1"] == "2"
    assert "input_silent_s_2" not in v
    assert not any(k.startswith("input_") for k in _values(node.diagnostic_status("image")))


def test_diagnostic_levels_error_beats_warn_beats_ok_and_reset_after_a_report(make, clock):
    node = make(overrides={"input_timeout_s": 2.0})
    node._diag_pub.publish = lambda arr: None
    node._telemetry_pub.publish = lambda arr: None
    node.subscribe(KeyValue, "/a", lambda m: None, stage="points")
    node.subscribe(KeyValue, "/b", lambda m: None, stage="points")
    a, b = node.inputs["points"]
    clock[0] = 100.0
    a.last_arrival_s = b.last_arrival_s = 99.5
    assert node.diagnostic_status("points").level == DiagnosticStatus.OK
    node.report_warning("points", "stamp", "stamp rejected")  # the first warning: WARN
    status = node.diagnostic_status("points")
    assert (status.level, status.message) == (DiagnosticStatus.WARN, "stamp rejected")
    node.publish_telemetry()
    assert node.diagnostic_status("points").level == DiagnosticStatus.OK  # reported: back to OK
    a.last_arrival_s, b.last_arrival_s = 92.8, 91.0  # silent 7.2 s and 9 s
    status = node.diagnostic_status("points")
    assert status.level == DiagnosticStatus.WARN
    assert status.message == "no message on '/a' for 7.2 s; no message on '/b' for 9.0 s"
    node.report_error("points", "bad input: x")  # flagged (published) at once
    node._errors_reported["points"] = 0  # as if not reported yet
    status = node.diagnostic_status("points")
    assert (status.level, status.message) == (DiagnosticStatus.ERROR, "bad input: x")
    node.publish_telemetry()
    assert node.diagnostic_status("points").level == DiagnosticStatus.WARN  # error reported, silence remains
    a.last_arrival_s = b.last_arrival_s = 100.0
    node.report_warning("points", "stamp", "w1")
    node.report_warning("points", "stamp", "w2")
    assert node.diagnostic_status("points").level == DiagnosticStatus.WARN
    node.publish_telemetry()
    assert node.diagnostic_status("points").level == DiagnosticStatus.OK


def test_publish_telemetry_sends_one_array_on_both_topics(make):
    node = make(stages=("points", "image"))
    diag, tele = [], []
    node._diag_pub.publish = diag.append
    node._telemetry_pub.publish = tele.append
    node.publish_telemetry()
    assert len(diag) == 1 and tele == diag
    assert [s.name.rsplit(": ", 1)[1] for s in diag[0].status] == ["points", "image"]


def test_publish_telemetry_failure_is_a_warning_and_the_error_stays_flagged(make):
    node = make()
    node._telemetry_pub.publish = lambda arr: None

    def broken(arr):
        raise RuntimeError("publisher's context is invalid")

    node._diag_pub.publish = broken
    node.report_error("points", "bad input")  # its immediate report fails: never raises
    assert node.log.at("warning") == ["telemetry not published: publisher's context is invalid"]
    assert node.diagnostic_status("points").level == DiagnosticStatus.ERROR


def test_summary_json_names_node_and_stages(make):
    node = make(stages=("points", "image"))
    node.stats["points"].frames_in = 2
    got = json.loads(node.summary_json())
    assert got["node"] == node.get_name()
    assert got["stages"] == {"points": node.stats["points"].summary(), "image": node.stats["image"].summary()}
    assert got["stages"]["points"]["frames_in"] == 2


# ====================================================================== record_inference
class _Run:
    def __init__(self, latency_ms=None, energy_mj=None, **kw):
        self.latency_ms, self.energy_mj = latency_ms, energy_mj
        self.__dict__.update(kw)


def test_record_inference_latency_energy_and_counters(make):
    node = make(stages=("network", "crf", "points"))
    ctx = FrameContext(stage="network")
    node.record_inference(ctx, ["network", "crf"], None)  # no run: nothing
    assert ctx.energy_mj is None and node.stats["network"].info == {}
    run = _Run(latency_ms=5.0, energy_mj=2.0, emulated=True, energy_source="model", counters={"cycles": 10})
    node.record_inference(ctx, ["network", "crf"], run)
    net, crf = node.stats["network"], node.stats["crf"]
    assert ctx.energy_mj == 2.0
    assert list(net._inference_ms) == [5.0] and list(crf._inference_ms) == [5.0]
    assert net.info == {"inference_latency": "emulated", "energy_source": "model"} == crf.info
    assert net.energy_mj_total == 0.0 and crf.energy_mj_total == 2.0  # the frame's stage gets it at the end
    assert net.counters == {"backend_cycles": 10} == crf.counters
    node.record_inference(ctx, ["network", "crf"], _Run(latency_ms=7.0, energy_mj=1.5, counters={"cycles": 25.0}))
    assert ctx.energy_mj == 3.5 and crf.energy_mj_total == 3.5 and list(net._inference_ms) == [5.0, 7.0]
    assert net.counters == {"backend_cycles": 25} and type(net.counters["backend_cycles"]) is int  # running totals
    assert net.info == {"inference_latency": "measured", "energy_source": "none"}
    node.record_inference(ctx, ["network"], _Run())  # neither latency nor energy
    assert ctx.energy_mj == 3.5 and list(net._inference_ms) == [5.0, 7.0] and net.energy_mj_total == 0.0
    assert node.stats["points"].info == {} and node.stats["points"].counters == {}


def test_frame_adds_the_inference_energy_to_its_stage(make):
    node = make(stages=("network",))
    with node.frame("network") as ctx:
        node.record_inference(ctx, ["network"], _Run(latency_ms=1.0, energy_mj=4.0))
        ctx.published = 1
    s = node.stats["network"].summary()
    assert s["energy_mj_total"] == 4.0 and s["energy_mj_per_frame"] == 4.0 and s["inference_ms_mean"] == 1.0
