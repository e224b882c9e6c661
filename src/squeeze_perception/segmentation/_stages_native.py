"""The small per-frame stages, spherical projection and box fit, as C kernels compiled on first
use (ctypes; no build step, no new dependency), the pattern of `_dbscan_native.py` and
`_crf_native.py`. `pipeline.project_tiles` and `pipeline.boxes_for_instances` call them and
fall back to their numpy versions (which stay the definition) when no C compiler is available,
when SQUEEZE_PERCEPTION_NATIVE_STAGES=0, or for inputs the kernels do not take (not float32
points for the projection; non-finite coordinates for the box fit).

Why C (issue 11 item 4, at most 2 ms each per real scan on one thread): in numpy both stages
were mostly call overhead and memory passes, not arithmetic. The projection spent ~2 ms in
`np.lexsort` to find each cell's nearest point, ~0.8 ms each in two `np.linalg.norm(axis=1)`
(a reduction over an axis of length 3 is slow in numpy) and more in a dozen full-length
temporaries; the box fit made ~40 numpy calls per instance over (points x 90 headings)
temporaries, 0.12 ms per instance even for 20 points.

The outputs are the numpy versions', bit for bit (tests/test_segmentation_projection_native.py,
tests/test_segmentation_boxfit_native.py):
- every transcendental function stays a numpy call, the same ufunc on the same float64 values
  as the reference (arctan2, degrees, cos, sin): numpy's arctan2 is not libm's (with
  AVX-512 it is SVML; 7% of random inputs differ in the last bit from glibc's), so a C atan2
  could move a point across a column or beam boundary. The kernels do only +, -, *, /, sqrt,
  floor and comparisons, which IEEE 754 rounds one way, compiled with -ffp-contract=off and
  without -ffast-math so the compiler fuses and reorders nothing, in the reference's order:
  range = sqrt((x*x + y*y) + z*z) as np.linalg.norm(axis=1) sums, the rotation
  float32(c*x - s*y) as `rotate_z` (float64 scalars times float32 arrays give float64), the
  per-heading sums of rectangle_fit row by row (numpy's axis-0 reduction order);
- projection, front view: a prefilter x >= 0 and |y| <= x (1 + 1e-6) keeps a superset of the
  points whose azimuth lies in (-45, 45] degrees (about a quarter of a scan), numpy's arctan2
  decides on those; the beam-row choice of `kitti.projection.beam_rows` (searchsorted, nearer
  neighbour, the better of the two blocks, tolerance) runs on numpy's angles; each cell keeps
  its nearest point, the lowest index among equal ranges, which is np.lexsort's first entry.
  The full view computes the beam rows of every point once and turns the cloud for tiles 1-3
  inside the prefilter pass;
- box fit: the heading search for all instances of a frame in one call, the points grouped by
  instance as boxes_for_instances sorts them; for each heading the per-point projections are
  recomputed in each of the three passes (min/max, edge means, variances) instead of being
  stored (storing them, 0.7 MB for a 512-point instance, measured 5% faster: not worth the
  buffer), with the headings as the inner loop so the compiler vectorises across them (each
  heading's sum stays sequential over the points). The projections are x*cos + y*sin with two
  roundings, which is also how rectangle_fit now writes them (it used `xy @ e1`, whose BLAS
  rounding depends on the BLAS build and the element's position).

-O3 and, where the compiler accepts it, -march=native; the library is cached under a key made of
the source, the flags and this CPU's identity (as in `_crf_native.py`).
"""
from __future__ import annotations

import ctypes
import threading

import numpy as np

from ._native_build import NativeKernel

ENV_SWITCH = "SQUEEZE_PERCEPTION_NATIVE_STAGES"

