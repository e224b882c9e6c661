"""A small stand-in for the ROS 2 `launch` / `launch_ros` Python API.

Only the subset our launch files use, with the same class names and keyword arguments, so
one launch file runs under `ros2 launch` (real library) and under `squeeze-perception launch`
when `launch` cannot be installed (pip wheels do not exist for it). The classes only hold
their arguments; runner.py evaluates them. `installed()` puts the fake modules into
sys.modules for the duration of a `with` block and removes them afterwards, so a process that
has the real library never sees these.
"""
from __future__ import annotations

import os
import sys
import types
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence


class LaunchError(RuntimeError):
    """A launch file uses something this runner does not support, or an argument is wrong."""


# ----------------------------------------------------------------------------- context
class LaunchContext:
    """What evaluating a launch description accumulates."""

    def __init__(self, arguments: dict[str, str] | None = None):
        self.launch_configurations: dict[str, str] = dict(arguments or {})
        self.declared: dict[str, "DeclareLaunchArgument"] = {}
        self.environment: dict[str, str] = {}
        self.namespace = ""
        self.global_parameters: dict[str, Any] = {}
        self.event_handlers: list["OnProcessExit"] = []
        self.nodes: list["Node"] = []
        self.log: list[str] = []
        self.is_shutdown = False  # as launch.LaunchContext.is_shutdown: set once the launch stops

    def snapshot(self) -> tuple:
        return (dict(self.launch_configurations), self.namespace, dict(self.global_parameters))

    def restore(self, snap: tuple) -> None:
        self.launch_configurations, self.namespace, self.global_parameters = (dict(snap[0]), snap[1],
                                                                              dict(snap[2]))


# ----------------------------------------------------------------------------- substitutions
class Substitution:
    def perform(self, context: LaunchContext) -> str:  # pragma: no cover - overridden
        raise LaunchError(f"{type(self).__name__} cannot be evaluated")


SomeSubstitution = Any  # str | Substitution | sequence of those


def perform_substitutions(context: LaunchContext, value: SomeSubstitution) -> str:
    """A text, a substitution or a list of both -> the concatenated string (as `launch` does)."""
    if value is None:
        return ""
    if isinstance(value, (str, Path)):
        return str(value)
    if isinstance(value, Substitution):
        return value.perform(context)
    if isinstance(value, (int, float, bool)):
        return str(value).lower() if isinstance(value, bool) else str(value)
    if isinstance(value, Iterable):
        return "".join(perform_substitutions(context, v) for v in value)
    raise LaunchError(f"cannot turn {value!r} into text")


class TextSubstitution(Substitution):
    def __init__(self, *, text: str):
        self.text = text

    def perform(self, context):
        return self.text


class LaunchConfiguration(Substitution):
    def __init__(self, variable_name: SomeSubstitution, *, default: SomeSubstitution = None):
        self.variable_name = variable_name
        self.default = default

    def perform(self, context):
        name = perform_substitutions(context, self.variable_name)
        if name in context.launch_configurations:
            return context.launch_configurations[name]
        if self.default is not None:
            return perform_substitutions(context, self.default)
        raise LaunchError(f"launch configuration '{name}' is not set (declare it or pass {name}:=value)")


class EnvironmentVariable(Substitution):
    def __init__(self, name: SomeSubstitution, *, default_value: SomeSubstitution = ""):
        self.name = name
        self.default_value = default_value

    def perform(self, context):
        name = perform_substitutions(context, self.name)
        if name in context.environment:
            return context.environment[name]
        return os.environ.get(name, perform_substitutions(context, self.default_value))


class PathJoinSubstitution(Substitution):
    def __init__(self, substitutions: Sequence[SomeSubstitution]):
        self.substitutions = list(substitutions)

    def perform(self, context):
        return os.path.join(*[perform_substitutions(context, s) for s in self.substitutions])


class PythonExpression(Substitution):
    def __init__(self, expression: Sequence[SomeSubstitution]):
        self.expression = expression

    def perform(self, context):
        import math

        return str(eval(perform_substitutions(context, self.expression), {"math": math}))  # noqa: S307


class FindPackageShare(Substitution):
    """Our own package's share folder is the checkout root (config/, launch/ live there)."""

    def __init__(self, package: SomeSubstitution):
        self.package = package

    def perform(self, context):
        package = perform_substitutions(context, self.package)
        from ..paths import PACKAGE, project_root

        if package != PACKAGE:
            raise LaunchError(f"package '{package}' is not available without a ROS 2 install")
        return str(project_root())


