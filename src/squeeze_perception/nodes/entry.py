"""Console entry points of the node executables (`ros2 run squeeze_perception <node>`).

Each installs the quiet stop handlers (shutdown.py) before importing its node module, so a
Ctrl-C or SIGTERM during the seconds of start-up imports ends the process with one line and
exit code 0 instead of an import traceback. The node modules keep their own `main()` for
`python -m squeeze_perception.nodes.<node>`.
"""
from __future__ import annotations

import importlib
import sys
from types import ModuleType

from .. import shutdown


def import_node_module(qualified_name: str, stop: shutdown.StopRequest) -> ModuleType | None:
    """The node module, or None when a stop signal arrived while it imported.

    The handler raises StartupInterrupted inside whatever import is running, but that import
    need not pass it on unchanged: numpy's C extension, interrupted while it imports `datetime`,
    re-raises it as an ImportError ("PyCapsule_Import could not import module datetime"), and a
    library may also swallow it. So the stop request itself, not the exception's type, decides:
    any failure after a signal is the interrupted start-up; a failure without one is a real error
    and propagates."""
    stop.starting_up = True
    try:
        return importlib.import_module(qualified_name)
    except BaseException:
        if stop.requested:
            return None
        raise
    finally:
        stop.starting_up = False


def run(module: str, args: list[str] | None = None) -> int:
    stop = shutdown.install()
    node_module = import_node_module(f"{__package__}.{module}", stop)
    if node_module is None or stop.requested:  # interrupted, or the signal came just after the import
        print(f"{module}: stopped during start-up ({stop.signal}); no frames processed", flush=True)
        stop.ignore_from_now_on()
        return 0
    try:
        return int(node_module.main(args) or 0)
    finally:
        stop.ignore_from_now_on()


def passthrough_node() -> int:
    return run("passthrough_node")


def bag_player_node() -> int:
    return run("bag_player_node")


def squeezedet_node() -> int:
    return run("squeezedet_node")


def squeezeseg_node() -> int:
    return run("squeezeseg_node")


def tracker_node() -> int:
    return run("tracker_node")


def synetgy_node() -> int:
    return run("synetgy_node")


if __name__ == "__main__":  # python -m squeeze_perception.nodes.entry <node> [--ros-args ...]
    raise SystemExit(run(sys.argv.pop(1)))
