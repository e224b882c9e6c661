"""Console entry points of the node executables (`ros2 run squeeze_perception <node>`).

Each installs the quiet stop handlers (shutdown.py) before importing its node module, so a
Ctrl-C or SIGTERM during the seconds of start-up imports ends the process with one line and
exit code 0 instead of an import traceback. The node modules keep their own `main()` for
`python -m squeeze_perception.nodes.<node>`.
"""
from __future__ import annotations

import importlib
import sys

from .. import shutdown


def run(module: str, args: list[str] | None = None) -> int:
    stop = shutdown.install()
    stop.starting_up = True
    try:
        node_module = importlib.import_module(f"{__package__}.{module}")
        stop.starting_up = False
    except shutdown.StartupInterrupted as exc:
        print(f"{module}: stopped during start-up ({exc}); no frames processed", flush=True)
        stop.ignore_from_now_on()
        return 0
    finally:
        stop.starting_up = False
    if stop.requested:  # the signal came between the import and here
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
