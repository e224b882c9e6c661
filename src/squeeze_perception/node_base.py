"""Base class shared by every squeeze_perception node.

Gives each node: parameters declared with descriptors and validated (a bad value is
refused with a reason, never crashes the node), deliberate QoS with a warning when a peer's
QoS is incompatible, per-stage processing time and latency from the input header stamp,
rate-limited bad-input errors that also become diagnostics, and a telemetry publisher
(`/diagnostics` plus `~/telemetry`). Subclasses only convert messages and call pure cores.
Model nodes hold their model in a ModelSlot: one way to load it and to switch it at runtime.
"""
from __future__ import annotations

import array
import json
import logging
import math
import sys
import time
import traceback
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rcl_interfaces.msg import (FloatingPointRange, IntegerRange, ParameterDescriptor,
                                SetParametersResult)
from rclpy.event_handler import PublisherEventCallbacks, SubscriptionEventCallbacks
from rclpy.exceptions import InvalidParameterValueException
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import (DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy,
                       qos_profile_sensor_data)

from . import shutdown
from .msgs_conv import MessageFormatError, stamp_to_ns
from .telemetry import InputMonitor, RateLimiter, StageStats

# Sensor inputs: best effort (compatible with both reliable and best-effort publishers,
# and drops stale frames instead of queueing them behind a slow model).
SENSOR_QOS: QoSProfile = qos_profile_sensor_data
# Results: reliable so RViz (reliable by default) and loggers receive every message.
RESULT_QOS = QoSProfile(reliability=ReliabilityPolicy.RELIABLE, history=HistoryPolicy.KEEP_LAST,
                        depth=10, durability=DurabilityPolicy.VOLATILE)
# Latched: static data a late joiner still needs (camera info, static transforms).
LATCHED_QOS = QoSProfile(reliability=ReliabilityPolicy.RELIABLE, history=HistoryPolicy.KEEP_LAST,
                         depth=1, durability=DurabilityPolicy.TRANSIENT_LOCAL)

_TYPE_NAMES = {bool: "bool", int: "integer", float: "double", str: "string", list: "list"}


@dataclass(frozen=True)
class ParamSpec:
    """A node parameter: default (its type is the parameter's type), limits and a check."""

    name: str
    default: Any
    description: str
    min: float | None = None
    max: float | None = None
    choices: Sequence[Any] | Callable[[], Sequence[Any]] | None = None
    check: Callable[[Any], str | None] | None = None  # returns a reason when invalid
    read_only: bool = False

    def descriptor(self) -> ParameterDescriptor:
        d = ParameterDescriptor(description=self.description, read_only=self.read_only,
                                dynamic_typing=True)  # we type-check ourselves, with clear text
        if isinstance(self.default, float) and self.min is not None and self.max is not None:
            d.floating_point_range = [FloatingPointRange(from_value=float(self.min), to_value=float(self.max))]
        elif isinstance(self.default, int) and not isinstance(self.default, bool) \
                and self.min is not None and self.max is not None:
            d.integer_range = [IntegerRange(from_value=int(self.min), to_value=int(self.max))]
        if self.choices is not None and not callable(self.choices):
            d.additional_constraints = f"one of {list(self.choices)}"
        return d

    def validate(self, value: Any) -> tuple[Any, str | None]:
        """(coerced value, None) or (value, reason).

        Accepts what rclpy delivers: `array.array` for double/integer arrays set at runtime
        (`ros2 param set`), lists from overrides, tuples, numpy scalars and arrays; the
        coerced value is plain Python (list of float/int/bool/str, float, int, bool, str).
        Bounds are inclusive: `min` and `max` themselves are accepted.
        """
        value = plain_value(value)
        want = type(self.default)
        if want is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if want is list and isinstance(value, list):
            value, reason = self._list_items(value)
            if reason:
                return value, f"parameter '{self.name}': {reason}"
        elif not isinstance(value, want) or (want is int and isinstance(value, bool)):
            return value, (f"parameter '{self.name}' must be {_a(_TYPE_NAMES.get(want, want.__name__))}, "
                           f"got {type(value).__name__} {value!r}")
        if want is float and not math.isfinite(value) and (self.min is not None or self.max is not None):
            return value, f"parameter '{self.name}' = {value} is not a finite number"
        if self.min is not None and want is not list and value < self.min:
            return value, f"parameter '{self.name}' = {value} is below the minimum {self.min}"
        if self.max is not None and want is not list and value > self.max:
            return value, f"parameter '{self.name}' = {value} is above the maximum {self.max}"
        if self.choices is not None:
            choices = list(self.choices() if callable(self.choices) else self.choices)
            if value not in choices:
                return value, f"parameter '{self.name}' = {value!r} is not one of {choices}"
        if self.check is not None:
            reason = self.check(value)
            if reason:
                return value, f"parameter '{self.name}' = {value!r}: {reason}"
        return value, None

    def _list_items(self, value: list) -> tuple[list, str | None]:
        """Entries typed like the default's (ints become floats in a double list)."""
        kinds = {type(v) for v in self.default}
        if len(kinds) != 1:  # empty or mixed default: any entries
            return value, None
        want = kinds.pop()
        out = []
        for i, v in enumerate(value):
            if want is float and isinstance(v, int) and not isinstance(v, bool):
                v = float(v)
            if not isinstance(v, want) or (want is int and isinstance(v, bool)):
                return value, (f"entry {i} must be {_a(_TYPE_NAMES.get(want, want.__name__))}, "
                               f"got {type(v).__name__} {v!r}")
            out.append(v)
        return out, None


