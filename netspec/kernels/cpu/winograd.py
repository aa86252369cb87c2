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
from numba import prange, uint64 as u

from .launch import kernel, serial



@serial
def _filter_row(a, b, e, half, out, i, o):
    """Row i of (G w) G^T from row i of G w (a, b, e)."""
    out[4 * i + 0, o] = a
    out[4 * i + 1, o] = (a + b + e) * half
    out[4 * i + 2, o] = (a - b + e) * half
    out[4 * i + 3, o] = e


@kernel
def filters(w, out):
    """w (M, C/G, 3, 3) -> out (16, M C/G): G w G^T per filter and channel."""
    m, cg = w.shape[0], w.shape[1]
    half = w.dtype.type(0.5)
    src = w.reshape(m, cg * 9)
    for f in prange(m):
        for c in range(cg):
            o = 9 * c
            w0, w1, w2 = src[f, o], src[f, o + 1], src[f, o + 2]
            w3, w4, w5 = src[f, o + 3], src[f, o + 4], src[f, o + 5]
            w6, w7, w8 = src[f, o + 6], src[f, o + 7], src[f, o + 8]
            _filter_row(w0, w1, w2, half, out, 0, f * cg + c)  # rows of G w, then G^T
            _filter_row((w0 + w3 + w6) * half, (w1 + w4 + w7) * half, (w2 + w5 + w8) * half,
                        half, out, 1, f * cg + c)
            _filter_row((w0 - w3 + w6) * half, (w1 - w4 + w7) * half, (w2 - w5 + w8) * half,
                        half, out, 2, f * cg + c)
            _filter_row(w6, w7, w8, half, out, 3, f * cg + c)


@serial
def _padded_plane(plane, ph, pw, hp, wp):
    """plane (H, W) at (ph, pw) in zeros of (hp, wp): the input the tiles read."""
    pad = np.zeros((hp, wp), plane.dtype)
    for i in range(plane.shape[0]):
        for j in range(plane.shape[1]):
            pad[i + ph, j + pw] = plane[i, j]
    return pad


@kernel
def inputs(x, ph, pw, th, tw, v):
    """x (N, C, H, W) -> v (16, C N th tw) = B^T d B for each tile's 4x4 patch d of the input
    padded by (ph, pw) (and by zeros past its end to a whole number of tiles)."""
    n, c, h, w = x.shape
    total = n * th * tw
    hp, wp = 2 * th + 2, 2 * tw + 2
    count = th * tw
    for t in prange(n * c):
        b, ch = t // c, t % c
        pad = _padded_plane(x[b, ch], ph, pw, hp, wp)
        rows = np.empty((4, wp), x.dtype)
        for ty in range(th):
            y0 = 2 * ty
            for j in range(wp):  # B^T d for the whole row of tiles: combine rows
                r0, r1, r2, r3 = pad[y0, j], pad[y0 + 1, j], pad[y0 + 2, j], pad[y0 + 3, j]
                rows[0, j] = r0 - r2
                rows[1, j] = r1 + r2
                rows[2, j] = r2 - r1
                rows[3, j] = r1 - r3
            o = ch * total + b * count + ty * tw
            for i in range(4):  # (B^T d) B: combine columns, tile by tile
                for tx in range(tw):
                    a0, a1 = rows[i, 2 * tx], rows[i, 2 * tx + 1]
                    a2, a3 = rows[i, 2 * tx + 2], rows[i, 2 * tx + 3]
                    v[4 * i + 0, o + tx] = a0 - a2
                    v[4 * i + 1, o + tx] = a1 + a2
                    v[4 * i + 2, o + tx] = a2 - a1
                    v[4 * i + 3, o + tx] = a1 - a3


