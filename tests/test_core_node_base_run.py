"""run_node, the standard main() of every node, in-process (issue 17: node_base mutation group).

From run_node's docstring and shutdown.py: a stop requested before start-up ends it with one
"stopped during start-up (<signal>)" line and exit code 0 without initialising rclpy; a node whose
construction is interrupted (KeyboardInterrupt, ExternalShutdownException) still exits 0; the spin
loop ends within 0.1 s of a stop request; a PerceptionNode then prints exactly one `SUMMARY {json}`
line (flushed, on stdout), a plain rclpy Node none; clean-up trouble is one line on stderr, never a
traceback; afterwards rclpy is shut down and the stop object ignores further signals.

shutdown.install is replaced by a fake stop object (or a fresh StopRequest) so that nothing here
touches the process-wide shutdown.STOP; rclpy.init is wrapped to record its arguments and always
keeps rclpy's own signal handlers out.
"""
from __future__ import annotations

import functools
import io
import itertools
import json
import os
import signal
import sys
import threading
import time

import pytest
import rclpy
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node
from rclpy.signals import SignalHandlerOptions

from squeeze_perception import node_base, shutdown
from squeeze_perception.node_base import ParamSpec, PerceptionNode, run_node

_ids = itertools.count()


class _Stop:
    """Stands in for shutdown.STOP: what run_node reads and calls."""

    def __init__(self, signal_name=None, installed=True, starting_up=True):
        self.signal = signal_name
        self.installed = installed
        self.starting_up = starting_up
        self.ignored = 0

    @property
    def requested(self) -> bool:
        return self.signal is not None

    def ignore_from_now_on(self) -> None:
        self.ignored += 1


class _Stream(io.StringIO):
    """sys.stdout / sys.stderr that remembers what had been written at the last flush."""

    def __init__(self):
        super().__init__()
        self.flushed = ""

    def flush(self):
        self.flushed = self.getvalue()
        super().flush()


@pytest.fixture()
def env(monkeypatch):
    """Fake stop object, recorded rclpy.init calls, captured stdout / stderr."""
    ns = type("Env", (), {})()
    ns.stop = _Stop()
    ns.inits = []
    ns.out, ns.err = _Stream(), _Stream()
    real_init = rclpy.init

    def init(*args, **kwargs):
        ns.inits.append((args, kwargs))
        kwargs = dict(kwargs, signal_handler_options=SignalHandlerOptions.NO)  # never rclpy's handlers
        return real_init(*args, **kwargs)

    monkeypatch.setattr(shutdown, "install", lambda: ns.stop)
    monkeypatch.setattr(rclpy, "init", init)

    def run(*args):
        """run_node with stdout / stderr captured (set here: pytest's capture swaps them between phases)."""
        saved = sys.stdout, sys.stderr
        sys.stdout, sys.stderr = ns.out, ns.err
        try:
            return run_node(*args)
        finally:
            sys.stdout, sys.stderr = saved

    ns.run = run
    monkeypatch.setattr(sys, "argv", ["run_node_test", "--ros-args", "-r", f"__node:=from_argv_{next(_ids)}"])
    yield ns
    rclpy.try_shutdown()


class _Perception(PerceptionNode):
    """Stops itself (sets the fake stop's signal) in its `stop_at`-th timer tick; counts ticks."""

    made: list = []
    stop: _Stop | None = None
    stop_at = 3

    def __init__(self):
        super().__init__(f"run_node_test_{next(_ids)}", [ParamSpec("x", 1.0, "")], stages=("work",))
        self.ticks = 0
        self.destroyed = 0
        self._name_seen = self.get_name()
        self.stats["work"].frames_in = 7
        self.stats["work"].count("widgets", 3)
        type(self).made.append(self)
        self.create_timer(0.01, self._tick)

    def _tick(self):
        self.ticks += 1
        if self.ticks == self.stop_at:
            self.request_stop()
        elif self.ticks > self.stop_at + 50:  # the loop ignored the request: end it another way
            rclpy.try_shutdown()

    def request_stop(self):
        self.stop.signal = "SIGINT"

    def destroy_node(self):
        self.destroyed += 1
        return super().destroy_node()


def _node_cls(stop, base=_Perception, **attrs):
    return type("Node_" + base.__name__.strip("_"), (base,), {"made": [], "stop": stop, **attrs})


def _summaries(text: str) -> list[dict]:
    return [json.loads(line[len("SUMMARY "):]) for line in text.splitlines() if line.startswith("SUMMARY")]


