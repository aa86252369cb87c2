"""CPU kernels: the loops numpy cannot run at memory speed, compiled by numba.

Every kernel is a pure function of arrays and ints that writes into arrays the caller owns
(buffers a layer allocated in `reshape`). Parallel loops (`prange`) split only over outputs
that no other iteration touches, and every sum runs in a fixed order: results do not depend on
the number of threads or on their timing, so seeded runs stay bit-identical.

Layouts follow Caffe: images (N, C, H, W); columns (C * kh * kw, N * oh * ow) with rows ordered
channel, kernel row, kernel column, so filters (M, C, kh, kw) are the GEMM's (M, C kh kw) as
stored.

Inner loops index flat arrays with unsigned offsets (`u(...)`, numba's uint64): a signed index
makes numba test it for wrap-around at every access, which keeps LLVM from vectorising short
runs (im2col of a 5x5 kernel ran 2-4x slower that way)."""
from __future__ import annotations

import math
import sys

import numpy as np
from numba import prange, uint64 as u

from .direct import (add_weight_grad, add_weight_grad_windows, conv_planes,  # noqa: F401
                     conv_rows, conv_windows, input_grad_windows, to_padded_rows, to_planes,
                     to_rows)
from .gemm import (add_linear_weight_grad, linear, linear_input_grad,  # noqa: F401
                   matmul_add)
from .. import absent, workspace
from .launch import by_filter_width, kernel, serial
from .sums import sum_run
from .winograd import kernels_for_tile as winograd_kernels  # noqa: F401
from .workers import piece_size, run as run_pieces  # noqa: F401 - the layers' entry points



@serial
def _valid_range(out, stride, offset, size):
    """Output positions o in [lo, hi) whose input o * stride + offset lies in [0, size)."""
    lo = 0
    if offset < 0:
        lo = (-offset + stride - 1) // stride
    hi = 0
    if size - offset > 0:
        hi = (size - offset + stride - 1) // stride
    hi = min(hi, out)
    return lo, max(lo, hi)


@serial
def _zero_plane(a, b, ch):
    """a[b, ch] = 0: the gradient kernels accumulate into a plane they own."""
    for hy in range(a.shape[2]):
        for wx in range(a.shape[3]):
            a[b, ch, hy, wx] = 0


# -- convolution: im2col / col2im and the (M, N*P) <-> (N, M, P) moves around the GEMM ----------
@kernel
def im2col(x, kh, kw, sh, sw, ph, pw, dh, dw, oh, ow, col):
    """x (N, C, H, W) -> col (C kh kw, N oh ow); positions in the padding read 0."""
    n, c, h, w = x.shape
    plane = oh * ow
    src, step = x.reshape(-1), u(sw)
    for r in prange(c * kh * kw):
        ch, i, j = r // (kh * kw), (r // kw) % kh, r % kw
        off = j * dw - pw
        lo, hi = _valid_range(ow, sw, off, w)
        dst = col[r]
        for b in range(n):
            for y in range(oh):
                o = u(b * plane + y * ow)
                hy = y * sh - ph + i * dh
                if hy < 0 or hy >= h:
                    lo_y, hi_y = ow, ow
                else:
                    lo_y, hi_y = lo, hi
                for q in range(u(lo_y)):
                    dst[o + q] = 0
                first = u(((b * c + ch) * h + hy) * w + lo * sw + off) if hi_y > lo_y else u(0)
                d = o + u(lo_y)
                if sw == 1:
                    for q in range(u(hi_y - lo_y)):
                        dst[d + q] = src[first + q]
                else:
                    for q in range(u(hi_y - lo_y)):
                        dst[d + q] = src[first + q * step]
                for q in range(u(hi_y), u(ow)):
                    dst[o + q] = 0


@kernel
def col2im(col, kh, kw, sh, sw, ph, pw, dh, dw, oh, ow, dx):
    """Adjoint of im2col: dx (N, C, H, W) = the sum of every column entry at its pixel."""
    n, c, h, w = dx.shape
    plane = oh * ow
    out, step = dx.reshape(-1), u(sw)
    for t in prange(n * c):
        b, ch = t // c, t % c
        base = u(t * h * w)
        for q in range(u(h * w)):
            out[base + q] = 0
        for i in range(kh):
            for j in range(kw):
                src = col[(ch * kh + i) * kw + j]
                off = j * dw - pw
                lo, hi = _valid_range(ow, sw, off, w)
                for y in range(oh):
                    hy = y * sh - ph + i * dh
                    if hy < 0 or hy >= h or hi <= lo:
                        continue
                    s = u(b * plane + y * ow + lo)
                    d = base + u(hy * w + lo * sw + off)
                    if sw == 1:
                        for q in range(u(hi - lo)):
                            out[d + q] += src[s + q]
                    else:
                        for q in range(u(hi - lo)):
                            out[d + q * step] += src[s + q]


def im2row(x, kh, kw, sh, sw, ph, pw, dh, dw, oh, ow, rows):
    """x (N, C, H, W) -> rows (N oh ow, C kh kw): im2col transposed, one row per output
    position (each row ordered as a filter is stored); positions in the padding read 0.
    Each row is written start to end, from input lines that stay in cache."""
    if ph == pw == 0 and dh == dw == 1 and kh == kw:
        _im2row_unpadded(x, kh, kw, sh, sw, oh, ow, rows)
    else:
        _im2row(x, kh, kw, sh, sw, ph, pw, dh, dw, oh, ow, rows)


