"""Exact DBSCAN as a small C kernel, compiled on first use (ctypes; no build step, no new
dependency). `clustering.dbscan_fast` calls it and falls back to the numpy grid version when
no C compiler is available, when SQUEEZE_PERCEPTION_NATIVE_DBSCAN=0, or when the kernel gives up
on a hostile cloud (its work is capped, so the fallback's bounds still hold).

What the kernel computes is scikit-learn's DBSCAN on the collapsed points (duplicates carry a
weight, as sklearn's sample_weight):
- neighbour test: ((0 + dx*dx) + dy*dy) + dz*dz <= eps*eps in float64, dx = x_i - x_j, summed
  in this order (sklearn's rdist; compiled with -ffp-contract=off so no fused multiply-add
  changes a rounding), the point itself included;
- core: summed weight of neighbours >= min_samples (pass 1, stops counting at min_samples);
- clusters: sklearn's outer loop over points by lowest original index, each expansion labelling
  every still unlabelled point reachable through cores before the next cluster starts (pass 2).
  A border point therefore keeps the first cluster that reaches it, as in sklearn's
  dbscan_inner; labelling at push time instead of pop time labels the same set per expansion.
Neighbours are found in a grid of cells of side eps (1 + 1e-6): all of them lie in the 27 cells
around a point's cell. Pass 2 skips cells whose points are all labelled already, so a dense
cluster costs about one scan per cell instead of one per core point.
"""
from __future__ import annotations

import ctypes
import time

import numpy as np

from ._native_build import NativeKernel

