"""Single lost firings of the KITTI HDL-64E, measured on real scans (written by kitti/noise_map.py).

Source: the 4 full scans of ../shared/data/kitti_real/raw/2011_09_26/2011_09_26_drive_unknown_sfnd_sync
(4087 lost firings among 460349 that met a continuous surface).
``HDL64E_RING_DROPOUT[row]`` is each ring's rate (the upper block, rows 0-31, loses several times
as many as the lower one); ``HDL64E_SECTOR_DROPOUT_FACTOR[s]`` scales it per azimuth
sector of the sensor (sector 0 straight ahead, counter-clockwise, 8 sectors), clipped to
(0.5, 2.0). Rebuild with
``python -m squeeze_perception.kitti.noise_map --out src/squeeze_perception/kitti/hdl64e_dropout.py``.
"""
import numpy as np

HDL64E_RING_DROPOUT = np.array([
    0.0120, 0.0139, 0.0146, 0.0108, 0.0147, 0.0115, 0.0163, 0.0160, 0.0186, 0.0129,
    0.0143, 0.0130, 0.0109, 0.0120, 0.0190, 0.0106, 0.0140, 0.0146, 0.0137, 0.0143,
    0.0136, 0.0151, 0.0101, 0.0217, 0.0153, 0.0181, 0.0167, 0.0132, 0.0141, 0.0193,
    0.0205, 0.0143, 0.0049, 0.0048, 0.0034, 0.0043, 0.0070, 0.0048, 0.0047, 0.0066,
    0.0034, 0.0045, 0.0035, 0.0044, 0.0035, 0.0032, 0.0022, 0.0015, 0.0050, 0.0009,
    0.0006, 0.0022, 0.0004, 0.0009, 0.0023, 0.0010, 0.0005, 0.0031, 0.0025, 0.0097,
    0.0038, 0.0055, 0.0008, 0.0014,
])

HDL64E_SECTOR_DROPOUT_FACTOR = np.array([
    1.2731, 0.5000, 0.5000, 2.0000, 1.2486, 1.3865, 0.5012, 1.0993,
])
