"""`squeeze-perception synth ...`: generate the synthetic KITTI-format dataset, benchmark it, build the demo bag.

  squeeze-perception synth --out DIR [--sequences M --frames N --object-train K --object-test K2 --seed S]
  squeeze-perception synth bench [--frames N]
  squeeze-perception synth stats --root DIR
  squeeze-perception synth demo-bag --out bags/demo_drive [--frames 200]
  squeeze-perception synth figure --out docs/img
  squeeze-perception synth lidar2d --root KITTI_OBJECT_ROOT --split training --out DIR   (real KITTI -> lidar_2d)
"""
from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path

SUBCOMMANDS = ("bench", "stats", "demo-bag", "figure", "lidar2d")


def _generate(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="squeeze-perception synth",
                                 description="Generate synthetic KITTI-format data (object, raw-sync, lidar_2d).")
    ap.add_argument("--out", required=True, help="dataset root (created)")
    ap.add_argument("--sequences", type=int, default=2, help="raw-sync drives to write")
    ap.add_argument("--frames", type=int, default=100, help="frames per drive (10 Hz)")
    ap.add_argument("--object-train", type=int, default=0, help="independent object frames for object/training")
    ap.add_argument("--object-test", type=int, default=0, help="independent object frames for object/testing")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--first-drive", type=int, default=1, help="number of the first drive folder")
    ap.add_argument("--workers", type=int, default=1, help="processes (each uses one open3d thread when > 1)")
    ap.add_argument("--no-shadows", action="store_true", help="skip the camera's shadow rays (faster)")
    ap.add_argument("--camera-only", "--no-lidar", dest="camera_only", action="store_true",
                    help="no LiDAR scans (detector datasets): object frames get image_2, calib and label_2 only, "
                         "with the same images and labels as a full run of the same seed")
    ap.add_argument("--lidar-2d-only", action="store_true",
                    help="segmentation training sets: write only lidar_2d/{train,test}/NNNNNN.npy (the same scans "
                         "as a full run of the same seed, about 4x faster: no camera); no drives")
    ap.add_argument("--no-ready", action="store_true", help="do not write the READY marker at the end")
    ap.add_argument("--skip-existing", action="store_true",
                    help="keep frames already on disk (same seed: they are the frames this run would write)")
    args = ap.parse_args(argv)
    if args.lidar_2d_only and args.camera_only:
        ap.error("--lidar-2d-only and --camera-only exclude each other")

    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    from .generate import dataset_tasks, run_tasks

    root = Path(args.out)
    root.mkdir(parents=True, exist_ok=True)
    (root / "READY").unlink(missing_ok=True)
    nthreads = 1 if args.workers > 1 else 0
    tasks = dataset_tasks(root, args.seed, args.object_train, args.object_test, args.sequences, args.frames,
                          not args.no_shadows, nthreads, args.first_drive, args.skip_existing, not args.camera_only,
                          camera=not args.lidar_2d_only)
    total = len([t for t in tasks if t.kind == "object"]) + sum(t.frames for t in tasks if t.kind == "sequence")
    done = {"frames": 0, "skipped": 0}
    t0 = time.perf_counter()
    with Progress(TextColumn("synth"), BarColumn(), TextColumn("{task.completed}/{task.total} frames"),
                  TextColumn("{task.fields[rate]}"), TimeRemainingColumn()) as bar:
        job = bar.add_task("synth", total=total, rate="")

        def progress(kind: str, frames: int, seconds: float) -> None:
            if seconds == 0.0:  # kept from disk (--skip-existing)
                done["skipped"] += frames
            else:
                done["frames"] += frames
            rate = done["frames"] / (time.perf_counter() - t0)
            bar.update(job, advance=frames, rate=f"{rate:.2f} frames/s")

        run_tasks(tasks, args.workers, progress)
    elapsed = time.perf_counter() - t0
    command = "squeeze-perception synth " + " ".join(shlex.quote(a) for a in argv)
    print(f"{args.object_train} training + {args.object_test} testing object frames "
          f"({'camera only' if args.camera_only else 'lidar_2d grids only' if args.lidar_2d_only else 'with lidar_2d'}), "
          f"{0 if args.lidar_2d_only else args.sequences} drives x {args.frames} frames in {root}: {done['frames']} rendered in {elapsed:.0f} s "
          f"({done['frames'] / max(elapsed, 1e-9):.2f} frames/s, {args.workers} worker(s)), "
          f"{done['skipped']} kept from disk")
    if not args.no_ready:
        (root / "READY").write_text(command + "\n")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in SUBCOMMANDS:
        name, rest = argv[0], argv[1:]
        if name == "bench":
            from .bench import main as bench_main

            return bench_main(rest)
        if name == "stats":
            from .stats import main as stats_main

            return stats_main(rest)
        if name == "lidar2d":
            from .kitti_lidar2d import main as lidar2d_main

            return lidar2d_main(rest)
        if name == "demo-bag":
            from .demo_bag import main as demo_main

            return demo_main(rest)
        from .figure import main as figure_main

        return figure_main(rest)
    return _generate(argv)


if __name__ == "__main__":
    raise SystemExit(main())