# ====================================================================== stop before start-up
def test_stop_requested_before_start_up_ends_quietly_without_rclpy(env):
    env.stop = _Stop("SIGTERM")
    cls = _node_cls(env.stop)
    assert env.run(cls, ["prog"]) == 0
    assert env.out.getvalue() == f"{cls.__name__}: stopped during start-up (SIGTERM)\n"
    assert env.out.flushed == env.out.getvalue()
    assert env.inits == [] and cls.made == [] and env.err.getvalue() == ""
    assert env.stop.ignored == 1 and env.stop.starting_up is False


def test_stop_before_start_up_names_a_callable_without_name_node(env):
    env.stop = _Stop("SIGINT")
    assert env.run(functools.partial(Node, "never_made"), None) == 0  # a partial has no __name__
    assert env.out.getvalue() == "node: stopped during start-up (SIGINT)\n"
    assert env.inits == []


# ====================================================================== interrupted construction
@pytest.mark.parametrize("exc", [KeyboardInterrupt, ExternalShutdownException])
def test_constructor_interrupted_exits_0_without_summary(env, exc):
    def make():
        raise exc()

    assert env.run(make, ["prog"]) == 0
    assert "SUMMARY" not in env.out.getvalue() and env.err.getvalue() == ""
    assert not rclpy.ok() and env.stop.ignored == 1 and len(env.inits) == 1


def test_interrupt_while_the_executor_is_made_still_prints_the_summary_and_destroys(env, monkeypatch):
    def executor():
        raise KeyboardInterrupt

    monkeypatch.setattr(node_base, "SingleThreadedExecutor", executor)
    cls = _node_cls(env.stop)
    assert env.run(cls, ["prog"]) == 0
    [node] = cls.made
    assert len(_summaries(env.out.getvalue())) == 1 and node.destroyed == 1
    assert env.err.getvalue() == "" and not rclpy.ok() and env.stop.ignored == 1


def test_an_unexpected_constructor_error_propagates_but_rclpy_is_shut_down(env):
    def make():
        raise RuntimeError("model file missing")

    with pytest.raises(RuntimeError, match="model file missing"):
        env.run(make, ["prog"])
    assert not rclpy.ok() and env.stop.ignored == 1 and env.out.getvalue() == ""


# ====================================================================== spin, summary, clean-up
def test_perception_node_spins_until_stop_then_prints_one_summary(env):
    cls = _node_cls(env.stop)
    assert env.run(cls, ["prog", "--ros-args", "-r", "__node:=renamed_by_args"]) == 0
    [node] = cls.made
    assert node.ticks == cls.stop_at  # the request ends the loop before the next spin
    out = env.out.getvalue()
    [summary] = _summaries(out)
    assert out == f"SUMMARY {json.dumps(summary)}\n"
    assert summary == {"node": "renamed_by_args", "stages": {"work": node.stats["work"].summary()}}
    assert summary["stages"]["work"]["frames_in"] == 7
    assert env.out.flushed == out and env.err.getvalue() == ""
    assert node.destroyed == 1 and not rclpy.ok()
    assert env.stop.ignored == 1 and env.stop.starting_up is False


def test_rclpy_init_gets_the_args_and_no_signal_handlers_when_stop_is_installed(env):
    cls = _node_cls(env.stop)
    args = ["prog", "--ros-args", "-r", "__node:=renamed_again"]
    env.run(cls, args)
    [(pos, kwargs)] = env.inits
    assert pos == () and kwargs == {"args": args, "signal_handler_options": SignalHandlerOptions.NO}


def test_rclpy_init_gets_sys_argv_without_args_and_default_handlers_when_not_installed(env):
    env.stop = _Stop(installed=False)
    cls = _node_cls(env.stop)
    env.run(cls)
    [(pos, kwargs)] = env.inits
    assert kwargs == {"args": sys.argv, "signal_handler_options": None}
    [summary] = _summaries(env.out.getvalue())
    assert summary["node"] == sys.argv[-1].split(":=")[1]  # the remapping in sys.argv took effect


def test_plain_node_prints_no_summary_and_the_loop_wakes_within_0_1_s(env):
    """No timers, no work: spin_once must return on its 0.1 s timeout to notice the request."""
    made = []

    def make():
        made.append(Node(f"plain_run_node_{next(_ids)}"))
        return made[-1]

    done = threading.Event()
    requested_at = []

    def request():
        time.sleep(0.3)
        requested_at.append(time.monotonic())
        env.stop.signal = "SIGTERM"
        if not done.wait(5.0):  # a loop that never wakes up: end it via the context
            rclpy.try_shutdown()

    thread = threading.Thread(target=request, daemon=True)
    thread.start()
    try:
        assert env.run(make, ["prog"]) == 0
        finished = time.monotonic()
    finally:
        done.set()
        thread.join()
    assert finished - requested_at[0] < 0.5
    assert env.out.getvalue() == "" and env.err.getvalue() == ""
    assert len(made) == 1 and not rclpy.ok() and env.stop.ignored == 1