# ----------------------------------------------------------------------------- conditions
def evaluate_condition_expression(context: LaunchContext, expression: SomeSubstitution) -> bool:
    text = perform_substitutions(context, expression).strip().lower()
    if text in ("true", "1"):
        return True
    if text in ("false", "0"):
        return False
    raise LaunchError(f"condition expects true/false/1/0, got '{text}'")


class Condition:
    def evaluate(self, context: LaunchContext) -> bool:  # pragma: no cover - overridden
        return True


class IfCondition(Condition):
    def __init__(self, predicate_expression: SomeSubstitution):
        self.predicate_expression = predicate_expression

    def evaluate(self, context):
        return evaluate_condition_expression(context, self.predicate_expression)


class UnlessCondition(IfCondition):
    def evaluate(self, context):
        return not super().evaluate(context)


class LaunchConfigurationEquals(Condition):
    def __init__(self, launch_configuration_name: str, expected_value: SomeSubstitution):
        self.name = launch_configuration_name
        self.expected_value = expected_value

    def evaluate(self, context):
        return (context.launch_configurations.get(self.name)
                == perform_substitutions(context, self.expected_value))


class LaunchConfigurationNotEquals(LaunchConfigurationEquals):
    def evaluate(self, context):
        return not super().evaluate(context)


# ----------------------------------------------------------------------------- actions
class Action:
    def __init__(self, *, condition: Condition | None = None):
        self.condition = condition

    def describe(self) -> str:
        return type(self).__name__


class LaunchDescription:
    def __init__(self, initial_entities: Sequence[Any] | None = None):
        self.entities = list(initial_entities or [])

    def add_action(self, action) -> None:
        self.entities.append(action)

    def add_entity(self, entity) -> None:
        self.entities.append(entity)


class DeclareLaunchArgument(Action):
    def __init__(self, name: str, *, default_value: SomeSubstitution = None, description: str = "",
                 choices: Sequence[str] | None = None, **kwargs):
        super().__init__(**kwargs)
        self.name, self.default_value, self.description, self.choices = name, default_value, description, choices


class SetLaunchConfiguration(Action):
    def __init__(self, name: SomeSubstitution, value: SomeSubstitution, **kwargs):
        super().__init__(**kwargs)
        self.name, self.value = name, value


class SetEnvironmentVariable(Action):
    def __init__(self, name: SomeSubstitution, value: SomeSubstitution, **kwargs):
        super().__init__(**kwargs)
        self.name, self.value = name, value


class LogInfo(Action):
    def __init__(self, *, msg: SomeSubstitution, **kwargs):
        super().__init__(**kwargs)
        self.msg = msg


class GroupAction(Action):
    def __init__(self, actions: Sequence[Any], *, scoped: bool = True, forwarding: bool = True,
                 launch_configurations: dict | None = None, **kwargs):
        super().__init__(**kwargs)
        self.actions, self.scoped = list(actions), scoped
        self.launch_configurations = dict(launch_configurations or {})


class Shutdown(Action):
    """launch.actions.Shutdown: ends the launch (reason shown to the user)."""

    def __init__(self, *, reason: SomeSubstitution = "", **kwargs):
        super().__init__(**kwargs)
        self.reason = reason


class ShutdownEvent:
    """launch.events.Shutdown, for EmitEvent(event=Shutdown(...))."""

    def __init__(self, *, reason: SomeSubstitution = "reason not given", due_to_sigint: bool = False):
        self.reason = reason
        self.due_to_sigint = due_to_sigint


class EmitEvent(Action):
    def __init__(self, *, event: Any, **kwargs):
        super().__init__(**kwargs)
        self.event = event


class RegisterEventHandler(Action):
    def __init__(self, event_handler: "OnProcessExit", **kwargs):
        super().__init__(**kwargs)
        self.event_handler = event_handler


class ProcessExited:
    """launch.events.process.ProcessExited, as passed to an OnProcessExit callable."""

    def __init__(self, *, action: Any, name: str, cmd: list[str], pid: int, returncode: int):
        self.action, self.process_name, self.cmd, self.pid, self.returncode = action, name, cmd, pid, returncode


class OnProcessExit:
    """on_exit: actions, or a callable(event: ProcessExited, context) returning actions or None
    (as in launch, e.g. to count exits of a respawning node)."""

    def __init__(self, *, target_action: Any = None, on_exit: Any = None, **kwargs):
        self.target_action = target_action
        self.on_exit_callable = None
        if callable(on_exit) and not isinstance(on_exit, (list, tuple, Action)):
            self.on_exit_callable, on_exit = on_exit, None
        self.on_exit = [] if on_exit is None else (list(on_exit) if isinstance(on_exit, (list, tuple)) else [on_exit])

    def actions_for(self, event: ProcessExited, context: "LaunchContext") -> list:
        if self.on_exit_callable is None:
            return list(self.on_exit)
        got = self.on_exit_callable(event, context)
        return [] if got is None else (list(got) if isinstance(got, (list, tuple)) else [got])


