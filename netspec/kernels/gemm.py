"""GEMMs that accumulate: out += a @ b without a temporary the size of `out`.

numpy's matmul has no beta (BLAS's C = A B + beta C), so `dw += a @ b` makes a fresh product
the size of the weight gradient on every backward. Above glibc's largest mmap threshold
(32 MiB) that is new pages from the kernel each time: CaffeNet's fc6 gradient (151 MB) spent
~130 ms of a 150 ms backward faulting them in. Products here go through a small per-thread
buffer, a block of rows at a time, which also stays in cache for the add."""
from __future__ import annotations

import threading

import numpy as np

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
