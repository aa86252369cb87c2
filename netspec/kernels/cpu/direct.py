"""Direct convolution kernels: no im2col, no GEMM.

Why: im2col writes kh*kw copies of the input (25x for a 5x5 kernel) that the GEMM then packs
again; for the small-channel layers of LeNet and cifar10_quick those memory moves cost as much
as the arithmetic.

Windows (the register tiles of simd.py, as BLAS micro-kernels are built; the fastest here):
- conv_windows: stride 1, output positions as the vectors. A tile of 6 filters x 64 positions
  holds 24 vector sums in registers for the whole loop over taps; each tap broadcasts one
  weight per filter against the inputs under it, loaded from the (padded) planes, one masked
  load per output row a vector spans. Also the input gradient of a stride-1 convolution whose
  padding makes it a "same" correlation (dY padded, filters flipped): cifar10_quick's.
- add_weight_grad_windows: in the rows layout a kernel row's window, KW x C/G inputs, is one
  run; it is the vectors, 5 filters' dY broadcast, position by position.
- input_grad_windows: each output position adds to its kernel rows' windows (rows layout)
  the filters' sums over its dY, tiles of 2 rows x 7 vectors added where they lie: for "valid"
  or strided convolutions (LeNet's conv2), whose dY padded to a full correlation would
  multiply zeros.

Dot-product tiles (the passes the windows do not fit: strided forward passes, input gradients
over few channels, weight gradients of few channels): each output tile of 4 filters x 4
positions is 16 scalar sums over one contiguous run of the input, which numba compiles to 16
vector accumulators reduced at the end (140-150 GFLOP/s on an AVX-512 Emerald Rapids core).
Two layouts make the runs contiguous:
- rows (N, G, Hp, Wp * Cg): padded images, channels last within a group. Each conv_rows task
  stacks the KH input rows of its output row column by column ((Wp, KH, Cg), in cache), so
  that a whole window is one run of KW * KH * Cg.
- planes (N, C, Hp * Wp + KW): padded images, each plane flat. The weight gradient of tap
  (i, j) is a dot product of dY (rows padded to Wp with zeros) with the plane shifted by
  i * Wp + j: one run of OH * Wp per image; its tile is 4 filters x 5 taps, whose vector
  partial sums stay vectors across images (simd.tile_sums).
With one to a few input channels and too few filters for a windows tile, the planes kernel
runs its vectors along the output rows (conv_planes).

Each output element is summed in a fixed order: results are the same on any number of
threads. Tiles at the edges overlap the previous tile and store only what it did not (or, for
the tiles that add on, a narrower tile takes the rest)."""
from __future__ import annotations

import math

import numpy as np
from numba import get_num_threads, prange, uint64 as u

from .gemm import dot4x4
from .launch import kernel, vectorised
from .simd import (broadcast_tile_add, copy_padded, four_vectors, tile_sums, window_tile,
                   window_tile_add)
from .sums import sum_run

#: tiles of 4 filters one weight-gradient task sums (its input's copies read from memory once)
BLOCKS_PER_TASK = 4


@vectorised
def to_rows(x, groups, ph, pw, out):
    """x (N, C, H, W) -> out (N, G, H + 2 ph, (W + 2 pw) * C/G): padded, channels last."""
    n, c, h, w = x.shape
    cg = c // groups
    src, dst = x.reshape(-1), out.reshape(-1)
    width = out.shape[3]
    size = u(out.shape[2] * width)
    for t in prange(n * groups):
        base = u(t) * size
        for q in range(size):
            dst[base + q] = 0
        for ch in range(cg):
            plane = u((t * cg + ch) * h * w)  # image b, channel g cg + ch: t = b G + g
            for i in range(h):
                row, o = plane + u(i * w), base + u((i + ph) * width + pw * cg + ch)
                for j in range(u(w)):
                    dst[o + j * u(cg)] = src[row + j]