@kernel
def outputs(m, bias, th, tw, y):
    """m (16, M N th tw) -> y (N, M, OH, OW) = A^T m A for each tile (+ bias[M] when given),
    the last tile row and column cut to the output."""
    n, k, oh, ow = y.shape
    total = n * th * tw
    has_bias = bias.shape[0] > 0
    count = th * tw
    for t in prange(n * k):
        b, f = t // k, t % k
        add = bias[f] if has_bias else y.dtype.type(0)
        s = np.empty((2, 4), y.dtype)
        for ty in range(th):
            for tx in range(tw):
                o = u(f * total + b * count + ty * tw + tx)
                for j in range(4):  # A^T m: combine rows
                    m0, m1 = m[j, o], m[4 + j, o]
                    m2, m3 = m[8 + j, o], m[12 + j, o]
                    s[0, j] = m0 + m1 + m2
                    s[1, j] = m1 - m2 - m3
                for i in range(2):  # (A^T m) A: combine columns
                    yy = 2 * ty + i
                    if yy < oh:
                        a0, a1, a2, a3 = s[i, 0], s[i, 1], s[i, 2], s[i, 3]
                        y[b, f, yy, 2 * tx] = a0 + a1 + a2 + add
                        if 2 * tx + 1 < ow:
                            y[b, f, yy, 2 * tx + 1] = a1 - a2 - a3 + add


# -- F(4x4, 3x3): 6x6 patches, 36 GEMMs, 4x fewer multiplies; transforms with 2s, 4s and 5s ----
@serial
def _g_times(a, b, e):
    """G (a, b, e)^T: the six values F(4x4, 3x3)'s G makes of three taps."""
    quarter, sixth, twelfth, s24 = a * 0 + 1 / 4, a * 0 + 1 / 6, a * 0 + 1 / 12, a * 0 + 1 / 24
    return (a * quarter, -(a + b + e) * sixth, -(a - b + e) * sixth,
            a * s24 + b * twelfth + e * sixth, a * s24 - b * twelfth + e * sixth, e)


@serial
def _store_row4(out, i, o, a, b, e):
    """Row i of (G w) G^T from row i of G w (a, b, e)."""
    r = _g_times(a, b, e)
    out[6 * i, o], out[6 * i + 1, o], out[6 * i + 2, o] = r[0], r[1], r[2]
    out[6 * i + 3, o], out[6 * i + 4, o], out[6 * i + 5, o] = r[3], r[4], r[5]


@kernel
def filters4(w, out):
    """w (M, C/G, 3, 3) -> out (36, M C/G): G w G^T per filter and channel."""
    m, cg = w.shape[0], w.shape[1]
    src = w.reshape(m, cg * 9)
    for f in prange(m):
        for c in range(cg):
            o = 9 * c
            # the three columns of G w (six rows each), then each row by G^T
            c0 = _g_times(src[f, o], src[f, o + 3], src[f, o + 6])
            c1 = _g_times(src[f, o + 1], src[f, o + 4], src[f, o + 7])
            c2 = _g_times(src[f, o + 2], src[f, o + 5], src[f, o + 8])
            _store_row4(out, 0, f * cg + c, c0[0], c1[0], c2[0])
            _store_row4(out, 1, f * cg + c, c0[1], c1[1], c2[1])
            _store_row4(out, 2, f * cg + c, c0[2], c1[2], c2[2])
            _store_row4(out, 3, f * cg + c, c0[3], c1[3], c2[3])
            _store_row4(out, 4, f * cg + c, c0[4], c1[4], c2[4])
            _store_row4(out, 5, f * cg + c, c0[5], c1[5], c2[5])