C_SOURCE = r"""
#include <math.h>
#include <stdint.h>

/* Candidates of the front 90 degrees among n float32 points (row stride `stride` floats):
   rotate != 0 turns each point first as pipeline.rotate_z does (float64 products, the result
   rounded to float32); keep i where x >= 0 and |y| <= x (1 + 1e-6), a superset of the azimuths
   in (-45, 45] degrees (numpy's arctan2 decides); all != 0 keeps every point. Kept points in
   index order: idx, their four (turned) floats in q, x, y, z as double. Returns their count. */
int64_t sp_candidates(int64_t n, const float *p, int64_t stride, int rotate, double c, double s, int all,
                      int64_t *idx, float *q, double *x, double *y, double *z)
{
    int64_t m = 0;
    for (int64_t i = 0; i < n; i++) {
        const float *r = p + i * stride;
        float fx = r[0], fy = r[1];
        if (rotate) {
            const double dx = r[0], dy = r[1];
            fx = (float)(c * dx - s * dy);
            fy = (float)(s * dx + c * dy);
        }
        const double X = fx, Y = fy;
        if (!all && !(X >= 0.0 && fabs(Y) <= X * (1.0 + 1e-6))) continue;
        idx[m] = i;
        if (q) { q[4 * m] = fx; q[4 * m + 1] = fy; q[4 * m + 2] = r[2]; q[4 * m + 3] = r[3]; }
        x[m] = X; y[m] = Y; z[m] = r[2];
        m++;
    }
    return m;
}

#define LUT 512

/* np.searchsorted(asc, a, side="left") for an ascending asc without NaN (numpy sorts NaN last):
   the number of entries below a. lut[b] holds that number for the start of bucket b of
   [asc[0], asc[n-1]] cut into LUT buckets, narrower than the gap between two beams, so the walk
   from it is zero or one step; the walks in both directions make the answer exact whatever the
   bucket's rounding. */
static inline __attribute__((always_inline)) int64_t search_left(const double *asc, int64_t n, const int32_t *lut,
                                                                 double scale, double a)
{
    if (a != a) return n;
    double f = (a - asc[0]) * scale;
    int64_t pos = f < 0.0 ? 0 : f >= (double)(LUT - 1) ? lut[LUT - 1] : lut[(int64_t)f];
    while (pos < n && asc[pos] < a) pos++;
    while (pos > 0 && !(asc[pos - 1] < a)) pos--;
    return pos;
}

static void make_lut(const double *asc, int64_t n, int32_t *lut, double *scale)
{
    *scale = (double)LUT / (asc[n - 1] - asc[0]);
    for (int64_t b = 0; b < LUT; b++) {
        const double start = asc[0] + (double)b / *scale;
        int32_t c = 0;
        for (int64_t i = 0; i < n; i++) c += asc[i] < start;
        lut[b] = c;
    }
}

static inline __attribute__((always_inline)) void beam_block(const double *asc, int64_t n, const int32_t *lut,
                                                             double scale, int64_t start, double a,
                                                             double *best_err, int64_t *best_row)
{
    int64_t pos = search_left(asc, n, lut, scale, a);
    if (pos < 1) pos = 1;
    if (pos > n - 1) pos = n - 1;
    const double lower = asc[pos - 1], upper = asc[pos];
    const int64_t ia = fabs(upper - a) < fabs(a - lower) ? pos : pos - 1;
    const double err = fabs(asc[ia] - a);
    if (err < *best_err) { *best_err = err; *best_row = start + (n - 1 - ia); }
}

/* kitti.projection.beam_rows given numpy's elevation angles (degrees) of the m points against
   each block's mean beam height (ang_u, ang_l) and their horizontal distance. */
void sp_beam_rows(int64_t m, const double *horizontal, const double *ang_u, const double *ang_l,
                  const double *x, const double *y, const double *z,
                  const double *asc_u, int64_t nu, int64_t start_u, const double *asc_l, int64_t nl, int64_t start_l,
                  double tol, int64_t *rows)
{
    int32_t lut_u[LUT], lut_l[LUT];
    double scale_u, scale_l;
    make_lut(asc_u, nu, lut_u, &scale_u);
    make_lut(asc_l, nl, lut_l, &scale_l);
    for (int64_t k = 0; k < m; k++) {
        double best_err = INFINITY;
        int64_t best_row = -1;
        beam_block(asc_u, nu, lut_u, scale_u, start_u, ang_u[k], &best_err, &best_row);
        beam_block(asc_l, nl, lut_l, scale_l, start_l, ang_l[k], &best_err, &best_row);
        if (!(best_err <= tol)) best_row = -1;
        const double h = horizontal[k];
        if (!isfinite(h) || sqrt((x[k] * x[k] + y[k] * y[k]) + z[k] * z[k]) <= 0.0) best_row = -1;
        rows[k] = best_row;
    }
}

/* One front tile from m candidates (idx, their floats q, numpy's azimuth az in degrees): column
   floor((half - az) / col_div), kept in [0, width); row crow[k] (per candidate) or arow[idx[k]]
   (per input point), kept in [0, height). rows/cols (n, per input point; -1 outside), grid
   (height*width*5, zeroed), point_index (height*width; -1 where empty), owner (NULL or per input point:
   set to tile where still < 0), ws_range / ws_k (height*width each, need no init). */
void sp_project(int64_t n, int64_t m, const int64_t *idx, const float *q, const double *az, const int64_t *crow,
                const int64_t *arow, int64_t width, int64_t height, double half, double col_div,
                int64_t *rows, int64_t *cols, float *grid, int64_t *point_index, int64_t *owner, int64_t tile,
                double *ws_range, int64_t *ws_k)
{
    for (int64_t i = 0; i < n; i++) rows[i] = cols[i] = -1;
    for (int64_t cell = 0; cell < width * height; cell++) point_index[cell] = -1;
    for (int64_t k = 0; k < m; k++) {
        const double f = floor((half - az[k]) / col_div);
        if (!(f >= 0.0 && f < (double)width)) continue;
        const int64_t i = idx[k];
        const int64_t r = crow ? crow[k] : arow[i];
        if (r < 0 || r >= height) continue;
        const int64_t col = (int64_t)f, cell = r * width + col;
        rows[i] = r;
        cols[i] = col;
        if (owner && owner[i] < 0) owner[i] = tile;
        const double qx = q[4 * k], qy = q[4 * k + 1], qz = q[4 * k + 2];
        const double range = sqrt((qx * qx + qy * qy) + qz * qz);
        /* candidates come in index order: a strictly nearer point replaces, an equal one not */
        if (point_index[cell] < 0 || range < ws_range[cell]) {
            point_index[cell] = i;
            ws_range[cell] = range;
            ws_k[cell] = k;
        }
    }
    for (int64_t cell = 0; cell < width * height; cell++) {
        if (point_index[cell] < 0) continue;
        const float *src = q + 4 * ws_k[cell];
        float *dst = grid + 5 * cell;
        dst[0] = src[0]; dst[1] = src[1]; dst[2] = src[2]; dst[3] = src[3];
        dst[4] = (float)ws_range[cell];
    }
}

/* One point's step of each pass over the na headings. Separate functions with restrict
   parameters: GCC vectorises a loop over the headings only when it knows the arrays apart. The
   masked sums are the reference's d * sel with sel 1.0 or 0.0, written as arithmetic, not as
   a branch (the same values: d * 0.0 = +0.0, and s + 0.0 = s for the non-negative sums). */
static void bf_range(int64_t na, double x, double y, const double *restrict cs, const double *restrict sn,
                     const double *restrict nsn, double *restrict mn1, double *restrict mx1,
                     double *restrict mn2, double *restrict mx2)
{
    for (int64_t a = 0; a < na; a++) {
        const double c1 = x * cs[a] + y * sn[a], c2 = x * nsn[a] + y * cs[a];
        mn1[a] = c1 < mn1[a] ? c1 : mn1[a]; mx1[a] = c1 > mx1[a] ? c1 : mx1[a];
        mn2[a] = c2 < mn2[a] ? c2 : mn2[a]; mx2[a] = c2 > mx2[a] ? c2 : mx2[a];
    }
}

static void bf_sums(int64_t na, double x, double y, const double *restrict cs, const double *restrict sn,
                    const double *restrict nsn, const double *restrict mn1, const double *restrict mx1,
                    const double *restrict mn2, const double *restrict mx2, double *restrict n1,
                    double *restrict s1, double *restrict n2, double *restrict s2)
{
    for (int64_t a = 0; a < na; a++) {
        const double c1 = x * cs[a] + y * sn[a], c2 = x * nsn[a] + y * cs[a];
        const double t1 = c1 - mn1[a], u1 = mx1[a] - c1, t2 = c2 - mn2[a], u2 = mx2[a] - c2;
        const double d1 = t1 < u1 ? t1 : u1, d2 = t2 < u2 ? t2 : u2;  /* np.minimum */
        const double on1 = d1 <= d2 ? 1.0 : 0.0, on2 = 1.0 - on1;
        n1[a] += on1; s1[a] += d1 * on1;
        n2[a] += on2; s2[a] += d2 * on2;
    }
}

static void bf_vars(int64_t na, double x, double y, const double *restrict cs, const double *restrict sn,
                    const double *restrict nsn, const double *restrict mn1, const double *restrict mx1,
                    const double *restrict mn2, const double *restrict mx2, const double *restrict mean1,
                    const double *restrict mean2, double *restrict v1, double *restrict v2)
{
    for (int64_t a = 0; a < na; a++) {
        const double c1 = x * cs[a] + y * sn[a], c2 = x * nsn[a] + y * cs[a];
        const double t1 = c1 - mn1[a], u1 = mx1[a] - c1, t2 = c2 - mn2[a], u2 = mx2[a] - c2;
        const double d1 = t1 < u1 ? t1 : u1, d2 = t2 < u2 ? t2 : u2;
        const double on1 = d1 <= d2 ? 1.0 : 0.0, on2 = 1.0 - on1;
        const double e1 = d1 - mean1[a], e2 = d2 - mean2[a];
        v1[a] += e1 * e1 * on1;
        v2[a] += e2 * e2 * on2;
    }
}

/* boxfit.rectangle_fit for k instances; instance j is count[j] rows (x, y, z float64) of p from
   row start[j]. Heading search over na headings (cs, sn, nsn: cos, sin, -sin as numpy computes
   them) on every step-th point, step = ceil(count / max_search) when count > max_search; the
   extents at the chosen heading over every point. best[j]: the heading's index; out[6j..]:
   ext1, ext2, m1, m2, z_min, z_max. costs: NULL or k*na, every heading's cost (tests).
   ws: 12 * na doubles. */
void sp_boxfit(int64_t k, const int64_t *start, const int64_t *count, const double *p, int64_t max_search,
               int64_t na, const double *cs, const double *sn, const double *nsn, double *ws, int64_t *best,
               double *out, double *costs)
{
    double *mn1 = ws, *mx1 = ws + na, *mn2 = ws + 2 * na, *mx2 = ws + 3 * na, *n1 = ws + 4 * na;
    double *s1 = ws + 5 * na, *n2 = ws + 6 * na, *s2 = ws + 7 * na, *v1 = ws + 8 * na, *v2 = ws + 9 * na;
    double *mean1 = ws + 10 * na, *mean2 = ws + 11 * na;
    for (int64_t j = 0; j < k; j++) {
        const double *pts = p + 3 * start[j];
        const int64_t n = count[j];
        const int64_t step = n > max_search ? (n + max_search - 1) / max_search : 1;
        int64_t a, i;
        for (a = 0; a < na; a++) {
            mn1[a] = mn2[a] = INFINITY; mx1[a] = mx2[a] = -INFINITY;
            n1[a] = s1[a] = n2[a] = s2[a] = v1[a] = v2[a] = 0.0;
        }
        for (i = 0; i < n; i += step)
            bf_range(na, pts[3 * i], pts[3 * i + 1], cs, sn, nsn, mn1, mx1, mn2, mx2);
        for (i = 0; i < n; i += step)
            bf_sums(na, pts[3 * i], pts[3 * i + 1], cs, sn, nsn, mn1, mx1, mn2, mx2, n1, s1, n2, s2);
        for (a = 0; a < na; a++) {
            mean1[a] = n1[a] > 0.0 ? s1[a] / n1[a] : 0.0;
            mean2[a] = n2[a] > 0.0 ? s2[a] / n2[a] : 0.0;
        }
        for (i = 0; i < n; i += step)
            bf_vars(na, pts[3 * i], pts[3 * i + 1], cs, sn, nsn, mn1, mx1, mn2, mx2, mean1, mean2, v1, v2);
        int64_t b = 0;
        double bc = 0.0;
        for (a = 0; a < na; a++) {
            double cost = 0.0;
            cost += n1[a] > 0.0 ? v1[a] / n1[a] : 0.0;
            cost += n2[a] > 0.0 ? v2[a] / n2[a] : 0.0;
            if (costs) costs[j * na + a] = cost;
            if (a == 0 || cost < bc) { b = a; bc = cost; }  /* np.argmin: the first least */
        }
        best[j] = b;
        const double ct = cs[b], st = sn[b], nst = nsn[b];
        double lo1 = INFINITY, hi1 = -INFINITY, lo2 = INFINITY, hi2 = -INFINITY, zlo = INFINITY, zhi = -INFINITY;
        for (i = 0; i < n; i++) {
            const double x = pts[3 * i], y = pts[3 * i + 1], z = pts[3 * i + 2];
            const double a1 = x * ct + y * st, a2 = x * nst + y * ct;
            lo1 = a1 < lo1 ? a1 : lo1; hi1 = a1 > hi1 ? a1 : hi1;
            lo2 = a2 < lo2 ? a2 : lo2; hi2 = a2 > hi2 ? a2 : hi2;
            zlo = z < zlo ? z : zlo; zhi = z > zhi ? z : zhi;
        }
        double *o = out + 6 * j;
        o[0] = hi1 - lo1; o[1] = hi2 - lo2; o[2] = (hi1 + lo1) / 2; o[3] = (hi2 + lo2) / 2; o[4] = zlo; o[5] = zhi;
    }
}
"""

