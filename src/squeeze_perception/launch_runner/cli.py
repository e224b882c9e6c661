"""`squeeze-perception launch FILE [name:=value ...]`.

Runs the file with the real ROS 2 launch library when it imports (same as `ros2 launch`),
otherwise with the compatible runner (runner.py) that supports the subset our files use.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..paths import launch_dir
from . import compat as c


def resolve_launch_file(name: str) -> Path:
    path = Path(name)
    if path.exists():
        return path
    candidate = launch_dir() / name
    if candidate.exists():
        return candidate
    raise c.LaunchError(f"launch file '{name}' not found (looked in . and {launch_dir()})")


def real_launch_available() -> bool:
    try:
        import launch  # noqa: F401

        return hasattr(launch, "LaunchService") and not getattr(launch, "SQUEEZE_PERCEPTION_COMPAT", False)
    except ImportError:
        return False


def run_with_real_launch(path: Path, arguments: dict[str, str]) -> int:
    """What `ros2 launch` does: include the file with its arguments in a LaunchService."""
    import launch
    from launch.launch_description_sources import AnyLaunchDescriptionSource

    service = launch.LaunchService(argv=[f"{k}:={v}" for k, v in arguments.items()])
    service.include_launch_description(launch.LaunchDescription([
        launch.actions.IncludeLaunchDescription(AnyLaunchDescriptionSource(str(path)),
                                                launch_arguments=list(arguments.items()))]))
    return int(service.run())


def show_arguments(path: Path) -> str:
    from .runner import load_launch_description

    description = load_launch_description(path)
    lines = [f"Arguments of {path.name} (pass as name:=value):"]
    for e in description.entities:
        if isinstance(e, c.DeclareLaunchArgument):
            default = e.default_value if isinstance(e.default_value, str) else "(computed)"
            choices = f" one of {list(e.choices)}" if e.choices else ""
            lines.append(f"  {e.name:14s} {e.description}{choices} (default: '{default}')")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="squeeze-perception launch",
                                     description="Run a launch file (real ROS 2 launch if installed, "
                                                 "else the compatible runner).")
    parser.add_argument("launch_file", help="path, or a file name in the package's launch/ folder")
    parser.add_argument("arguments", nargs="*", help="launch arguments name:=value")
    parser.add_argument("--compat", action="store_true", help="use the compatible runner even if launch exists")
    parser.add_argument("--show-args", "-s", action="store_true", help="list the file's arguments and exit")
    parser.add_argument("--dry-run", action="store_true", help="print the node command lines and exit")
    parser.add_argument("--sigint-timeout", type=float, default=5.0,
                        help="seconds between Ctrl-C and SIGTERM to nodes still running")
    args = parser.parse_intermixed_args(argv)  # options may follow name:=value arguments
    from .runner import parse_launch_arguments

    try:
        path = resolve_launch_file(args.launch_file)
        arguments = parse_launch_arguments(args.arguments)
        if args.show_args:
            print(show_arguments(path))
            return 0
        if real_launch_available() and not args.compat and not args.dry_run:
            return run_with_real_launch(path, arguments)
        from .runner import load_launch_description, plan_launch, run_plan

        plan = plan_launch(load_launch_description(path), arguments)
        if args.dry_run:
            for spec in plan.processes:
                print(f"{spec.name}: {' '.join(spec.cmd)}")
            import shutil

            shutil.rmtree(plan.tmpdir, ignore_errors=True)
            return 0
        print(f"[launch] compatible runner: {path} with {len(plan.processes)} process(es)", flush=True)
        return run_plan(plan, sigint_timeout=args.sigint_timeout)
    except c.LaunchError as exc:
        print(f"launch: error: {exc}", file=sys.stderr)
        return 2
