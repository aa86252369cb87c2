"""GEMMs that accumulate: out += a @ b without a temporary the size of `out`; the products of
a large InnerProduct at small batches (linear).

numpy's matmul has no beta (BLAS's C = A B + beta C), so `dw += a @ b` makes a fresh product
the size of the weight gradient on every backward. Above glibc's largest mmap threshold
(32 MiB) that is new pages from the kernel each time: CaffeNet's fc6 gradient (151 MB) spent
~130 ms of a 150 ms backward faulting them in. Products here go through a small per-thread
buffer, a block of rows at a time, which also stays in cache for the add."""
from __future__ import annotations

import threading

import numpy as np
from numba import prange

from .launch import vectorised, vectorised_helper
from .simd import broadcast_tile_add, four_vectors

#: weights from this size on make a small batch's product memory bound (smaller: numpy's matmul)
MATVEC_FROM = 1 << 17
#: batches from 4 up to this size take the tiled product (`linear`), with at least this
#: many outputs (fewer: too few tiles to share between threads)
SKINNY_MAX_BATCH = 64
SKINNY_MIN_OUTPUTS = 64

#: elements of the per-thread buffer: 4 MiB of float32, as large as a block of rows gets
BLOCK = 1 << 20

_local = threading.local()


def _buffer(size: int, dtype) -> np.ndarray:
    buf = getattr(_local, "buf", None)
    if buf is None or buf.dtype != dtype or buf.size < size:
        buf = _local.buf = np.empty(size, dtype)
    return buf[:size]


