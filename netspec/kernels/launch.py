"""How a parallel kernel is compiled and launched: small calls run on the calling thread.

Why: netspec lets numba's idle workers sleep (OMP_WAIT_POLICY=PASSIVE, threads.py), so that
another process on the cores is not starved; waking them costs ~40 us a launch on a 2-core VM,
more than a small kernel's whole work (LeNet's bias add over 64 x 500: 2 us on one thread,
45 us on two). So a call over fewer than SERIAL_BELOW elements runs with numba's thread count
set to one for its duration (the calling thread does it all, waking no one). It runs the same
parallel build: numba compiles a `prange` loop's body with its arrays marked as not aliasing
each other, which lets LLVM vectorise read-modify-write loops that a plain serial build of the
same source leaves scalar (one thread, ms: LRN over 96 x 27 x 27 0.45 -> 0.13, 5x5 im2row of
16 LeNet images 0.32 -> 0.18, row2im 0.30 -> 0.22). The loops' iterations are independent
and nothing is fast-math, so every thread count gives the same bits."""
from __future__ import annotations

import functools

import numba
import numpy as np
from numba import njit

#: calls whose largest array holds fewer elements than this run on the calling thread alone
SERIAL_BELOW = 1 << 17

#: plain jitted helpers that kernels call (no loops of their own to share out)
serial = njit(cache=True, nogil=True)

# parallel only, for the dot-product kernels (direct convolutions, matvec): reassociation lets
# LLVM vectorise their sums, whose order is still fixed at compile time, so one build serves
# every thread count; no fast-math assumptions about NaN or infinity, which must propagate
vectorised = njit(parallel=True, cache=True, nogil=True, fastmath={"reassoc", "contract"})


def kernel(func):
    """A parallel kernel (`prange` loops over independent outputs) that runs small calls on
    the calling thread alone. Call it from Python only: jitted code calls `.parallel`."""
    parallel = njit(parallel=True, cache=True, nogil=True)(func)

    @functools.wraps(func)
    def launch(*args):
        size = max((a.size for a in args if isinstance(a, np.ndarray)), default=0)
        threads = numba.get_num_threads()
        if size >= SERIAL_BELOW or threads == 1:
            return launch.parallel(*args)
        numba.set_num_threads(1)  # per thread in numba: other threads' launches keep theirs
        try:
            return launch.parallel(*args)
        finally:
            numba.set_num_threads(threads)
    launch.parallel = parallel
    return launch


#: filter widths compiled in as constants by `by_filter_width` (3x3 and 5x5 filters)
CONSTANT_WIDTHS = (3, 5)


def by_filter_width(make):
    """A kernel whose third argument is a filter's width, compiled with that width as a
    constant for the common ones (the loops over a filter row unrolled: LeNet's 5x5 im2row ran
    2.3x faster) and read at run time for any other. make(KW) returns the kernel's source with
    KW bound (0: the argument's width)."""
    builds: dict[int, object] = {}

    @functools.wraps(make)
    def launch(x, kh, kw, *rest):
        width = kw if kw in CONSTANT_WIDTHS else 0
        build = builds.get(width)
        if build is None:
            build = builds[width] = kernel(make(width))
        return build(x, kh, kw, *rest)
    return launch