def _a(noun: str) -> str:
    return f"an {noun}" if noun[:1] in "aeiou" else f"a {noun}"


def plain_value(value: Any) -> Any:
    """rclpy / numpy parameter values -> plain Python: array.array, tuple, ndarray -> list;
    numpy scalars -> int / float / bool / str."""
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (array.array, tuple, list)):
        return [plain_value(v) for v in value]
    return value


# Declared by every PerceptionNode (docs/reliability.md): input silence, stamp plausibility,
# skipped-frame detection. A node's own ParamSpec of the same name wins.
COMMON_PARAMS: tuple = (
    ParamSpec("input_timeout_s", 5.0, "Diagnostics level WARN for a subscribed input silent longer than this "
              "(s; 0 = never)", min=0.0, max=86400.0),
    ParamSpec("stamp_max_age_s", 10.0, "Header stamps older than this (s, node clock) are counted in "
              "stamps_rejected and kept out of the latency statistics", min=0.001, max=1e9),
    ParamSpec("stamp_max_ahead_s", 0.5, "Header stamps further ahead of the node clock than this (s) are "
              "counted in stamps_rejected and kept out of the latency statistics", min=0.0, max=1e9),
    ParamSpec("input_period_s", 0.0, "Known input period (s, e.g. 0.1 for the 10 Hz sensors): header-stamp "
              "gaps count skipped frames when the publisher gives no sequence numbers (0 = sequence numbers "
              "only)", min=0.0, max=3600.0),
)


# Parameters of a model node whose change means loading the model again (ModelSlot's reload keys).
MODEL_RELOAD_KEYS: tuple[str, ...] = ("model", "backend", "weights", "num_threads")


def describe_model(params: dict[str, Any]) -> str:
    """"model 'X' on backend 'Y'": what ModelSlot's log lines and refusals name."""
    return f"model '{params.get('model', '?')}' on backend '{params.get('backend', '?')}'"


def backend_choice(obj: Any, requested: str) -> tuple[str, str | None]:
    """(the backend that runs, why) of a loaded model (a Detector, a SegmentationPipeline: its
    `backend`) asked for under backend `requested`: `auto` says what it resolved to and why
    (backends.auto), any other backend is itself."""
    from .backends.common import resolved_backend

    return resolved_backend(getattr(obj, "backend", None), requested)


def describe_choice(obj: Any, params: dict[str, Any]) -> str:
    """": onnxruntime-int8 (int8 graph models/x.int8.onnx)" after a load line when the backend
    chose at load time; "" otherwise."""
    requested = str(params.get("backend", ""))
    name, reason = backend_choice(obj, requested)
    return f": {name} ({reason})" if reason else ""


def close_backend(obj: Any) -> None:
    """Release what a loaded model holds: `obj.close()` when it has one, else `obj.backend.close()`
    (e.g. the synetgy backend's link to synetgy_node); nothing for backends without `close`."""
    close = getattr(obj, "close", None)
    if not callable(close):
        close = getattr(getattr(obj, "backend", None), "close", None)
    if callable(close):
        close()