class OpaqueFunction(Action):
    def __init__(self, *, function, args: Sequence[Any] | None = None, kwargs: dict | None = None, **kw):
        super().__init__(**kw)
        self.function, self.args, self.kwargs = function, list(args or []), dict(kwargs or {})


class Node(Action):
    """launch_ros.actions.Node: one ROS 2 executable as its own process."""

    def __init__(self, *, executable: SomeSubstitution, package: SomeSubstitution = None,
                 name: SomeSubstitution = None, namespace: SomeSubstitution = None,
                 exec_name: SomeSubstitution = None, parameters: Sequence[Any] | None = None,
                 remappings: Sequence[tuple[Any, Any]] | None = None, ros_arguments: Sequence[Any] | None = None,
                 arguments: Sequence[Any] | None = None, output: str = "log", emulate_tty: bool = False,
                 respawn: Any = False, respawn_delay: float | None = None, respawn_max_retries: int = -1,
                 additional_env: dict | None = None, **kwargs):
        super().__init__(condition=kwargs.pop("condition", None))
        self.executable, self.package, self.node_name, self.node_namespace = executable, package, name, namespace
        self.exec_name = exec_name
        self.parameters = list(parameters or [])
        self.remappings = list(remappings or [])
        self.ros_arguments = list(ros_arguments or [])
        self.arguments = list(arguments or [])
        self.output, self.emulate_tty, self.respawn = output, emulate_tty, respawn
        # launch's ExecuteProcess semantics: restart after respawn_delay s, at most
        # respawn_max_retries times (-1: no limit), never once the launch is shutting down.
        self.respawn_delay, self.respawn_max_retries = respawn_delay, int(respawn_max_retries)
        self.additional_env = dict(additional_env or {})
        self.extra = kwargs  # e.g. sigterm_timeout: accepted and ignored, as launch does for unknowns

    def describe(self) -> str:
        return f"Node({self.executable})"


class PushRosNamespace(Action):
    def __init__(self, namespace: SomeSubstitution, **kwargs):
        super().__init__(**kwargs)
        self.namespace = namespace


class SetParameter(Action):
    def __init__(self, name: SomeSubstitution, value: Any, **kwargs):
        super().__init__(**kwargs)
        self.name, self.value = name, value


# ----------------------------------------------------------------------------- fake modules
_MODULES: dict[str, dict[str, Any]] = {
    "launch": {"LaunchDescription": LaunchDescription, "LaunchContext": LaunchContext,
               "Substitution": Substitution, "Condition": Condition, "Action": Action},
    "launch.actions": {c.__name__: c for c in (DeclareLaunchArgument, SetLaunchConfiguration,
                                              SetEnvironmentVariable, LogInfo, GroupAction, Shutdown,
                                              EmitEvent, RegisterEventHandler, OpaqueFunction)},
    "launch.substitutions": {c.__name__: c for c in (TextSubstitution, LaunchConfiguration, EnvironmentVariable,
                                                    PathJoinSubstitution, PythonExpression)},
    "launch.conditions": {c.__name__: c for c in (IfCondition, UnlessCondition, LaunchConfigurationEquals,
                                                 LaunchConfigurationNotEquals)},
    "launch.event_handlers": {"OnProcessExit": OnProcessExit},
    "launch.events": {"Shutdown": ShutdownEvent},
    "launch.events.process": {"ProcessExited": ProcessExited},
    "launch_ros": {},
    "launch_ros.actions": {"Node": Node, "PushRosNamespace": PushRosNamespace, "SetParameter": SetParameter},
    "launch_ros.substitutions": {"FindPackageShare": FindPackageShare},
}


@contextmanager
def installed() -> Iterator[None]:
    """Make `import launch`, `launch_ros`... resolve to this module inside the block only."""
    saved = {name: sys.modules.get(name) for name in _MODULES}
    try:
        for name, attrs in _MODULES.items():
            module = types.ModuleType(name, f"squeeze_perception compatible stand-in for {name}")
            module.__dict__.update(attrs)
            module.__path__ = []  # a package, so `import launch.actions` works
            module.SQUEEZE_PERCEPTION_COMPAT = True
            sys.modules[name] = module
        for name in _MODULES:  # parent.child attributes, as a real import sets them
            parent, _, child = name.rpartition(".")
            if parent:
                setattr(sys.modules[parent], child, sys.modules[name])
        yield
    finally:
        for name, module in saved.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module