C_SOURCE = r"""
#include <math.h>
#include <stdint.h>
#include <stdlib.h>

#define NB 27

static uint64_t mix(int64_t k) { return (uint64_t)k * 0x9E3779B97F4A7C15ULL; }

/* cell id of key, or -1 */
static int64_t find(const int64_t *hk, const int64_t *hv, uint64_t mask, int shift, int64_t key) {
    uint64_t h = (mix(key) >> shift) & mask;
    while (hk[h] != INT64_MIN) {
        if (hk[h] == key) return hv[h];
        h = (h + 1) & mask;
    }
    return -1;
}

/* DBSCAN of m points p (m x 3, C order, float64), weights w (NULL: 1 each), cluster creation
   order outer (NULL: index order). labels: m int64 out.
   0: done; 1: work cap exceeded; 2: out of memory; 3: the grid cannot index the cloud. */
int sp_dbscan(int64_t m, const double *p, const int64_t *w, double eps, int64_t min_samples,
              const int64_t *outer, int64_t max_work, double max_cell_index, int64_t *labels)
{
    const double side = eps * (1.0 + 1e-6), eps2 = eps * eps;
    int64_t i, j, k, t, c;
    int rc = 0;
    if (m <= 0) return 0;
    double lo[3] = {p[0], p[1], p[2]}, hi[3] = {p[0], p[1], p[2]};
    for (i = 0; i < m; i++)
        for (k = 0; k < 3; k++) {
            double v = p[3 * i + k];
            if (!(v >= lo[k])) lo[k] = v;  /* NaN propagates to the check below */
            if (!(v <= hi[k])) hi[k] = v;
        }
    int64_t dims[3];
    double cells = 1.0;
    for (k = 0; k < 3; k++) {
        if (!(fabs(lo[k]) / side <= max_cell_index) || !(fabs(hi[k]) / side <= max_cell_index)) return 3;
        dims[k] = (int64_t)floor((hi[k] - lo[k]) / side) + 3;
        cells *= (double)dims[k];
    }
    if (cells > 4.0e18) return 3;
    int shift = 64, bits = 0;
    uint64_t hsize = 1;
    while (hsize < (uint64_t)(2 * m)) { hsize <<= 1; bits++; }
    shift = 64 - (bits > 0 ? bits : 1);
    uint64_t mask = hsize - 1;
    int64_t *key = malloc(sizeof(int64_t) * m), *cell = malloc(sizeof(int64_t) * m);
    int64_t *hk = malloc(sizeof(int64_t) * hsize), *hv = malloc(sizeof(int64_t) * hsize);
    int64_t *ckey = malloc(sizeof(int64_t) * m), *cstart = calloc(m + 1, sizeof(int64_t));
    int64_t *rank = malloc(sizeof(int64_t) * m), *sidx = malloc(sizeof(int64_t) * m);
    double *q = malloc(sizeof(double) * 3 * m);
    int64_t *qw = malloc(sizeof(int64_t) * m), *cell_of = malloc(sizeof(int64_t) * m);
    int64_t *nbr = NULL, *unl = NULL, *stack = NULL, *lab = NULL;
    char *core = NULL;
    if (!key || !cell || !hk || !hv || !ckey || !cstart || !rank || !sidx || !q || !qw || !cell_of) { rc = 2; goto out; }
    for (uint64_t h = 0; h < hsize; h++) hk[h] = INT64_MIN;
    int64_t ncells = 0;
    for (i = 0; i < m; i++) {
        int64_t g0 = (int64_t)floor((p[3 * i] - lo[0]) / side) + 1;
        int64_t g1 = (int64_t)floor((p[3 * i + 1] - lo[1]) / side) + 1;
        int64_t g2 = (int64_t)floor((p[3 * i + 2] - lo[2]) / side) + 1;
        int64_t kk = (g0 * dims[1] + g1) * dims[2] + g2;
        uint64_t h = (mix(kk) >> shift) & mask;
        while (hk[h] != INT64_MIN && hk[h] != kk) h = (h + 1) & mask;
        if (hk[h] == INT64_MIN) { hk[h] = kk; hv[h] = ncells; ckey[ncells] = kk; ncells++; }
        cell[i] = hv[h];
        cstart[hv[h] + 1]++;
    }
    for (c = 0; c < ncells; c++) cstart[c + 1] += cstart[c];
    {
        int64_t *fill = sidx; /* reuse as cursor, then as sorted->original map */
        int64_t *cur = malloc(sizeof(int64_t) * (ncells > 0 ? ncells : 1));
        if (!cur) { rc = 2; goto out; }
        for (c = 0; c < ncells; c++) cur[c] = cstart[c];
        for (i = 0; i < m; i++) {
            int64_t s = cur[cell[i]]++;
            fill[s] = i;
            rank[i] = s;
            q[3 * s] = p[3 * i]; q[3 * s + 1] = p[3 * i + 1]; q[3 * s + 2] = p[3 * i + 2];
            qw[s] = w ? w[i] : 1;
            cell_of[s] = cell[i];
        }
        free(cur);
    }
    nbr = malloc(sizeof(int64_t) * NB * (ncells > 0 ? ncells : 1));
    if (!nbr) { rc = 2; goto out; }
    {
        const int64_t st0 = dims[1] * dims[2], st1 = dims[2];
        for (c = 0; c < ncells; c++) {
            int64_t n = 0, *row = nbr + NB * c;
            row[n++] = c;  /* own cell first: pass 1 most often stops there */
            for (int a = -1; a <= 1; a++)
                for (int b = -1; b <= 1; b++)
                    for (int d = -1; d <= 1; d++) {
                        if (!a && !b && !d) continue;
                        row[n++] = find(hk, hv, mask, shift, ckey[c] + a * st0 + b * st1 + d);
                    }
        }
    }
    core = calloc(m, 1);
    unl = malloc(sizeof(int64_t) * (ncells > 0 ? ncells : 1));
    stack = malloc(sizeof(int64_t) * m);
    lab = malloc(sizeof(int64_t) * m);
    if (!core || !unl || !stack || !lab) { rc = 2; goto out; }
    int64_t work = 0;
    for (i = 0; i < m; i++) {
        const double xi = q[3 * i], yi = q[3 * i + 1], zi = q[3 * i + 2];
        const int64_t *nb = nbr + NB * cell_of[i];
        int64_t acc = 0;
        for (k = 0; k < NB && acc < min_samples; k++) {
            c = nb[k];
            if (c < 0) continue;
            int64_t e = cstart[c + 1];
            work += e - cstart[c];
            for (j = cstart[c]; j < e; j++) {
                double d, dd;
                dd = xi - q[3 * j]; d = 0.0 + dd * dd;
                dd = yi - q[3 * j + 1]; d = d + dd * dd;
                dd = zi - q[3 * j + 2]; d = d + dd * dd;
                if (d <= eps2) {
                    acc += qw[j];
                    if (acc >= min_samples) break;
                }
            }
        }
        core[i] = acc >= min_samples;
        if (work > max_work) { rc = 1; goto out; }
    }
    for (c = 0; c < ncells; c++) unl[c] = cstart[c + 1] - cstart[c];
    for (i = 0; i < m; i++) lab[i] = -1;
    int64_t label = 0;
    for (t = 0; t < m; t++) {
        int64_t s = rank[outer ? outer[t] : t];
        if (lab[s] != -1 || !core[s]) continue;
        lab[s] = label;
        unl[cell_of[s]]--;
        int64_t sp = 0;
        stack[sp++] = s;
        while (sp > 0) {
            int64_t r = stack[--sp];
            const double xr = q[3 * r], yr = q[3 * r + 1], zr = q[3 * r + 2];
            const int64_t *nb = nbr + NB * cell_of[r];
            for (k = 0; k < NB; k++) {
                c = nb[k];
                if (c < 0 || unl[c] == 0) continue;
                int64_t e = cstart[c + 1];
                work += e - cstart[c];
                for (j = cstart[c]; j < e; j++) {
                    if (lab[j] != -1) continue;
                    double d, dd;
                    dd = xr - q[3 * j]; d = 0.0 + dd * dd;
                    dd = yr - q[3 * j + 1]; d = d + dd * dd;
                    dd = zr - q[3 * j + 2]; d = d + dd * dd;
                    if (d <= eps2) {
                        lab[j] = label;
                        unl[c]--;
                        if (core[j]) stack[sp++] = j;
                    }
                }
            }
            if (work > max_work) { rc = 1; goto out; }
        }
        label++;
    }
    for (i = 0; i < m; i++) labels[i] = lab[rank[i]];
out:
    free(key); free(cell); free(hk); free(hv); free(ckey); free(cstart); free(rank); free(sidx);
    free(q); free(qw); free(cell_of); free(nbr); free(unl); free(stack); free(lab); free(core);
    return rc;
}
"""