def matmul_add(out: np.ndarray, a: np.ndarray, b: np.ndarray) -> None:
    """out (M, N) += a (M, K) @ b (K, N), the product made BLOCK elements at a time. Each
    element is the same dot product BLAS computes for the whole matrix."""
    m, n = out.shape
    rows = max(1, min(m, BLOCK // max(n, 1)))
    buf = _buffer(rows * n, out.dtype)
    for first in range(0, m, rows):
        last = min(m, first + rows)
        product = buf[:(last - first) * n].reshape(last - first, n)
        np.matmul(a[first:last], b, out=product)
        out[first:last] += product


def linear(w: np.ndarray, x: np.ndarray, out: np.ndarray) -> None:
    """out (B, N) = x (B, K) @ w (N, K)^T: an InnerProduct's forward pass.

    At small batches the weights' one pass through memory is the whole cost, and OpenBLAS
    packs them into its own buffer first (a second pass): on a 2-core Emerald Rapids VM,
    CaffeNet's fc6 at batch 16 (151 MB) 22.0 -> 8.9 ms, fc7 9.8 -> 2.8, LeNet's ip1 at batch
    64 0.39 -> 0.15. Batch 1 reads four rows against one read of x (OpenBLAS's sgemv streamed
    ~25 GB/s on 2 Zen 4 cores, this ~30: fc6 4.0 -> 3.3 ms); batches of 4 to SKINNY_MAX_BATCH,
    tiles of 4 rows x 4 images (16 dot products a pass over 8 vectors). Each output is one
    dot product in a fixed order: the same bits on any number of threads."""
    b, n = out.shape
    if b == 1 and n >= 4 and _large(w, x):
        _matvec(w, x[0], out.dtype.type(0), out[0])
    elif b >= 4 and _skinny_shape(w, x, n):
        _skinny(w, x, out.dtype.type(0), out)
    else:
        np.matmul(x, w.T, out=out)


@vectorised
def _matvec(w, x, zero, out):
    n, k = w.shape
    for block in prange((n + 3) // 4):
        i = min(4 * block, n - 4)  # the last block overlaps its neighbour, storing only its own
        s0 = s1 = s2 = s3 = zero
        for j in range(k):
            v = x[j]
            s0 += w[i, j] * v
            s1 += w[i + 1, j] * v
            s2 += w[i + 2, j] * v
            s3 += w[i + 3, j] * v
        first = 4 * block - i  # 0, or the rows the previous block stored
        if first == 0:
            out[i] = s0
        if first <= 1:
            out[i + 1] = s1
        if first <= 2:
            out[i + 2] = s2
        out[i + 3] = s3


@vectorised
def _skinny(w, x, zero, out):
    """out (B, N) = x (B, K) @ w (N, K)^T for B >= 4 and N >= 4: tiles of 4 weight rows x 4
    images (edge tiles overlap the previous one and store only their own)."""
    n, k = w.shape
    batch = x.shape[0]
    for block in prange((n + 3) // 4):
        i = min(4 * block, n - 4)
        first = 4 * block - i
        w0, w1, w2, w3 = w[i], w[i + 1], w[i + 2], w[i + 3]
        for start in range(0, batch, 4):
            b = min(start, batch - 4)
            x0, x1, x2, x3 = x[b], x[b + 1], x[b + 2], x[b + 3]
            sums = dot4x4(w0, w1, w2, w3, x0, x1, x2, x3, k, zero)
            for di in range(first, 4):
                for db in range(start - b, 4):
                    out[b + db, i + di] = sums[di][db]


def add_linear_weight_grad(dw: np.ndarray, dy: np.ndarray, x: np.ndarray) -> None:
    """dw (N, K) += dy (B, N)^T @ x (B, K): an InnerProduct's weight gradient. At the small
    batches that `linear` takes, register tiles of dw gain every image's terms in one pass
    over dw (_add_outer), where OpenBLAS packed x and made a product to add (matmul_add). On a
    2-core Emerald Rapids VM: LeNet's ip1 at batch 64 0.38 -> 0.17 ms, CaffeNet's fc6 at batch
    16 33 -> 6.4, fc7 4.4 -> 2.4 (tiles of 4 rows x 4 images, summed as dot products, had
    reached 0.31, 10.2 and 4.4)."""
    if not _skinny_shape(dw, x, dw.shape[0]):
        matmul_add(dw, dy.T, x)
    else:
        _add_outer(dw, dy, x)


def linear_input_grad(dy: np.ndarray, w: np.ndarray, dx: np.ndarray) -> None:
    """dx (B, K) = dy (B, N) @ w (N, K): an InnerProduct's input gradient. With weights of
    INPUT_GRAD_FROM elements on, at small batches, by columns of dx, each a sum over the rows
    of w in blocks of four (COLUMNS wide, so the sums do not depend on the thread count): one
    pass over the weights, where OpenBLAS packed them first (CaffeNet's fc6 at batch 16,
    21.4 -> 8.6 ms). Smaller weights stay in cache, and there numpy's matmul is as fast."""
    if (w.size < INPUT_GRAD_FROM or not _skinny_shape(w, dx, w.shape[0])
            or not dy.flags.c_contiguous):
        np.matmul(dy, w, out=dx)
    else:
        _input_grad(dy, w, dx, COLUMNS)


#: weights from this size on take linear_input_grad's kernel (LeNet's ip1, 0.4 M: numpy)
INPUT_GRAD_FROM = 1 << 22
#: columns of dx one task of linear_input_grad sums (its rows of w stay in cache for the batch)
COLUMNS = 512


def _large(w: np.ndarray, x: np.ndarray) -> bool:
    """Weights w (N, K) large enough to make a small batch x (B, K) memory bound, both
    C-contiguous (the kernels index their rows)."""
    return w.size >= MATVEC_FROM and w.flags.c_contiguous and x.flags.c_contiguous


def _skinny_shape(w: np.ndarray, x: np.ndarray, n: int) -> bool:
    """Whether the small-batch kernels take weights w (N, K) against images x (B, K)."""
    return _large(w, x) and x.shape[0] <= SKINNY_MAX_BATCH and n >= SKINNY_MIN_OUTPUTS


#: weight rows in one of _add_outer's tiles (5 x 4 vectors: 20 of the 32 registers), and
#: tiles of rows one task takes
OUTER_ROWS = 5
OUTER_TILES_PER_TASK = 10


@vectorised
def _add_outer(dw, dy, x):
    """dw (N, K) += dy^T x, in register tiles of 5 rows x 64 columns of dw (simd.
    broadcast_tile_add: each image's row of x as 4 vectors, its 5 terms of dy broadcast), each
    sum continued from dw's value, image by image. A task runs a band of rows along the whole
    of K (dw streams through once; x stays in cache)."""
    n, k = dw.shape
    batch = x.shape[0]
    lanes = 64 // dw.itemsize
    span = 4 * lanes
    blocks = (k + span - 1) // span
    bands = (n + OUTER_ROWS * OUTER_TILES_PER_TASK - 1) // (OUTER_ROWS * OUTER_TILES_PER_TASK)
    ds, xs, ws = dy.reshape(-1), x.reshape(-1), dw.reshape(-1)
    for band in prange(bands):
        first = band * OUTER_ROWS * OUTER_TILES_PER_TASK
        last = min(n, first + OUTER_ROWS * OUTER_TILES_PER_TASK)
        for f in range(first, last, OUTER_ROWS):
            for cb in range(blocks):
                c0 = cb * span
                count = min(span, k - c0)
                valid = four_vectors(count, lanes)
                if f + OUTER_ROWS <= last:
                    broadcast_tile_add(ds, (f, f + 1, f + 2, f + 3, f + 4), n, xs, c0, k, valid,
                                       batch, ws, (f * k + c0, (f + 1) * k + c0,
                                                   (f + 2) * k + c0, (f + 3) * k + c0,
                                                   (f + 4) * k + c0))
                else:
                    for r in range(f, last):
                        broadcast_tile_add(ds, (r,), n, xs, c0, k, valid, batch, ws,
                                           (r * k + c0,))


@vectorised
def _input_grad(dy, w, dx, width):
    """dx (B, K) = dy (B, N) @ w (N, K), a task per `width` columns: rows of w four at a
    time (the rest one by one) against four images at a time (likewise)."""
    batch, n = dy.shape
    k = w.shape[1]
    full = batch - batch % 4
    for chunk in prange((k + width - 1) // width):
        lo = chunk * width
        hi = min(k, lo + width)
        for b in range(batch):
            e = dx[b, lo:hi]
            e[:] = 0
        for o in range(0, n, 4):
            if o + 4 > n:
                for r in range(o, n):
                    wr = w[r, lo:hi]
                    for b in range(batch):
                        a, e = dy[b, r], dx[b, lo:hi]
                        for j in range(hi - lo):
                            e[j] += a * wr[j]
                continue
            w0, w1, w2, w3 = w[o, lo:hi], w[o + 1, lo:hi], w[o + 2, lo:hi], w[o + 3, lo:hi]
            for b in range(0, full, 4):
                e0, e1, e2, e3 = dx[b, lo:hi], dx[b + 1, lo:hi], dx[b + 2, lo:hi], dx[b + 3, lo:hi]
                add_products4x4(e0, e1, e2, e3, w0, w1, w2, w3, dy[b:b + 4, o:o + 4])
            for b in range(full, batch):
                e = dx[b, lo:hi]
                a0, a1, a2, a3 = dy[b, o], dy[b, o + 1], dy[b, o + 2], dy[b, o + 3]
                for j in range(hi - lo):
                    e[j] += a0 * w0[j] + a1 * w1[j] + a2 * w2[j] + a3 * w3[j]


@vectorised_helper
def dot4x4(a0, a1, a2, a3, b0, b1, b2, b3, length, zero):
    """The 16 dot products of a0..a3 with b0..b3 over `length`, as ((a0.b0, a0.b1, a0.b2,
    a0.b3), (a1.b0, ...), ...): eight vector loads for 16 multiply-adds."""
    s00 = s01 = s02 = s03 = s10 = s11 = s12 = s13 = zero
    s20 = s21 = s22 = s23 = s30 = s31 = s32 = s33 = zero
    for j in range(length):
        u0, u1, u2, u3 = a0[j], a1[j], a2[j], a3[j]
        v0, v1, v2, v3 = b0[j], b1[j], b2[j], b3[j]
        s00 += u0 * v0
        s01 += u0 * v1
        s02 += u0 * v2
        s03 += u0 * v3
        s10 += u1 * v0
        s11 += u1 * v1
        s12 += u1 * v2
        s13 += u1 * v3
        s20 += u2 * v0
        s21 += u2 * v1
        s22 += u2 * v2
        s23 += u2 * v3
        s30 += u3 * v0
        s31 += u3 * v1
        s32 += u3 * v2
        s33 += u3 * v3
    return ((s00, s01, s02, s03), (s10, s11, s12, s13), (s20, s21, s22, s23),
            (s30, s31, s32, s33))


@vectorised_helper
def add_products4x4(o0, o1, o2, o3, i0, i1, i2, i3, c):
    """o_r[j] += sum over s of c[r, s] * i_s[j], for j below o0's length (c: 4 x 4)."""
    c00, c01, c02, c03 = c[0, 0], c[0, 1], c[0, 2], c[0, 3]
    c10, c11, c12, c13 = c[1, 0], c[1, 1], c[1, 2], c[1, 3]
    c20, c21, c22, c23 = c[2, 0], c[2, 1], c[2, 2], c[2, 3]
    c30, c31, c32, c33 = c[3, 0], c[3, 1], c[3, 2], c[3, 3]
    for j in range(o0.shape[0]):
        v0, v1, v2, v3 = i0[j], i1[j], i2[j], i3[j]
        o0[j] += c00 * v0 + c01 * v1 + c02 * v2 + c03 * v3
        o1[j] += c10 * v0 + c11 * v1 + c12 * v2 + c13 * v3
        o2[j] += c20 * v0 + c21 * v1 + c22 * v2 + c23 * v3
        o3[j] += c30 * v0 + c31 * v1 + c32 * v2 + c33 * v3