class ModelSlot:
    """The model a node runs (a Detector, a SegmentationPipeline, ...), loaded at start-up and
    switched at runtime the same way in every model node: load first, swap on success, refuse
    the parameter change with the reason otherwise, and close the replaced model's backend.

    ROS-free (a node passes its params dict and logger). The node calls `load(self.p)` once,
    `prepare(self.p, changes)` from `on_parameters_changing` (returning its refusal) and
    `commit()` from `on_parameters_changed`; it runs `current` and reports `error` while
    `current` is None. `build(params) -> object` raises (e.g. ModelLoadError) when it cannot load.
    """

    def __init__(self, reload_keys: Sequence[str], build: Callable[[dict[str, Any]], Any],
                 logger: Any = None, describe: Callable[[dict[str, Any]], str] = describe_model,
                 close: Callable[[Any], None] = close_backend):
        self.reload_keys = tuple(reload_keys)
        self.build = build
        self.describe = describe
        self.close_model = close
        self.log = logger if logger is not None else logging.getLogger(__name__)
        self.current: Any = None
        self.error: str | None = None  # why `current` is None: the last load that failed
        self.warm_up_ms: float | None = None  # the last built model's warm-up inference (None: it has none)
        self._pending: tuple[Any, dict[str, Any]] | None = None  # (candidate, its params)

    def _build(self, params: dict[str, Any]) -> tuple[Any, str | None]:
        """Build, then warm up: a model with a `warm_up()` (Detector, SegmentationPipeline) runs
        its first inference here, before it serves, so the first sensor frame after a load or a
        switch does not pay the backend's lazy set-up (1.1-1.4 s measured); a model that cannot
        even do that is refused like one that does not load."""
        obj = None
        self.warm_up_ms = None
        try:
            obj = self.build(params)
            warm_up = getattr(obj, "warm_up", None)
            if callable(warm_up):
                self.warm_up_ms = warm_up()
            return obj, None
        except Exception as exc:  # noqa: BLE001 - any load failure is reported, never fatal
            self.log.debug(traceback.format_exc())
            if obj is not None:
                self._close(obj)
            return None, str(exc) or repr(exc)

    def _warmed(self) -> str:
        return "" if self.warm_up_ms is None else f"; warmed up, first inference {self.warm_up_ms:.0f} ms"

    def load(self, params: dict[str, Any]) -> bool:
        """Start-up load. On failure `current` stays None, `error` holds the reason and one line
        says the node keeps running; True when loaded."""
        obj, reason = self._build(dict(params))
        if reason is not None:
            self.error = reason
            keys = ", ".join(f"'{k}'" for k in self.reload_keys)
            self.log.error(f"{self.describe(params)} not loaded: {reason}. The node keeps running and reports "
                           f"an error per input; set {keys} to a loadable combination.")
            return False
        self.current, self.error = obj, None
        self.log.info(f"loaded {self.describe(params)}{describe_choice(obj, params)}{self._warmed()}")
        return True

    def needs_reload(self, changes: dict[str, Any]) -> bool:
        return any(k in changes for k in self.reload_keys)

    def prepare(self, params: dict[str, Any], changes: dict[str, Any]) -> str | None:
        """When `changes` set a reload key: build the candidate from `params` updated with
        `changes`, kept for commit(). Returns the refusal reason when it cannot load (the
        current model stays); None otherwise. A change of other keys builds nothing."""
        self.discard()  # a candidate whose change was refused later is never swapped in
        if not self.needs_reload(changes):
            return None
        wanted = {**params, **changes}
        obj, reason = self._build(wanted)
        if reason is not None:
            if self.current is None:
                self.error = reason
            return f"cannot load {self.describe(wanted)}: {reason}"
        self._pending = (obj, wanted)
        return None

    def commit(self) -> bool:
        """Swap the prepared candidate in and close the one it replaces; False when nothing was
        prepared (the change set no reload key)."""
        if self._pending is None:
            return False
        (obj, params), self._pending = self._pending, None
        previous, self.current, self.error = self.current, obj, None
        if previous is not None:
            self._close(previous)
        self.log.info(f"switched to {self.describe(params)}{describe_choice(obj, params)}{self._warmed()}")
        return True

    def discard(self) -> None:
        """Drop (and close) a prepared candidate that will not be committed."""
        if self._pending is not None:
            (obj, _), self._pending = self._pending, None
            self._close(obj)

    def _close(self, obj: Any) -> None:
        try:
            self.close_model(obj)
        except Exception as exc:  # noqa: BLE001 - the switch has happened; say so, never raise
            self.log.warning(f"closing the previous model's backend failed: {exc!r}")


