"""Inference-only recurrent CRF as a small C kernel, compiled on first use (ctypes; no build
step, no new dependency), the pattern of `_dbscan_native.py`. `RecurrentCRF.forward` calls it
when autograd is off (or nothing requires a gradient), the tensors are CPU float32 and
SQUEEZE_PERCEPTION_NATIVE_CRF is not "0"; otherwise, and whenever the kernel refuses (no C
compiler, an even window or one over MAX_WINDOW, more than MAX_CLASSES classes), the torch
path runs.

Why hand-written: no library provides this fused locally connected CRF (a 3x5 window on the
range image whose bilateral weights depend on each pair of points). In torch it is a chain
of ~40 operator calls per iteration over (B, C, H, W) tensors whose cost is dispatch and
memory passes, not arithmetic (issue 11 item 1). The torch version in crf.py stays the
definition: tests/test_segmentation_crf_native.py holds the two equal to 1e-5.

What one call computes (the same mathematics as crf.py, float32):
- once per frame, the bilateral weights of the (P - 1) / 2 "forward" window offsets d:
  exp(-min(|x_i - x_(i+d)|^2 / (2 theta_r[c]^2), 40)) * bilateral_angular[c, d]
  * mask_(i+d) * mask_i, zero beyond the border; the offset -d reuses them shifted by d
  (w(i, i-d) = w(i-d, i)), as crf.py does. Classes whose theta_r and bilateral angular kernel
  are bitwise equal have equal weights and share one plane (2 groups instead of 4 classes
  with the released constants). The planes are zero-padded, so the mirrored read is a plain
  offset read and no border test sits in the hot loop;
- per iteration, one pass over the rows: q = softmax over classes * mask into a zero-padded
  buffer (zero padding = zero messages from beyond the border), kh / 2 rows ahead of the
  row whose messages are summed; the angular message (constant kernel, centre included as
  conv2d includes it) and the bilateral message over the window, with the 3x5 window and
  C = 4 as compile-time constants so the sums stay in registers; the angular one times the
  mask; both times their coefficient, through the two C x C compatibility matrices;
  out = logits - pairwise. The first iteration reads the logits, later ones the previous
  output (in place: a row is overwritten only after the q rows that need it are computed).

exp is a hand-written range reduction + degree-6 polynomial (about 1-2 ulp, the Cephes
coefficients), because libm's expf is a call the compiler does not vectorise without
-ffast-math; -ffast-math itself is not used (it would let the compiler reorder sums and
drop NaN semantics). -O3 and, where the compiler accepts it, -march=native: the library is
cached under a key made of the source, the flags and this CPU's identity (model and
instruction-set flags from /proc/cpuinfo), so a cache directory shared with another machine
never loads code built for instructions it lacks. The kernel sets flush-to-zero /
denormals-are-zero for its own duration (x86, restored on return): products of a tiny q
and a floored weight can fall below 1e-38, whose arithmetic takes the CPU's slow assist
path; a value below 1e-38 changes no output at the 1e-5 the tests hold.
"""
from __future__ import annotations

import ctypes
import threading

import torch

from ._native_build import NativeKernel

ENV_SWITCH = "SQUEEZE_PERCEPTION_NATIVE_CRF"
MAX_CLASSES = 32  # the kernel keeps per-class scalars on the stack
MAX_WINDOW = 9

