"""`squeeze-perception synth demo-bag`: the bundled demo drive, rebuilt deterministically from its seed.

  squeeze-perception synth demo-bag --out bags/demo_drive             # 200 frames = 20 s at 10 Hz
  squeeze-perception synth demo-bag --out bags/demo_drive_preview --frames 12

A city drive (ego car at 8 m/s) is rendered into a KITTI raw-sync folder and converted by
kitti2bag (mcap, zstd chunks). Any --frames gives the first frames of the same 200-frame drive.
"""
from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

DEMO_SEED = 2026
DEMO_FRAMES = 200
DEMO_STYLE = "city"
DEMO_EGO_SPEED = 8.0
DEMO_DENSITY = 1.0


def build_demo_drive(raw_root: Path, frames: int = DEMO_FRAMES, progress: bool = True) -> Path:
    """Write the demo drive as raw/<date>/<date>_drive_0001_sync under raw_root; returns the drive folder."""
    from tqdm import tqdm

    from .generate import sequence_frames
    from .writer import RawSequenceWriter

    writer = RawSequenceWriter(raw_root, drive=1)
    gen = sequence_frames(DEMO_SEED, 1, frames, style=DEMO_STYLE, ego_speed=DEMO_EGO_SPEED, density=DEMO_DENSITY,
                          world_frames=DEMO_FRAMES)
    for frame in tqdm(gen, total=frames, desc="demo drive", unit="frame", disable=not progress):
        writer.add(frame)
    writer.close()
    return writer.dir


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="squeeze-perception synth demo-bag", description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="bags/demo_drive", help="bag folder to create")
    ap.add_argument("--frames", type=int, default=DEMO_FRAMES)
    ap.add_argument("--keep-raw", default=None, help="also keep the KITTI raw folder here")
    ap.add_argument("--force", action="store_true", help="replace an existing bag folder")
    args = ap.parse_args(argv)
    from ..kitti2bag import convert

    out = Path(args.out)
    if out.exists():
        if not args.force:
            print(f"{out} exists already (use --force to rebuild it)")
            return 1
        shutil.rmtree(out)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="demo_drive_") as tmp:
        raw_root = Path(args.keep_raw) if args.keep_raw else Path(tmp)
        drive = build_demo_drive(raw_root, args.frames)
        summary = convert(drive, out)
    print(summary.text())
    print(f"demo bag: {args.frames} frames ({args.frames / 10:.1f} s at 10 Hz) in {time.perf_counter() - t0:.0f} s -> {out}")
    return 0