def test_plain_node_destroy_failure_is_reported_under_its_ros_name(env):
    """A plain rclpy Node (no SUMMARY) whose destroy_node fails: one stderr line named by the node."""
    made = []

    class Plain(Node):
        def destroy_node(self):
            if not getattr(self, "failed", False):
                self.failed = True
                raise RuntimeError("busy")
            return super().destroy_node()

    name_id = []

    def make():
        name_id.append(next(_ids))
        made.append(Plain(f"plain_fail_{name_id[0]}"))
        made[-1].create_timer(0.01, lambda: setattr(env.stop, "signal", "SIGTERM"))
        return made[-1]

    assert env.run(make, ["prog"]) == 0
    assert env.out.getvalue() == ""
    assert env.err.getvalue() == f"plain_fail_{name_id[0]}: clean-up: RuntimeError('busy')\n"


def test_spin_ends_when_the_context_is_shut_down_from_outside(env):
    """rclpy shut down by someone else (ExternalShutdownException or rclpy.ok() False): same end."""
    cls = _node_cls(env.stop, request_stop=lambda self: rclpy.try_shutdown())
    assert env.run(cls, ["prog"]) == 0
    [node] = cls.made
    assert node.ticks == cls.stop_at and len(_summaries(env.out.getvalue())) == 1
    assert env.err.getvalue() == "" and env.stop.ignored == 1


def test_destroy_node_failure_is_one_stderr_line_and_still_exit_0(env):
    def destroy_node(self):
        self.destroyed += 1
        if self.destroyed == 1:  # fails once (rclpy's context clean-up destroys it again at shutdown)
            raise RuntimeError("handle busy")
        return PerceptionNode.destroy_node(self)

    cls = _node_cls(env.stop, destroy_node=destroy_node)
    assert env.run(cls, ["prog"]) == 0
    [node] = cls.made
    assert env.err.getvalue() == f"{cls.made[0]._name_seen}: clean-up: RuntimeError('handle busy')\n"
    assert env.err.flushed == env.err.getvalue() and "clean-up" not in env.out.getvalue()
    assert len(_summaries(env.out.getvalue())) == 1 and node.destroyed == 2
    assert not rclpy.ok() and env.stop.ignored == 1


def test_destroy_node_that_keeps_failing_still_exits_0(env):
    failing = [True]

    def destroy_node(self):
        if failing[0]:
            raise RuntimeError("handle busy")
        return PerceptionNode.destroy_node(self)

    cls = _node_cls(env.stop, destroy_node=destroy_node)
    try:
        assert env.run(cls, ["prog"]) == 0
    finally:
        failing[0] = False  # let the fixture shut the context down
    # both failures said on stderr, nothing silent: ours, then rclpy's own clean-up of the node
    lines = env.err.getvalue().splitlines()
    assert lines[0] == f"{cls.made[0]._name_seen}: clean-up: RuntimeError('handle busy')"
    assert len(lines) == 2 and lines[1].startswith("rclpy shutdown: ") and "handle busy" in lines[1]
    assert env.err.flushed == env.err.getvalue()  # flushed at once: the process may be killed next


def test_executor_is_shut_down_before_the_node_is_destroyed(env, monkeypatch):
    calls = []

    class Executor(node_base.SingleThreadedExecutor):
        def shutdown(self, timeout_sec=None):
            calls.append(("shutdown", timeout_sec))
            return super().shutdown(timeout_sec=timeout_sec)

    def destroy_node(self):
        calls.append(("destroy", None))
        return PerceptionNode.destroy_node(self)

    monkeypatch.setattr(node_base, "SingleThreadedExecutor", Executor)
    cls = _node_cls(env.stop, destroy_node=destroy_node)
    assert env.run(cls, ["prog"]) == 0
    assert [c for c, _ in calls] == ["shutdown", "destroy"]
    assert calls[0][1] is not None and 0 < calls[0][1] <= 1.0  # bounded: a stuck callback never hangs exit


# ====================================================================== the real StopRequest
def test_real_signals_stop_the_node_and_are_ignored_afterwards(env, monkeypatch):
    """A fresh StopRequest: SIGTERM to this process during the spin ends it; a second signal is
    only counted; after run_node both signals are ignored for good and rclpy is down."""
    stop = shutdown.StopRequest()
    monkeypatch.setattr(shutdown, "install", stop.install)

    def request_stop(self):
        os.kill(os.getpid(), signal.SIGTERM)
        os.kill(os.getpid(), signal.SIGINT)  # a terminal's Ctrl-C reaches a launched node twice

    cls = _node_cls(None, request_stop=request_stop)
    assert env.run(cls, ["prog"]) == 0
    [node] = cls.made
    assert stop.signal == "SIGTERM" and stop.count == 2 and node.ticks == cls.stop_at
    assert len(_summaries(env.out.getvalue())) == 1 and env.err.getvalue() == ""
    assert not rclpy.ok() and env.inits[0][1]["signal_handler_options"] == SignalHandlerOptions.NO
    assert signal.getsignal(signal.SIGINT) == signal.SIG_IGN == signal.getsignal(signal.SIGTERM)
    os.kill(os.getpid(), signal.SIGINT)  # ignored: the test goes on
    assert stop.count == 2


