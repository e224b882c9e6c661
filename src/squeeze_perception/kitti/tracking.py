"""KITTI tracking labels (label_02: one line per object per frame) and the tracks_velo.csv table."""
from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .labels import KittiFormatError, ObjectLabel

TRACKS_VELO_COLUMNS = ("frame", "track_id", "class_id", "x", "y", "z", "length", "width", "height", "yaw",
                       "vx", "vy", "num_points")


@dataclass
class TrackingLabel:
    frame: int
    track_id: int  # -1 for DontCare
    label: ObjectLabel


def read_tracking_labels(path: str | Path) -> list[TrackingLabel]:
    p = Path(path)
    if not p.exists():
        raise KittiFormatError(f"tracking label file '{p}' not found")
    out = []
    for n, line in enumerate(p.read_text().splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) not in (17, 18):
            raise KittiFormatError(f"{p}:{n}: expected 17 or 18 columns, got {len(parts)}")
        v = [float(x) for x in parts[3:]]
        lab = ObjectLabel(parts[2], v[0], int(v[1]), v[2], np.array(v[3:7]), np.array(v[7:10]), np.array(v[10:13]),
                          v[13], v[14] if len(v) > 14 else 1.0)
        out.append(TrackingLabel(int(parts[0]), int(parts[1]), lab))
    return out


def write_tracking_labels(path: str | Path, rows: list[TrackingLabel]) -> None:
    Path(path).write_text("".join(f"{r.frame} {r.track_id} {r.label.to_line()}\n" for r in rows))


def read_tracks_velo(path: str | Path) -> np.ndarray:
    """tracks_velo.csv as a structured array with the TRACKS_VELO_COLUMNS fields."""
    p = Path(path)
    if not p.exists():
        raise KittiFormatError(f"tracks file '{p}' not found")
    with p.open() as fh:
        reader = csv.reader(fh)
        header = next(reader, None)
        if header is None or tuple(header) != TRACKS_VELO_COLUMNS:
            raise KittiFormatError(f"tracks file '{p}' header {header} != {list(TRACKS_VELO_COLUMNS)}")
        rows = [tuple(r) for r in reader if r]
    dtype = [(c, "<i4" if c in ("frame", "track_id", "class_id", "num_points") else "<f4") for c in TRACKS_VELO_COLUMNS]
    out = np.zeros(len(rows), dtype=dtype)
    for i, r in enumerate(rows):
        out[i] = tuple(int(float(x)) if dtype[j][1] == "<i4" else float(x) for j, x in enumerate(r))
    return out


def write_tracks_velo(path: str | Path, rows: list[tuple]) -> None:
    with Path(path).open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(TRACKS_VELO_COLUMNS)
        for r in rows:
            w.writerow([int(r[0]), int(r[1]), int(r[2])] + [f"{float(v):.3f}" for v in r[3:12]] + [int(r[12])])