C_SOURCE = r"""
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#if defined(__x86_64__) || defined(__i386__)
#include <xmmintrin.h>
#define SP_HAVE_MXCSR 1
#endif

#define MAX_C 32
#define MAX_P 81
#define INLINE static inline __attribute__((always_inline))

INLINE float bits_to_float(int32_t i) { float f; memcpy(&f, &i, 4); return f; }

/* exp(x) for x in [-87, 88] (clamped there; the callers pass <= 0), about 1-2 ulp. The
   rounding to the nearest integer is the add/subtract of 1.5 * 2^23, exact without
   -ffast-math and vectorisable without SSE4.1. */
INLINE float sp_expf(float x) {
    x = x < -87.0f ? -87.0f : x;
    x = x > 88.0f ? 88.0f : x;
    float n = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
    float r = x - n * 0.693359375f;
    r = r - n * -2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * (r * r) + r + 1.0f;
    return p * bits_to_float(((int32_t)n + 127) << 23);
}

/* zero the padding frame of an Hp x Wp plane (zero messages from beyond the border) */
INLINE void zero_border(float *pl, int64_t Hp, int64_t Wp, int64_t ph, int64_t pw) {
    memset(pl, 0, sizeof(float) * ph * Wp);
    memset(pl + (Hp - ph) * Wp, 0, sizeof(float) * ph * Wp);
    for (int64_t r = ph; r < Hp - ph; r++) {
        memset(pl + r * Wp, 0, sizeof(float) * pw);
        memset(pl + r * Wp + Wp - pw, 0, sizeof(float) * pw);
    }
}

/* Angular and bilateral messages of one class along one grid row (see crf_frames). Window
   position p = neighbour (dr, dc). A forward offset +d has its weights at this cell; a
   backward offset -d those of +d at the neighbour, i.e. read at the neighbour's position. */
INLINE void message_row(const int64_t W, const int64_t Wp, const int64_t kh, const int64_t kw,
                        const float *restrict q0, const float *restrict w0, const int64_t fstride,
                        const float *ka, const float *restrict mr,
                        const float ang_coef, const float bi_coef, float *restrict aa, float *restrict ab)
{
    const int64_t ph = kh / 2, pw = kw / 2, P = kh * kw, centre = P / 2;
#pragma GCC unroll 2
    for (int64_t j = 0; j < W; j++) {
        float sa = 0.0f, sb = 0.0f;
#pragma GCC unroll 81
        for (int64_t p = 0; p < P; p++) {
            const int64_t nb = (p / kw - ph) * Wp + (p % kw - pw);
            const float qv = q0[nb + j];
            sa += ka[p] * qv;
            if (p > centre)
                sb += w0[(p - centre - 1) * fstride + j] * qv;
            else if (p < centre)
                sb += w0[(centre - 1 - p) * fstride + nb + j] * qv;
        }
        aa[j] = ang_coef * (sa * mr[j]);
        ab[j] = bi_coef * sb;
    }
}

/* squared distance and mask product of each cell of a row and its neighbour at one offset
   (restrict as parameters: GCC trusts it there and vectorises without run-time checks) */
INLINE void pair_row(int64_t j0, int64_t j1, const float *restrict x0, const float *restrict y0,
                     const float *restrict z0, const float *restrict x1, const float *restrict y1,
                     const float *restrict z1, const float *restrict m0, const float *restrict m1,
                     float *restrict dsq, float *restrict nmask)
{
    for (int64_t j = j0; j < j1; j++) {
        float ddx = x1[j] - x0[j], ddy = y1[j] - y0[j], ddz = z1[j] - z0[j];
        dsq[j] = (ddx * ddx + ddy * ddy) + ddz * ddz;
        nmask[j] = m1[j] * m0[j];
    }
}

/* bilateral weights of a row at one offset: exp(-min(dsq * ic, cutoff)) * k * nmask (crf.py's
   order of operations), zero where the neighbour lies beyond the left or right border */
INLINE void bilateral_row(int64_t W, int64_t j0, int64_t j1, const float *restrict dsq,
                          const float *restrict nmask, float ic, float k, float cutoff, float *restrict wrow)
{
    for (int64_t j = 0; j < j0; j++) wrow[j] = 0.0f;
    for (int64_t j = j0; j < j1; j++) {
        float a = dsq[j] * ic;
        a = a > cutoff ? cutoff : a;
        wrow[j] = sp_expf(-a) * k * nmask[j];
    }
    for (int64_t j = j1; j < W; j++) wrow[j] = 0.0f;
}

INLINE void max_row(int64_t W, const float *restrict v, float *restrict mx) {
    for (int64_t j = 0; j < W; j++) mx[j] = v[j] > mx[j] ? v[j] : mx[j];
}

/* q = exp(v - max) (unnormalised), summed into sum */
INLINE void exp_row(int64_t W, const float *restrict v, const float *restrict mx, float *restrict q,
                    float *restrict sum)
{
    for (int64_t j = 0; j < W; j++) {
        const float e = sp_expf(v[j] - mx[j]);
        q[j] = e;
        sum[j] += e;
    }
}

/* softmax * mask: empty cells send no messages */
INLINE void normalise_row(int64_t W, const float *restrict sum, const float *restrict mr, float *restrict q) {
    for (int64_t j = 0; j < W; j++) q[j] = q[j] / sum[j] * mr[j];
}

/* out = logits - (compat_angular . msg_angular + compat_bilateral . msg_bilateral) of one
   output class along a row; acc_a / acc_b: the C messages' rows (already times coef) */
INLINE void compat_row(int64_t W, const int64_t C, const float *wa, const float *wb,
                       const float *restrict acc_a, const float *restrict acc_b,
                       const float *restrict lr, float *restrict orow)
{
    for (int64_t j = 0; j < W; j++) {
        float sa = 0.0f, sb = 0.0f;
        for (int64_t c = 0; c < C; c++) {
            sa += wa[c] * acc_a[c * W + j];
            sb += wb[c] * acc_b[c * W + j];
        }
        orow[j] = lr[j] - (sa + sb);
    }
}

/* The whole computation for C classes and a kh x kw window. Inlined twice: with the
   constants of the SqueezeSeg CRF (C = 4, 3 x 5), so that the loops over classes and window
   positions unroll and the loops over a row vectorise with every sum in registers, and with
   run-time values for any other configuration (same arithmetic, slower). */
INLINE void crf_frames(const int64_t B, const int64_t C, const int64_t H, const int64_t W,
                       const int64_t kh, const int64_t kw, const int64_t iters,
                       const float *logits, int64_t logits_bs, const float *xyz, int64_t xyz_bs,
                       const float *mask, int64_t mask_bs, const float *ang, const float *bik,
                       const float *inv, const float *ca, const float *cb, float ang_coef,
                       float bi_coef, float cutoff, float *out, float *wf, float *qp, float *rowbuf,
                       const int64_t G, const int64_t *group, const int64_t *group_class)
{
    const int64_t ph = kh / 2, pw = kw / 2, P = kh * kw, centre = P / 2, F = P / 2;
    const int64_t Hp = H + 2 * ph, Wp = W + 2 * pw, plane = Hp * Wp, HW = H * W;
    float *acc_a = rowbuf, *acc_b = rowbuf + C * W, *tmp0 = rowbuf + 2 * C * W;
    float *tmp1 = tmp0 + W;
    float ca_s[MAX_C * MAX_C], cb_s[MAX_C * MAX_C];
    for (int64_t i = 0; i < C * C; i++) { ca_s[i] = ca[i]; cb_s[i] = cb[i]; }

    for (int64_t b = 0; b < B; b++) {
        const float *lg = logits + b * logits_bs, *x = xyz + b * xyz_bs, *m = mask + b * mask_bs;
        float *o = out + b * C * HW;
        /* ---- bilateral weights of the forward offsets, one plane per class group (once per frame) */
        for (int64_t f = 0; f < F; f++) {
            const int64_t p = centre + 1 + f, dr = p / kw - ph, dc = p % kw - pw;
            const int64_t j0 = dc < 0 ? -dc : 0, j1 = dc > 0 ? W - dc : W;
            for (int64_t g = 0; g < G; g++) zero_border(wf + (f * G + g) * plane, Hp, Wp, ph, pw);
            for (int64_t r = 0; r < H; r++) {
                const int64_t rn = r + dr;
                if (rn < 0 || rn >= H) {  /* no neighbour beyond the border */
                    for (int64_t g = 0; g < G; g++)
                        memset(wf + (f * G + g) * plane + (r + ph) * Wp + pw, 0, sizeof(float) * W);
                    continue;
                }
                const float *x0 = x + r * W, *y0 = x + HW + r * W, *z0 = x + 2 * HW + r * W;
                const float *x1 = x + rn * W + dc, *y1 = x + HW + rn * W + dc, *z1 = x + 2 * HW + rn * W + dc;
                const float *m0 = m + r * W, *m1 = m + rn * W + dc;
                float *dsq = tmp0, *nmask = tmp1;
                pair_row(j0, j1, x0, y0, z0, x1, y1, z1, m0, m1, dsq, nmask);
                for (int64_t g = 0; g < G; g++) {
                    const int64_t c = group_class[g];
                    bilateral_row(W, j0, j1, dsq, nmask, inv[c], bik[c * P + p], cutoff,
                                  wf + (f * G + g) * plane + (r + ph) * Wp + pw);
                }
            }
        }
        /* ---- mean-field iterations */
        for (int64_t c = 0; c < C; c++) zero_border(qp + c * plane, Hp, Wp, ph, pw);
        for (int64_t it = 0; it < iters; it++) {
            const float *cur = it == 0 ? lg : o;
            /* q = softmax * mask into the padded buffer, kh / 2 rows ahead of the messages
               that read it (still in cache when read). The output of row r overwrites cur's
               row r (in place from the second iteration on) only after q of rows <= r + kh / 2
               has been computed from it. */
            int64_t q_rows = 0;
            for (int64_t r = 0; r < H; r++) {
                for (; q_rows < H && q_rows <= r + ph; q_rows++) {
                    const int64_t k = q_rows;
                    float *rowmax = tmp0, *rowsum = tmp1;
                    memcpy(rowmax, cur + k * W, sizeof(float) * W);
                    for (int64_t c = 1; c < C; c++) max_row(W, cur + c * HW + k * W, rowmax);
                    memset(rowsum, 0, sizeof(float) * W);
                    for (int64_t c = 0; c < C; c++)
                        exp_row(W, cur + c * HW + k * W, rowmax, qp + c * plane + (k + ph) * Wp + pw, rowsum);
                    for (int64_t c = 0; c < C; c++)
                        normalise_row(W, rowsum, m + k * W, qp + c * plane + (k + ph) * Wp + pw);
                }
                /* messages, compatibility, output */
                const float *restrict mr = m + r * W;
                for (int64_t c = 0; c < C; c++) {
                    float ka[MAX_P];
                    const int64_t g = group[c], fstride = G * plane;
                    for (int64_t p = 0; p < P; p++) ka[p] = ang[c * P + p];
                    const float *q0 = qp + c * plane + (r + ph) * Wp + pw;
                    const float *w0 = wf + g * plane + (r + ph) * Wp + pw;
                    float *aa = acc_a + c * W, *ab = acc_b + c * W;
                    if (kh == 3 && kw == 5)  /* constants: the window loop unrolls, the row loop vectorises */
                        message_row(W, Wp, 3, 5, q0, w0, fstride, ka, mr, ang_coef, bi_coef, aa, ab);
                    else
                        message_row(W, Wp, kh, kw, q0, w0, fstride, ka, mr, ang_coef, bi_coef, aa, ab);
                }
                for (int64_t c2 = 0; c2 < C; c2++)
                    compat_row(W, C, ca_s + c2 * C, cb_s + c2 * C, acc_a, acc_b, lg + c2 * HW + r * W,
                               o + c2 * HW + r * W);
            }
        }
        if (iters <= 0) memcpy(o, lg, sizeof(float) * (size_t)C * HW);
    }
}

/* Floats of workspace sp_crf needs (the caller keeps it between calls: fresh pages from
   malloc cost more than the exps of the weights on a 64 x 2048 frame). */
int64_t sp_crf_workspace(int64_t C, int64_t H, int64_t W, int64_t kh, int64_t kw) {
    const int64_t plane = (H + 2 * (kh / 2)) * (W + 2 * (kw / 2)), F = (kh * kw) / 2;
    return (F * C + C) * plane + (2 * C + 3) * W + 16;
}

/* Mean-field CRF over B frames of C classes on an H x W grid, window kh x kw (odd).
   logits (B, C, H, W), xyz (B, 3, H, W), mask (B, 1, H, W): per-frame strides in floats
   (within a frame: contiguous planes). ang (C, P) angular kernel, bik (C, P) bilateral
   angular kernel (forward offsets used), inv (C) 1 / (2 theta_r^2), ca / cb (C, C)
   compatibility matrices [out class][in class]. out (B, C, H, W) contiguous; work: at least
   sp_crf_workspace(...) floats, any content.
   0: done; 1: arguments the kernel does not take. */
int sp_crf(int64_t B, int64_t C, int64_t H, int64_t W, int64_t kh, int64_t kw, int64_t iters,
           const float *logits, int64_t logits_bs, const float *xyz, int64_t xyz_bs,
           const float *mask, int64_t mask_bs, const float *ang, const float *bik,
           const float *inv, const float *ca, const float *cb, float ang_coef, float bi_coef,
           float cutoff, float *out, float *work, int64_t work_len)
{
    if (B < 0 || C < 1 || C > MAX_C || H < 1 || W < 1 || kh < 1 || kw < 1 || !(kh & 1) || !(kw & 1)
        || kh * kw > MAX_P || work_len < sp_crf_workspace(C, H, W, kh, kw))
        return 1;
    const int64_t plane = (H + 2 * (kh / 2)) * (W + 2 * (kw / 2)), F = (kh * kw) / 2;
    /* classes with the same theta_r and bilateral angular kernel (bitwise) have the same
       weights: one plane per group (2 for the released constants instead of 4) */
    int64_t group[MAX_C], group_class[MAX_C], G = 0;
    for (int64_t c = 0; c < C; c++) {
        int64_t g = 0;
        while (g < G && (memcmp(&inv[group_class[g]], &inv[c], sizeof(float)) != 0
                         || memcmp(bik + group_class[g] * kh * kw, bik + c * kh * kw,
                                   sizeof(float) * kh * kw) != 0))
            g++;
        if (g == G) group_class[G++] = c;
        group[c] = g;
    }
    float *wf = work, *qp = work + F * C * plane, *rowbuf = qp + C * plane;
#ifdef SP_HAVE_MXCSR
    const unsigned int csr = _mm_getcsr();
    _mm_setcsr(csr | 0x8040);  /* flush-to-zero | denormals-are-zero, this call only */
#endif
    if (C == 4 && kh == 3 && kw == 5)
        crf_frames(B, 4, H, W, 3, 5, iters, logits, logits_bs, xyz, xyz_bs, mask, mask_bs, ang, bik,
                   inv, ca, cb, ang_coef, bi_coef, cutoff, out, wf, qp, rowbuf, G, group, group_class);
    else
        crf_frames(B, C, H, W, kh, kw, iters, logits, logits_bs, xyz, xyz_bs, mask, mask_bs, ang, bik,
                   inv, ca, cb, ang_coef, bi_coef, cutoff, out, wf, qp, rowbuf, G, group, group_class);
#ifdef SP_HAVE_MXCSR
    _mm_setcsr(csr);
#endif
    return 0;
}
"""

