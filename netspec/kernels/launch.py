"""How a parallel kernel is compiled and launched: small calls run on the calling thread.

Why: netspec lets numba's idle workers sleep (OMP_WAIT_POLICY=PASSIVE, threads.py), so that
another process on the cores is not starved; waking them costs ~40 us a launch on a 2-core VM,
more than a small kernel's whole work (LeNet's bias add over 64 x 500: 2 us on one thread,
45 us on two). Each kernel is compiled twice from the same source, once with its `prange`
loops parallel and once serial, and a call over fewer than SERIAL_BELOW elements (or from a
worker thread, where numba has one thread anyway) takes the serial one. The loops' iterations
are independent and nothing is fast-math, so both give the same bits."""
from __future__ import annotations

import functools
import types

import numba
import numpy as np
from numba import njit

#: calls whose largest array holds fewer elements than this run serially
SERIAL_BELOW = 1 << 17

serial = njit(cache=True, nogil=True)

# parallel only, for the dot-product kernels (direct convolutions, matvec): reassociation lets
# LLVM vectorise their sums, whose order is still fixed at compile time, so one build serves
# every thread count; no fast-math assumptions about NaN or infinity, which must propagate
vectorised = njit(parallel=True, cache=True, nogil=True, fastmath={"reassoc", "contract"})


def _renamed(func, suffix: str):
    """A copy of func under another name: numba's on-disk cache is keyed by the name, and the
    serial and parallel builds must not load each other's machine code."""
    copy = types.FunctionType(func.__code__, func.__globals__, func.__name__ + suffix,
                              func.__defaults__, func.__closure__)
    copy.__qualname__ = func.__qualname__ + suffix
    copy.__module__ = func.__module__
    return copy


def kernel(func):
    """A parallel kernel (`prange` loops over independent outputs) that runs small calls on
    the calling thread. Call it from Python only: jitted code calls `.parallel` or `.serial`."""
    parallel = njit(parallel=True, cache=True, nogil=True)(func)
    alone = serial(_renamed(func, "_serial"))

    @functools.wraps(func)
    def launch(*args):
        size = max((a.size for a in args if isinstance(a, np.ndarray)), default=0)
        if size < SERIAL_BELOW or numba.get_num_threads() == 1:
            return launch.serial(*args)
        return launch.parallel(*args)
    launch.parallel, launch.serial = parallel, alone
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