@by_filter_width
def _im2row_unpadded(KW):
    """im2row of square windows with no padding or dilation: every window whole, its rows
    copied with no tests (a constant width unrolls them). LeNet conv2's im2row of 16 images
    0.28 -> 0.10 ms on one thread, against writing one input line's windows across a row of
    positions (stores the row width apart)."""
    def im2row_unpadded(x, kh, kw, sh, sw, oh, ow, rows):
        k = KW if KW else kw
        n, c, h, w = x.shape
        width = c * k * k
        src, dst = x.reshape(-1), rows.reshape(-1)
        for t in prange(n * oh):
            b, y = t // oh, t % oh
            for ox in range(ow):
                o = u((t * ow + ox) * width)
                for ch in range(c):
                    for i in range(k):
                        s = u(((b * c + ch) * h + y * sh + i) * w + ox * sw)
                        d = o + u((ch * k + i) * k)
                        for j in range(u(k)):
                            dst[d + j] = src[s + j]
    return im2row_unpadded


@by_filter_width
def _im2row(KW):
    """im2row with any padding and dilation, a row at a time."""
    def im2row(x, kh, kw, sh, sw, ph, pw, dh, dw, oh, ow, rows):
        kw = KW if KW else kw  # a constant width: the copies of kw entries unrolled
        n, c, h, w = x.shape
        width = c * kh * kw
        src, dst = x.reshape(-1), rows.reshape(-1)
        for t in prange(n * oh):
            b, y = t // oh, t % oh
            for ox in range(ow):
                off = ox * sw - pw
                inside = off >= 0 and off + (kw - 1) * dw < w  # the window's columns
                o = u((t * ow + ox) * width)
                lo, hi = _valid_range(kw, dw, off, w)
                for ch in range(c):
                    for i in range(kh):
                        hy = y * sh - ph + i * dh
                        d = o + u((ch * kh + i) * kw)
                        if hy < 0 or hy >= h:
                            for j in range(u(kw)):
                                dst[d + j] = 0
                            continue
                        line = u(((b * c + ch) * h + hy) * w)
                        if inside and dw == 1:  # contiguous: one vector move when kw is constant
                            s = line + u(off)
                            for j in range(u(kw)):
                                dst[d + j] = src[s + j]
                        elif inside:
                            s = line + u(off)
                            for j in range(u(kw)):
                                dst[d + j] = src[s + j * u(dw)]
                        else:
                            for j in range(u(kw)):
                                dst[d + j] = 0
                            s = line + u(lo * dw + off)
                            for q in range(u(hi - lo)):
                                dst[d + u(lo) + q] = src[s + q * u(dw)]
    return im2row


@by_filter_width
def row2im(KW):
    """Adjoint of im2row: dx (N, C, H, W) = the sum of every row entry at its pixel, image by
    image (each image's rows read in order, its gradient small enough to stay in cache)."""
    def row2im(rows, kh, kw, sh, sw, ph, pw, dh, dw, oh, ow, dx):
        kw = KW if KW else kw
        n, c, h, w = dx.shape
        width = c * kh * kw
        src, out = rows.reshape(-1), dx.reshape(-1)
        for b in prange(n):
            base = u(b * c * h * w)
            for q in range(u(c * h * w)):
                out[base + q] = 0
            for y in range(oh):
                for ox in range(ow):
                    off = ox * sw - pw
                    lo, hi = _valid_range(kw, dw, off, w)
                    s = u(((b * oh + y) * ow + ox) * width)
                    for ch in range(c):
                        for i in range(kh):
                            hy = y * sh - ph + i * dh
                            if hy < 0 or hy >= h:
                                continue
                            r = s + u((ch * kh + i) * kw + lo)
                            d = base + u((ch * h + hy) * w + lo * dw + off)
                            if hi - lo == kw and dw == 1:  # the whole window, contiguous
                                for q in range(u(kw)):
                                    out[d + q] += src[r + q]
                            else:
                                for q in range(u(hi - lo)):
                                    out[d + q * u(dw)] += src[r + q]
    return row2im


@kernel
def rows_to_images(y, bias, out):
    """GEMM result y (N*P, M) (im2row's layout) -> out (N, M, P), adding bias[m]."""
    n, m, plane = out.shape
    has_bias = bias.shape[0] > 0
    src, dst = y.reshape(-1), out.reshape(-1)
    for t in prange(n * m):
        b, k = t // m, t % m
        add = bias[k] if has_bias else 0
        s, d = u(b * plane * m + k), u(t * plane)
        for p in range(u(plane)):
            dst[d + p] = src[s + p * u(m)] + add


@kernel
def cols_to_images(y, bias, out):
    """GEMM result y (M, N*P) -> out (N, M, P), adding bias[m] (an empty bias adds nothing)."""
    n, m, plane = out.shape
    has_bias = bias.shape[0] > 0
    dst = out.reshape(-1)
    for t in prange(n * m):
        b, k = t // m, t % m
        add = bias[k] if has_bias else 0
        src, s, d = y[k], u(b * plane), u(t * plane)
        for p in range(u(plane)):
            dst[d + p] = src[s + p] + add


@kernel
def images_to_cols(x, out):
    """x (N, M, P) -> out (M, N*P): the GEMM layout of a top diff."""
    n, m, plane = x.shape
    src = x.reshape(-1)
    for k in prange(m):
        dst = out[k]
        for b in range(n):
            s, d = u((b * m + k) * plane), u(b * plane)
            for p in range(u(plane)):
                dst[d + p] = src[s + p]


def add_channel_sums(x, out):
    """out[m] += sum over n, p of x (N, M, P), summed in float64 in a fixed order (bias grads):
    each image's run of P, then the images in order."""
    if x.shape[2] == 1:
        _add_column_sums(x.reshape(x.shape[0], -1), out)
    else:
        _add_channel_sums(x, out)


