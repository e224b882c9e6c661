"""DBSCAN instances per class: scikit-learn (the thesis's reference) and a faster exact version.

`dbscan_fast` gives the same labels as sklearn.cluster.DBSCAN (not only the same partition):
- neighbours within eps (inclusive, the point itself counted, as sklearn) from one
  scipy cKDTree.query_pairs call instead of per-point neighbour lists of Python objects;
- core points joined by scipy.sparse.csgraph.connected_components over core-core edges;
- a border point takes the cluster sklearn's sequential expansion reaches first, i.e. the
  adjacent cluster whose lowest core index is smallest; clusters are numbered in that order.
"""
from __future__ import annotations

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from scipy.spatial import cKDTree


def dbscan_sklearn(points: np.ndarray, eps: float = 0.3, min_samples: int = 20) -> np.ndarray:
    from sklearn.cluster import DBSCAN

    pts = np.asarray(points, dtype=np.float64)
    if len(pts) == 0:
        return np.zeros(0, dtype=np.int64)
    return DBSCAN(eps=eps, min_samples=min_samples).fit(pts).labels_.astype(np.int64)


def dbscan_fast(points: np.ndarray, eps: float = 0.3, min_samples: int = 20) -> np.ndarray:
    pts = np.asarray(points, dtype=np.float64)
    n = len(pts)
    labels = np.full(n, -1, dtype=np.int64)
    if n == 0:
        return labels
    pairs = cKDTree(pts).query_pairs(eps, output_type="ndarray")
    i, j = (pairs[:, 0], pairs[:, 1]) if len(pairs) else (np.zeros(0, np.int64), np.zeros(0, np.int64))
    counts = np.bincount(i, minlength=n) + np.bincount(j, minlength=n) + 1  # + the point itself
    core = counts >= min_samples
    core_idx = np.flatnonzero(core)
    if len(core_idx) == 0:
        return labels
    # Core-core edges -> components, on the compacted core index space.
    compact = np.full(n, -1, dtype=np.int64)
    compact[core_idx] = np.arange(len(core_idx))
    cc = core[i] & core[j]
    graph = coo_matrix((np.ones(int(cc.sum()), np.int8), (compact[i[cc]], compact[j[cc]])),
                       shape=(len(core_idx), len(core_idx)))
    _, comp = connected_components(graph, directed=False)
    # Number clusters by their lowest core index, the order sklearn creates them in.
    first_core = np.full(comp.max() + 1, n, dtype=np.int64)
    np.minimum.at(first_core, comp, core_idx)
    order = np.argsort(first_core)
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    labels[core_idx] = rank[comp]
    # Border points: non-core with a core neighbour; the lowest-numbered adjacent cluster wins.
    for a, b in ((i, j), (j, i)):
        sel = core[a] & ~core[b]
        if sel.any():
            cand = labels[a[sel]]
            border = b[sel]
            best = np.full(n, np.iinfo(np.int64).max, dtype=np.int64)
            np.minimum.at(best, border, cand)
            hit = best < np.iinfo(np.int64).max
            labels[hit] = np.where(labels[hit] >= 0, np.minimum(labels[hit], best[hit]), best[hit])
    return labels


CLUSTERERS = {"sklearn": dbscan_sklearn, "fast": dbscan_fast}


def cluster_by_class(points: np.ndarray, labels: np.ndarray, eps: float = 0.3, min_samples: int = 20,
                     method: str = "fast", classes=(1, 2, 3)) -> np.ndarray:
    """(N,) instance id per point (-1 none), clustering each object class separately;
    instance ids are unique across classes, numbered class by class."""
    if method not in CLUSTERERS:
        raise ValueError(f"clustering must be one of {sorted(CLUSTERERS)}, got '{method}'")
    fn = CLUSTERERS[method]
    instances = np.full(len(labels), -1, dtype=np.int64)
    next_id = 0
    for c in classes:
        idx = np.flatnonzero(labels == c)
        if len(idx) < min_samples:
            continue
        lab = fn(points[idx, :3], eps, min_samples)
        keep = lab >= 0
        instances[idx[keep]] = lab[keep] + next_id
        if keep.any():
            next_id += int(lab.max()) + 1
    return instances


def same_partition(a: np.ndarray, b: np.ndarray) -> bool:
    """True when two labelings differ only by renaming clusters (noise -1 must match exactly)."""
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape or not np.array_equal(a < 0, b < 0):
        return False
    pa, pb = a[a >= 0], b[b >= 0]
    if len(pa) == 0:
        return True
    pairs = np.unique(np.stack([pa, pb], 1), axis=0)
    return len(pairs) == len(np.unique(pa)) == len(np.unique(pb))