@vectorised
def conv_rows(xr, w, bias, channels, kh, sh, sw, zero, y):
    """y (N, M, OH, OW) = bias + correlation of xr (N, G, Hp, Wp * channels), rows layout,
    with w (G, M/G, KW * KH * channels) (a window's columns, each its KH rows' channels).
    Needs M/G >= 4 and OW >= 4."""
    n, groups, width = xr.shape[0], xr.shape[1], xr.shape[3]
    mg, run = w.shape[1], w.shape[2]
    oh, ow = y.shape[2], y.shape[3]
    depth = kh * channels  # one stacked column
    step = sw * depth
    has_bias = bias.shape[0] > 0
    for t in prange(n * groups * oh):
        b, g, r = t // (groups * oh), (t // oh) % groups, t % oh
        row = np.empty(width * kh, y.dtype)  # the KH input rows, stacked column by column
        for i in range(kh):
            src = xr[b, g, r * sh + i]
            for j in range(width // channels):
                o, q = u(j * depth + i * channels), u(j * channels)
                for c in range(u(channels)):
                    row[o + c] = src[q + c]
        for mb in range(0, mg, 4):
            m0 = min(mb, mg - 4)
            w0, w1, w2, w3 = w[g, m0], w[g, m0 + 1], w[g, m0 + 2], w[g, m0 + 3]
            for pb in range(0, ow, 4):
                p0 = min(pb, ow - 4)
                o = p0 * step
                a0, a1 = row[o:o + run], row[o + step:o + step + run]
                a2, a3 = row[o + 2 * step:o + 2 * step + run], row[o + 3 * step:o + 3 * step + run]
                sums = dot4x4(w0, w1, w2, w3, a0, a1, a2, a3, run, zero)
                for dm in range(4):
                    if m0 + dm < mb:
                        continue  # the previous tile stored this filter
                    m = g * mg + m0 + dm
                    add = bias[m] if has_bias else zero
                    out = y[b, m, r]
                    for dp in range(4):
                        if p0 + dp >= pb:
                            out[p0 + dp] = sums[dm][dp] + add


@vectorised
def to_planes(x, ph, pw, out):
    """x (N, C, H, W) -> out (N, C, (H + 2 ph) * (W + 2 pw) + tail): padded planes, flat,
    zeros after (the weight gradient's shifted runs read up to KW - 1 past the last row)."""
    n, c, h, w = x.shape
    wp = w + 2 * pw
    src, dst = x.reshape(-1), out.reshape(-1)
    size = u(out.shape[2])
    for t in prange(n * c):
        base = u(t) * size
        for q in range(size):
            dst[base + q] = 0
        for i in range(h):
            row, o = u((t * h + i) * w), base + u((i + ph) * wp + pw)
            for j in range(u(w)):
                dst[o + j] = src[row + j]


@kernel
def to_padded_rows(dy, wp, out, bias_diff):
    """dy (N, M, OH, OW) -> out (N, M, OH * wp): each row followed by wp - OW zeros. Unless
    bias_diff is empty, also bias_diff[m] += the sum of dy[:, m], from the same pass over dY,
    with add_channel_sums's sums in its order (the same bits)."""
    n, m, oh, ow = dy.shape
    src, dst = dy.reshape(-1), out.reshape(-1)
    with_sums = bias_diff.shape[0] > 0
    sums = np.zeros((n, m) if with_sums else (0, 0))
    for t in prange(n * m):
        for r in range(oh):
            copy_padded(src, (t * oh + r) * ow, dst, (t * oh + r) * wp, ow, wp)
        if with_sums:
            sums[t // m, t % m] = sum_run(src, u(t * oh * ow), oh * ow)
    for k in range(bias_diff.shape[0]):
        total = 0.0
        for b in range(n):
            total += sums[b, k]
        bias_diff[k] += total


def add_weight_grad(xp, dy, groups, kh, kw, wp, zero, dw):
    """dw += the weight gradient (below), its tasks split for this thread's numba threads."""
    _add_weight_grad(xp, dy, groups, kh, kw, wp, zero, dw, get_num_threads())


@vectorised
def _add_weight_grad(xp, dy, groups, kh, kw, wp, zero, dw, threads):
    """dw (M, C/G, KH, KW) += sum over images and positions q of dy[m, q] * xp[c, q + i wp + j]
    (xp from to_planes, dy from to_padded_rows). Needs M/G >= 4 and KH * KW >= 5.

    A tile is 4 filters x 5 taps: 20 sums over one run of dY, each from 9 vector loads (4 x 3
    took 7 loads for 12 sums: cifar10_quick's conv1 and conv2 1.15-1.2x slower on AVX-512),
    their vector partial sums kept across the images (simd.tile_sums) and reduced once."""
    n, m, q_len = dy.shape
    c, size = xp.shape[1], xp.shape[2]
    mg, cg = m // groups, c // groups
    taps = kh * kw
    blocks, tap_blocks = (mg + 3) // 4, (taps + 4) // 5
    lanes = 64 // dw.itemsize  # tile_sums's partial sums: one 64-byte vector (simd.acc_lanes)
    whole = q_len // lanes * lanes  # the rest of each run: added lane by lane below
    # a task: one channel and up to BLOCKS_PER_TASK tiles of 4 filters (one image's plane stays
    # in cache for all of them), as many as keep every core busy to the end (the split never
    # changes a sum: each filter's terms keep their order, whichever task adds them)
    per_task, span = 1, 1 << 62
    for tiles in range(1, BLOCKS_PER_TASK + 1):
        tasks = groups * cg * ((blocks + tiles - 1) // tiles)
        if (tasks + threads - 1) // threads * tiles <= span:
            per_task, span = tiles, (tasks + threads - 1) // threads * tiles
    chunks = (blocks + per_task - 1) // per_task
    xs, ds = xp.reshape(-1), dy.reshape(-1)
    for t in prange(groups * cg * chunks):
        g, ch, first = t // (cg * chunks), (t // chunks) % cg, (t % chunks) * per_task
        last = min(blocks, first + per_task)
        acc = np.zeros(((last - first) * tap_blocks * 20, lanes), dw.dtype)
        for b in range(n):
            plane = (b * c + g * cg + ch) * size
            for k in range(first, last):
                d = (b * m + g * mg + min(4 * k, mg - 4)) * q_len
                rows = (d, d + q_len, d + 2 * q_len, d + 3 * q_len)
                for tb in range(tap_blocks):
                    t0 = min(5 * tb, taps - 5)
                    cols = (plane + (t0 // kw) * wp + t0 % kw,
                            plane + ((t0 + 1) // kw) * wp + (t0 + 1) % kw,
                            plane + ((t0 + 2) // kw) * wp + (t0 + 2) % kw,
                            plane + ((t0 + 3) // kw) * wp + (t0 + 3) % kw,
                            plane + ((t0 + 4) // kw) * wp + (t0 + 4) % kw)
                    first_sum = ((k - first) * tap_blocks + tb) * 20
                    sums = acc[first_sum:first_sum + 20]
                    tile_sums(ds, rows, xs, cols, whole, sums)
                    for q in range(whole, q_len):
                        for r in range(4):
                            for j in range(5):
                                sums[5 * r + j, q - whole] += ds[rows[r] + q] * xs[cols[j] + q]
        for k in range(first, last):
            m0 = min(4 * k, mg - 4)
            for tb in range(tap_blocks):
                t0 = min(5 * tb, taps - 5)
                for dm in range(4):
                    if m0 + dm < 4 * k:
                        continue  # the previous tile's filter
                    for dt in range(5):
                        if t0 + dt < 5 * tb:
                            continue  # the previous tile's tap
                        total = zero
                        for lane in acc[((k - first) * tap_blocks + tb) * 20 + 5 * dm + dt]:
                            total += lane
                        tap = t0 + dt
                        dw[g * mg + m0 + dm, ch, tap // kw, tap % kw] += total


@vectorised
def conv_planes(xp, w, bias, groups, wp, zero, y):
    """y (N, M, OH, OW) = bias + stride-1 correlation of xp (N, C, Hp * Wp + tail), from
    to_planes, with w (M, C/G, KH, KW). Needs M/G >= 2 and KW a multiple of 5.

    For few input channels (LeNet's conv1 has one: the rows kernel's runs would be 5 long) the
    vectors run along the output instead: a filter pair's outputs over whole padded rows (Wp
    wide, the last KW - 1 of each row cropped) gain a kernel row of taps per pass, five taps
    a pass from registers."""
    n, m, oh, ow = y.shape
    kh, kw = w.shape[2], w.shape[3]
    mg, cg = m // groups, xp.shape[1] // groups
    span = u((oh - 1) * wp + ow)  # the last output's position + 1
    pairs = (mg + 1) // 2
    has_bias = bias.shape[0] > 0
    xs = xp.reshape(-1)
    for t in prange(n * groups * pairs):
        b, g, k = t // (groups * pairs), (t // pairs) % groups, t % pairs
        f0 = g * mg + min(2 * k, mg - 2)
        acc0, acc1 = np.empty(span, y.dtype), np.empty(span, y.dtype)
        add0 = bias[f0] if has_bias else zero
        add1 = bias[f0 + 1] if has_bias else zero
        for p in range(span):
            acc0[p] = add0
            acc1[p] = add1
        for ch in range(cg):
            plane = u((b * xp.shape[1] + g * cg + ch) * xp.shape[2])
            for i in range(kh):
                v, z = w[f0, ch, i], w[f0 + 1, ch, i]
                for j in range(0, kw, 5):
                    run = plane + u(i * wp + j)
                    v0, v1, v2, v3, v4 = v[j], v[j + 1], v[j + 2], v[j + 3], v[j + 4]
                    z0, z1, z2, z3, z4 = z[j], z[j + 1], z[j + 2], z[j + 3], z[j + 4]
                    for p in range(span):
                        q = run + p
                        a0, a1, a2, a3, a4 = xs[q], xs[q + u(1)], xs[q + u(2)], xs[q + u(3)], xs[q + u(4)]
                        acc0[p] += v0 * a0 + v1 * a1 + v2 * a2 + v3 * a3 + v4 * a4
                        acc1[p] += z0 * a0 + z1 * a1 + z2 * a2 + z3 * a3 + z4 * a4
        for df in range(2):
            if min(2 * k, mg - 2) + df < 2 * k:
                continue  # the previous pair stored this filter
            acc = acc0 if df == 0 else acc1
            out = y[b, f0 + df].reshape(-1)
            for r in range(oh):
                src, dst = u(r * wp), u(r * ow)
                for q in range(u(ow)):
                    out[dst + q] = acc[src + q]


#: filters in one conv_windows tile (6 x 4 vectors: 24 of the 32 registers)
WINDOW_FILTERS = 6


def windows_fit(out_width: int) -> bool:
    """Whether conv_windows takes an output this wide: each vector of 16 positions (from a
    multiple of 16) must span at most two output rows. The vectors start gcd(16, OW) apart
    within a row, so the latest starts OW - gcd into one: 8, 12, 14 and from 15 on fit (8
    lanes of float64 then fit too)."""
    return out_width >= 16 - math.gcd(16, out_width)


@vectorised
def conv_windows(xp, w, bias, groups, wp, zero, y):
    """y (N, M, OH, OW) = bias + stride-1 correlation of xp (N, C, S), each plane an image
    channel's rows Wp apart (padded by to_planes, or the image itself), with w (M, C/G, KH,
    KW). Needs M/G >= WINDOW_FILTERS and windows_fit(OW).

    The output positions are the vectors: a task's 64 positions (4 vectors, each across at
    most two output rows) against 6 filters a tile (simd.window_tile), every filter tap's
    inputs loaded straight from the planes (one masked load per row part), its weight
    broadcast: no sums across lanes, no copy of the input."""
    n, c, size = xp.shape
    m, oh, ow = y.shape[1], y.shape[2], y.shape[3]
    kh, kw = w.shape[2], w.shape[3]
    mg, cg = m // groups, c // groups
    taps = cg * kh * kw
    plane = oh * ow
    lanes = 64 // y.itemsize
    span = 4 * lanes
    blocks = (plane + span - 1) // span
    has_bias = bias.shape[0] > 0
    offsets = np.empty(taps, np.int64)  # each tap's input (channel, kernel row, column)
    for ch in range(cg):
        for i in range(kh):
            for j in range(kw):
                offsets[(ch * kh + i) * kw + j] = ch * size + i * wp + j
    xs, ws, ys = xp.reshape(-1), w.reshape(-1), y.reshape(-1)
    for t in prange(n * groups * blocks):
        b, g, p0 = t // (groups * blocks), (t // blocks) % groups, (t % blocks) * span
        # each vector's two row parts: where its lanes' inputs start, and which lanes
        starts = np.zeros(8, np.int64)
        bounds = np.zeros(16, np.int64)
        valid = np.zeros(4, np.int64)
        for v in range(4):
            q = p0 + v * lanes
            count = min(lanes, plane - q)
            if count <= 0:
                continue
            valid[v] = count
            row, x = q // ow, q % ow
            first = min(count, ow - x)
            starts[2 * v] = row * wp + x
            bounds[4 * v + 1] = first
            starts[2 * v + 1] = (row + 1) * wp - first
            bounds[4 * v + 2], bounds[4 * v + 3] = first, count
        segments = (starts[0], starts[1], starts[2], starts[3], starts[4], starts[5],
                    starts[6], starts[7])
        lane_bounds = (bounds[0], bounds[1], bounds[2], bounds[3], bounds[4], bounds[5],
                       bounds[6], bounds[7], bounds[8], bounds[9], bounds[10], bounds[11],
                       bounds[12], bounds[13], bounds[14], bounds[15])
        out_lanes = (valid[0], valid[1], valid[2], valid[3])
        one_row = (starts[0], starts[2], starts[4], starts[6])  # rows as wide as whole vectors
        one_row_bounds = (bounds[0], bounds[1], bounds[4], bounds[5], bounds[8], bounds[9],
                          bounds[12], bounds[13])
        base = (b * c + g * cg) * size
        for fb in range(0, mg, WINDOW_FILTERS):
            f = g * mg + min(fb, mg - WINDOW_FILTERS)  # the last tile overlaps: same values
            init = ((bias[f], bias[f + 1], bias[f + 2], bias[f + 3], bias[f + 4], bias[f + 5])
                    if has_bias else (zero, zero, zero, zero, zero, zero))
            o = (b * m + f) * plane + p0
            filters = (f * taps, (f + 1) * taps, (f + 2) * taps, (f + 3) * taps,
                       (f + 4) * taps, (f + 5) * taps)
            outs = (o, o + plane, o + 2 * plane, o + 3 * plane, o + 4 * plane, o + 5 * plane)
            if ow % lanes == 0:  # each vector within one output row: one load, not two
                window_tile(ws, filters, xs, base, offsets, one_row, one_row_bounds, taps,
                            init, ys, outs, out_lanes)
            else:
                window_tile(ws, filters, xs, base, offsets, segments, lane_bounds, taps, init,
                            ys, outs, out_lanes)


#: filters in one add_weight_grad_windows tile (5 x 4 vectors: 20 of the 32 registers)
WEIGHT_WINDOW_FILTERS = 5


@vectorised
def add_weight_grad_windows(xr, dy, kh, kw, zero, dwt):
    """dwt (G, KH, M/G, KW * C/G) += for each group g, kernel row i, filter m and (j, c): the
    sum over images and output positions (y, x) of dy[b, g M/G + m, y, x] * xr[b, g, y + i,
    (x + j) C/G + c], a stride-1 weight gradient over xr from to_rows (padded, channels last).

    In that layout a kernel row's window is one run of KW * C/G inputs: they are the vectors
    (simd.window_tile_add), 5 filters' dY broadcast against them, position by position. A task
    is a group's kernel row and 64 of its columns: image by image, each filter's terms added
    on in order of image and position."""
    n, groups, hp, row = xr.shape
    m, oh, ow = dy.shape[1], dy.shape[2], dy.shape[3]
    mg, width = m // groups, dwt.shape[3]
    cg = width // kw
    plane = oh * ow
    lanes = 64 // dwt.itemsize
    span = 4 * lanes
    blocks = (width + span - 1) // span
    whole = mg - mg % WEIGHT_WINDOW_FILTERS
    offsets = np.empty(plane, np.int64)  # where each output position's window starts
    for q in range(plane):
        offsets[q] = (q // ow) * row + (q % ow) * cg
    xs, ds, ws = xr.reshape(-1), dy.reshape(-1), dwt.reshape(-1)
    five = (zero, zero, zero, zero, zero)
    for t in prange(groups * kh * blocks):
        g, i, c0 = t // (kh * blocks), (t // blocks) % kh, (t % blocks) * span
        count = min(span, width - c0)
        valid = four_vectors(count, lanes)
        segments = (0, lanes, 2 * lanes, 3 * lanes)
        bounds = (0, valid[0], 0, valid[1], 0, valid[2], 0, valid[3])
        first_out = (g * kh + i) * mg * width + c0
        for b in range(n):
            base = ((b * groups + g) * hp + i) * row + c0
            for f in range(0, whole, WEIGHT_WINDOW_FILTERS):
                d = (b * m + g * mg + f) * plane
                o = first_out + f * width
                window_tile_add(ds, (d, d + plane, d + 2 * plane, d + 3 * plane, d + 4 * plane),
                                xs, base, offsets, segments, bounds, plane, five, ws,
                                (o, o + width, o + 2 * width, o + 3 * width, o + 4 * width),
                                valid)
            for f in range(whole, mg):
                window_tile_add(ds, ((b * m + g * mg + f) * plane,), xs, base, offsets,
                                segments, bounds, plane, (zero,), ws, (first_out + f * width,),
                                valid)


@vectorised
def input_grad_windows(dy, wt, sh, sw, ph, pw, xr, dx):
    """dx (N, C, H, W) = the input gradient of a convolution (stride sh, sw; padding ph, pw;
    no dilation) for dY (N, M, OH, OW), with wt (G, KH, M/G, KW * C/G) the
    filters as wt[g, i, m, j C/G + c] = w[g M/G + m, c, i, j]; xr (N, G, Hp, Wp * C/G) the
    scratch the gradient is summed in (padded, channels last), then cropped into dx.

    Each output position (y, x) and kernel row i adds, to the run of KW x C/G inputs its window
    covers on that row (contiguous, channels last), the sum over filters of dY[m, y, x] times
    wt[g, i, m]: a register tile of 2 output rows x up to 7 vectors of the run
    (simd.broadcast_tile_add), added onto the scratch where it lies: no columns buffer, no
    col2im. Tiles run kernel row by kernel row, then column, then pairs of rows, so that
    consecutive tiles add to different rows. Each input's terms are added in that order."""
    n, groups, hp, row = xr.shape
    m, oh, ow = dy.shape[1], dy.shape[2], dy.shape[3]
    kh, mg, run = wt.shape[1], wt.shape[2], wt.shape[3]
    c, h, w = dx.shape[1], dx.shape[2], dx.shape[3]
    cg = c // groups
    lanes = 64 // dx.itemsize
    span = 7 * lanes
    plane = oh * ow
    ds, ws, xs, out = dy.reshape(-1), wt.reshape(-1), xr.reshape(-1), dx.reshape(-1)
    pairs = oh // 2
    for t in prange(n * groups):
        b, g = t // groups, t % groups
        base = t * hp * row
        for q in range(u(hp * row)):
            xs[u(base) + q] = 0
        for c0 in range(0, run, span):
            count = min(span, run - c0)
            valid = four_vectors(count, lanes) + four_vectors(count - 4 * lanes, lanes)[:3]
            for i in range(kh):
                filters = (g * kh + i) * mg * run + c0
                for x in range(ow):
                    column = x * sw * cg + c0
                    for p in range(pairs):
                        y = 2 * p
                        d = ((b * m + g * mg) * oh + y) * ow + x
                        o = base + (y * sh + i) * row + column
                        broadcast_tile_add(ds, (d, d + ow), plane, ws, filters, run, valid, mg,
                                           xs, (o, o + sh * row))
                    if oh % 2:
                        y = oh - 1
                        broadcast_tile_add(ds, (((b * m + g * mg) * oh + y) * ow + x,), plane,
                                           ws, filters, run, valid, mg, xs,
                                           (base + (y * sh + i) * row + column,))
        for ch in range(cg):  # crop the padding, back to (C, H, W)
            for yy in range(h):
                src = u(base + (yy + ph) * row + pw * cg + ch)
                dst = u(((b * c + g * cg + ch) * h + yy) * w)
                for xx in range(u(w)):
                    out[dst + xx] = xs[src + xx * u(cg)]
