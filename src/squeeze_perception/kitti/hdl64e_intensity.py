"""How the KITTI HDL-64E reports intensity, measured on real scans (written by kitti/intensity_map.py).

Source: the 7 full scans of ../shared/data/kitti_real (object/training/velodyne and the raw SFND drive) (818804 returns; no labels read).
``HDL64E_RING_ZERO_SHARE[row]``: share of the ring's returns at 5-30 m reported as 0
(all rings together: 0.1356); ``HDL64E_RING_INTENSITY_GAIN[row]``: the ring's
mean non-zero intensity over all rings' (clipped to (0.5, 1.5)); rings with fewer than
200 returns there take the all-ring share and gain 1. Per range bin
(``INTENSITY_RANGE_EDGES_M``), all rings: ``INTENSITY_RANGE_ZERO_SHARE`` and
``INTENSITY_RANGE_GAIN`` (mean non-zero intensity over the 5-30 m mean). Rebuild with
``python -m squeeze_perception.kitti.intensity_map --out src/squeeze_perception/kitti/hdl64e_intensity.py``.
"""
import numpy as np

HDL64E_RING_ZERO_SHARE = np.array([
    0.0686, 0.1034, 0.1198, 0.3016, 0.0957, 0.1903, 0.0700, 0.1679, 0.0861, 0.2416,
    0.1436, 0.0959, 0.1225, 0.1636, 0.1962, 0.2969, 0.2645, 0.1820, 0.1844, 0.2846,
    0.1466, 0.4108, 0.1551, 0.0879, 0.2110, 0.1273, 0.1257, 0.1199, 0.0989, 0.1768,
    0.1000, 0.0827, 0.0727, 0.0688, 0.0563, 0.3024, 0.4132, 0.0453, 0.0322, 0.0387,
    0.0744, 0.0619, 0.3182, 0.0302, 0.0357, 0.0328, 0.0318, 0.0378, 0.0585, 0.0120,
    0.0074, 0.5350, 0.0445, 0.0772, 0.1352, 0.0327, 0.0388, 0.0602, 0.3816, 0.1356,
    0.1356, 0.1356, 0.1356, 0.1356,
])

HDL64E_RING_INTENSITY_GAIN = np.array([
    1.2681, 1.1172, 1.0784, 0.9542, 1.1780, 1.0017, 1.2463, 1.0367, 1.2106, 0.9915,
    1.1135, 1.2339, 1.2736, 1.1489, 1.1069, 1.1721, 1.1571, 1.0695, 1.1317, 0.9864,
    1.0948, 0.9099, 1.0645, 1.1342, 0.9947, 1.0348, 1.0887, 1.0926, 1.0976, 0.8720,
    1.1263, 1.1348, 1.0166, 0.9642, 1.0043, 0.8747, 0.7382, 0.9726, 1.2254, 1.1379,
    0.8170, 0.9315, 0.6721, 0.9342, 0.9204, 0.9049, 0.9262, 0.7830, 0.6794, 0.9867,
    1.1503, 0.6220, 0.8406, 0.6911, 0.6486, 0.7749, 0.9395, 1.1028, 0.5000, 1.0000,
    1.0000, 1.0000, 1.0000, 1.0000,
])

INTENSITY_REFERENCE_ZERO_SHARE = 0.1356
INTENSITY_RANGE_EDGES_M = np.array([0.0, 5.0, 10.0, 20.0, 30.0, 40.0, 50.0, 60.0, 80.0])
INTENSITY_RANGE_ZERO_SHARE = np.array([0.2198, 0.1343, 0.1257, 0.1856, 0.3309, 0.4003, 0.7275, 0.8722])
INTENSITY_RANGE_GAIN = np.array([0.9901, 0.9555, 1.0916, 0.9853, 0.8977, 0.7138, 0.7552, 0.8351])
