"""The compatible launch runner: evaluate a launch description, run one process per node.

Evaluation (ROS-free, unit-tested) turns the description into `ProcessSpec`s: the command
line a real `launch_ros` would build (`--ros-args -r __node:= -r __ns:= --params-file ...
-r from:=to`). `ProcessGroup` then runs them, prefixes their output with the node name,
applies OnProcessExit handlers (Shutdown -> stop everything, exit code from the process that
caused it), forwards Ctrl-C, escalates to SIGTERM/SIGKILL after timeouts, and prints the
nodes' `SUMMARY {json}` lines as one table at the end.
"""
from __future__ import annotations

import importlib.metadata
import json
import os
import runpy
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, TextIO

import yaml

from . import compat as c
from .dds import apply_dds_defaults

PACKAGE = "squeeze_perception"


# An ignored signal stays ignored across exec, and a shell cannot even trap a signal ignored at
# its start. A launcher started in the background of a non-interactive shell (`... &`), or one
# whose own process already ignores SIGINT, would otherwise start nodes that our SIGINT cannot
# stop cleanly: each would sit out the SIGINT timeout and then be killed with SIGTERM.
_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def _ignored_stop_signals() -> bool:
    return any(signal.getsignal(sig) == signal.SIG_IGN for sig in _STOP_SIGNALS)


def _stop_signals_to_default() -> None:
    """Runs in the child between fork and exec. preexec_fn is not safe in general with threads
    (ours pump output), so it is used only when a stop signal is ignored, and does nothing but
    two signal() calls, which are async-signal-safe."""
    for sig in _STOP_SIGNALS:
        signal.signal(sig, signal.SIG_DFL)


@dataclass
class ProcessSpec:
    name: str  # node name (label for output and the summary)
    cmd: list[str]
    env: dict[str, str]
    action: Any = None  # the Node action (event handlers target it)
    required_by: list[Any] = field(default_factory=list)
    respawn: bool = False
    respawn_delay: float = 0.0
    respawn_max_retries: int = -1  # -1: no limit
    respawns: int = 0


@dataclass
class LaunchPlan:
    processes: list[ProcessSpec]
    handlers: list[c.OnProcessExit]
    arguments: dict[str, c.DeclareLaunchArgument]
    configurations: dict[str, str]
    skipped: list[str]
    tmpdir: Path
    context: c.LaunchContext = field(default_factory=c.LaunchContext)


# ----------------------------------------------------------------------------- parsing
def parse_launch_arguments(args: list[str]) -> dict[str, str]:
    """['bag:=x', 'rate:=2'] -> {'bag': 'x', 'rate': '2'}."""
    out = {}
    for arg in args:
        name, sep, value = arg.partition(":=")
        if not sep or not name:
            raise c.LaunchError(f"launch arguments look like name:=value, got '{arg}'")
        out[name] = value
    return out


def load_launch_description(path: str | Path) -> c.LaunchDescription:
    """Run the file's generate_launch_description() with the stand-in modules installed."""
    path = Path(path)
    if not path.exists():
        raise c.LaunchError(f"launch file '{path}' not found")
    with c.installed():
        namespace = runpy.run_path(str(path), run_name="__launch__")
        if "generate_launch_description" not in namespace:
            raise c.LaunchError(f"'{path}' defines no generate_launch_description()")
        return namespace["generate_launch_description"]()


def _typed(value: Any, context: c.LaunchContext) -> Any:
    """Parameter values: substitutions are evaluated then YAML-typed, as launch_ros does."""
    if isinstance(value, dict):
        return {str(k): _typed(v, context) for k, v in value.items()}
    if isinstance(value, (bool, int, float)) or value is None:
        return value
    if isinstance(value, (list, tuple)) and not any(isinstance(v, c.Substitution) for v in value):
        return [_typed(v, context) for v in value]
    text = c.perform_substitutions(context, value)
    try:
        loaded = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    return text if loaded is None or isinstance(loaded, dict) else loaded


def _join_namespace(base: str, ns: str) -> str:
    if ns.startswith("/"):
        return ns.rstrip("/") or "/"
    parts = [p for p in (base.strip("/"), ns.strip("/")) if p]
    return "/" + "/".join(parts) if parts else ""