BASE_FLAGS = ["-O3", "-fPIC", "-shared", "-fno-fast-math"]
_workspace_floats = None
_local = threading.local()  # per-thread workspace: one call at a time uses it


def _setup(lib):
    global _workspace_floats
    i64, ptr, f32 = ctypes.c_int64, ctypes.c_void_p, ctypes.c_float
    fn = lib.sp_crf
    fn.argtypes = [i64] * 7 + [ptr, i64, ptr, i64, ptr, i64] + [ptr] * 5 + [f32] * 3 + [ptr, ptr, i64]
    fn.restype = ctypes.c_int
    ws = lib.sp_crf_workspace
    ws.argtypes = [i64] * 5
    ws.restype = i64
    _workspace_floats = ws
    return fn


# -march=native first (AVX2/AVX-512 where present); a compiler that does not know it (or a
# target without it) still gets the portable build.
_KERNEL = NativeKernel("sp_crf", C_SOURCE, ENV_SWITCH, _setup, flag_sets=(BASE_FLAGS + ["-march=native"], BASE_FLAGS))


def load():
    """The ctypes function, or None (reason in `load_error()`)."""
    return _KERNEL.load()


def load_error() -> str | None:
    return _KERNEL.load_error()


def _frames(t: torch.Tensor, channels: int, h: int, w: int) -> torch.Tensor | None:
    """t as (B, channels, H, W) with contiguous frames (any frame stride, e.g. xyz sliced from
    the 5-channel input batch); None when it is not such a tensor."""
    if t.dim() != 4 or t.shape[1:] != (channels, h, w) or t.dtype != torch.float32 or t.device.type != "cpu":
        return None
    if channels * h * w > 0 and t.stride()[1:] != (h * w, w, 1):
        t = t.contiguous()
    return t


