"""`squeeze-perception <command> ...`: one entry point for every offline and launch tool.

Each command lives in its own module and is imported only when called, so `launch`
does not pay for torch and a missing optional piece only breaks its own command.
"""
from __future__ import annotations

import importlib
import sys
from pathlib import Path

from .offline.tools import TOOLS

# command -> ("module:function taking argv", one-line help); the offline tools' entries live in
# offline/tools.py, which `squeeze-perception offline <tool>` dispatches through as well.
COMMANDS: dict[str, tuple[str, str]] = {
    "launch": ("squeeze_perception.launch_runner.cli:main",
               "run a launch file (real ROS 2 launch if installed, else the compatible runner)"),
    "kitti2bag": TOOLS["kitti2bag"],
    "play": ("squeeze_perception.nodes.bag_player_node:main", "play a rosbag2 / ROS 1 bag (the player node)"),
    "synth": TOOLS["synth"],
    "det": TOOLS["det"],
    "seg": TOOLS["seg"],
    "track": TOOLS["track"],
    "bench": TOOLS["bench"],
    "soak": TOOLS["soak"],
    "offline": ("squeeze_perception.offline.cli:main",
                "architecture search (dnas), mixed-precision search, Distill-Net, int8 quantization; also "
                f"`offline <{'|'.join(TOOLS)}>`, the same tools as the top-level commands"),
    "render": TOOLS["render"],
    "models": ("squeeze_perception.cli:list_models", "list registered models and backends"),
    "export": ("squeeze_perception.cli:export_models",
               "write models/<model>.onnx from the torch weights (what the onnxruntime backend loads)"),
}


def list_models(argv: list[str]) -> int:
    from .registry import BACKENDS, MODELS, load_plugins

    load_plugins()
    print("models:")
    for spec in sorted(MODELS.values(), key=lambda s: (s.task, s.name)):
        path = spec.weights_path()
        state = "missing weights" if path is None or not path.exists() else str(path.name)
        print(f"  {spec.name:24s} {spec.task:13s} input {spec.input_shape}  [{state}]  {spec.description}")
        if spec.manifest is not None:  # registered from models/<name>.manifest.json
            print(f"  {'':24s} {spec.manifest.summary()}")
    from .model_manifests import MANIFEST_ERRORS

    for path, reason in sorted(MANIFEST_ERRORS.items()):
        print(f"  (not registered) {path}: {reason}")
    print("backends:")
    for b in sorted(BACKENDS.values(), key=lambda s: s.name):
        print(f"  {b.name:24s} {b.device:14s} {b.description}")
    return 0


def export_models(argv: list[str]) -> int:
    """`squeeze-perception export MODEL... | --all`: the ONNX graph the onnxruntime backend runs,
    written where that backend looks for it (beside the weights, or the user cache when that
    folder is read-only). Nothing is rewritten when an up-to-date file exists, unless --force."""
    import argparse

    from .backends import ModelLoadError, export_onnx, exported_model, onnx_is_fresh, onnx_path_for
    from .registry import MODELS, RegistryError, get_model, load_plugins

    parser = argparse.ArgumentParser(prog="squeeze-perception export", description=export_models.__doc__)
    parser.add_argument("models", nargs="*", help="registered model names (squeeze-perception models)")
    parser.add_argument("--all", action="store_true", help="every registered model that has weights")
    parser.add_argument("--weights", help="torch checkpoint to export instead of models/<model>.pt (one model)")
    parser.add_argument("--out", help="ONNX file to write instead of the default place (one model)")
    parser.add_argument("--force", action="store_true", help="export even when an up-to-date file exists")
    args = parser.parse_args(argv)
    load_plugins()
    names = list(args.models)
    if args.all:
        names += sorted(n for n, s in MODELS.items() if (w := s.weights_path()) is not None and w.exists())
    if not names:
        parser.error("name at least one model, or --all")
    if (args.weights or args.out) and len(names) != 1:
        parser.error("--weights and --out apply to exactly one model")
    failed = 0
    for name in names:
        try:
            spec = get_model(name)
        except RegistryError as exc:
            print(f"export: {exc}", file=sys.stderr)
            failed += 1
            continue
        if spec.onnx_only:  # nothing to export: the model file is the graph onnxruntime runs
            print(f"{name}: ONNX only, runs {spec.weights_path()} as it is (no torch checkpoint to export)")
            continue
        weights = Path(args.weights) if args.weights else spec.weights_path()
        if weights is None or not weights.exists():
            print(f"export: {name}: weights file '{weights}' not found; train it (models/README.md) or pass "
                  "--weights FILE", file=sys.stderr)
            failed += 1
            continue
        out = Path(args.out) if args.out else onnx_path_for(weights)
        if onnx_is_fresh(out, weights) and exported_model(out) == name and not args.force:
            print(f"{name}: up to date {out}")
            continue
        try:
            export_onnx(spec, out, weights=weights)
        except (ModelLoadError, OSError) as exc:
            print(f"export: {name}: {exc}", file=sys.stderr)
            failed += 1
            continue
        print(f"{name}: wrote {out} ({out.stat().st_size / 1e6:.1f} MB)")
    return 1 if failed else 0


def _usage() -> str:
    lines = ["usage: squeeze-perception <command> [args]", "", "commands:"]
    lines += [f"  {name:10s} {help_}" for name, (_, help_) in COMMANDS.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(_usage())
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"unknown command '{name}'\n\n{_usage()}", file=sys.stderr)
        return 2
    module, _, func = COMMANDS[name][0].partition(":")
    try:
        target = getattr(importlib.import_module(module), func)
    except (ModuleNotFoundError, AttributeError) as exc:
        print(f"command '{name}' is not available in this install: {exc}", file=sys.stderr)
        return 2
    result = target(rest)
    return int(result or 0)


if __name__ == "__main__":
    raise SystemExit(main())