@kernel
def inputs4(x, ph, pw, th, tw, v):
    """x (N, C, H, W) -> v (36, C N th tw) = B^T d B for each tile's 6x6 patch d (tiles 4
    apart) of the input padded by (ph, pw) and by zeros to a whole number of tiles."""
    n, c, h, w = x.shape
    total = n * th * tw
    hp, wp = 4 * th + 2, 4 * tw + 2
    count = th * tw
    t = x.dtype.type
    two, four, five = t(2), t(4), t(5)
    for it in prange(n * c):
        b, ch = it // c, it % c
        pad = _padded_plane(x[b, ch], ph, pw, hp, wp)
        rows = np.empty((6, wp), x.dtype)
        for ty in range(th):
            y0 = 4 * ty
            for j in range(wp):  # B^T d for the whole row of tiles: combine rows
                d0, d1, d2 = pad[y0, j], pad[y0 + 1, j], pad[y0 + 2, j]
                d3, d4, d5 = pad[y0 + 3, j], pad[y0 + 4, j], pad[y0 + 5, j]
                rows[0, j] = four * d0 - five * d2 + d4
                rows[1, j] = d3 + d4 - four * (d1 + d2)
                rows[2, j] = four * (d1 - d2) + d4 - d3
                rows[3, j] = two * (d3 - d1) + d4 - d2
                rows[4, j] = two * (d1 - d3) + d4 - d2
                rows[5, j] = four * d1 - five * d3 + d5
            o = ch * total + b * count + ty * tw
            for i in range(6):  # (B^T d) B: combine columns, tile by tile
                for tx in range(tw):
                    x0 = 4 * tx
                    d0, d1, d2 = rows[i, x0], rows[i, x0 + 1], rows[i, x0 + 2]
                    d3, d4, d5 = rows[i, x0 + 3], rows[i, x0 + 4], rows[i, x0 + 5]
                    v[6 * i + 0, o + tx] = four * d0 - five * d2 + d4
                    v[6 * i + 1, o + tx] = d3 + d4 - four * (d1 + d2)
                    v[6 * i + 2, o + tx] = four * (d1 - d2) + d4 - d3
                    v[6 * i + 3, o + tx] = two * (d3 - d1) + d4 - d2
                    v[6 * i + 4, o + tx] = two * (d1 - d3) + d4 - d2
                    v[6 * i + 5, o + tx] = four * d1 - five * d3 + d5


@kernel
def outputs4(m, bias, th, tw, y):
    """m (36, M N th tw) -> y (N, M, OH, OW) = A^T m A for each tile (+ bias[M] when given),
    the last tile row and column cut to the output."""
    n, k, oh, ow = y.shape
    total = n * th * tw
    has_bias = bias.shape[0] > 0
    count = th * tw
    t = y.dtype.type
    two, four, eight = t(2), t(4), t(8)
    for it in prange(n * k):
        b, f = it // k, it % k
        add = bias[f] if has_bias else t(0)
        s = np.empty((4, 6), y.dtype)
        for ty in range(th):
            for tx in range(tw):
                o = u(f * total + b * count + ty * tw + tx)
                for j in range(6):  # A^T m: combine rows
                    m0, m1, m2 = m[j, o], m[6 + j, o], m[12 + j, o]
                    m3, m4, m5 = m[18 + j, o], m[24 + j, o], m[30 + j, o]
                    s[0, j] = m0 + m1 + m2 + m3 + m4
                    s[1, j] = m1 - m2 + two * (m3 - m4)
                    s[2, j] = m1 + m2 + four * (m3 + m4)
                    s[3, j] = m1 - m2 + eight * (m3 - m4) + m5
                for i in range(min(4, oh - 4 * ty)):  # (A^T m) A: combine columns
                    yy, x0 = 4 * ty + i, 4 * tx
                    a0, a1, a2 = s[i, 0], s[i, 1], s[i, 2]
                    a3, a4, a5 = s[i, 3], s[i, 4], s[i, 5]
                    if x0 + 3 < ow:
                        y[b, f, yy, x0] = a0 + a1 + a2 + a3 + a4 + add
                        y[b, f, yy, x0 + 1] = a1 - a2 + two * (a3 - a4) + add
                        y[b, f, yy, x0 + 2] = a1 + a2 + four * (a3 + a4) + add
                        y[b, f, yy, x0 + 3] = a1 - a2 + eight * (a3 - a4) + a5 + add
                    else:  # the last, cut tile column
                        y[b, f, yy, x0] = a0 + a1 + a2 + a3 + a4 + add
                        if x0 + 1 < ow:
                            y[b, f, yy, x0 + 1] = a1 - a2 + two * (a3 - a4) + add
                        if x0 + 2 < ow:
                            y[b, f, yy, x0 + 2] = a1 + a2 + four * (a3 + a4) + add


def kernels_for_tile(size: int):
    """(filters, inputs, outputs) of F(size x size, 3x3): 2 or 4."""
    return {2: (filters, inputs, outputs), 4: (filters4, inputs4, outputs4)}[size]
