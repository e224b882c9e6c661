"""Anchor shapes from the training boxes: k-means on (width, height) with 1 - IoU distance.

This is the shape clustering of Ashraf et al. that the thesis follows. scikit-learn's KMeans
only offers Euclidean distance, which over-weights large boxes, so the few lines of Lloyd
iterations with the IoU distance are written here.
"""
from __future__ import annotations

import numpy as np


def shape_iou(shapes: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """IoU of (N,2) and (K,2) width/height pairs placed on a common centre -> (N, K)."""
    inter = np.minimum(shapes[:, None, 0], centroids[None, :, 0]) * np.minimum(shapes[:, None, 1], centroids[None, :, 1])
    area_s = shapes[:, 0] * shapes[:, 1]
    area_c = centroids[:, 0] * centroids[:, 1]
    return inter / (area_s[:, None] + area_c[None, :] - inter)


def kmeans_anchors(shapes: np.ndarray, k: int = 9, iterations: int = 300, seed: int = 0,
                   restarts: int = 5) -> tuple[np.ndarray, float]:
    """Cluster (N, 2) box widths/heights into k anchor shapes.

    Returns (k, 2) shapes sorted by area and the mean IoU of every box with its best anchor.
    Centroids are the per-cluster medians (robust to the long tail of big boxes); the best of
    `restarts` k-means++-style seedings is kept.
    """
    shapes = np.asarray(shapes, dtype=np.float64)
    shapes = shapes[(shapes[:, 0] > 0) & (shapes[:, 1] > 0)]
    if len(shapes) < k:
        raise ValueError(f"need at least {k} boxes to choose {k} anchors, got {len(shapes)}")
    rng = np.random.default_rng(seed)
    best, best_score = None, -1.0
    for _ in range(restarts):
        centroids = shapes[[rng.integers(len(shapes))]]
        while len(centroids) < k:  # k-means++ seeding with the IoU distance
            dist = 1.0 - shape_iou(shapes, centroids).max(1)
            prob = dist ** 2
            prob = prob / prob.sum() if prob.sum() > 0 else np.full(len(shapes), 1 / len(shapes))
            centroids = np.vstack([centroids, shapes[rng.choice(len(shapes), p=prob)]])
        assign = None
        for _ in range(iterations):
            new_assign = shape_iou(shapes, centroids).argmax(1)
            if assign is not None and np.array_equal(new_assign, assign):
                break
            assign = new_assign
            for j in range(k):
                members = shapes[assign == j]
                if len(members):
                    centroids[j] = np.median(members, axis=0)
        score = float(shape_iou(shapes, centroids).max(1).mean())
        if score > best_score:
            best, best_score = centroids.copy(), score
    order = np.argsort(best[:, 0] * best[:, 1])
    return best[order].astype(np.float32), best_score