@kernel
def _add_channel_sums(x, out):
    n, m, plane = x.shape
    src = x.reshape(-1)
    for k in prange(m):
        total = 0.0
        for b in range(n):
            total += sum_run(src, u((b * m + k) * plane), plane)
        out[k] += total


@kernel
def _add_column_sums(x, out):
    """add_channel_sums for P = 1 (an InnerProduct's bias gradient), the same sums in the same
    order, run along the rows: one call per element of a (64, 500) gradient took 0.23 ms."""
    n, m = x.shape
    blocks = (m + 255) // 256
    for k in prange(blocks):
        lo, hi = k * 256, min(m, k * 256 + 256)
        total = np.zeros(hi - lo, np.float64)
        for b in range(n):
            for j in range(hi - lo):
                total[j] += x[b, lo + j]
        for j in range(hi - lo):
            out[lo + j] += total[j]


def add_bias(x, bias):
    """x (N, M, P) += bias[m], in place."""
    if x.shape[2] == 1:
        _add_row_bias(x.reshape(x.shape[0], -1), bias)
    else:
        _add_bias(x, bias)


@kernel
def _add_bias(x, bias):
    n, m, plane = x.shape
    dst = x.reshape(-1)
    for t in prange(n * m):
        add, o = bias[t % m], u(t * plane)
        for p in range(u(plane)):
            dst[o + p] += add


@kernel
def _add_row_bias(x, bias):
    """add_bias for P = 1, along the rows (one element a call took 0.1 ms over 64 x 500)."""
    n, m = x.shape
    for b in prange(n):
        for k in range(m):
            x[b, k] += bias[k]


@kernel
def channel_affine(x, sub, mul, add, y):
    """y = (x - sub[c]) * mul[c] + add[c] over x (N, C, P), one pass (BatchNorm with stored
    statistics, Scale); an empty sub or add is 0. Each operation in the arrays' type, as Caffe
    and PyTorch compute (a literal 0 for the empty terms would make numba use float64)."""
    n, c, plane = x.shape
    has_sub, has_add = sub.shape[0] > 0, add.shape[0] > 0
    src, dst = x.reshape(-1), y.reshape(-1)
    for t in prange(n * c):
        k = t % c
        m = mul[k]
        s = sub[k] if has_sub else m
        a = add[k] if has_add else m
        o = u(t * plane)
        for p in range(u(plane)):
            v = src[o + p]
            if has_sub:
                v = v - s
            v = v * m
            if has_add:
                v = v + a
            dst[o + p] = v


@kernel
def channel_affine_twice(x, sub, mul, scale, shift, relu, slope, y):
    """BatchNorm with stored statistics, then a Scale, then (with `relu`) a ReLU, over x
    (N, C, P) in one pass: the float operations of `channel_affine` twice and of `relu`, so
    the result is the three layers' own to the bit (inference fusion, netspec/fusion.py).
    An empty scale is no Scale step, an empty shift no shift."""
    n, c, plane = x.shape
    has_scale, has_shift = scale.shape[0] > 0, shift.shape[0] > 0
    src, dst = x.reshape(-1), y.reshape(-1)
    slope = y.dtype.type(slope)
    for t in prange(n * c):
        k = t % c
        s, m = sub[k], mul[k]
        g = scale[k] if has_scale else m
        b = shift[k] if has_shift else m
        o = u(t * plane)
        for p in range(u(plane)):
            v = (src[o + p] - s) * m
            if has_scale:
                v = v * g
                if has_shift:
                    v = v + b
            if relu:
                v = _relu_value(v, slope)
            dst[o + p] = v


@kernel
def channel_mean_var(x, mean, var):
    """Per-channel mean and biased variance of x (N, C, P): two passes, in float64, in a fixed
    order (BatchNorm's batch statistics)."""
    n, c, plane = x.shape
    count = n * plane
    for k in prange(c):
        total = 0.0
        for b in range(n):
            for p in range(plane):
                total += x[b, k, p]
        mu = total / count
        squares = 0.0
        for b in range(n):
            for p in range(plane):
                d = x[b, k, p] - mu
                squares += d * d
        mean[k] = mu
        var[k] = squares / count


@kernel
def batch_norm_grad(dy, y, inv_std, dx):
    """BatchNorm's input gradient with batch statistics, per channel of (N, C, P):
    dx = (dy - mean(dy) - y mean(dy y)) inv_std (dx may be dy)."""
    n, c, plane = dy.shape
    count = n * plane
    for k in prange(c):
        s1 = 0.0
        s2 = 0.0
        for b in range(n):
            for p in range(plane):
                s1 += dy[b, k, p]
                s2 += dy[b, k, p] * y[b, k, p]
        m1 = s1 / count
        m2 = s2 / count
        g = inv_std[k]
        for b in range(n):
            for p in range(plane):
                dx[b, k, p] = (dy[b, k, p] - m1 - y[b, k, p] * m2) * g


# -- pooling -------------------------------------------------------------------------------------
@serial
def _window(p, stride, pad, kernel, size):
    """Output p's window along one axis, clipped to the input: [start, end) (empty when a
    ceil-rounded window lies wholly past the input)."""
    start = p * stride - pad
    return max(start, 0), min(start + kernel, size)


