"""`squeeze-perception synth figure`: a synthetic frame beside a real KITTI frame (PNG for docs/).

  squeeze-perception synth figure --out docs/img [--seed 0 --index 3] [--real ../shared/data/kitti_real]

Also draws docs/img/synth_drive_bev.png: a bird's-eye view of the demo drive with its ground-truth tracks.

Rows: camera image with the LiDAR points projected on it (colour = depth) and the 2D label boxes;
the front 64x512 range image; the front 64x512 class image (real: point-wise labels from the 3D boxes).
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from ...kitti.datasets import KittiObjectDataset
from ...kitti.pointwise import pointwise_labels
from ...kitti.projection import point_labels_to_cells, spherical_project
from ...interfaces import CLASS_NAMES
from ...paths import kitti_real_dir
from ...visualization import class_colour_uint8
from .demo_bag import DEMO_SEED

# The project's class colours (visualization.py); label 0 (no object) stays dark in these figures so
# that the objects stand out against the scene.
CLASS_COLOURS = np.array([(40, 40, 40)] + [class_colour_uint8(c) for c in range(1, len(CLASS_NAMES))], np.uint8)
BOX_COLOURS = {"Car": "deepskyblue", "Van": "lightblue", "Truck": "lightblue", "Pedestrian": "red",
               "Cyclist": "gold", "DontCare": "grey"}


def _panel_camera(ax, image, points, calib, labels, title):
    from matplotlib.patches import Rectangle

    ax.imshow(image)
    uv, depth = calib.project_velo(points[:, :3])
    h, w = image.shape[:2]
    ok = (depth > 1) & (uv[:, 0] >= 0) & (uv[:, 0] < w) & (uv[:, 1] >= 0) & (uv[:, 1] < h)
    ax.scatter(uv[ok, 0], uv[ok, 1], c=np.minimum(depth[ok], 60), cmap="turbo", s=0.4, alpha=0.7, linewidths=0)
    for lab in labels:
        l, t, r, b = lab.bbox
        ax.add_patch(Rectangle((l, t), r - l, b - t, fill=False, lw=1.0, ec=BOX_COLOURS.get(lab.type, "white")))
    ax.set_title(title, fontsize=9)
    ax.set_axis_off()


def _panel_range(ax, points, title):
    proj = spherical_project(points, "front")
    rng = np.where(proj.mask, proj.grid[..., 4], np.nan)
    import matplotlib

    cmap = matplotlib.colormaps["turbo"].copy()
    cmap.set_bad("black")
    ax.imshow(rng, cmap=cmap, vmin=0, vmax=60, aspect="auto", interpolation="nearest")
    ax.set_title(f"{title}: range, front 64x512 ({100 * (1 - proj.mask.mean()):.1f} % cells empty, black)", fontsize=9)
    ax.set_axis_off()
    return proj


def _panel_classes(ax, proj, classes, title):
    cells = point_labels_to_cells(proj, classes)
    img = CLASS_COLOURS[cells]
    img[~proj.mask] = 0
    ax.imshow(img, aspect="auto", interpolation="nearest")
    ax.set_title(f"{title}: classes (grey background, blue car, red pedestrian, yellow cyclist)", fontsize=9)
    ax.set_axis_off()


def make_figure(out: Path, seed: int, index: int, real_root: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .generate import object_frame

    synth = object_frame(seed, "training", index)
    real = KittiObjectDataset(real_root, "training")[1]
    real_classes = pointwise_labels(real.points, real.labels, real.calib)[0]
    fig, axes = plt.subplots(3, 2, figsize=(16, 5.6), gridspec_kw={"height_ratios": [3.0, 1.0, 1.0]})
    _panel_camera(axes[0, 0], synth.image, synth.scan.points, synth.calib, synth.labels,
                  f"synthetic (seed {seed}, training {index:06d}): camera 2 + LiDAR (colour = depth) + label_2 boxes")
    _panel_camera(axes[0, 1], real.image, real.points, real.calib, real.labels,
                  "real KITTI object training 000001: camera 2 + LiDAR + label_2 boxes")
    proj_s = _panel_range(axes[1, 0], synth.scan.points, "synthetic")
    proj_r = _panel_range(axes[1, 1], real.points, "real")
    _panel_classes(axes[2, 0], proj_s, synth.scan.class_id, "synthetic")
    _panel_classes(axes[2, 1], proj_r, real_classes, "real (from 3D boxes)")
    fig.tight_layout()
    out.mkdir(parents=True, exist_ok=True)
    path = out / "synth_vs_real.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def make_drive_figure(out: Path, seed: int, frames: int = 30) -> Path:
    """Bird's-eye view of a drive's last frame: LiDAR points by class, ground-truth boxes, tracks' trails."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Polygon

    from .generate import sequence_frames

    history: dict[int, list[tuple[float, float]]] = {}
    last = None
    for frame in sequence_frames(seed, 1, frames, style="city", ego_speed=8.0, density=1.0, world_frames=200):
        # Trails in the last frame's Velodyne frame: keep world positions, convert at the end.
        pose = frame.ego_pose
        for t in frame.truths:
            if t.agent.class_id > 0:
                world_xy = pose[:2, :2] @ t.centre[:2] + pose[:2, 3]
                history.setdefault(t.agent.instance_id, []).append(tuple(world_xy))
        last = frame
    pose = last.ego_pose
    fig, ax = plt.subplots(figsize=(12, 6))
    pts, cls = last.scan.points, last.scan.class_id
    keep = (np.abs(pts[:, 0]) < 50) & (np.abs(pts[:, 1]) < 25) & (pts[:, 2] > -1.55)
    colours = CLASS_COLOURS[cls[keep]] / 255.0
    colours[cls[keep] == 0] = (0.6, 0.6, 0.6)
    ax.scatter(pts[keep, 0], pts[keep, 1], s=0.3, c=colours, linewidths=0)
    names = {1: "car", 2: "pedestrian", 3: "cyclist"}
    for t in last.truths:
        if t.agent.class_id == 0 or abs(t.centre[0]) > 50 or abs(t.centre[1]) > 25:
            continue
        c, s_ = np.cos(t.yaw), np.sin(t.yaw)
        half = np.array([[1, 1], [1, -1], [-1, -1], [-1, 1]]) * t.size[:2] / 2
        corners = half @ np.array([[c, s_], [-s_, c]]) + t.centre[:2]
        colour = CLASS_COLOURS[t.agent.class_id] / 255.0
        ax.add_patch(Polygon(corners, closed=True, fill=False, ec=colour, lw=1.2))
        trail = np.array(history.get(t.agent.instance_id, []))
        if len(trail) > 1:
            local = (trail - pose[:2, 3]) @ pose[:2, :2]
            ax.plot(local[:, 0], local[:, 1], "-", color=colour, lw=0.8, alpha=0.7)
        ax.text(t.centre[0], t.centre[1] + t.size[1] / 2 + 0.4,
                f"{t.agent.instance_id} {names[t.agent.class_id]} ({t.num_points} pts)", fontsize=6)
    ax.plot(0, 0, marker=">", color="k", ms=10)
    ax.set_xlim(-50, 50)
    ax.set_ylim(-25, 25)
    ax.set_aspect("equal")
    ax.set_xlabel("x (m, velo_link)")
    ax.set_ylabel("y (m)")
    ax.set_title(f"synthetic drive (seed {seed}), frame {frames - 1}: LiDAR points by class, ground-truth boxes "
                 f"and the last {frames / 10:.0f} s of each track over the ground, drawn in this frame", fontsize=9)
    fig.tight_layout()
    out.mkdir(parents=True, exist_ok=True)
    path = out / "synth_drive_bev.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="squeeze-perception synth figure", description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="docs/img")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--index", type=int, default=3)
    ap.add_argument("--real", default=str(kitti_real_dir()))
    ap.add_argument("--drive-frames", type=int, default=30,
                    help="also draw the demo drive's bird's-eye view after this many frames (0: skip)")
    args = ap.parse_args(argv)
    path = make_figure(Path(args.out), args.seed, args.index, Path(args.real))
    print(f"wrote {path}")
    if args.drive_frames:
        print(f"wrote {make_drive_figure(Path(args.out), DEMO_SEED, args.drive_frames)}")
    return 0
