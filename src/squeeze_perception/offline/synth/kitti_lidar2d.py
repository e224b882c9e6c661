"""`squeeze-perception synth lidar2d`: real KITTI object frames -> labelled lidar_2d tensors (thesis 4.3).

  squeeze-perception synth lidar2d --root /path/to/kitti --split training --out DIR

Every point inside a label's 3D box takes the box's class (Car 1, Pedestrian/Person_sitting 2,
Cyclist 3, others 0), then the scan is projected onto the front 64x512 grid, as SqueezeSeg built
its KITTI training set. Frames without label_2 get label 0 everywhere.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from ...kitti.datasets import KittiObjectDataset
from ...kitti.lidar_2d import scan_to_lidar_2d, write_lidar_2d
from ...kitti.pointwise import pointwise_labels


def convert_object_split(root: str | Path, split: str, out: str | Path, margin: float = 0.0,
                         progress: bool = True) -> list[Path]:
    from tqdm import tqdm

    ds = KittiObjectDataset(root, split)
    written = []
    for i in tqdm(range(len(ds)), desc=f"lidar_2d {split}", unit="frame", disable=not progress):
        frame = ds[i]
        classes, _ = pointwise_labels(frame.points, frame.labels, frame.calib, margin)
        path = Path(out) / f"{frame.name}.npy"
        write_lidar_2d(path, scan_to_lidar_2d(frame.points, classes.astype(np.int64)))
        written.append(path)
    return written


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="squeeze-perception synth lidar2d", description=__doc__.splitlines()[0])
    ap.add_argument("--root", required=True, help="KITTI object root (holding object/<split> or <split>)")
    ap.add_argument("--split", default="training")
    ap.add_argument("--out", required=True)
    ap.add_argument("--margin", type=float, default=0.0, help="grow each box by this many metres")
    args = ap.parse_args(argv)
    paths = convert_object_split(args.root, args.split, args.out, args.margin)
    print(f"wrote {len(paths)} lidar_2d tensors to {args.out}")
    return 0