def crf_forward(crf, logits: torch.Tensor, xyz: torch.Tensor, mask: torch.Tensor, iterations: int,
                cutoff: float) -> torch.Tensor | None:
    """`crf`'s output on these inputs from the C kernel, or None (the caller then runs torch):
    kernel unavailable, tensors not CPU float32 (B, C, H, W) / (B, 3, H, W) / (B, 1, H, W),
    or a window / class count the kernel does not take."""
    fn = load()
    if fn is None:
        return None
    kh, kw = crf.window
    if not (kh % 2 and kw % 2 and kh <= MAX_WINDOW and kw <= MAX_WINDOW):
        return None
    if logits.dim() != 4:
        return None
    b, c, h, w = logits.shape
    if c != crf.num_classes or not 1 <= c <= MAX_CLASSES or b == 0:
        return None
    lg, xs, ms = _frames(logits, c, h, w), _frames(xyz, 3, h, w), _frames(mask, 1, h, w)
    if lg is None or xs is None or ms is None:
        return None
    params = [t.detach().to(torch.float32).contiguous() for t in (
        crf.angular_kernel, crf.bilateral_angular, crf.inv_two_theta_r_sq,
        crf.compat_angular.weight.reshape(c, c), crf.compat_bilateral.weight.reshape(c, c))]
    if params[0].shape != (c, kh * kw) or params[1].shape != (c, kh * kw) or params[2].numel() != c:
        return None
    out = torch.empty((b, c, h, w), dtype=torch.float32)
    work = _workspace(int(_workspace_floats(c, h, w, kh, kw)))
    rc = fn(b, c, h, w, kh, kw, int(iterations), lg.data_ptr(), lg.stride(0), xs.data_ptr(), xs.stride(0),
            ms.data_ptr(), ms.stride(0), *(p.data_ptr() for p in params),
            float(crf.ang_coef), float(crf.bi_coef), float(cutoff), out.data_ptr(), work.data_ptr(), work.numel())
    return out if rc == 0 else None


def _workspace(floats: int) -> torch.Tensor:
    """Scratch memory for the kernel (bilateral weights, padded q, row buffers), kept per thread
    and grown on demand: fresh pages each call cost more than the weights' exps on a
    64 x 2048 frame (the kernel rewrites everything it reads, padding included)."""
    buf = getattr(_local, "work", None)
    if buf is None or buf.numel() < floats:
        buf = torch.empty(floats, dtype=torch.float32)
        _local.work = buf
    return buf
