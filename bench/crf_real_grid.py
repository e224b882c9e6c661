"""CRF new vs the frozen unfold reference (tests/test_segmentation_crf.py) on the real KITTI
lidar_2d grids with the trained squeezesegv2 CRF weights; numbers in docs/performance.md.

    nice -n 19 .venv/bin/python bench/crf_real_grid.py
"""
import os

import numpy as np
import torch

from squeeze_perception.backends import load_state_dict
from squeeze_perception.offline.segmentation.bench import crf_side_by_side
from squeeze_perception.paths import kitti_real_dir
from squeeze_perception.registry import get_model
from squeeze_perception.segmentation.crf import RecurrentCRF

torch.set_num_threads(1)
grids = [np.load(f).astype(np.float32).transpose(2, 0, 1) for f in sorted((kitti_real_dir() / "lidar_2d").glob("*.npy"))]
state = load_state_dict(get_model("squeezesegv2").weights_path())
crf = RecurrentCRF()
crf.load_state_dict({k[4:]: v for k, v in state.items() if k.startswith("crf.")})
crf.eval()
g = torch.Generator().manual_seed(0)
for name, x in (("64x512", grids[0][None, :5]), ("64x2048", np.concatenate(grids, -1)[None, :5])):
    logits = (2.0 * torch.randn(1, 4, *x.shape[2:], generator=g)).numpy()
    c = crf_side_by_side(crf, logits, x, repeats=10 if name == "64x512" else 5)
    times = {k: (round(v["wall_median_ms"], 2), round(v["cpu_median_ms"], 2)) for k, v in c.items() if isinstance(v, dict)}
    print(name, "median (wall ms, CPU ms):", times, "reference/new CPU", round(c.get("speedup_cpu_median", float("nan")), 2),
          "max |diff|", c.get("max_abs_diff"), "same labels", c.get("same_labels"))
print("load average", os.getloadavg())
