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

from .launch import vectorised

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
    if w.size < MATVEC_FROM or not (w.flags.c_contiguous and x.flags.c_contiguous) or n < 4:
        np.matmul(x, w.T, out=out)
    elif b == 1:
        _matvec(w, x[0], out.dtype.type(0), out[0])
    elif 4 <= b <= SKINNY_MAX_BATCH and n >= SKINNY_MIN_OUTPUTS:
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
            s00 = s01 = s02 = s03 = s10 = s11 = s12 = s13 = zero
            s20 = s21 = s22 = s23 = s30 = s31 = s32 = s33 = zero
            for j in range(k):
                a0, a1, a2, a3 = w0[j], w1[j], w2[j], w3[j]
                v0, v1, v2, v3 = x0[j], x1[j], x2[j], x3[j]
                s00 += a0 * v0
                s01 += a0 * v1
                s02 += a0 * v2
                s03 += a0 * v3
                s10 += a1 * v0
                s11 += a1 * v1
                s12 += a1 * v2
                s13 += a1 * v3
                s20 += a2 * v0
                s21 += a2 * v1
                s22 += a2 * v2
                s23 += a2 * v3
                s30 += a3 * v0
                s31 += a3 * v1
                s32 += a3 * v2
                s33 += a3 * v3
            sums = ((s00, s01, s02, s03), (s10, s11, s12, s13), (s20, s21, s22, s23),
                    (s30, s31, s32, s33))
            for di in range(first, 4):
                for db in range(start - b, 4):
                    out[b + db, i + di] = sums[di][db]
