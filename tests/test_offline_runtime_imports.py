"""The runtime cores never import squeeze_perception.offline (ARCHITECTURE.md, point 3): parse
every runtime module's imports (absolute and relative, at any depth, lazy ones included)."""
from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "squeeze_perception"
# The offline package itself, and the top-level CLI (src/squeeze_perception/cli.py only, not
# the other cli.py files): it is the one entry point for vehicle and offline commands alike and
# reads the offline tools' table (offline/tools.py). No vehicle process imports it.
NOT_RUNTIME = {"offline", "cli.py"}


def _imported_modules(path: Path, source: str | None = None) -> list[str]:
    tree = ast.parse(path.read_text() if source is None else source, filename=str(path))
    package = path.relative_to(PACKAGE.parent).with_suffix("").parts[:-1]
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = list(package[: len(package) - node.level + 1]) if node.level else []
            module = ".".join(base + ([node.module] if node.module else []))
            out.append(module)
            out += [f"{module}.{a.name}" for a in node.names]  # `from . import offline`
    return out


def runtime_modules() -> list[Path]:
    return [p for p in PACKAGE.rglob("*.py") if p.relative_to(PACKAGE).parts[0] not in NOT_RUNTIME]


def test_runtime_cores_import_nothing_from_offline():
    modules = runtime_modules()
    names = {str(p.relative_to(PACKAGE)) for p in modules}
    for core in ("nodes/squeezeseg_node.py", "detection/inference.py", "segmentation/pipeline.py",
                 "backends/common.py", "backends/torch_backend.py", "backends/onnxruntime_backend.py",
                 "backends/onnxruntime_int8.py", "backends/synetgy.py", "registry.py",
                 "segmentation/searched_net.py", "launch_runner/cli.py", "bag/player.py"):
        assert core in names
    offenders = {str(p.relative_to(PACKAGE)): m for p in modules for m in _imported_modules(p)
                 if m == "squeeze_perception.offline" or m.startswith("squeeze_perception.offline.")}
    assert not offenders, f"runtime modules importing the offline package: {offenders}"


def test_the_checker_sees_relative_and_lazy_imports():
    probe = PACKAGE / "segmentation" / "probe.py"  # never written: the source is passed in
    assert "squeeze_perception.offline" in _imported_modules(probe, "def f():\n    from ..offline import dnas\n")
    assert "squeeze_perception.offline.dnas" in _imported_modules(probe, "from ..offline.dnas import search\n")
    assert "squeeze_perception.offline" in _imported_modules(probe, "from .. import offline\n")
    assert "squeeze_perception.offline.manifest" in _imported_modules(
        probe, "import squeeze_perception.offline.manifest\n")


def test_no_offline_tool_lives_beside_the_runtime_code():
    """Training, evaluation, benchmarks, plots and dataset conversion live under offline/ only
    (issue #13): a module of that name elsewhere is offline code in the runtime package."""
    offline_names = {"train.py", "bench.py", "adapt.py", "plots.py", "evaluation.py", "instance_eval.py",
                     "kitti2bag.py", "scenarios.py", "losses.py", "stats.py"}
    misplaced = sorted(str(p.relative_to(PACKAGE)) for p in runtime_modules() if p.name in offline_names)
    assert not misplaced, f"offline modules in the runtime package: {misplaced}"
    assert {p.relative_to(PACKAGE).parts[0] for p in runtime_modules()}.isdisjoint({"synth", "graphbench"})