@dataclass
class FrameContext:
    """Filled in by a node while it handles one input message."""

    stage: str = ""
    published: int = 0
    energy_mj: float | None = None  # the frame's energy; frame() adds it to the stage's total
    extra: dict[str, Any] = field(default_factory=dict)


class PerceptionNode(Node):
    """Parameters, QoS, telemetry and error handling for one perception stage or more."""

    def __init__(self, node_name: str, params: Sequence[ParamSpec], stages: Sequence[str],
                 telemetry_period_s: float = 1.0, **kwargs):
        super().__init__(node_name, **kwargs)
        # kept for the exit summary: once the context is shut down from outside, rclpy has
        # destroyed the node and get_name() raises
        self.name_at_start = self.get_name()
        own = {p.name for p in params}
        params = [*params, *(c for c in COMMON_PARAMS if c.name not in own)]
        self._specs = {p.name: p for p in params}
        self.p: dict[str, Any] = {}
        self._log_limiter = RateLimiter(5.0)
        for spec in params:
            try:
                value = self.declare_parameter(spec.name, spec.default, spec.descriptor()).value
                value, reason = spec.validate(value)
            except InvalidParameterValueException as exc:  # override outside the declared range
                reason = f"parameter '{spec.name}': {exc}"
                self.declare_parameter(spec.name, spec.default, spec.descriptor(), ignore_override=True)
            if reason:
                self.get_logger().error(f"{reason}; using the default {spec.default!r}")
                value = spec.default
                self.set_parameters([rclpy.parameter.Parameter(spec.name, value=value)])
            self.p[spec.name] = value
        self.add_on_set_parameters_callback(self._on_set_parameters)
        self.stats: dict[str, StageStats] = {s: StageStats(s) for s in stages}
        self._errors_reported: dict[str, int] = {s: 0 for s in stages}
        self._warnings_reported: dict[str, int] = {s: 0 for s in stages}
        self.inputs: dict[str, list[InputMonitor]] = {}  # stage -> monitored subscriptions
        self.hardware_id = "cpu"
        self._diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", RESULT_QOS)
        self._telemetry_pub = self.create_publisher(DiagnosticArray, "~/telemetry", RESULT_QOS)
        # Wall clock (steady), whatever use_sim_time says: diagnostics keep coming while the
        # bag's /clock is paused, slow or gone.
        self.steady_clock = rclpy.clock.Clock(clock_type=rclpy.clock.ClockType.STEADY_TIME)
        self.create_timer(telemetry_period_s, self.publish_telemetry, clock=self.steady_clock)

    # ------------------------------------------------------------------ parameters
    def _on_set_parameters(self, params) -> SetParametersResult:
        changes: dict[str, Any] = {}
        for param in params:
            spec = self._specs.get(param.name)
            if spec is None:  # use_sim_time and other rclpy-owned parameters
                continue
            value, reason = spec.validate(param.value)
            if reason:
                self.get_logger().warning(f"refused: {reason}")
                return SetParametersResult(successful=False, reason=reason)
            changes[param.name] = value
        if changes:
            reason = self.on_parameters_changing(changes)
            if reason:
                self.get_logger().warning(f"refused: {reason}")
                return SetParametersResult(successful=False, reason=reason)
            self.p.update(changes)
            self.on_parameters_changed(changes)
        return SetParametersResult(successful=True)

    def on_parameters_changing(self, changes: dict[str, Any]) -> str | None:
        """Hook: prepare a change (e.g. load a new model); return a reason to refuse it."""
        return None

    def on_parameters_changed(self, changes: dict[str, Any]) -> None:
        """Hook: called after accepted changes were stored in self.p."""

    # ------------------------------------------------------------------ QoS-aware pub/sub
    def subscribe(self, msg_type, topic: str, callback, qos: QoSProfile = SENSOR_QOS, stage: str | None = None):
        """Subscribe with a QoS-mismatch warning. With `stage`, the input is monitored: frames the
        queue overwrote (publisher sequence gaps) count as that stage's `frames_skipped`, and its
        diagnostics go WARN after `input_timeout_s` without a message."""
        events = SubscriptionEventCallbacks(
            incompatible_qos=lambda info, t=topic: self._qos_warning(t, "requests", qos, info))
        if stage is not None:
            monitor = InputMonitor(topic, period_s=self.p.get("input_period_s", 0.0))
            self.inputs.setdefault(stage, []).append(monitor)
            inner = callback

            def callback(msg, info, _monitor=monitor, _stats=self.stats[stage], _inner=inner):
                try:
                    header = getattr(msg, "header", None)
                    gid = (info.get("publisher_gid") or {}).get("data")
                    _stats.frames_skipped += _monitor.observe(
                        info.get("publication_sequence_number"), bytes(gid) if gid is not None else None,
                        stamp_to_ns(header.stamp) if header is not None else None)
                except Exception as exc:  # noqa: BLE001 - bookkeeping must never cost a frame
                    self.get_logger().debug(f"input monitor on '{topic}': {exc!r}")
                _inner(msg)
        return self.create_subscription(msg_type, topic, callback, qos, event_callbacks=events)

    def advertise(self, msg_type, topic: str, qos: QoSProfile = RESULT_QOS):
        events = PublisherEventCallbacks(
            incompatible_qos=lambda info, t=topic: self._qos_warning(t, "offers", qos, info))
        return self.create_publisher(msg_type, topic, qos, event_callbacks=events)

    def _qos_warning(self, topic: str, verb: str, qos: QoSProfile, info) -> None:
        from rclpy.event_handler import qos_policy_name_from_kind

        policy = qos_policy_name_from_kind(info.last_policy_kind)
        self.get_logger().warning(
            f"incompatible QoS on '{topic}' ({info.total_count} peer(s)), policy {policy}: this node "
            f"{verb} reliability={qos.reliability.name.lower()}, durability={qos.durability.name.lower()}. "
            "Match the peer (e.g. RViz: Topic > Reliability Policy) or remap to a compatible topic.")

    # ------------------------------------------------------------------ per-frame handling
    @contextmanager
    def frame(self, stage: str, header: Any = None) -> Iterator[FrameContext]:
        """Wrap the handling of one input: timing, latency, counters and error capture.

        Exceptions never escape (the node keeps running): bad input is logged, counted as
        a dropped frame and reported in diagnostics.
        """
        stats = self.stats[stage]
        stats.frames_in += 1
        ctx = FrameContext(stage=stage)
        t0 = time.perf_counter()
        try:
            yield ctx
        except MessageFormatError as exc:
            self.report_error(stage, f"bad input: {exc}")
        except Exception as exc:  # noqa: BLE001 - a node must survive any single frame
            self.report_error(stage, f"failed to process frame: {exc!r}")
            self.get_logger().debug(traceback.format_exc())
        else:
            stats.add_processing((time.perf_counter() - t0) * 1e3)
            stats.frames_processed += 1
            stats.frames_out += int(ctx.published > 0)
            if ctx.energy_mj is not None:
                stats.add_energy(ctx.energy_mj)
            if header is not None:
                self.add_latency(stage, header)

    def record_inference(self, ctx: FrameContext, stages: Sequence[str], run: Any) -> None:
        """Telemetry of one network call (energy.InferenceResult, or a Prediction with the same
        fields): its energy becomes the frame's (`ctx.energy_mj`, added to the frame's stage when
        it succeeds) and is added to each of the extra `stages` now; its latency goes to every
        stage named as `inference_ms`, with whether it was emulated and where the energy came from."""
        if run is None:
            return
        emulated = bool(getattr(run, "emulated", False))
        source = getattr(run, "energy_source", "none")
        if run.energy_mj is not None:
            ctx.energy_mj = (ctx.energy_mj or 0.0) + float(run.energy_mj)
        for stage in stages:
            st = self.stats[stage]
            if run.latency_ms is not None:
                st.add_inference(run.latency_ms)
            st.info["inference_latency"] = "emulated" if emulated else "measured"
            st.info["energy_source"] = source
            if run.energy_mj is not None and stage != ctx.stage:
                st.add_energy(run.energy_mj)
            for key, value in (getattr(run, "counters", None) or {}).items():
                st.counters[f"backend_{key}"] = int(value)  # the backend's running totals

    def report_backend(self, loaded: Any, requested: str, stages: Sequence[str]) -> None:
        """Diagnostics of the model's stages name the backend that runs (`backend`: what `auto`
        resolved to) and, when it chose at load time, why (`backend_reason`); nothing while no
        model is loaded."""
        name, reason = backend_choice(loaded, requested) if loaded is not None else (None, None)
        for stage in stages:
            info = self.stats[stage].info
            for key, value in (("backend", name), ("backend_reason", reason)):
                if value is None:
                    info.pop(key, None)
                else:
                    info[key] = value

    def add_latency(self, stage: str, header: Any) -> None:
        """Latency sample from a header stamp; implausible stamps are counted and left out."""
        reason = self.stats[stage].add_latency_checked(
            self.latency_ms(header), self.p.get("stamp_max_age_s", 10.0) * 1e3,
            self.p.get("stamp_max_ahead_s", 0.5) * 1e3)
        if reason:
            self.report_warning(stage, "stamp", f"{reason}: not a latency sample (stamp 0, a bag loop, "
                                "use_sim_time without /clock, or an unsynchronised clock?)")

    def latency_ms(self, header: Any) -> float:
        """Node clock now (sim time under use_sim_time) minus the input's header stamp."""
        return (self.get_clock().now().nanoseconds - stamp_to_ns(header.stamp)) / 1e6

    def report_error(self, stage: str, message: str, dropped: bool = True, cause: str | None = None) -> None:
        """Count, log (rate-limited per stage and cause) and flag in diagnostics; never raises,
        also not while or after the context shuts down (Ctrl-C)."""
        self.stats[stage].error(message, dropped=dropped)
        try:
            if self._log_limiter.ready(f"{stage}:{cause or message[:60]}"):
                suffix = " (dropped)" if dropped else ""
                self.get_logger().error(f"[{stage}] {message}{suffix}")
        except Exception:  # noqa: BLE001 - logging must not take the node down
            pass
        if self.stats[stage].errors - self._errors_reported[stage] == 1:
            self.publish_telemetry()  # first error since the last report: flag it now, not at the next tick

    def report_warning(self, stage: str, cause: str, message: str) -> None:
        """Count, log once per 5 s per stage and cause, and make the next diagnostics WARN."""
        self.stats[stage].warning(message)
        if self._log_limiter.ready(f"{stage}:warn:{cause}"):
            self.get_logger().warning(f"[{stage}] {message}")

    def report_dropped_points(self, stage: str, counts: dict[str, int], total: int, what: str = "points") -> None:
        """Per cause (e.g. range, intensity): count `<what>_dropped_<cause>` and report one
        rate-limited error line per cause; the frame itself is still processed."""
        for cause, n in counts.items():
            if n:
                self.stats[stage].count(f"{what}_dropped_{cause}", n)
                self.report_error(stage, f"{n} of {total} {what} dropped: {cause}", dropped=False,
                                  cause=f"{what}:{cause}")

    def input_expected(self, stage: str) -> bool:
        """Hook: False for an optional input whose silence is normal (e.g. camera off)."""
        return True

    def silent_inputs(self, stage: str, now_s: float | None = None) -> list[tuple[str, float]]:
        """(topic, seconds) of this stage's monitored inputs silent longer than input_timeout_s."""
        timeout = self.p.get("input_timeout_s", 0.0)
        if not timeout or not self.input_expected(stage):
            return []
        now_s = time.monotonic() if now_s is None else now_s
        return [(m.topic, m.silent_for(now_s)) for m in self.inputs.get(stage, ())
                if m.silent_for(now_s) > timeout]

    # ------------------------------------------------------------------ telemetry
    def diagnostic_status(self, stage: str) -> DiagnosticStatus:
        stats = self.stats[stage]
        summary = stats.summary()
        now_s = time.monotonic()
        for i, m in enumerate(self.inputs.get(stage, ())):
            suffix = "" if i == 0 else f"_{i}"
            summary[f"input_silent_s{suffix}"] = round(m.silent_for(now_s), 3)
            summary[f"input_stamp_jumps_back{suffix}"] = m.jumps_back
        new_errors = stats.errors - self._errors_reported[stage]
        new_warnings = stats.warnings - self._warnings_reported[stage]
        silent = self.silent_inputs(stage, now_s)
        if new_errors > 0:
            level, message = DiagnosticStatus.ERROR, stats.last_error
        elif silent:
            level = DiagnosticStatus.WARN
            message = "; ".join(f"no message on '{t}' for {s:.1f} s" for t, s in silent)
        elif new_warnings > 0:
            level, message = DiagnosticStatus.WARN, stats.last_warning
        else:
            level, message = DiagnosticStatus.OK, "ok"
        return DiagnosticStatus(
            level=level, name=f"{self.get_fully_qualified_name()}: {stage}", message=message,
            hardware_id=self.hardware_id,
            values=[KeyValue(key=k, value=f"{v:.3f}" if isinstance(v, float) else str(v))
                    for k, v in summary.items()])

    def publish_telemetry(self) -> None:
        """Diagnostics on /diagnostics and ~/telemetry. Never raises: once the context is shut
        down (Ctrl-C, SIGTERM) or the publishers are destroyed, it publishes nothing."""
        if not self.context.ok():
            return
        try:
            arr = DiagnosticArray()
            arr.header.stamp = self.get_clock().now().to_msg()
            arr.status = [self.diagnostic_status(s) for s in self.stats]
            self._diag_pub.publish(arr)
            self._telemetry_pub.publish(arr)
        except Exception as exc:  # noqa: BLE001 - e.g. RCLError "publisher's context is invalid"
            if self.context.ok():  # not a shutdown race: say so (the next tick tries again)
                try:
                    self.get_logger().warning(f"telemetry not published: {exc}")
                except Exception:  # noqa: BLE001
                    pass
            return
        for s in self.stats:
            self._errors_reported[s] = self.stats[s].errors
            self._warnings_reported[s] = self.stats[s].warnings

    def summary_json(self) -> str:
        return json.dumps({"node": self.name_at_start, "stages": {s: st.summary() for s, st in self.stats.items()}})