def entry_point_command(package: str, executable: str) -> list[str] | None:
    """The console entry point `executable` of `package` as [python, -c, ...], else a PATH binary."""
    if package == PACKAGE:
        for ep in importlib.metadata.entry_points(group="console_scripts"):
            if ep.name == executable and ep.value.startswith(PACKAGE + "."):
                module, _, func = ep.value.partition(":")
                return [sys.executable, "-c", f"import sys; from {module} import {func}; sys.exit({func}())"]
        return None
    found = shutil.which(executable)
    return [found] if found else None


class _Evaluator:
    def __init__(self, context: c.LaunchContext, tmpdir: Path, base_env: dict[str, str]):
        self.context = context
        self.tmpdir = tmpdir
        self.base_env = base_env
        self.processes: list[ProcessSpec] = []
        self.skipped: list[str] = []
        self._param_files = 0

    def _params_file(self, params: dict[str, Any]) -> str:
        self._param_files += 1
        path = self.tmpdir / f"params_{self._param_files:03d}.yaml"
        path.write_text(yaml.safe_dump({"/**": {"ros__parameters": params}}, sort_keys=False))
        return str(path)

    def visit(self, entities) -> None:
        for entity in entities:
            self.visit_one(entity)

    def visit_one(self, e) -> None:
        ctx = self.context
        if isinstance(e, c.LaunchDescription):
            self.visit(e.entities)
            return
        if getattr(e, "condition", None) is not None and not e.condition.evaluate(ctx):
            return
        if isinstance(e, c.DeclareLaunchArgument):
            ctx.declared[e.name] = e
            if e.name not in ctx.launch_configurations:
                if e.default_value is None:
                    raise c.LaunchError(f"launch argument '{e.name}' is required: pass {e.name}:=<value>"
                                        + (f" ({e.description})" if e.description else ""))
                ctx.launch_configurations[e.name] = c.perform_substitutions(ctx, e.default_value)
            value = ctx.launch_configurations[e.name]
            if e.choices is not None and value not in e.choices:
                raise c.LaunchError(f"launch argument '{e.name}' = '{value}' is not one of {list(e.choices)}")
        elif isinstance(e, c.SetLaunchConfiguration):
            ctx.launch_configurations[c.perform_substitutions(ctx, e.name)] = c.perform_substitutions(ctx, e.value)
        elif isinstance(e, c.SetEnvironmentVariable):
            ctx.environment[c.perform_substitutions(ctx, e.name)] = c.perform_substitutions(ctx, e.value)
        elif isinstance(e, c.LogInfo):
            text = c.perform_substitutions(ctx, e.msg)
            ctx.log.append(text)
            print(f"[launch] {text}", flush=True)
        elif isinstance(e, c.GroupAction):
            snap = ctx.snapshot()
            for k, v in e.launch_configurations.items():
                ctx.launch_configurations[c.perform_substitutions(ctx, k)] = c.perform_substitutions(ctx, v)
            self.visit(e.actions)
            if e.scoped:
                ctx.restore(snap)
        elif isinstance(e, c.PushRosNamespace):
            ctx.namespace = _join_namespace(ctx.namespace, c.perform_substitutions(ctx, e.namespace))
        elif isinstance(e, c.SetParameter):
            ctx.global_parameters[c.perform_substitutions(ctx, e.name)] = _typed(e.value, ctx)
        elif isinstance(e, c.RegisterEventHandler):
            ctx.event_handlers.append(e.event_handler)
        elif isinstance(e, c.OpaqueFunction):
            self.visit(e.function(ctx, *e.args, **e.kwargs) or [])
        elif isinstance(e, c.Node):
            self.add_node(e)
        elif isinstance(e, (c.Shutdown, c.EmitEvent)):
            raise c.LaunchError(f"{type(e).__name__} outside an event handler is not supported")
        else:
            raise c.LaunchError(
                f"the compatible runner does not support {type(e).__module__}.{type(e).__name__}; "
                "install ROS 2 (launch, launch_ros) to run this file with `ros2 launch`")

    def add_node(self, node: c.Node) -> None:
        ctx = self.context
        package = c.perform_substitutions(ctx, node.package) if node.package is not None else PACKAGE
        executable = c.perform_substitutions(ctx, node.executable)
        name = c.perform_substitutions(ctx, node.node_name) if node.node_name is not None else None
        label = name or executable
        base = entry_point_command(package, executable)
        if base is None:
            why = (f"no console entry point '{executable}' in {PACKAGE}" if package == PACKAGE
                   else f"'{executable}' ({package}) is unavailable here (no ROS 2 install)")
            self.skipped.append(f"{label}: {why}")
            print(f"[launch] skipping {label}: {why}", flush=True)
            return
        cmd = base + [c.perform_substitutions(ctx, a) for a in node.arguments]
        cmd.append("--ros-args")
        if name:
            cmd += ["-r", f"__node:={name}"]
        ns = ctx.namespace
        if node.node_namespace is not None:
            ns = _join_namespace(ns, c.perform_substitutions(ctx, node.node_namespace))
        if ns and ns != "/":
            cmd += ["-r", f"__ns:={ns}"]
            label = f"{ns.strip('/')}/{label}"
        if ctx.global_parameters:
            cmd += ["--params-file", self._params_file(dict(ctx.global_parameters))]
        for entry in node.parameters:
            if isinstance(entry, dict):
                if entry:
                    cmd += ["--params-file", self._params_file(_typed(entry, ctx))]
            else:
                path = c.perform_substitutions(ctx, entry)
                if not Path(path).exists():
                    raise c.LaunchError(f"parameter file '{path}' for {label} not found")
                cmd += ["--params-file", path]
        for src, dst in node.remappings:
            cmd += ["-r", f"{c.perform_substitutions(ctx, src)}:={c.perform_substitutions(ctx, dst)}"]
        cmd += [c.perform_substitutions(ctx, a) for a in node.ros_arguments]
        env = dict(self.base_env)
        env.update(ctx.environment)
        env.update({c.perform_substitutions(ctx, k): c.perform_substitutions(ctx, v)
                    for k, v in node.additional_env.items()})
        respawn = node.respawn
        if not isinstance(respawn, bool):
            respawn = c.evaluate_condition_expression(ctx, respawn)
        self.processes.append(ProcessSpec(label, cmd, env, action=node, respawn=respawn,
                                          respawn_delay=float(node.respawn_delay or 0.0),
                                          respawn_max_retries=node.respawn_max_retries))


