"""`seg intensity-sweep` (offline/segmentation/evaluation.py `intensity_sweep`, plots.py
`plot_intensity_sweep`): the same object frames scored with every scan's intensity times each
gain, against a stand-in network that calls a point car when its intensity reads above 0.3."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from squeeze_perception.offline.segmentation.evaluation import intensity_sweep
from squeeze_perception.offline.segmentation.plots import plot_intensity_sweep


class IntensityThresholdNet:
    """Labels car (1) every point whose intensity exceeds 0.3, else unknown; no instances."""

    def process(self, pts):
        n = len(pts)
        return SimpleNamespace(labels=np.where(pts[:, 3] > 0.3, 1, 0).astype(np.int32),
                               instances=np.full(n, -1, np.int32), fov_mask=np.ones(n, bool))


def _frames(root, n=2):
    rng = np.random.default_rng(0)
    (root / "velodyne").mkdir(parents=True)
    (root / "velodyne_labels").mkdir()
    for k in range(n):
        pts = rng.uniform(-20, 20, size=(200, 4)).astype(np.float32)
        car = np.arange(200) < 50
        pts[:, 3] = np.where(car, 0.4, 0.1)  # car paint reads 0.4, the rest 0.1
        pts.tofile(root / "velodyne" / f"{k:06d}.bin")
        np.save(root / "velodyne_labels" / f"{k:06d}.npy", np.stack([car.astype(np.int64), np.where(car, k, -1)], 1))
    return root


def test_each_gain_moves_the_labels_of_an_intensity_reading_net(tmp_path):
    root = _frames(tmp_path / "object" / "testing")
    counts = intensity_sweep(IntensityThresholdNet(), [(root, "velodyne")], [0.5, 1.0, 2.0], progress=False)
    car_iou = {g: c.class_level()["IoU"][1] for g, c in counts.items()}
    assert car_iou[1.0] == pytest.approx(1.0)  # as recorded: 0.4 > 0.3, 0.1 < 0.3
    assert car_iou[0.5] == pytest.approx(0.0)  # car reads 0.2: lost
    assert car_iou[2.0] == pytest.approx(1.0)  # car 0.8, the rest 0.2: still right
    assert all(c.frames == 2 for c in counts.values())


def test_sources_are_summed(tmp_path):
    a = _frames(tmp_path / "a", n=1)
    b = _frames(tmp_path / "b", n=2)
    counts = intensity_sweep(IntensityThresholdNet(), [(a, "velodyne"), (b, "velodyne")], [1.0], progress=False)
    assert counts[1.0].frames == 3 and counts[1.0].gt[1] == 150


def test_plot_writes_a_png(tmp_path):
    iou = {"m": {0.5: [0.9, 0.2, np.nan, 0.1], 1.0: [0.9, 0.6, np.nan, 0.4], 2.0: [0.9, 0.5, np.nan, 0.3]}}
    out = plot_intensity_sweep(iou, tmp_path / "sweep.png", "title")
    assert out.exists() and out.stat().st_size > 1000
