"""PNG figures for docs/segmentation.md: predicted vs ground-truth label maps on the range image,
rendered vs measured intensity, and training curves."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..training import read_log, running_mean

CLASS_RGB = np.array([[0.12, 0.12, 0.12], [0.9, 0.2, 0.2], [0.2, 0.4, 0.95], [0.2, 0.85, 0.3]])


def _label_image(labels: np.ndarray, valid: np.ndarray) -> np.ndarray:
    img = CLASS_RGB[np.clip(labels, 0, 3)]
    img[~valid] = 1.0
    return img


def plot_label_maps(rows: list[tuple[str, np.ndarray]], valid: np.ndarray, out: Path, title: str = "") -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(rows), 1, figsize=(12, 1.5 * len(rows) + 0.6))
    axes = np.atleast_1d(axes)
    for ax, (name, labels) in zip(axes, rows):
        ax.imshow(_label_image(labels, valid), aspect="auto", interpolation="nearest")
        ax.set_ylabel(name, rotation=0, ha="right", va="center", fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
    if title:
        fig.suptitle(f"{title}  (red car, blue pedestrian, green cyclist, white no return)", fontsize=9)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def plot_intensity(measured: np.ndarray, rendered: np.ndarray, valid: np.ndarray, out: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 1, figsize=(12, 3.6))
    for ax, (name, img) in zip(axes, (("measured", measured), ("rendered", rendered))):
        ax.imshow(np.where(valid, img, np.nan), aspect="auto", cmap="viridis", vmin=0, vmax=0.6)
        ax.set_ylabel(name, fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
    mse = float(((measured - rendered)[valid] ** 2).mean())
    fig.suptitle(f"learned intensity rendering on a real KITTI scan (MSE {mse:.4f})", fontsize=9)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def plot_training_curves(logs: dict[str, Path], out: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.5))
    for name, path in logs.items():
        if not path.exists():
            continue
        recs = read_log(path)
        if not recs:
            continue
        ax.plot(*running_mean([r["step"] for r in recs], [r["loss"] for r in recs], max(1, len(recs) // 30)),
                label=name)
    ax.set_xlabel("step")
    ax.set_ylabel("training loss (smoothed)")
    ax.set_yscale("log")
    ax.legend(fontsize=8)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def plot_top_view(points: np.ndarray, labels: np.ndarray, table: np.ndarray, out: Path, title: str = "",
                  gt_corners: list[np.ndarray] | None = None) -> Path:
    """Bird's-eye view: points coloured by predicted class, fitted instance boxes (solid) and
    ground-truth boxes (dashed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ...segmentation.boxfit import Box

    fig, ax = plt.subplots(figsize=(8, 6))
    bg = labels == 0
    ax.scatter(points[bg, 1], points[bg, 0], s=0.3, c="0.75")
    for c in (1, 2, 3):
        sel = labels == c
        ax.scatter(points[sel, 1], points[sel, 0], s=1.0, color=CLASS_RGB[c])
    for row in table:
        box = Box(row["x"], row["y"], row["z"], row["length"], row["width"], row["height"], row["yaw"])
        corners = np.vstack([box.corners_xy(), box.corners_xy()[:1]])
        ax.plot(corners[:, 1], corners[:, 0], color=CLASS_RGB[int(row["class_id"])], lw=1.5)
    for corners in gt_corners or []:
        closed = np.vstack([corners, corners[:1]])
        ax.plot(closed[:, 1], closed[:, 0], "k--", lw=0.8)
    ax.set_xlabel("y (m, left positive)")
    ax.set_ylabel("x (m, forward)")
    ax.invert_xaxis()
    ax.set_aspect("equal")
    ax.set_xlim(20, -20)
    ax.set_ylim(0, 45)
    ax.set_title(title or "predicted classes, fitted boxes (solid), ground-truth boxes (dashed)", fontsize=9)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def plot_top_view_ground(points: np.ndarray, panels: list, ground_mask: np.ndarray | None,
                         gt_corners: list[np.ndarray], out: Path, title: str = "") -> Path:
    """Side-by-side bird's-eye views of one frame, e.g. ground removal off and on. panels:
    [(label, SegmentationResult)]; ground_mask (N,) marks the fitted ground, drawn in brown on
    the panels after the first."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ...segmentation.boxfit import Box

    fig, axes = plt.subplots(1, len(panels), figsize=(6.5 * len(panels), 6.2), sharey=True)
    for k, (ax, (label, res)) in enumerate(zip(np.atleast_1d(axes), panels)):
        labels = res.labels
        bg = labels == 0
        ax.scatter(points[bg, 1], points[bg, 0], s=0.3, c="0.75")
        if k > 0 and ground_mask is not None:
            ax.scatter(points[ground_mask, 1], points[ground_mask, 0], s=0.3, color=(0.6, 0.45, 0.25))
        for c in (1, 2, 3):
            sel = labels == c
            ax.scatter(points[sel, 1], points[sel, 0], s=1.0, color=CLASS_RGB[c])
        for row in res.table:
            box = Box(row["x"], row["y"], row["z"], row["length"], row["width"], row["height"], row["yaw"])
            corners = np.vstack([box.corners_xy(), box.corners_xy()[:1]])
            ax.plot(corners[:, 1], corners[:, 0], color=CLASS_RGB[int(row["class_id"])], lw=1.5)
        for corners in gt_corners:
            closed = np.vstack([corners, corners[:1]])
            ax.plot(closed[:, 1], closed[:, 0], "k--", lw=0.8)
        ax.set_xlabel("y (m, left positive)")
        ax.set_aspect("equal")
        ax.set_xlim(25, -25)
        ax.set_ylim(0, 60)
        ax.set_title(label, fontsize=9)
    np.atleast_1d(axes)[0].set_ylabel("x (m, forward)")
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out
