"""The training scans' intensity gain augmentation (segmentation/data.py, `seg train
--intensity-gain-log2`): one gain per scan within [2**-a, 2**a], intensity clipped to [0, 1],
geometry and labels untouched, off by default."""
from __future__ import annotations

import numpy as np
import pytest

from squeeze_perception.segmentation.data import GridDataset, scale_intensity


def _grids(tmp_path, n=4, width=32):
    rng = np.random.default_rng(0)
    files = []
    for k in range(n):
        g = np.zeros((64, width, 6), np.float32)
        g[..., :3] = rng.normal(size=(64, width, 3))
        g[..., 3] = rng.uniform(0.05, 0.6, size=(64, width))
        g[..., 4] = np.linalg.norm(g[..., :3], axis=-1)
        g[..., 5] = rng.integers(0, 4, size=(64, width))
        g[:8] = 0.0  # empty rows: no return, intensity 0
        files.append(tmp_path / f"{k:06d}.npy")
        np.save(files[-1], g)
    return files


def test_scale_intensity_clips_and_copies():
    g = np.zeros((64, 4, 6), np.float32)
    g[..., 3] = 0.4
    out = scale_intensity(g, 3.0)
    assert np.allclose(out[..., 3], 1.0) and np.allclose(g[..., 3], 0.4)  # clipped; input untouched
    assert np.allclose(scale_intensity(g, 0.5)[..., 3], 0.2)


def test_one_gain_per_scan_within_range_geometry_and_labels_kept(tmp_path):
    files = _grids(tmp_path)
    plain = GridDataset(files, 6)
    data = GridDataset(files, 6, augment=True, seed=3, intensity_gain_log2=1.0)
    gains = []
    for _ in range(40):
        i = int(data.rng.integers(0, len(files)))
        x, y = data.item(i)
        x0, y0 = plain.item(i)
        flipped = not np.allclose(x[0], x0[0])
        if flipped:  # undo the flip augmentation to compare cell by cell
            x, y = x[:, :, ::-1].copy(), y[:, ::-1]
            x[1] *= -1
        assert np.array_equal(y, y0)
        assert np.allclose(x[[0, 1, 2, 4]], x0[[0, 1, 2, 4]])
        lit = x0[3] > 0
        ratio = x[3][lit] / x0[3][lit]
        unclipped = x[3][lit] < 1.0
        assert np.allclose(ratio[unclipped], ratio[unclipped][0], rtol=1e-5)  # one gain for the whole scan
        gains.append(float(ratio[unclipped][0]))
        assert np.all(x[3][~lit] == 0)
    gains = np.array(gains)
    assert gains.min() >= 0.5 - 1e-6 and gains.max() <= 2.0 + 1e-6
    assert gains.min() < 0.8 and gains.max() > 1.25  # the range is used, both ways


def test_off_by_default_and_without_augment(tmp_path):
    files = _grids(tmp_path, n=1)
    x0, _ = GridDataset(files, 6).item(0)
    for data in (GridDataset(files, 6, augment=False, intensity_gain_log2=1.0), GridDataset(files, 6, augment=True, seed=1)):
        for _ in range(5):
            x, _ = data.item(0)
            assert np.allclose(x[3], x0[3]) or np.allclose(x[3], x0[3][:, ::-1])  # at most flipped


def test_negative_range_refused(tmp_path):
    with pytest.raises(ValueError, match="intensity_gain_log2"):
        GridDataset(_grids(tmp_path, n=1), 6, intensity_gain_log2=-1.0)
