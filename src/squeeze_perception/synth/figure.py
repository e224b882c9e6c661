"""`squeeze-perception synth figure`: a synthetic frame beside a real KITTI frame (PNG for docs/).

  squeeze-perception synth figure --out docs/img [--seed 0 --index 3] [--real ../shared/data/kitti_real]

Rows: camera image with the LiDAR points projected on it (colour = depth) and the 2D label boxes;
the front 64x512 range image; the front 64x512 class image (real: point-wise labels from the 3D boxes).
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from ..kitti.datasets import KittiObjectDataset
from ..kitti.pointwise import pointwise_labels
from ..kitti.projection import point_labels_to_cells, spherical_project
from ..paths import kitti_real_dir

CLASS_COLOURS = np.array([[40, 40, 40], [30, 144, 255], [255, 60, 60], [255, 200, 0]], np.uint8)
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


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="squeeze-perception synth figure", description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="docs/img")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--index", type=int, default=3)
    ap.add_argument("--real", default=str(kitti_real_dir()))
    args = ap.parse_args(argv)
    path = make_figure(Path(args.out), args.seed, args.index, Path(args.real))
    print(f"wrote {path}")
    return 0
