"""The offline tools that are also top-level commands: `squeeze-perception det train ...` and
`squeeze-perception offline det train ...` run the same function, found here by name.

Kept free of heavy imports: the top-level CLI reads this table on every call, `launch` included.
"""
from __future__ import annotations

import importlib

# name -> ("module:function taking argv", one-line help)
TOOLS: dict[str, tuple[str, str]] = {
    "kitti2bag": ("squeeze_perception.offline.kitti2bag:main", "convert KITTI raw/object data to a rosbag2"),
    "synth": ("squeeze_perception.offline.synth.cli:main", "generate synthetic KITTI-format driving sequences"),
    "det": ("squeeze_perception.offline.detection.cli:main", "SqueezeDet: anchors, train, eval, bench, stats"),
    "seg": ("squeeze_perception.offline.segmentation.cli:main", "SqueezeSeg/V2: train, adapt, eval, bench"),
    "track": ("squeeze_perception.offline.tracking.cli:main", "tracker: eval (MOT metrics), bench"),
    "bench": ("squeeze_perception.offline.graphbench.cli:main",
              "bench graph: latency, jitter, drops, CPU and memory of the node graph on a bag; "
              "bench models: every model x backend, latency, fps, mJ/frame, accuracy vs fp32"),
    "soak": ("squeeze_perception.offline.graphbench.soak_cli:main",
             "long run of the stack on a looping bag: RSS growth, throughput per half, packets off loopback"),
    "render": ("squeeze_perception.offline.render:main",
               "PNG frames + MP4 of a bag or a live run (--live): camera boxes, bird's-eye points/instances/"
               "tracks, stage times"),
}


def tool_function(name: str):
    """The argv-taking function of a tool (imports its module, and only that one)."""
    module, _, func = TOOLS[name][0].partition(":")
    return getattr(importlib.import_module(module), func)


def run_tool(argv: list[str]) -> int | None:
    """Run the tool argv[0] names with the rest of argv; None when argv names no tool here."""
    if not argv or argv[0] not in TOOLS:
        return None
    return int(tool_function(argv[0])(list(argv[1:])) or 0)