def run_node(node_cls: type[PerceptionNode] | Callable[[], Node], args: list[str] | None = None) -> int:
    """Standard main(): spin until Ctrl-C / SIGTERM / shutdown, then print a one-line JSON summary.

    Signals go to shutdown.STOP instead of rclpy's handler: the first SIGINT or SIGTERM ends
    the spin within 0.1 s, a second one (a terminal's Ctrl-C reaches a launched node twice) is
    ignored, so the summary and clean-up always run and the exit code is 0, with no traceback.
    """
    stop = shutdown.install()
    stop.starting_up = False
    if stop.requested:  # stopped while the node module was importing
        print(f"{getattr(node_cls, '__name__', 'node')}: stopped during start-up ({stop.signal})", flush=True)
        stop.ignore_from_now_on()
        return 0
    from rclpy.signals import SignalHandlerOptions

    rclpy.init(args=args if args is not None else sys.argv,
               signal_handler_options=SignalHandlerOptions.NO if stop.installed else None)
    node = None
    executor = None
    try:
        node = node_cls()  # a signal during construction (model loading) is noted and ends the run below
        executor = SingleThreadedExecutor()
        executor.add_node(node)
        while not stop.requested and rclpy.ok():
            executor.spin_once(timeout_sec=0.1)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        if node is not None:
            if isinstance(node, PerceptionNode):
                # stdout, not the logger: the context may already be shut down here.
                print(f"SUMMARY {node.summary_json()}", flush=True)
            try:
                if executor is not None:
                    executor.shutdown(timeout_sec=1.0)
                node.destroy_node()
            except Exception as exc:  # noqa: BLE001 - clean-up trouble is reported, not a traceback
                name = node.name_at_start if isinstance(node, PerceptionNode) else node.get_name()
                print(f"{name}: clean-up: {exc!r}", file=sys.stderr, flush=True)
        try:
            rclpy.try_shutdown()  # also destroys the nodes the context still tracks
        except Exception as exc:  # noqa: BLE001 - said on stderr; the exit code stays 0 (docstring)
            print(f"rclpy shutdown: {exc!r}", file=sys.stderr, flush=True)
        stop.ignore_from_now_on()  # finishing: a late SIGINT from launch must not turn exit 0 into -2
    return 0
