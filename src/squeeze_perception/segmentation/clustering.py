"""DBSCAN instances per class: scikit-learn (the thesis's reference) and a faster exact version.

`dbscan_fast` returns the labels of sklearn.cluster.DBSCAN (the same array, not only the same
partition), with work and memory bounded whatever the cloud (no step enumerates all neighbour
pairs, whose number grows quadratically with density).

Semantics reproduced (scikit-learn 1.x, `DBSCAN.fit` -> KDTree.query_radius -> dbscan_inner):
- q is a neighbour of p when sum((p - q)^2) <= eps * eps, the squares summed x, y, z in this
  order in float64 (the tree's rdist); the point itself counts towards min_samples;
- a cluster is a connected component of core points; clusters are numbered in the order of
  their lowest-index core point (sklearn's outer loop starts a cluster there);
- a border point (non-core, a core within eps) takes the cluster created first among those
  adjacent to it: sklearn's expansion of that cluster labels it, later ones skip it. So the tie
  rule is "lowest cluster number", independent of BFS order within a cluster.

Algorithm (hand-written: neither scipy nor scikit-learn offers an exact DBSCAN whose work does not
grow with the number of neighbour pairs; scipy's cKDTree and csgraph do the heavy parts):
1. exact duplicates collapse into one point with a count (identical coordinates have identical
   neighbourhoods), so 20,000 copies of one point cost what one point costs;
2. a grid of cells with side eps / sqrt(3) (shrunk by 1e-6, so rounding cannot break it): two
   points in one cell are always neighbours. A cell holding >= min_samples points makes all of
   them core and connects them, without any distance computed;
3. points of the other cells: the min_samples nearest (cKDTree.query, capped at k = min_samples
   and a radius just above eps, then the exact float64 test above) decide core-ness, and for
   non-core points give all their neighbours (fewer than min_samples) for the border rule;
4. core connectivity between cells: candidate cell pairs from the 5x5x5 stencil; dropped when
   their core bounding boxes are > eps apart; joined when one witness pair (the two points
   extreme towards each other) is within eps; cell pairs still in different components are
   tested exactly (all core pairs, or cKDTree nearest neighbour for big cells);
   scipy.sparse.csgraph.connected_components joins the cells.
The C kernel in `_dbscan_native` (compiled on first use) computes the same labels with a plain
grid + sklearn's own expansion order, in a fraction of the time; this numpy version is the
fallback where no compiler is available or the kernel's work cap is hit (hostile clouds).
Clouds the grid cannot index exactly (not 3-D, coordinates beyond +-1e7 cells, or a grid of
more than 2^62 cells) use `dbscan_pairs` (cKDTree.query_pairs on the collapsed points).
"""
from __future__ import annotations

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from scipy.spatial import cKDTree

GRID_SHRINK = 1.0 - 1e-6  # cell side = eps / sqrt(3) * GRID_SHRINK
MAX_CELL_INDEX = 1e7  # |coordinate| / cell side above this: float rounding could misplace a point
EXACT_BLOCK = 4096  # cell pairs with more core pairs than this are tested with a cKDTree


def dbscan_sklearn(points: np.ndarray, eps: float = 0.3, min_samples: int = 20) -> np.ndarray:
    from sklearn.cluster import DBSCAN

    pts = np.asarray(points, dtype=np.float64)
    if len(pts) == 0:
        return np.zeros(0, dtype=np.int64)
    return DBSCAN(eps=eps, min_samples=min_samples).fit(pts).labels_.astype(np.int64)


