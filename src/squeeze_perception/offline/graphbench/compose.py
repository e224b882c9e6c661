"""Several perception nodes in one process and one rclpy executor (a single-process
composition, the Python counterpart of a component container):

    python -m squeeze_perception.offline.graphbench.compose squeezedet_node squeezeseg_node tracker_node \
        --ros-args --params-file config/squeezedet.yaml ...

Parameters files keyed by node name apply to their node. SIGINT/SIGTERM stop the spin; each
node prints its SUMMARY line as under `run_node`."""
from __future__ import annotations

import importlib
import sys

from ... import shutdown

CLASSES = {"squeezedet_node": "SqueezeDetNode", "squeezeseg_node": "SqueezeSegNode",
           "tracker_node": "TrackerNode", "passthrough_node": "PassthroughNode"}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    split = argv.index("--ros-args") if "--ros-args" in argv else len(argv)
    names, ros = argv[:split], argv[split:]
    unknown = [n for n in names if n not in CLASSES]
    if not names or unknown:
        print(f"usage: compose NODE... [--ros-args ...]; nodes: {', '.join(CLASSES)}; unknown: {unknown}",
              file=sys.stderr)
        return 2
    stop = shutdown.install()
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.signals import SignalHandlerOptions

    from ...node_base import PerceptionNode

    rclpy.init(args=[sys.argv[0], *ros], signal_handler_options=SignalHandlerOptions.NO if stop.installed else None)
    nodes = []
    executor = SingleThreadedExecutor()
    try:
        for n in names:
            cls = getattr(importlib.import_module(f"squeeze_perception.nodes.{n}"), CLASSES[n])
            node = cls()
            nodes.append(node)
            executor.add_node(node)
        while not stop.requested and rclpy.ok():
            executor.spin_once(timeout_sec=0.1)
    except KeyboardInterrupt:
        pass
    finally:
        for node in nodes:
            if isinstance(node, PerceptionNode):
                print(f"SUMMARY {node.summary_json()}", flush=True)
        executor.shutdown(timeout_sec=1.0)
        for node in nodes:
            node.destroy_node()
        rclpy.try_shutdown()
        stop.ignore_from_now_on()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