# -fno-math-errno: sqrt becomes the instruction instead of a libm call that may set errno (the
# same correctly rounded value); -ffp-contract=off: no fused multiply-add changes a rounding.
BASE_FLAGS = ["-O3", "-fPIC", "-shared", "-ffp-contract=off", "-fno-fast-math", "-fno-math-errno"]


def _setup(lib):
    i64, ptr, dbl, cint = ctypes.c_int64, ctypes.c_void_p, ctypes.c_double, ctypes.c_int
    lib.sp_candidates.argtypes = [i64, ptr, i64, cint, dbl, dbl, cint] + [ptr] * 5
    lib.sp_candidates.restype = i64
    lib.sp_beam_rows.argtypes = [i64] + [ptr] * 6 + [ptr, i64, i64, ptr, i64, i64, dbl, ptr]
    lib.sp_beam_rows.restype = None
    lib.sp_project.argtypes = [i64, i64, ptr, ptr, ptr, ptr, ptr, i64, i64, dbl, dbl] + [ptr] * 5 + [i64, ptr, ptr]
    lib.sp_project.restype = None
    lib.sp_boxfit.argtypes = [i64, ptr, ptr, ptr, i64, i64] + [ptr] * 7
    lib.sp_boxfit.restype = None
    return lib


_KERNEL = NativeKernel("sp_stages", C_SOURCE, ENV_SWITCH, _setup, libs=["-lm"],
                       flag_sets=(BASE_FLAGS + ["-march=native"], BASE_FLAGS))