def _sq_dist(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise squared distance summed dimension by dimension, as sklearn's rdist."""
    d = a[..., 0] - b[..., 0]
    out = d * d
    for k in range(1, a.shape[-1]):
        d = a[..., k] - b[..., k]
        out += d * d
    return out


def collapse_duplicates(pts: np.ndarray):
    """(unique points, lowest original index of each, inverse map, multiplicity)."""
    n = len(pts)
    order = np.lexsort(pts.T[::-1])
    s = pts[order]
    new = np.ones(n, dtype=bool)
    new[1:] = (s[1:] != s[:-1]).any(1)
    starts = np.flatnonzero(new)
    if len(starts) == n:  # no duplicates: skip the bookkeeping
        return pts, np.arange(n), np.arange(n), np.ones(n, dtype=np.int64)
    group = np.cumsum(new) - 1
    inverse = np.empty(n, dtype=np.int64)
    inverse[order] = group
    first = np.minimum.reduceat(order, starts)  # lexsort is stable: order[starts] is the lowest too
    counts = np.diff(np.append(starts, n))
    return s[starts], first, inverse, counts


def _number_clusters(n: int, core_idx: np.ndarray, comp: np.ndarray, first: np.ndarray) -> np.ndarray:
    """Cluster number per core point: components ranked by their lowest original index."""
    ncomp = int(comp.max()) + 1
    lowest = np.full(ncomp, np.iinfo(np.int64).max, dtype=np.int64)
    np.minimum.at(lowest, comp, first[core_idx])
    rank = np.empty(ncomp, dtype=np.int64)
    rank[np.argsort(lowest, kind="stable")] = np.arange(ncomp)
    return rank[comp]


def dbscan_pairs(pts: np.ndarray, eps: float, min_samples: int, first: np.ndarray,
                 weight: np.ndarray) -> np.ndarray:
    """All-pairs variant on collapsed points (the fallback: memory grows with the pair count)."""
    n = len(pts)
    labels = np.full(n, -1, dtype=np.int64)
    pairs = cKDTree(pts).query_pairs(eps, output_type="ndarray")
    i, j = (pairs[:, 0], pairs[:, 1]) if len(pairs) else (np.zeros(0, np.int64), np.zeros(0, np.int64))
    counts = np.bincount(i, weights=weight[j], minlength=n) + np.bincount(j, weights=weight[i], minlength=n) + weight
    core = counts >= min_samples
    core_idx = np.flatnonzero(core)
    if len(core_idx) == 0:
        return labels
    compact = np.full(n, -1, dtype=np.int64)
    compact[core_idx] = np.arange(len(core_idx))
    cc = core[i] & core[j]
    graph = coo_matrix((np.ones(int(cc.sum()), np.int8), (compact[i[cc]], compact[j[cc]])),
                       shape=(len(core_idx), len(core_idx)))
    _, comp = connected_components(graph, directed=False)
    labels[core_idx] = _number_clusters(n, core_idx, comp, first)
    big = np.iinfo(np.int64).max
    best = np.full(n, big, dtype=np.int64)
    for a, b in ((i, j), (j, i)):
        sel = core[a] & ~core[b]
        np.minimum.at(best, b[sel], labels[a[sel]])
    hit = (best < big) & ~core
    labels[hit] = best[hit]
    return labels


def _grid_keys(pts: np.ndarray, side: float):
    """int64 cell key per point (cells padded by 2 so stencil offsets never wrap), the key
    strides, or None when the grid cannot index this cloud exactly."""
    lo = pts.min(0)
    hi = pts.max(0)
    if np.abs(np.concatenate([lo, hi])).max() / side > MAX_CELL_INDEX:
        return None
    g = np.floor((pts - lo) / side).astype(np.int64) + 2
    dims = g.max(0) + 3
    if float(np.prod(dims.astype(np.float64))) > 2.0 ** 62:
        return None
    strides = np.array([dims[1] * dims[2], dims[2], 1], dtype=np.int64)
    return g @ strides, strides


# 62 stencil offsets: half of {-2..2}^3 minus the centre (the other half is the same pairs reversed).
_STENCIL = np.array([(a, b, c) for a in range(-2, 3) for b in range(-2, 3) for c in range(-2, 3)
                     if (a, b, c) > (0, 0, 0)], dtype=np.int64)
# 13 directions (sign patterns up to sign) for the witness points extreme towards a neighbour cell.
_DIRS = np.array([(a, b, c) for a in (-1, 0, 1) for b in (-1, 0, 1) for c in (-1, 0, 1)
                  if (a, b, c) > (0, 0, 0)], dtype=np.float64)


def _dir_index(offsets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Index into _DIRS of sign(offset) and whether it is +dir (True) or -dir."""
    sg = np.sign(offsets)
    lut = {tuple(d.astype(int)): k for k, d in enumerate(_DIRS)}
    idx = np.empty(len(sg), dtype=np.int64)
    pos = np.empty(len(sg), dtype=bool)
    for r, s in enumerate(sg):
        t = tuple(int(v) for v in s)
        if t in lut:
            idx[r], pos[r] = lut[t], True
        else:
            idx[r], pos[r] = lut[tuple(-v for v in t)], False
    return idx, pos


_STENCIL_DIR, _STENCIL_POS = _dir_index(_STENCIL)


def _segment_argext(values: np.ndarray, starts: np.ndarray, seg: np.ndarray, maximum: bool) -> np.ndarray:
    """Per segment (rows sorted by segment) and column: row index of the max (or min)."""
    red = (np.maximum if maximum else np.minimum).reduceat(values, starts, axis=0)
    rows = np.arange(len(values))[:, None]
    cand = np.where(values == red[seg], rows, len(values))
    return np.minimum.reduceat(cand, starts, axis=0)


def _exact_cell_pairs(pts: np.ndarray, start: np.ndarray, size: np.ndarray, a: np.ndarray, b: np.ndarray,
                      eps2: float) -> np.ndarray:
    """For cell pairs (a, b) (core rows start..start+size, sorted by cell): any pair within eps."""
    linked = np.zeros(len(a), dtype=bool)
    work = size[a] * size[b]
    small = np.flatnonzero(work <= EXACT_BLOCK)
    if len(small):
        w = work[small]
        tot = int(w.sum())
        pair = np.repeat(np.arange(len(small)), w)
        t = np.arange(tot) - np.repeat(np.cumsum(w) - w, w)
        nb = size[b[small]][pair]
        ia = start[a[small]][pair] + t // nb
        ib = start[b[small]][pair] + t % nb
        hit = _sq_dist(pts[ia], pts[ib]) <= eps2
        linked[small] = np.bincount(pair[hit], minlength=len(small)) > 0
    for k in np.flatnonzero(work > EXACT_BLOCK):  # big (dense) cells: nearest neighbour, O(n log n)
        pa = pts[start[a[k]]:start[a[k]] + size[a[k]]]
        pb = pts[start[b[k]]:start[b[k]] + size[b[k]]]
        if len(pa) > len(pb):
            pa, pb = pb, pa
        _, j = cKDTree(pb).query(pa, k=1)
        linked[k] = bool((_sq_dist(pa, pb[j]) <= eps2).any())
    return linked


def _dbscan_grid(pts: np.ndarray, eps: float, min_samples: int, first: np.ndarray, weight: np.ndarray,
                 keys: np.ndarray, strides: np.ndarray) -> np.ndarray:
    n = len(pts)
    eps2 = eps * eps
    labels = np.full(n, -1, dtype=np.int64)
    order = np.argsort(keys, kind="stable")
    skeys = keys[order]
    new = np.ones(n, dtype=bool)
    new[1:] = skeys[1:] != skeys[:-1]
    starts = np.flatnonzero(new)
    cell_of = np.cumsum(new) - 1  # cell per sorted point
    cell_w = np.add.reduceat(weight[order], starts)
    dense = cell_w >= min_samples  # all points of such a cell are core and connected
    core_s = dense[cell_of]  # per sorted point
    # --- points of sparse cells: capped k-nearest search decides core-ness and border candidates.
    und = np.flatnonzero(~core_s)
    nb_idx = nb_ok = None
    if len(und):
        k = int(min(min_samples, n))
        tree = cKDTree(pts, balanced_tree=False, compact_nodes=False)
        _, nb_idx = tree.query(pts[order[und]], k=k, distance_upper_bound=eps * (1 + 1e-9))
        nb_idx = nb_idx.reshape(len(und), k)
        valid = nb_idx < n
        safe = np.where(valid, nb_idx, 0)
        nb_ok = valid & (_sq_dist(pts[safe], pts[order[und]][:, None, :]) <= eps2)
        cnt = np.where(nb_ok, weight[safe], 0).sum(1)
        core_s[und] = cnt >= min_samples
    if not core_s.any():
        return labels
    # --- core points, sorted by cell; cells that hold cores.
    cs = np.flatnonzero(core_s)  # sorted positions of core points
    cpts = pts[order[cs]]
    ccell_raw = cell_of[cs]
    cnew = np.ones(len(cs), dtype=bool)
    cnew[1:] = ccell_raw[1:] != ccell_raw[:-1]
    cstart = np.flatnonzero(cnew)
    cseg = np.cumsum(cnew) - 1
    ncc = len(cstart)
    csize = np.diff(np.append(cstart, len(cs)))
    ckey = skeys[cs[cstart]]
    box_lo = np.minimum.reduceat(cpts, cstart, axis=0)
    box_hi = np.maximum.reduceat(cpts, cstart, axis=0)
    # --- candidate cell pairs from the stencil.
    cand = ckey[:, None] + _STENCIL @ strides  # (ncc, 62)
    pos = np.searchsorted(ckey, cand)
    pos_c = np.minimum(pos, ncc - 1)
    found = ckey[pos_c] == cand
    a = np.broadcast_to(np.arange(ncc)[:, None], cand.shape)[found]
    b = pos_c[found]
    off = np.broadcast_to(np.arange(len(_STENCIL))[None, :], cand.shape)[found]
    # Bounding boxes farther apart than eps: no pair can be within eps (rounding is monotone).
    gap = np.maximum(np.maximum(box_lo[b] - box_hi[a], box_lo[a] - box_hi[b]), 0.0)
    near = _sq_dist(gap, np.zeros_like(gap)) <= eps2
    a, b, off = a[near], b[near], off[near]
    # Witness: the core of a extreme towards b and the core of b extreme towards a.
    proj = cpts @ _DIRS.T  # (ncore, 13)
    amax = _segment_argext(proj, cstart, cseg, True)
    amin = _segment_argext(proj, cstart, cseg, False)
    d, plus = _STENCIL_DIR[off], _STENCIL_POS[off]
    wa = np.where(plus, amax[a, d], amin[a, d])
    wb = np.where(plus, amin[b, d], amax[b, d])
    linked = _sq_dist(cpts[wa], cpts[wb]) <= eps2
    edges_a, edges_b = [a[linked]], [b[linked]]
    graph = coo_matrix((np.ones(int(linked.sum()), np.int8), (a[linked], b[linked])), shape=(ncc, ncc))
    _, comp = connected_components(graph, directed=False)
    rest = ~linked & (comp[a] != comp[b])
    if rest.any():
        ra, rb = a[rest], b[rest]
        ok = _exact_cell_pairs(cpts, cstart, csize, ra, rb, eps2)
        edges_a.append(ra[ok])
        edges_b.append(rb[ok])
        ea, eb = np.concatenate(edges_a), np.concatenate(edges_b)
        graph = coo_matrix((np.ones(len(ea), np.int8), (ea, eb)), shape=(ncc, ncc))
        _, comp = connected_components(graph, directed=False)
    core_orig = order[cs]
    labels[core_orig] = _number_clusters(n, core_orig, comp[cseg], first)
    # --- border points: the lowest cluster number among their core neighbours.
    if nb_idx is not None:
        border = ~core_s[und]
        if border.any():
            nbr = np.where(nb_ok[border], nb_idx[border], 0)
            lab = np.where(nb_ok[border], labels[nbr], -1)
            lab = np.where(lab >= 0, lab, np.iinfo(np.int64).max)
            best = lab.min(1)
            hit = best < np.iinfo(np.int64).max
            labels[order[und[border]][hit]] = best[hit]
    return labels


def dbscan_fast(points: np.ndarray, eps: float = 0.3, min_samples: int = 20, native: bool = True) -> np.ndarray:
    """sklearn's labels. native=True: the C kernel of `_dbscan_native` when it is available and
    stays within its work cap, else the numpy grid version below (same labels either way)."""
    pts = np.asarray(points, dtype=np.float64)  # uint16 etc. convert exactly
    n = len(pts)
    if n == 0:
        return np.full(0, -1, dtype=np.int64)
    if not eps > 0:
        raise ValueError(f"eps must be > 0, got {eps}")
    if native and pts.ndim == 2 and pts.shape[1] == 3:
        from ._dbscan_native import dbscan_native

        lab = dbscan_native(pts, eps, min_samples)
        if lab is not None:
            return lab
    uniq, first, inverse, weight = collapse_duplicates(pts)
    grid = _grid_keys(uniq, eps / np.sqrt(3.0) * GRID_SHRINK) if pts.shape[1] == 3 else None
    if grid is None:
        lab = dbscan_pairs(uniq, eps, min_samples, first, weight)
    else:
        lab = _dbscan_grid(uniq, eps, min_samples, first, weight, *grid)
    return lab[inverse]


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