# ====================================================================== helpers around run_node's node
# (survivors of the node_base mutation run, 15:42 UTC: describe_model, ModelSlot, ParamSpec list
# entries, the incompatible-QoS advice, the telemetry stamp)
class _Log:
    def __init__(self):
        self.lines: list[tuple[str, object]] = []

    def __getattr__(self, level):
        return lambda msg, *a, **k: self.lines.append((level, msg))

    def at(self, level):
        return [m for lv, m in self.lines if lv == level]


def test_describe_model_names_model_and_backend_with_question_marks_when_unknown():
    from squeeze_perception.node_base import describe_model

    assert describe_model({"model": "squeezeseg", "backend": "cuda"}) == "model 'squeezeseg' on backend 'cuda'"
    assert describe_model({}) == "model '?' on backend '?'"
    assert describe_model({"backend": "cpu"}) == "model '?' on backend 'cpu'"
    assert describe_model({"model": "m"}) == "model 'm' on backend '?'"


def test_model_slot_before_any_load_has_no_model_and_no_error():
    from squeeze_perception.node_base import ModelSlot

    slot = ModelSlot(("model",), lambda p: object())
    assert slot.current is None and slot.error is None


def test_model_slot_without_a_logger_logs_to_the_node_base_python_logger(caplog):
    from squeeze_perception.node_base import ModelSlot

    slot = ModelSlot(("model",), lambda p: object())
    with caplog.at_level("DEBUG", logger="squeeze_perception.node_base"):
        assert slot.load({"model": "m", "backend": "cpu"})
    [rec] = [r for r in caplog.records if "loaded" in r.getMessage()]
    assert rec.name == "squeeze_perception.node_base" and rec.getMessage() == "loaded model 'm' on backend 'cpu'"


def test_model_slot_failed_build_traceback_at_debug_and_repr_when_the_message_is_empty():
    from squeeze_perception.node_base import ModelSlot

    def build(params):
        raise KeyError()  # str() is empty: the reason is its repr

    log = _Log()
    slot = ModelSlot(("model",), build, log)
    assert slot.load({"model": "m"}) is False
    assert slot.error == "KeyError()"
    [tb] = log.at("debug")
    assert tb.startswith("Traceback (most recent call last):") and tb.rstrip().endswith("KeyError")
    assert slot.prepare({"model": "m"}, {"model": "n"}) == "cannot load model 'n' on backend '?': KeyError()"


def test_list_entries_of_a_type_without_a_ros_name_are_named_by_python_type():
    spec = ParamSpec("blobs", [b"\x00"], "")
    assert spec.validate([b"a", b"b"]) == ([b"a", b"b"], None)
    value, reason = spec.validate([b"a", 3])
    assert reason == "parameter 'blobs': entry 1 must be a bytes, got int 3"


class _LoggedNode(PerceptionNode):
    def __init__(self, context):
        self.log = _Log()
        super().__init__(f"run_node_helpers_{next(_ids)}", [], stages=("work",), context=context)

    def get_logger(self):
        return self.log


def test_incompatible_qos_warning_says_how_to_fix_it(rclpy_context):
    from rclpy.qos import QoSPolicyKind

    node = _LoggedNode(rclpy_context)
    try:
        node._qos_warning("/x", "requests", node_base.SENSOR_QOS,
                          type("Info", (), {"total_count": 1, "last_policy_kind": QoSPolicyKind.RELIABILITY})())
        [line] = node.log.at("warning")
        assert line.endswith(". Match the peer (e.g. RViz: Topic > Reliability Policy) or remap to a compatible topic.")
    finally:
        node.destroy_node()


def test_telemetry_is_stamped_with_the_node_clock(rclpy_context):
    from builtin_interfaces.msg import Time

    node = _LoggedNode(rclpy_context)
    try:
        sent = []
        node._diag_pub.publish = sent.append
        node._telemetry_pub.publish = lambda arr: None
        before = node.get_clock().now().nanoseconds
        node.publish_telemetry()
        after = node.get_clock().now().nanoseconds
        [arr] = sent
        assert isinstance(arr.header.stamp, Time)
        assert before <= arr.header.stamp.sec * 10**9 + arr.header.stamp.nanosec <= after
        assert node.log.at("warning") == []
    finally:
        node.destroy_node()
