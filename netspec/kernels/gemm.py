"""GEMMs that accumulate: out += a @ b without a temporary the size of `out`; the batch-1
product of a large InnerProduct (matvec).

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

#: weights from this size on make a batch-1 product memory bound (smaller: numpy's matmul)
MATVEC_FROM = 1 << 17

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


def matvec(w: np.ndarray, x: np.ndarray, out: np.ndarray) -> None:
    """out (N,) = w (N, K) @ x (K,): an InnerProduct at batch 1, where the weights' one pass
    through memory is the whole cost. OpenBLAS's sgemv streams them at ~25 GB/s here on two
    cores; four rows against one read of x reach ~30 (CaffeNet fc6, 151 MB: 4.0 -> 3.3 ms)."""
    if w.shape[0] < 4 or w.size < MATVEC_FROM or not w.flags.c_contiguous:
        np.matmul(w, x, out=out)
    else:
        _matvec(w, x, out.dtype.type(0), out)


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
