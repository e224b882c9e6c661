"""Geometry of the Velodyne HDL-64E as mounted on the KITTI car.

The 64 beams are listed top (row 0) to bottom (row 63). Each beam leaves the sensor at
height ``HDL64E_BEAM_HEIGHT_M`` above the Velodyne origin with elevation
``HDL64E_ELEVATION_DEG``; a return at horizontal distance d therefore has
``z = h + d * tan(elevation)``. The upper block (rows 0..31, about 1/3 degree apart) and the
lower block (rows 32..63, about 1/2 degree apart) sit at different heights, which is why a
plain ``arcsin(z / r)`` does not separate neighbouring rows at short range.

These figures were measured (least-squares line z = h + d tan(elevation) per row) from the
four real SqueezeSeg lidar_2d frames of KITTI drive 2011_09_26_0001, whose row index is the
laser's ring; they span +1.9 to -25.0 degrees, as in the HDL-64E datasheet (+2 to -24.9).
They are sensor facts, stored here so the package works without the real data.
"""
from __future__ import annotations

import numpy as np

HDL64E_ELEVATION_DEG = np.array([
    1.937, 1.574, 1.305, 0.872, 0.579, 0.181, -0.089, -0.452, -0.803, -1.201, -1.494, -1.833,
    -2.208, -2.547, -2.874, -3.236, -3.539, -3.936, -4.216, -4.588, -4.914, -5.251, -5.611, -5.958,
    -6.328, -6.676, -6.999, -7.287, -7.679, -8.058, -8.310, -8.711, -9.026, -9.573, -10.062, -10.471,
    -10.958, -11.599, -12.115, -12.561, -13.043, -13.485, -14.045, -14.596, -15.184, -15.656, -16.181,
    -16.558, -17.193, -17.733, -18.329, -18.799, -19.319, -19.733, -20.223, -20.794, -21.329, -21.938,
    -22.440, -22.849, -23.322, -23.971, -24.509, -24.999,
], dtype=np.float64)

HDL64E_BEAM_HEIGHT_M = np.array(
    [0.209, 0.209, 0.208, 0.208, 0.207, 0.207, 0.206, 0.206, 0.206, 0.205, 0.205, 0.204, 0.204, 0.204,
     0.203, 0.203, 0.203, 0.202, 0.202, 0.201, 0.201, 0.201, 0.201, 0.200, 0.200, 0.199, 0.199, 0.199,
     0.199, 0.198, 0.198, 0.198,
     0.126, 0.125, 0.125, 0.125, 0.125, 0.124, 0.124, 0.123, 0.123, 0.123, 0.122, 0.122, 0.121, 0.121,
     0.121, 0.121, 0.121, 0.120, 0.120, 0.120, 0.119, 0.119, 0.119, 0.119, 0.119, 0.118, 0.118, 0.116,
     0.117, 0.117, 0.116, 0.116], dtype=np.float64)

HDL64E_ROWS = 64
UPPER_BLOCK_ROWS = slice(0, 32)
LOWER_BLOCK_ROWS = slice(32, 64)
HDL64E_ROTATION_HZ = 10.0
HDL64E_MAX_RANGE_M = 120.0
HDL64E_MIN_RANGE_M = 2.0  # returns nearer than this hit the KITTI car itself and are not recorded
# KITTI scans hold a return every ~0.18 degrees of azimuth per beam (median spacing in the real
# object frames), about 2000 per beam and revolution at 10 Hz.
HDL64E_FIRINGS_PER_REV = 2000
# Mounting height of the Velodyne origin above the road on the KITTI car.
KITTI_VELODYNE_HEIGHT_M = 1.73