def max_pool(x, kh, kw, sh, sw, ph, pw, y, mask):
    """Max of each window (clipped to the input); mask = the flat index h * W + w of the first
    maximum in scan order (Caffe's argmax)."""
    n, c, h, w = x.shape
    if kh == sh == 2 and kw == sw == 2 and ph == pw == 0 and y.shape[2:] == (h // 2, w // 2) \
            and h % 2 == w % 2 == 0:
        _max_pool_2x2(_pairs(x), h, w, n * c, y.reshape(-1), mask.reshape(-1))
    elif kh == kw == 3 and sh == sw == 2 and x.size >= 4:
        _max_pool_3x3_stride2(x, _pairs(x), _pairs(x, 1), ph, pw, y, mask)
    else:
        _max_pool_windows(x, kh, kw, sh, sw, ph, pw, y, mask)


def _pairs(x, start=0):
    """x's flat elements two by two from `start` (0 or 1) on, as complex numbers (real, then
    imaginary), for a pooling kernel whose windows step by two columns: LLVM vectorises those
    loads as whole vectors and shuffles; the same loads at stride 2 became gathers, and
    branches on each compare mispredicted (2x2 max over LeNet's 64 x 20 x 24 x 24: 0.79 ->
    0.18 ms on one thread)."""
    flat = np.ascontiguousarray(x).reshape(-1)[start:]
    flat = flat[:flat.size // 2 * 2]
    return flat.view(np.complex64 if x.dtype == np.float32 else np.complex128)


@serial
def _first_max(v, k, best, arg):
    """One more value of a window in scan order: (best, arg) unless v is larger (a select,
    not a branch)."""
    better = v > best
    return (v if better else best), (k if better else arg)


@serial
def _max_3x3_pairs(r0, r1, r2, p0, p1, p2, k0, w, count, top, where, first):
    """`count` 3x3 windows at stride 2 whose three rows start at pairs p0, p1, p2 of r0, r1,
    r2 (the first window at flat index k0 of its plane): first maxima into top and where."""
    for q in range(count):
        k = k0 + 2 * q
        a, b = r0[p0 + q], r0[p0 + q + u(1)]
        best, arg = _first_max(a.imag, k + 1, a.real, k)
        best, arg = _first_max(b.real, k + 2, best, arg)
        a, b = r1[p1 + q], r1[p1 + q + u(1)]
        best, arg = _first_max(a.real, k + w, best, arg)
        best, arg = _first_max(a.imag, k + w + 1, best, arg)
        best, arg = _first_max(b.real, k + w + 2, best, arg)
        a, b = r2[p2 + q], r2[p2 + q + u(1)]
        best, arg = _first_max(a.real, k + 2 * w, best, arg)
        best, arg = _first_max(a.imag, k + 2 * w + 1, best, arg)
        best, arg = _first_max(b.real, k + 2 * w + 2, best, arg)
        top[first + q] = best
        where[first + q] = arg


@kernel
def _max_pool_3x3_stride2(x, even, odd, ph, pw, y, mask):
    """max_pool of 3x3 windows at stride 2 (CaffeNet's, ResNet's and cifar10_quick's pools):
    a window row that starts at an even flat index is read as pairs of `even`, at an odd one
    of `odd`, vectorised along the output row; windows cut by an edge take the general loop."""
    n, c, h, w = x.shape
    oh, ow = y.shape[2], y.shape[3]
    src, top, where = x.reshape(-1), y.reshape(-1), mask.reshape(-1)
    lo = min(ow, (pw + 1) // 2)  # outputs [lo, hi): windows inside along the row, and the
    hi = max(lo, min(ow, (w - 4 + pw) // 2 + 1))  # pair after each window's end too
    for t in prange(n * c):
        plane = t * h * w
        for py in range(oh):
            hs = py * 2 - ph
            o = u((t * oh + py) * ow)
            inner = hs >= 0 and hs + 3 <= h
            if inner and hi > lo:
                k0 = hs * w + 2 * lo - pw  # the first inner window's start in its plane
                s0, s1, s2 = plane + k0, plane + k0 + w, plane + k0 + 2 * w
                p0, p1, p2 = u(s0 // 2), u(s1 // 2), u(s2 // 2)  # odd[i]: src[2i + 1, 2i + 2]
                count, first = u(hi - lo), o + u(lo)
                if s0 % 2 == 0 and s1 % 2 == 0:
                    _max_3x3_pairs(even, even, even, p0, p1, p2, k0, w, count, top, where, first)
                elif s0 % 2 == 0:
                    _max_3x3_pairs(even, odd, even, p0, p1, p2, k0, w, count, top, where, first)
                elif s1 % 2 == 0:
                    _max_3x3_pairs(odd, even, odd, p0, p1, p2, k0, w, count, top, where, first)
                else:
                    _max_3x3_pairs(odd, odd, odd, p0, p1, p2, k0, w, count, top, where, first)
            hs, he = _window(py, 2, ph, 3, h)
            for px in range(ow):
                if inner and lo <= px < hi:
                    continue
                ws, we = _window(px, 2, pw, 3, w)
                if hs >= he or ws >= we:  # a ceil-rounded window wholly past the input
                    top[o + u(px)] = -np.inf
                    where[o + u(px)] = -1
                    continue
                best, arg = _max_window(src, u(plane), w, hs, he, ws, we)
                top[o + u(px)] = best
                where[o + u(px)] = arg


@kernel
def _max_pool_windows(x, kh, kw, sh, sw, ph, pw, y, mask):
    """max_pool of any windows."""
    n, c, h, w = x.shape
    oh, ow = y.shape[2], y.shape[3]
    src, top, where = x.reshape(-1), y.reshape(-1), mask.reshape(-1)
    full3 = kh == kw == 3  # full 3x3 windows unrolled
    for t in prange(n * c):
        plane = u(t * h * w)
        for py in range(oh):
            hs, he = _window(py, sh, ph, kh, h)
            o = u((t * oh + py) * ow)
            for px in range(ow):
                ws, we = _window(px, sw, pw, kw, w)
                if hs >= he or ws >= we:  # a ceil-rounded window wholly past the input
                    top[o + u(px)] = -np.inf
                    where[o + u(px)] = -1
                    continue
                if full3 and he - hs == 3 and we - ws == 3:
                    best, arg = _max_3x3(src, plane, w, hs, ws)
                else:
                    best, arg = _max_window(src, plane, w, hs, he, ws, we)
                top[o + u(px)] = best
                where[o + u(px)] = arg


@serial
def _max_window(src, plane, w, hs, he, ws, we):
    """The first maximum in scan order of the window rows [hs, he) x columns [ws, we) of the
    plane at flat offset `plane`: (value, flat index in the plane)."""
    best, arg = src[plane + u(hs * w + ws)], hs * w + ws
    for hy in range(hs, he):
        row = plane + u(hy * w)
        for wx in range(ws, we):  # selects, not branches: no mispredictions
            best, arg = _first_max(src[row + u(wx)], hy * w + wx, best, arg)
    return best, arg


@serial
def _max_3x3(src, plane, w, hs, ws):
    """The first maximum of a full 3x3 window at (hs, ws), unrolled: (value, flat index)."""
    k = hs * w + ws
    best, arg = src[plane + u(k)], k
    for d in (1, 2, w, w + 1, w + 2, 2 * w, 2 * w + 1, 2 * w + 2):
        v = src[plane + u(k + d)]
        if v > best:
            best, arg = v, k + d
    return best, arg


@kernel
def _max_pool_2x2(pairs, h, w, planes, top, where):
    """max_pool's commonest case, 2x2 windows at stride 2 tiling the input: each window two
    pairs, compared in scan order (the same first maximum)."""
    oh, ow = h // 2, w // 2
    for t in prange(planes * oh):
        o, row = u(t * ow), u(t * w)  # output row t; its input rows 2t and 2t + 1 as pairs
        base = (t % oh) * 2 * w
        for px in range(u(ow)):
            a, b = pairs[row + px], pairs[row + u(ow) + px]
            k = base + 2 * px
            best, arg = _first_max(a.imag, k + 1, a.real, k)
            best, arg = _first_max(b.real, k + w, best, arg)
            best, arg = _first_max(b.imag, k + w + 1, best, arg)
            top[o + px] = best
            where[o + px] = arg


@kernel
def scatter_pool_grad(dy, mask, dx):
    """dx (N, C, H, W) = each dy added at the input position its mask names (MAX, STOCHASTIC)."""
    n, c, h, w = dx.shape
    plane = dy.shape[2] * dy.shape[3]
    out, grad, where = dx.reshape(-1), dy.reshape(-1), mask.reshape(-1)
    for t in prange(n * c):
        base, o = u(t * h * w), u(t * plane)
        for q in range(u(h * w)):
            out[base + q] = 0
        for q in range(u(plane)):
            k = where[o + q]
            if k >= 0:
                out[base + u(k)] += grad[o + q]


@serial
def _ave_window(p, stride, pad, kernel, size):
    """Caffe's AVE window: start, end clipped to the input, and the divisor (the window
    clipped to the padded input)."""
    start = p * stride - pad
    end = min(start + kernel, size + pad)
    extent = end - start
    return max(start, 0), min(end, size), extent


@serial
def _window_total(x, b, ch, hs, he, ws, we):
    """Sum of x[b, ch] over rows [hs, he) and columns [ws, we), in scan order."""
    total = x.dtype.type(0)
    for hy in range(hs, he):
        for wx in range(ws, we):
            total += x[b, ch, hy, wx]
    return total


@kernel
def ave_pool(x, kh, kw, sh, sw, ph, pw, y):
    n, c, h, w = x.shape
    oh, ow = y.shape[2], y.shape[3]
    src, top = x.reshape(-1), y.reshape(-1)
    for t in prange(n * c):
        plane = u(t * h * w)
        for py in range(oh):
            hs, he, ah = _ave_window(py, sh, ph, kh, h)
            o = u((t * oh + py) * ow)
            for px in range(ow):
                ws, we, aw = _ave_window(px, sw, pw, kw, w)
                total = x.dtype.type(0)
                for hy in range(hs, he):
                    row = plane + u(hy * w)
                    for wx in range(ws, we):
                        total += src[row + u(wx)]
                top[o + u(px)] = total / (ah * aw) if ah > 0 and aw > 0 else 0


@kernel
def ave_pool_grad(dy, kh, kw, sh, sw, ph, pw, dx):
    n, c, h, w = dx.shape
    oh, ow = dy.shape[2], dy.shape[3]
    grad, out = dy.reshape(-1), dx.reshape(-1)
    for t in prange(n * c):
        plane = u(t * h * w)
        for q in range(u(h * w)):
            out[plane + q] = 0
        for py in range(oh):
            hs, he, ah = _ave_window(py, sh, ph, kh, h)
            o = u((t * oh + py) * ow)
            for px in range(ow):
                ws, we, aw = _ave_window(px, sw, pw, kw, w)
                if ah <= 0 or aw <= 0:
                    continue
                share = grad[o + u(px)] / (ah * aw)
                for hy in range(hs, he):
                    row = plane + u(hy * w)
                    for wx in range(ws, we):
                        out[row + u(wx)] += share


@kernel
def stochastic_pool_train(x, kh, kw, sh, sw, uniform, y, mask):
    """TRAIN: in each window, the first position whose running sum reaches u * sum (u uniform
    in [0, 1), one per output); mask holds its flat index, y its value."""
    n, c, h, w = x.shape
    oh, ow = y.shape[2], y.shape[3]
    for t in prange(n * c):
        b = t // c
        ch = t % c
        for py in range(oh):
            hs, he = _window(py, sh, 0, kh, h)
            for px in range(ow):
                ws, we = _window(px, sw, 0, kw, w)
                total = _window_total(x, b, ch, hs, he, ws, we)
                threshold = uniform[b, ch, py, px] * total
                running = x.dtype.type(0)
                arg = -1
                for hy in range(hs, he):
                    for wx in range(ws, we):
                        running += x[b, ch, hy, wx]
                        if arg < 0 and running >= threshold:
                            arg = hy * w + wx
                if arg < 0 and hs < he and ws < we:  # a NaN sum: the window's first position
                    arg = hs * w + ws
                mask[b, ch, py, px] = arg
                y[b, ch, py, px] = x[b, ch, arg // w, arg % w] if arg >= 0 else 0


@kernel
def stochastic_pool_test(x, kh, kw, sh, sw, y):
    """TEST: each window's values weighted by themselves, sum(x^2) / sum(x) (0 if the sum is 0)."""
    n, c, h, w = x.shape
    oh, ow = y.shape[2], y.shape[3]
    for t in prange(n * c):
        b = t // c
        ch = t % c
        for py in range(oh):
            hs, he = _window(py, sh, 0, kh, h)
            for px in range(ow):
                ws, we = _window(px, sw, 0, kw, w)
                total = x.dtype.type(0)
                squares = x.dtype.type(0)
                for hy in range(hs, he):
                    for wx in range(ws, we):
                        v = x[b, ch, hy, wx]
                        total += v
                        squares += v * v
                y[b, ch, py, px] = squares / total if total > 0 else 0


@kernel
def stochastic_pool_test_grad(x, y, dy, kh, kw, sh, sw, dx):
    """Gradient of sum(x^2) / sum(x): (2 x - y) / sum(x) for each window with a positive sum."""
    n, c, h, w = x.shape
    oh, ow = y.shape[2], y.shape[3]
    for t in prange(n * c):
        b = t // c
        ch = t % c
        _zero_plane(dx, b, ch)
        for py in range(oh):
            hs, he = _window(py, sh, 0, kh, h)
            for px in range(ow):
                ws, we = _window(px, sw, 0, kw, w)
                total = _window_total(x, b, ch, hs, he, ws, we)
                if not total > 0:
                    continue
                g = dy[b, ch, py, px] / total
                out = y[b, ch, py, px]
                for hy in range(hs, he):
                    for wx in range(ws, we):
                        dx[b, ch, hy, wx] += g * (2 * x[b, ch, hy, wx] - out)


# -- element-wise --------------------------------------------------------------------------------
@serial
def _relu_value(v, slope):
    return v if v > 0 else v * slope


@kernel
def relu(x, slope, y):
    """y = x where x > 0, else slope * x (flat arrays; y may be x). The slope in y's type, as
    Caffe's Dtype negative_slope (a float64 product would also halve the vector width)."""
    slope = y.dtype.type(slope)
    for i in prange(x.size):
        y[i] = _relu_value(x[i], slope)


@kernel
def add_relu(a, b, slope, y):
    """y = relu(a + b) in one pass (flat arrays; y may be a or b): an Eltwise sum and the ReLU
    in place on it, the same float operations as the two layers' passes."""
    slope = y.dtype.type(slope)
    for i in prange(y.size):
        y[i] = _relu_value(a[i] + b[i], slope)


@kernel
def relu_grad(y, dy, slope, dx):
    """dx = dy where the output is positive (same sign as the input), else slope * dy."""
    slope = dx.dtype.type(slope)
    for i in prange(y.size):
        dx[i] = dy[i] if y[i] > 0 else dy[i] * slope


@kernel
def sigmoid(x, y):
    for i in prange(x.size):
        y[i] = 0.5 * (1.0 + math.tanh(0.5 * x[i]))


@kernel
def sigmoid_grad(y, dy, dx):
    for i in prange(y.size):
        dx[i] = dy[i] * y[i] * (1 - y[i])


@kernel
def tanh(x, y):
    for i in prange(x.size):
        y[i] = math.tanh(x[i])


@kernel
def tanh_grad(y, dy, dx):
    for i in prange(y.size):
        dx[i] = dy[i] * (1 - y[i] * y[i])


@kernel
def elu(x, alpha, y):
    for i in prange(x.size):
        v = x[i]
        y[i] = v if v > 0 else alpha * math.expm1(v)


@kernel
def elu_grad(x, y, dy, alpha, dx):
    """dx = dy where x > 0, else dy (y + alpha) (x is the saved input)."""
    for i in prange(x.size):
        dx[i] = dy[i] if x[i] > 0 else dy[i] * (y[i] + alpha)


@kernel
def softplus(x, y):
    """log(1 + exp(x)) without overflow: max(x, 0) + log1p(exp(-|x|))."""
    for i in prange(x.size):
        v = x[i]
        y[i] = max(v, 0) + math.log1p(math.exp(-abs(v)))


@kernel
def softplus_grad(y, dy, dx):
    """dx = dy sigmoid(x) = dy (1 - exp(-y))."""
    for i in prange(y.size):
        dx[i] = -dy[i] * math.expm1(-y[i])


@kernel
def swish(x, beta, s, y):
    """s = sigmoid(beta x) (kept for backward); y = x s."""
    for i in prange(x.size):
        v = x[i]
        sv = 0.5 * (1.0 + math.tanh(0.5 * beta * v))
        s[i] = sv
        y[i] = v * sv


@kernel
def swish_grad(y, s, dy, beta, dx):
    """dx = dy (beta y + s (1 - beta y))."""
    for i in prange(y.size):
        by = beta * y[i]
        dx[i] = dy[i] * (by + s[i] * (1 - by))


@kernel
def dropout(x, u, ratio, scale, y, mask):
    """Keep x where u >= ratio (u uniform in [0, 1)), scaled by 1 / (1 - ratio)."""
    for i in prange(x.size):
        keep = u[i] >= ratio
        mask[i] = keep
        y[i] = x[i] * scale if keep else 0


@kernel
def dropout_grad(dy, mask, scale, dx):
    for i in prange(dy.size):
        dx[i] = dy[i] * scale if mask[i] else 0


# -- softmax -------------------------------------------------------------------------------------
@serial
def _softmax_at(x, y, o, i):
    """y[o, :, i] = softmax of x[o, :, i]: shift by the max, exp, normalise."""
    c = x.shape[1]
    top = x[o, 0, i]
    for k in range(1, c):
        top = max(top, x[o, k, i])
    total = x.dtype.type(0)
    for k in range(c):
        e = math.exp(x[o, k, i] - top)
        y[o, k, i] = e
        total += e
    for k in range(c):
        y[o, k, i] /= total


@kernel
def softmax(x, y):
    """Softmax over axis 1 of x (outer, C, inner)."""
    outer, c, inner = x.shape
    for t in prange(outer * inner):
        _softmax_at(x, y, t // inner, t % inner)


@kernel
def softmax_labels(x, labels, ignore, has_ignore, y, picked, as_int, valid):
    """SoftmaxWithLoss's forward but the log: y = softmax over axis 1 of x (outer, C, inner),
    as `softmax`; for each position its label truncated to an int (0 where it does
    not count), whether it counts (not ignore_label), and the probability it picks. Returns the
    flat index of the first counted label outside [0, C) or not finite, else outer * inner.
    One kernel instead of a dozen numpy calls: LeNet's loss forward 0.20 -> 0.08 ms."""
    outer, c, inner = x.shape
    first_bad = outer * inner
    for t in prange(outer * inner):
        o = t // inner
        i = t % inner
        _softmax_at(x, y, o, i)
        label = labels[o, i]
        finite = math.isfinite(label)
        k = int(label) if finite else -1
        counts = not has_ignore or k != ignore
        if counts and (k < 0 or k >= c or not finite):
            first_bad = min(first_bad, t)
            k = 0
        if not counts:
            k = 0
        as_int[o, i] = k
        valid[o, i] = counts
        picked[o, i] = y[o, k, i]
    return first_bad


# -- LRN -----------------------------------------------------------------------------------------
@kernel
def lrn_across(x, size, alpha_over_n, k, beta, scale, y):
    """ACROSS_CHANNELS on x (N, C, P): scale = k + alpha/n * (sum of x^2 over the `size`
    channels centred on each channel); y = x * scale^-beta."""
    n, c, plane = x.shape
    half = (size - 1) // 2
    src, sc, dst, length = x.reshape(-1), scale.reshape(-1), y.reshape(-1), u(plane)
    for t in prange(n * c):  # one output channel of one image
        b, ch = t // c, t % c
        o = u(t * plane)
        for p in range(length):
            sc[o + p] = 0
        for q in range(max(ch - half, 0), min(ch + half + 1, c)):
            i = u((b * c + q) * plane)
            for p in range(length):
                sc[o + p] += src[i + p] * src[i + p]
        if beta == 0.75:  # Caffe's default: s^-0.75 = 1 / (r sqrt(r)), r = sqrt(s), in float64
            for p in range(length):  # (within an ulp of pow, and vectorised: 3x faster)
                s = k + alpha_over_n * sc[o + p]
                sc[o + p] = s
                r = np.sqrt(np.float64(s))
                dst[o + p] = src[o + p] * (1.0 / (r * np.sqrt(r)))
        else:
            for p in range(length):
                s = k + alpha_over_n * sc[o + p]
                sc[o + p] = s
                dst[o + p] = src[o + p] * s ** -beta


@kernel
def lrn_across_grad(x, dy, scale, size, alpha_over_n, beta, dx):
    """dx_j = dy_j s_j^-beta - 2 beta alpha/n x_j sum_{i near j} dy_i x_i s_i^(-beta-1)."""
    n, c, plane = x.shape
    half = (size - 1) // 2
    for t in prange(n):
        inner = np.empty((c, plane), dtype=x.dtype)
        for ch in range(c):
            for p in range(plane):
                inner[ch, p] = dy[t, ch, p] * x[t, ch, p] * scale[t, ch, p] ** (-beta - 1)
        acc = np.empty(plane, dtype=x.dtype)
        for ch in range(c):  # dx may be dy (in place): each channel reads its dy before writing
            acc[:] = 0
            for q in range(max(ch - half, 0), min(ch + half + 1, c)):
                for p in range(plane):
                    acc[p] += inner[q, p]
            for p in range(plane):
                dx[t, ch, p] = (dy[t, ch, p] * scale[t, ch, p] ** -beta
                                - 2 * beta * alpha_over_n * x[t, ch, p] * acc[p])


# -- solver updates ------------------------------------------------------------------------------
@kernel
def add_decay(w, decay, l1, g):
    """Weight decay into the gradient, one pass: g += decay w (L2) or decay sign(w) (L1)."""
    one = w.dtype.type(1)
    for i in prange(g.size):
        v = w[i]
        if l1:  # sign(v): 0 and NaN stay as they are
            v = one if v > 0 else (-one if v < 0 else v)
        g[i] += decay * v


@kernel
def sgd_step(w, g, v, decay, l1, rate, momentum):
    """SGD's whole update of one parameter in one pass over flat arrays: weight decay into g (as
    add_decay), v = momentum v + rate g, g = v (the update, as Caffe leaves it) and w -= g."""
    one = w.dtype.type(1)
    for i in prange(g.size):
        d = w[i]
        if l1:
            d = one if d > 0 else (-one if d < 0 else d)
        grad = g[i] + decay * d
        v[i] = momentum * v[i] + rate * grad
        g[i] = v[i]
        w[i] -= g[i]


@kernel
def nesterov_step(g, v, rate, momentum):
    """Nesterov: v' = momentum v + rate g; g = (1 + momentum) v' - momentum v."""
    for i in prange(g.size):
        previous = v[i]
        step = momentum * previous + rate * g[i]
        v[i] = step
        g[i] = (1 + momentum) * step - momentum * previous


@kernel
def adagrad_step(g, h, rate, delta):
    """AdaGrad: h += g^2; g = rate g / (sqrt(h) + delta)."""
    for i in prange(g.size):
        h[i] += g[i] * g[i]
        g[i] = rate * g[i] / (math.sqrt(h[i]) + delta)


@kernel
def rmsprop_step(g, h, rate, decay, delta):
    """RMSProp: h = decay h + (1 - decay) g^2; g = rate g / (sqrt(h) + delta)."""
    for i in prange(g.size):
        h[i] = decay * h[i] + (1 - decay) * g[i] * g[i]
        g[i] = rate * g[i] / (math.sqrt(h[i]) + delta)


@kernel
def adadelta_step(g, h, h2, rate, momentum, delta):
    """AdaDelta: h = m h + (1 - m) g^2; u = g sqrt((h2 + delta) / (h + delta));
    h2 = m h2 + (1 - m) u^2; g = rate u."""
    for i in prange(g.size):
        h[i] = momentum * h[i] + (1 - momentum) * g[i] * g[i]
        u = g[i] * math.sqrt((h2[i] + delta) / (h[i] + delta))
        h2[i] = momentum * h2[i] + (1 - momentum) * u * u
        g[i] = rate * u


@kernel
def adam_step(g, m, v, rate, beta1, beta2, correction, eps):
    """Adam (Caffe's eps placement): m = b1 m + (1 - b1) g; v = b2 v + (1 - b2) g^2;
    g = rate correction m / (sqrt(v) + eps)."""
    for i in prange(g.size):
        m[i] = beta1 * m[i] + (1 - beta1) * g[i]
        v[i] = beta2 * v[i] + (1 - beta2) * g[i] * g[i]
        g[i] = rate * correction * m[i] / (math.sqrt(v[i]) + eps)


# -- the vision layers' device surface (layers/vision.py): a plan per layer and input shape,
# made at reshape, then passes that take the arrays; the strategy lives in conv.py ----------
from . import conv as _conv  # noqa: E402 - after the kernels it runs

_this = sys.modules[__name__]


def conv_plan(p, x_shape, out_hw, phase: int, in_place: bool, dtype):
    """How this machine runs a Convolution of inputs `x_shape` (p: its ConvolutionView)."""
    return _conv.ConvPlan(_this, p, x_shape, out_hw, phase, in_place, dtype)


def deconv_plan(p, x_shape, out_hw, phase: int, in_place: bool, dtype):
    return _conv.DeconvPlan(_this, p, x_shape, out_hw, phase, in_place, dtype)


def conv_forward(plan, x, w, b, y, relu_slope=None, inference: bool = False):
    """y = conv(x, w) + b (b None: no bias), then leaky ReLU when relu_slope is not None;
    `inference`: nothing runs backward through it (Winograd may take the pass)."""
    plan.bind(w, b)
    plan.relu_slope = relu_slope
    try:
        plan.forward(_this, x, y, inference)
    finally:
        plan.relu_slope = None


def conv_backward(plan, x, w, dy, dx, dw, db):
    """dw += dL/dw, db += dL/db (None: no bias), dx = dL/dx (None: not wanted)."""
    plan.bind(w, None, dw, db)
    plan.backward(_this, x, dy, dx)


deconv_forward, deconv_backward = conv_forward, conv_backward


def im2col_forward(x, geometry, y):
    """y (N, C kh kw, oh, ow) = the patches of x (N, C, H, W); geometry as im2col's."""
    n = x.shape[0]
    rows, plane = y.shape[1], y.shape[2] * y.shape[3]
    col = workspace("im2col", rows * n * plane, x.dtype).reshape(rows, n * plane)
    im2col(x, *geometry, col)
    cols_to_images(col, absent(x.dtype), y.reshape(n, rows, plane))


def im2col_backward(dy, geometry, dx):
    n = dy.shape[0]
    rows, plane = dy.shape[1], dy.shape[2] * dy.shape[3]
    col = workspace("im2col", rows * n * plane, dy.dtype).reshape(rows, n * plane)
    images_to_cols(dy.reshape(n, rows, plane), col)
    col2im(col, *geometry, dx)


def add_rows(table, rows, values):
    """table[rows[i]] += values[i], repeated rows adding up (Embed's weight gradient)."""
    np.add.at(table, rows, values)


def first_true(flags) -> int:
    """The index of the first True of a 1-d bool array, else its size."""
    return int(np.argmax(flags)) if flags.any() else flags.size


def all_finite(arrays) -> bool:
    """No NaN or inf in any of `arrays`."""
    return all(np.isfinite(a).all() for a in arrays)


def sum_squares(x) -> float:
    """sum(x^2) in float64 (gradient clipping's norm)."""
    return float(np.square(x, dtype=np.float64).sum())


def matmul(a, b, out):
    """out = a @ b (BLAS)."""
    np.matmul(a, b, out=out)
