"""Direct convolution in numba (oneDNN's approach: no im2col; output rows of a block of filters
kept in fast memory) against netspec's im2col + GEMM, on cifar10_quick's and LeNet's layers,
forward only.

    python benchmarks/direct_conv.py [--threads N]

The question from issue #9: for small 5x5 layers, is a direct convolution faster than im2col +
BLAS? Prints milliseconds per forward for both and checks they agree."""
from __future__ import annotations

import argparse
import time

import netspec  # noqa: F401  (before numpy: thread settings)
import numpy as np
from numba import njit, prange

from netspec.kernels import cpu

BLOCK = 8  # output channels accumulated together (one input row read serves eight filters)


@njit(parallel=True, cache=True)
def direct_conv(x, w, pad, y):
    """y (N, M, oh, ow) = sum over c, i, j of w[m, c, i, j] * padded x[n, c, r + i, q + j]
    (stride 1). Parallel over (image, output row); each output row of a block of BLOCK
    filters is accumulated in a small local array (registers / L1), the inner loop runs along
    the row, so it vectorises."""
    n, c, h, wd = x.shape
    m, _, kh, kw = w.shape
    oh, ow = y.shape[2], y.shape[3]
    for t in prange(n * oh):
        b = t // oh
        r = t % oh
        acc = np.empty((BLOCK, ow), dtype=y.dtype)
        for m0 in range(0, m, BLOCK):
            m1 = min(m0 + BLOCK, m)
            acc[:] = 0
            for ch in range(c):
                for i in range(kh):
                    hy = r + i - pad
                    if hy < 0 or hy >= h:
                        continue
                    line = x[b, ch, hy]
                    for j in range(kw):
                        lo = max(0, pad - j)
                        hi = min(ow, wd + pad - j)
                        for k in range(m1 - m0):
                            wv = w[m0 + k, ch, i, j]
                            for q in range(lo, hi):
                                acc[k, q] += wv * line[q + j - pad]
            for k in range(m1 - m0):
                for q in range(ow):
                    y[b, m0 + k, r, q] = acc[k, q]


def im2col_gemm(x, w, pad, y, col):
    n, c, h, wd = x.shape
    m, _, kh, kw = w.shape
    oh, ow = y.shape[2], y.shape[3]
    cpu.im2col(x, kh, kw, 1, 1, pad, pad, 1, 1, oh, ow, col)
    out = np.empty((m, n * oh * ow), x.dtype)
    np.matmul(w.reshape(m, -1), col, out=out)
    cpu.cols_to_images(out, np.zeros(0, x.dtype), y.reshape(n, m, -1))


def timed(f, seconds=2.0):
    f()
    start, runs = time.perf_counter(), 0
    while runs < 3 or time.perf_counter() - start < seconds:
        f()
        runs += 1
    return (time.perf_counter() - start) / runs * 1000


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()
    threads = netspec.set_threads(args.threads)
    rng = np.random.default_rng(0)
    layers = {"cifar10_quick conv1 (100, 3, 32, 32) -> 32": (100, 3, 32, 32, 5, 2),
              "cifar10_quick conv2 (100, 32, 16, 16) -> 32": (100, 32, 16, 32, 5, 2),
              "cifar10_quick conv3 (100, 32, 8, 8) -> 64": (100, 32, 8, 64, 5, 2),
              "LeNet conv2 (64, 20, 12, 12) -> 50": (64, 20, 12, 50, 5, 0)}
    print(f"forward ms, {threads} threads")
    for name, (n, c, size, m, k, pad) in layers.items():
        x = rng.standard_normal((n, c, size, size)).astype(np.float32)
        w = rng.standard_normal((m, c, k, k)).astype(np.float32)
        o = size + 2 * pad - k + 1
        y1, y2 = np.empty((n, m, o, o), np.float32), np.empty((n, m, o, o), np.float32)
        col = np.empty((c * k * k, n * o * o), np.float32)
        a = timed(lambda: im2col_gemm(x, w, pad, y1, col))
        b = timed(lambda: direct_conv(x, w, pad, y2))
        assert np.allclose(y1, y2, rtol=1e-3, atol=1e-3)
        print(f"  {name:<46} im2col+GEMM {a:8.2f}   direct {b:8.2f}   direct/im2col {b / a:.2f}")


if __name__ == "__main__":
    main()