def load():
    """The ctypes library, or None (reason in `load_error()`)."""
    return _KERNEL.load()


def load_error() -> str | None:
    return _KERNEL.load_error()


def _ptr(a: np.ndarray | None):
    return None if a is None else a.ctypes.data


# ----------------------------------------------------------------------------- projection
def _beam_blocks():
    """(first row, ascending elevations, mean beam height) per block, as beam_rows computes them."""
    from ..kitti.hdl64e import HDL64E_BEAM_HEIGHT_M, HDL64E_ELEVATION_DEG, LOWER_BLOCK_ROWS, UPPER_BLOCK_ROWS

    return [(block.start, np.ascontiguousarray(HDL64E_ELEVATION_DEG[block][::-1], dtype=np.float64),
             float(np.mean(HDL64E_BEAM_HEIGHT_M[block]))) for block in (UPPER_BLOCK_ROWS, LOWER_BLOCK_ROWS)]


_BLOCKS = None
_local = threading.local()  # per-thread scratch: one call at a time uses it


def _scratch(name: str, n: int, dtype=np.float64, width: int = 0) -> np.ndarray:
    """A reused per-thread buffer of at least n rows. Fresh arrays of a scan's size cost more in
    page faults (kernel time, counted in the stage's CPU time) than the kernels themselves; the
    outputs are fresh arrays all the same, the scratch never leaves this module. About 100 bytes
    per point of the largest cloud seen stay allocated per thread that projects (12 MB for a
    127k-point scan)."""
    bufs = _local.__dict__.setdefault("bufs", {})
    buf = bufs.get(name)
    if buf is None or len(buf) < n:
        buf = np.empty((max(n, 1024),) + ((width,) if width else ()), dtype=dtype)
        bufs[name] = buf
    return buf[:n]