def child_environment(base: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ if base is None else base)
    apply_dds_defaults(env)
    env["PYTHONUNBUFFERED"] = "1"
    env.setdefault("RCUTILS_COLORIZED_OUTPUT", "0")
    return env


def plan_launch(description: c.LaunchDescription, arguments: dict[str, str],
                tmpdir: Path | None = None, base_env: dict[str, str] | None = None) -> LaunchPlan:
    tmpdir = Path(tmpdir or tempfile.mkdtemp(prefix="squeeze_launch_"))
    context = c.LaunchContext(arguments)
    evaluator = _Evaluator(context, tmpdir, child_environment(base_env))
    evaluator.visit(description.entities)
    unknown = sorted(set(arguments) - set(context.declared))
    if unknown:
        print(f"[launch] warning: argument(s) {unknown} are not declared by the launch file", flush=True)
    return LaunchPlan(evaluator.processes, context.event_handlers, context.declared,
                      context.launch_configurations, evaluator.skipped, tmpdir, context)


# ----------------------------------------------------------------------------- processes
class ProcessGroup:
    """Runs the plan's processes until they all exit or a Shutdown fires."""

    def __init__(self, plan: LaunchPlan, out: TextIO = sys.stdout, sigint_timeout: float = 5.0,
                 sigterm_timeout: float = 5.0):
        self.plan = plan
        self.out = out
        self.sigint_timeout, self.sigterm_timeout = sigint_timeout, sigterm_timeout
        self.procs: dict[str, subprocess.Popen] = {}
        self.summaries: dict[str, dict] = {}
        self.exit_codes: dict[str, int] = {}
        self.shutdown_reason: str | None = None
        self.return_code = 0
        self._lock = threading.Lock()
        self._readers: list[threading.Thread] = []

    def _print(self, text: str) -> None:
        with self._lock:
            print(text, file=self.out, flush=True)

    def _pump(self, name: str, stream) -> None:
        for raw in iter(stream.readline, b""):
            line = raw.decode(errors="replace").rstrip("\n")
            if line.startswith("SUMMARY {"):
                try:
                    self.summaries[name] = json.loads(line[len("SUMMARY "):])
                    continue
                except json.JSONDecodeError:
                    pass
            self._print(f"[{name}] {line}")
        stream.close()

    def _unique_name(self, name: str) -> str:
        base, n = name, 2
        while name in self.procs:
            name, n = f"{base}#{n}", n + 1
        return name

    def start(self) -> None:
        for spec in self.plan.processes:
            spec.name = self._unique_name(spec.name)
            self._spawn(spec)

    def _spawn(self, spec: ProcessSpec) -> None:
        proc = subprocess.Popen(spec.cmd, env=spec.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True,
                                preexec_fn=_stop_signals_to_default if _ignored_stop_signals() else None)
        self.procs[spec.name] = proc
        again = f", respawn {spec.respawns}" if spec.respawns else ""
        self._print(f"[launch] started {spec.name} (pid {proc.pid}{again})")
        reader = threading.Thread(target=self._pump, args=(spec.name, proc.stdout), daemon=True)
        reader.start()
        self._readers.append(reader)

    def request_shutdown(self, reason: str) -> None:
        if self.shutdown_reason is None:
            self.shutdown_reason = reason
            self.plan.context.is_shutdown = True
            self._print(f"[launch] shutting down: {reason}")

    def _on_exit(self, spec: ProcessSpec, code: int) -> None:
        self._print(f"[launch] process {spec.name} exited with code {code}")
        context = self.plan.context
        proc = self.procs.get(spec.name)
        event = c.ProcessExited(action=spec.action, name=spec.name, cmd=spec.cmd,
                                pid=proc.pid if proc is not None else -1, returncode=code)
        for handler in self.plan.handlers:
            if handler.target_action is not None and handler.target_action is not spec.action:
                continue
            for action in handler.actions_for(event, context):
                if isinstance(action, c.LogInfo):
                    self._print(f"[launch] {c.perform_substitutions(context, action.msg)}")
                elif isinstance(action, c.Shutdown) or (isinstance(action, c.EmitEvent)
                                                         and isinstance(action.event, c.ShutdownEvent)):
                    reason = action.reason if isinstance(action, c.Shutdown) else action.event.reason
                    reason = c.perform_substitutions(context, reason) or f"{spec.name} exited"
                    if code != 0 and self.return_code == 0:
                        # A process whose exit ends the launch failed: the launch fails too.
                        self.return_code = code if 0 < code < 256 else 1
                    self.request_shutdown(f"{reason} ({spec.name} exit code {code})")

    def _stop_all(self) -> None:
        live = {n: p for n, p in self.procs.items() if p.poll() is None}
        for sig, timeout in ((signal.SIGINT, self.sigint_timeout), (signal.SIGTERM, self.sigterm_timeout),
                             (signal.SIGKILL, 5.0)):
            if not live:
                return
            if sig != signal.SIGINT:
                self._print(f"[launch] {sorted(live)} still running; sending {signal.Signals(sig).name}")
            for p in live.values():
                try:  # the node's whole process group, as a terminal's Ctrl-C would reach it
                    os.killpg(p.pid, sig)
                except (ProcessLookupError, PermissionError):
                    pass
            deadline = time.monotonic() + timeout
            while live and time.monotonic() < deadline:
                live = {n: p for n, p in live.items() if p.poll() is None}
                time.sleep(0.05)

    def _respawn_due(self, spec: ProcessSpec) -> bool:
        return (spec.respawn and self.shutdown_reason is None
                and (spec.respawn_max_retries < 0 or spec.respawns < spec.respawn_max_retries))

    def run(self, poll_s: float = 0.05) -> int:
        specs = {s.name: s for s in self.plan.processes}
        self.start()
        pending: dict[str, float] = {}  # name -> monotonic time of its respawn
        try:
            while self.shutdown_reason is None:
                for name, proc in list(self.procs.items()):
                    if name in self.exit_codes or name in pending or proc.poll() is None:
                        continue
                    spec = specs[name]
                    self._on_exit(spec, proc.returncode)  # handlers first, as launch emits ProcessExited
                    if self._respawn_due(spec):
                        spec.respawns += 1
                        pending[name] = time.monotonic() + spec.respawn_delay
                        self._print(f"[launch] respawning {name} in {spec.respawn_delay:g} s (respawn "
                                    f"{spec.respawns} of {'unlimited' if spec.respawn_max_retries < 0 else spec.respawn_max_retries})")
                    else:
                        self.exit_codes[name] = proc.returncode
                for name, due in list(pending.items()):
                    if self.shutdown_reason is None and time.monotonic() >= due:
                        del pending[name]
                        self._spawn(specs[name])
                if len(self.exit_codes) == len(self.procs) and not pending:
                    self.request_shutdown("all processes exited")
                    break
                time.sleep(poll_s)
        except KeyboardInterrupt:
            self.request_shutdown("Ctrl-C (SIGINT)")
        finally:
            self._stop_all()
            for name, proc in self.procs.items():
                self.exit_codes.setdefault(name, proc.returncode if proc.returncode is not None else -9)
            for reader in self._readers:
                reader.join(timeout=2.0)
        return self.return_code


