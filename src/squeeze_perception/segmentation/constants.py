"""Released SqueezeSeg hyper-parameters used as facts (BichenWuUCB/SqueezeSeg,
src/config/kitti_squeezeSeg_config.py; cited in docs/segmentation.md), and the pipeline's stage names."""
from __future__ import annotations

import numpy as np

from ..interfaces import CLASS_NAMES

NUM_CLASSES = len(CLASS_NAMES)  # unknown, car, pedestrian, cyclist
# The pipeline's timed stages (SegmentationPipeline.process), also the node's telemetry stages.
PIPELINE_STAGES = ("projection", "network", "crf", "clustering", "boxfit", "size_gate")
GRID_HEIGHT = 64  # ZENITH_LEVEL
GRID_WIDTH = 512  # AZIMUTH_LEVEL (front 90 degrees)

# CLS_LOSS_WEIGHT: background is down-weighted, rare classes up-weighted.
CLASS_LOSS_WEIGHTS = np.array([1 / 15.0, 1.0, 10.0, 10.0], dtype=np.float32)
# INPUT_MEAN / INPUT_STD over KITTI for x, y, z, intensity, range.
INPUT_MEAN = np.array([10.88, 0.23, -1.04, 0.21, 12.12], dtype=np.float32)
INPUT_STD = np.array([11.47, 6.91, 0.86, 0.16, 12.32], dtype=np.float32)

# Recurrent CRF: LCN_HEIGHT x LCN_WIDTH local window, RCRF_ITER mean-field iterations,
# per-class Gaussian widths (angular in grid cells, bilateral range in metres) and filter coefficients.
CRF_WINDOW = (3, 5)
CRF_ITERATIONS = 3
BILATERAL_THETA_A = np.array([0.9, 0.9, 0.6, 0.6], dtype=np.float32)
BILATERAL_THETA_R = np.array([0.015, 0.015, 0.01, 0.01], dtype=np.float32)
BI_FILTER_COEF = 0.1
ANG_THETA_A = np.array([0.9, 0.9, 0.6, 0.6], dtype=np.float32)
ANG_FILTER_COEF = 0.02

# Training protocol of the release (SGD with momentum, step decay, gradient clipping).
LEARNING_RATE = 0.01
MOMENTUM = 0.9
WEIGHT_DECAY = 1e-4
MAX_GRAD_NORM = 1.0

# SqueezeSegV2 (thesis section 6.3 / 6.4).
FOCAL_GAMMA = 2.0
GCA_LAMBDA = 10.0
INTENSITY_BINS = 10  # learned intensity rendering: 10 classification bins + a deviation

# DBSCAN per class (the node's cluster_eps / cluster_min_points defaults). The thesis clusters with
# eps 0.3 m and minPts 20; on our synthetic validation scans that left half the true cars with 20+
# points in view without any instance (a car 30 m out has rings 0.2-0.35 m apart) and split many of
# the rest. 0.7 m / 20 was the best of a 3 x 3 sweep chosen by a rule fixed before it
# (docs/segmentation.md, "DBSCAN radius").
CLUSTER_EPS_M = 0.7
CLUSTER_MIN_POINTS = 20