def _rows_of(lib, x: np.ndarray, y: np.ndarray, z: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """beam_rows of the points (x, y, z) into rows: numpy's angles (the reference's ufunc calls,
    written into scratch with out=, which computes the same values), the kernel's choice."""
    from ..kitti.projection import ROW_TOLERANCE_DEG

    global _BLOCKS
    if _BLOCKS is None:
        _BLOCKS = _beam_blocks()
    (su, asc_u, hu), (sl, asc_l, hl) = _BLOCKS
    m = len(x)
    horizontal = _scratch("horizontal", m)  # beam_rows' sqrt(x*x + y*y), the same ufuncs in the same order
    np.sqrt(np.add(np.multiply(x, x, out=horizontal), np.multiply(y, y, out=_scratch("y_squared", m)),
                   out=horizontal), out=horizontal)
    ang_u = np.degrees(np.arctan2(np.subtract(z, hu, out=_scratch("ang_u", m)), horizontal, out=_scratch("ang_u", m)),
                       out=_scratch("ang_u", m))
    ang_l = np.degrees(np.arctan2(np.subtract(z, hl, out=_scratch("ang_l", m)), horizontal, out=_scratch("ang_l", m)),
                       out=_scratch("ang_l", m))
    lib.sp_beam_rows(m, _ptr(horizontal), _ptr(ang_u), _ptr(ang_l), _ptr(x), _ptr(y), _ptr(z),
                     _ptr(asc_u), len(asc_u), su, _ptr(asc_l), len(asc_l), sl, float(ROW_TOLERANCE_DEG), _ptr(rows))
    return rows


def project_tiles_native(points: np.ndarray, fov: str):
    """`pipeline.project_tiles(points, fov)` (fov already checked), or None where the kernel is
    unavailable or the points are not an (N, >=4) float32 array with unit column stride."""
    from ..kitti.projection import FOV_DEFAULT_WIDTH, FRONT_HALF_ANGLE_DEG, HDL64E_ROWS, SphericalProjection

    lib = load()
    pts = points
    if lib is None or not isinstance(pts, np.ndarray) or pts.dtype != np.float32 or pts.ndim != 2 or pts.shape[1] < 4:
        return None
    n = len(pts)
    if n and (pts.strides[1] != 4 or pts.strides[0] % 4 or pts.strides[0] <= 0):
        return None
    stride = pts.strides[0] // 4 if n else 4
    height, width = HDL64E_ROWS, FOV_DEFAULT_WIDTH["front"]
    half, col_div = FRONT_HALF_ANGLE_DEG, 2 * FRONT_HALF_ANGLE_DEG / width  # azimuth_cols' expressions
    idx, q = _scratch("idx", n, np.int64), _scratch("q", n, np.float32, 4)
    x, y, z = _scratch("x", n), _scratch("y", n), _scratch("z", n)
    ws_range, ws_k = _scratch("ws_range", height * width), _scratch("ws_k", height * width, np.int64)
    owner = np.full(n, -1, dtype=np.int64)
    all_rows = None
    if fov == "full":  # beam rows of the unturned points, shared by the four tiles (as the reference)
        lib.sp_candidates(n, _ptr(pts), stride, 0, 1.0, 0.0, 1, _ptr(idx), None, _ptr(x), _ptr(y), _ptr(z))
        all_rows = _rows_of(lib, x, y, z, _scratch("all_rows", n, np.int64))
    projs = []
    for t in range(1 if fov == "front" else 4):
        c, s = (np.cos(t * np.pi / 2), np.sin(t * np.pi / 2)) if t else (1.0, 0.0)  # rotate_z's values
        m = lib.sp_candidates(n, _ptr(pts), stride, 1 if t else 0, float(c), float(s), 0, _ptr(idx), _ptr(q),
                              _ptr(x), _ptr(y), _ptr(z))
        az = np.degrees(np.arctan2(y[:m], x[:m], out=_scratch("az", m)), out=_scratch("az", m))  # azimuth_cols'
        crow = _rows_of(lib, x[:m], y[:m], z[:m], _scratch("crow", m, np.int64)) if all_rows is None else None
        rows = np.empty(n, dtype=np.int64)  # the kernel writes every entry
        cols = np.empty(n, dtype=np.int64)
        grid = np.zeros((height * width, 5), dtype=np.float32)
        point_index = np.empty(height * width, dtype=np.int64)
        lib.sp_project(n, m, _ptr(idx), _ptr(q), _ptr(az), _ptr(crow), _ptr(all_rows), width, height, float(half),
                       float(col_div), _ptr(rows), _ptr(cols), _ptr(grid), _ptr(point_index), _ptr(owner), t,
                       _ptr(ws_range), _ptr(ws_k))
        projs.append(SphericalProjection(grid=grid.reshape(height, width, 5),
                                         mask=(point_index >= 0).reshape(height, width),
                                         point_index=point_index.reshape(height, width), rows=rows, cols=cols,
                                         fov="front"))
    return projs, owner


# ----------------------------------------------------------------------------- box fit
def rectangle_fits(points: np.ndarray, starts: np.ndarray, counts: np.ndarray, step_deg: float = 1.0,
                   max_search_points: int = 512, with_costs: bool = False):
    """`boxfit.rectangle_fit` of every instance: instance j is points[starts[j]:starts[j] + counts[j], :3].
    Returns (theta index, thetas, ext1, ext2, m1, m2, z_min, z_max[, costs]) as arrays, for
    `boxfit.finish_boxes`; None where the kernel is unavailable or a coordinate is not finite
    (the reference's NaN handling is numpy's min/max, which the kernel does not copy)."""
    from .boxfit import heading_table

    lib = load()
    if lib is None:
        return None
    p = np.ascontiguousarray(points[:, :3], dtype=np.float64)
    if not np.isfinite(p).all():
        return None
    starts = np.ascontiguousarray(starts, dtype=np.int64)
    counts = np.ascontiguousarray(counts, dtype=np.int64)
    if (counts <= 0).any() or (starts < 0).any() or (starts + counts > len(p)).any() or max_search_points < 1:
        return None
    thetas, cs, sn = heading_table(step_deg)
    nsn = -sn
    k, na = len(starts), len(thetas)
    best = np.empty(k, dtype=np.int64)
    out = np.empty((k, 6))
    costs = np.empty((k, na)) if with_costs else None
    ws = np.empty(12 * na)  # named: an array made inside the call's arguments could be freed before it runs
    lib.sp_boxfit(k, _ptr(starts), _ptr(counts), _ptr(p), int(max_search_points), na, _ptr(cs), _ptr(sn),
                  _ptr(nsn), _ptr(ws), _ptr(best), _ptr(out), _ptr(costs))
    res = (best, thetas, *out.T)
    return res + (costs,) if with_costs else res
