"""Winograd convolution F(2x2, 3x3): a 3x3 stride-1 convolution in 16 GEMMs of 2.25x fewer
multiplies than im2col's one (Lavin & Gray, "Fast Algorithms for Convolutional Neural
Networks", 2016).

Why: ResNet-50's and CaffeNet's 3x3 layers ran at the GEMM's speed and were half of their
inference time; OpenCV's importer runs them by Winograd. Each 2x2 block of outputs ("tile")
comes from a 4x4 patch d of the padded input:  Y = A^T [ (G g G^T) . (B^T d B) ] A, the
product elementwise over the 16 positions, summed over the input channels; that sum is, for
each of the 16 positions, a GEMM of the transformed filters (M, C) with the transformed
patches (C, tiles). The transforms only add, subtract and halve, so the error stays that of
the direct sum's order (tested against im2col in float64 and float32).

Layouts: filters u (16, G, M/G, C/G); patches v (16, C, tiles) and products m (16, M, tiles),
tiles ordered image, tile row, tile column. Each kernel writes what one iteration owns, sums in
a fixed order: results do not depend on the thread count."""
from __future__ import annotations

import numpy as np
from numba import njit, prange, uint64 as u

_jit = njit(parallel=True, cache=True, nogil=True)
_serial = njit(cache=True, nogil=True)


@_serial
def _filter_row(a, b, e, half, out, i, g, k, c):
    """Row i of (G w) G^T from row i of G w (a, b, e)."""
    out[4 * i + 0, g, k, c] = a
    out[4 * i + 1, g, k, c] = (a + b + e) * half
    out[4 * i + 2, g, k, c] = (a - b + e) * half
    out[4 * i + 3, g, k, c] = e


@_jit
def filters(w, groups, out):
    """w (M, C/G, 3, 3) -> out (16, G, M/G, C/G) = G w G^T per filter and channel."""
    m, cg = w.shape[0], w.shape[1]
    mg = m // groups
    half = w.dtype.type(0.5)
    src = w.reshape(m, cg * 9)
    for f in prange(m):
        g, k = f // mg, f % mg
        for c in range(cg):
            o = 9 * c
            w0, w1, w2 = src[f, o], src[f, o + 1], src[f, o + 2]
            w3, w4, w5 = src[f, o + 3], src[f, o + 4], src[f, o + 5]
            w6, w7, w8 = src[f, o + 6], src[f, o + 7], src[f, o + 8]
            _filter_row(w0, w1, w2, half, out, 0, g, k, c)  # rows of G w, then G^T
            _filter_row((w0 + w3 + w6) * half, (w1 + w4 + w7) * half, (w2 + w5 + w8) * half,
                        half, out, 1, g, k, c)
            _filter_row((w0 - w3 + w6) * half, (w1 - w4 + w7) * half, (w2 - w5 + w8) * half,
                        half, out, 2, g, k, c)
            _filter_row(w6, w7, w8, half, out, 3, g, k, c)


@_jit
def inputs(x, ph, pw, th, tw, v):
    """x (N, C, H, W) -> v (16, C, N th tw) = B^T d B for each tile's 4x4 patch d of the input
    padded by (ph, pw) (and by zeros past its end to a whole number of tiles)."""
    n, c, h, w = x.shape
    hp, wp = 2 * th + 2, 2 * tw + 2
    count = th * tw
    for t in prange(n * c):
        b, ch = t // c, t % c
        pad = np.zeros((hp, wp), x.dtype)
        for i in range(h):
            for j in range(w):
                pad[i + ph, j + pw] = x[b, ch, i, j]
        rows = np.empty((4, wp), x.dtype)
        for ty in range(th):
            y0 = 2 * ty
            for j in range(wp):  # B^T d for the whole row of tiles: combine rows
                r0, r1, r2, r3 = pad[y0, j], pad[y0 + 1, j], pad[y0 + 2, j], pad[y0 + 3, j]
                rows[0, j] = r0 - r2
                rows[1, j] = r1 + r2
                rows[2, j] = r2 - r1
                rows[3, j] = r1 - r3
            o = b * count + ty * tw
            for i in range(4):  # (B^T d) B: combine columns, tile by tile
                for tx in range(tw):
                    a0, a1 = rows[i, 2 * tx], rows[i, 2 * tx + 1]
                    a2, a3 = rows[i, 2 * tx + 2], rows[i, 2 * tx + 3]
                    v[4 * i + 0, ch, o + tx] = a0 - a2
                    v[4 * i + 1, ch, o + tx] = a1 + a2
                    v[4 * i + 2, ch, o + tx] = a2 - a1
                    v[4 * i + 3, ch, o + tx] = a1 - a3


@_jit
def outputs(m, bias, th, tw, y):
    """m (16, M, N th tw) -> y (N, M, OH, OW) = A^T m A for each tile (+ bias[M] when given),
    the last tile row and column cut to the output."""
    n, k, oh, ow = y.shape
    has_bias = bias.shape[0] > 0
    count = th * tw
    for t in prange(n * k):
        b, f = t // k, t % k
        add = bias[f] if has_bias else y.dtype.type(0)
        s = np.empty((2, 4), y.dtype)
        for ty in range(th):
            for tx in range(tw):
                o = u(b * count + ty * tw + tx)
                for j in range(4):  # A^T m: combine rows
                    m0, m1 = m[j, f, o], m[4 + j, f, o]
                    m2, m3 = m[8 + j, f, o], m[12 + j, f, o]
                    s[0, j] = m0 + m1 + m2
                    s[1, j] = m1 - m2 - m3
                for i in range(2):  # (A^T m) A: combine columns
                    yy = 2 * ty + i
                    if yy < oh:
                        a0, a1, a2, a3 = s[i, 0], s[i, 1], s[i, 2], s[i, 3]
                        y[b, f, yy, 2 * tx] = a0 + a1 + a2 + add
                        if 2 * tx + 1 < ow:
                            y[b, f, yy, 2 * tx + 1] = a1 - a2 - a3 + add
