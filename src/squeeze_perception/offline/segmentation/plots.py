"""PNG figures for docs/segmentation.md: predicted vs ground-truth label maps on the range image,
rendered vs measured intensity, and training curves."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..training import read_log, running_mean

CLASS_RGB = np.array([[0.12, 0.12, 0.12], [0.9, 0.2, 0.2], [0.2, 0.4, 0.95], [0.2, 0.85, 0.3]])


def _save(fig, out: Path, dpi: int = 110) -> Path:
    """Lay out, write (making the folder) and close one figure; returns its path."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=dpi)
    plt.close(fig)
    return out


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
    return _save(fig, out)


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
    return _save(fig, out)


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
    return _save(fig, out)


def plot_intensity_sweep(iou: dict[str, dict[float, list[float]]], out: Path, title: str = "") -> Path:
    """IoU (%) of car, pedestrian and cyclist against the intensity gain, one line per model.
    iou: model -> gain -> IoU per class id (NaN where a class has no ground truth)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ...interfaces import CLASS_NAMES

    fig, axes = plt.subplots(1, 3, figsize=(11, 3.4), sharey=True)
    for ax, cls in zip(axes, (1, 2, 3)):
        for model, by_gain in iou.items():
            gains = sorted(by_gain)
            ax.plot(gains, [100 * by_gain[g][cls] for g in gains], marker="o", label=model)
        ax.set_xscale("log", base=2)
        ax.set_xticks(sorted({g for by_gain in iou.values() for g in by_gain}))
        ax.get_xaxis().set_major_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
        ax.axvline(1.0, color="0.7", lw=0.8)
        ax.set_title(CLASS_NAMES[cls])
        ax.set_xlabel("intensity gain (x as recorded)")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("IoU (%)")
    axes[0].legend(fontsize=7)
    if title:
        fig.suptitle(title, fontsize=9)
    return _save(fig, out)


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
    return _save(fig, out)


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
    return _save(fig, out, dpi=100)


# Outcome colours for the camera overlay: true object points of the right class, object points of
# another prediction (missed), background or other-class points predicted as an object (false).
OUTCOME_RGB = {"right": (0, 230, 0), "missed": (255, 230, 0), "false car": (255, 30, 30),
               "false pedestrian": (255, 0, 255), "false cyclist": (0, 230, 230)}


def plot_camera_outcomes(panels: list[tuple[str, list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray,
                                                               np.ndarray]]]], out: Path) -> Path:
    """Real camera images with every evaluated LiDAR point drawn where it projects, coloured by
    outcome (OUTCOME_RGB): one column per model, one row per frame. Each frame is (image uint8
    HxWx3, (N,2) pixel of each point, (N,) bool points counted by the evaluation, (N,) predicted
    class, (N,) true class). Where points overlap, false ones are drawn last (on top)."""
    from PIL import Image, ImageDraw, ImageFont

    rows = len(panels[0][1])
    h, w = panels[0][1][0][0].shape[:2]
    title_h = 22
    canvas = Image.new("RGB", (w * len(panels), (h + title_h) * rows), "white")
    draw_canvas = ImageDraw.Draw(canvas)
    font = ImageFont.load_default()
    for col, (name, frames) in enumerate(panels):
        for row, (image, uv, counted, pred, truth) in enumerate(frames):
            img = Image.fromarray(np.ascontiguousarray(image[:h, :w]))
            draw = ImageDraw.Draw(img)
            obj_truth, obj_pred = truth > 0, pred > 0
            layers = [("right", counted & obj_truth & (pred == truth)),
                      ("missed", counted & obj_truth & (pred != truth) & ~obj_pred),
                      ("false car", counted & (pred == 1) & (truth != 1)),
                      ("false pedestrian", counted & (pred == 2) & (truth != 2)),
                      ("false cyclist", counted & (pred == 3) & (truth != 3))]
            for outcome, sel in layers:
                for u, v in uv[sel]:
                    draw.rectangle([u - 1, v - 1, u + 1, v + 1], fill=OUTCOME_RGB[outcome])
            y0 = row * (h + title_h)
            canvas.paste(img, (col * w, y0 + title_h))
            counts = ", ".join(f"{k} {int(s.sum())}" for k, s in layers)
            draw_canvas.text((col * w + 4, y0 + 5), f"{name}: {counts}", fill="black", font=font)
    out.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(out)
    return out