ENV_SWITCH = "SQUEEZE_PERCEPTION_NATIVE_DBSCAN"
LAST_KERNEL_S = 0.0


def _setup(lib):
    fn = lib.sp_dbscan
    i64, ptr, dbl = ctypes.c_int64, ctypes.c_void_p, ctypes.c_double
    fn.argtypes = [i64, ptr, ptr, dbl, i64, ptr, i64, dbl, ptr]
    fn.restype = ctypes.c_int
    return fn


# A portable build (no -march=native), cached under a hash of the source alone.
_KERNEL = NativeKernel("sp_dbscan", C_SOURCE, ENV_SWITCH, _setup, libs=["-lm"], keyed_on_toolchain=False,
                       flag_sets=(["-O2", "-fPIC", "-shared", "-ffp-contract=off", "-fno-fast-math"],))


def load():
    """The ctypes function, or None (reason in `load_error()`)."""
    return _KERNEL.load()


def load_error() -> str | None:
    return _KERNEL.load_error()


def dbscan_native(pts: np.ndarray, eps: float, min_samples: int, first: np.ndarray | None = None,
                  weight: np.ndarray | None = None, max_work: int | None = None) -> np.ndarray | None:
    """sklearn's labels for the (N, 3) points `pts`; None when the kernel is unavailable, the
    grid cannot index the cloud exactly, or the work cap was hit. Optionally collapsed points:
    `weight` their multiplicities, `first` the lowest original index of each (clusters are
    numbered in that order); by default every point counts once, in array order. Duplicates
    need no collapsing here: pass 1 stops at min_samples and pass 2 scans a cell of copies once."""
    from .clustering import MAX_CELL_INDEX

    global LAST_KERNEL_S
    fn = load()
    if fn is None or pts.ndim != 2 or pts.shape[1] != 3:
        return None
    m = len(pts)
    p = np.ascontiguousarray(pts, dtype=np.float64)
    w = None if weight is None else np.ascontiguousarray(weight, dtype=np.int64)
    outer = None if first is None else np.ascontiguousarray(np.argsort(first, kind="stable"), dtype=np.int64)
    out = np.empty(m, dtype=np.int64)
    cap = int(max_work if max_work is not None else 4_000_000 + 400 * m)
    t0 = time.process_time()
    rc = fn(m, p.ctypes.data, None if w is None else w.ctypes.data, float(eps), int(min_samples),
            None if outer is None else outer.ctypes.data, cap, float(MAX_CELL_INDEX), out.ctypes.data)
    LAST_KERNEL_S = time.process_time() - t0
    return out if rc == 0 else None