# ----------------------------------------------------------------------------- report
def _fmt(value: Any, digits: int = 1) -> str:
    return "-" if value is None else (f"{value:.{digits}f}" if isinstance(value, float) else str(value))


def _energy_note(s: dict) -> str:
    """Where a stage's inference latency and energy come from: 'emulated' latency (a modelled
    device, e.g. synetgy) and the energy source (backend | rapl | model, energy.py)."""
    parts = []
    if s.get("inference_latency") == "emulated":
        parts.append("emulated")
    if s.get("energy_source") not in (None, "none"):
        parts.append(str(s["energy_source"]))
    return ",".join(parts)


def stage_fps(s: dict) -> float | None:
    """Frames per second a stage sustains on its own at batch 1: 1000 / its mean time per frame,
    the emulated device time where the latency is emulated (what the modelled board would do),
    else this host's processing time."""
    ms = s.get("inference_ms_mean") if s.get("inference_latency") == "emulated" else s.get("processing_ms_mean")
    return 1000.0 / ms if ms else None


def summary_table(summaries: dict[str, dict], exit_codes: dict[str, int] | None = None) -> str:
    """Per node and stage: frames in/out, dropped, latency mean/p99, processing mean, the
    backend's inference latency, fps (stage_fps), energy per frame (mJ) and its source; player topics."""
    exit_codes = exit_codes or {}
    head = (f"{'node':22s} {'stage':14s} {'in':>6s} {'out':>6s} {'drop':>5s} {'lat mean':>9s} "
            f"{'lat p99':>9s} {'proc mean':>9s} {'inf mean':>9s} {'fps':>7s} {'mJ/frame':>9s}  energy  (ms)")
    lines = [head, "-" * len(head)]
    topic_lines = []
    for name in sorted(set(summaries) | set(exit_codes)):
        data = summaries.get(name)
        if data is None:
            lines.append(f"{name:22s} {'(no summary; exit code ' + str(exit_codes.get(name)) + ')'}")
            continue
        for stage, s in data.get("stages", {}).items():
            lines.append(f"{name:22s} {stage:14s} {s.get('frames_in', 0):6d} {s.get('frames_out', 0):6d} "
                         f"{s.get('frames_dropped', 0):5d} {_fmt(s.get('latency_ms_mean')):>9s} "
                         f"{_fmt(s.get('latency_ms_p99')):>9s} {_fmt(s.get('processing_ms_mean'), 2):>9s} "
                         f"{_fmt(s.get('inference_ms_mean'), 2):>9s} {_fmt(stage_fps(s)):>7s} "
                         f"{_fmt(s.get('energy_mj_per_frame'), 2):>9s}"
                         f"  {_energy_note(s) or '-'}")
        for topic, n in sorted(data.get("topics", {}).items()):
            topic_lines.append(f"  {name}: {topic:44s} {n:6d} published")
    if topic_lines:
        lines += ["", "bag topics:"] + topic_lines
    return "\n".join(lines)


def run_plan(plan: LaunchPlan, out: TextIO = sys.stdout, sigint_timeout: float = 5.0,
             install_signal_handlers: bool = True) -> int:
    group = ProcessGroup(plan, out, sigint_timeout=sigint_timeout)
    previous: dict[int, Callable] = {}
    if install_signal_handlers and threading.current_thread() is threading.main_thread():
        def _on_signal(signum, _frame):
            group.request_shutdown(f"{signal.Signals(signum).name} received")

        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, _on_signal)
    try:
        code = group.run()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        shutil.rmtree(plan.tmpdir, ignore_errors=True)
    print("\n" + summary_table(group.summaries, group.exit_codes), file=out, flush=True)
    print(f"[launch] done: {group.shutdown_reason}; exit code {code}", file=out, flush=True)
    return code
