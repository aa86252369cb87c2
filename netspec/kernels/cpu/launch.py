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
import hashlib
from pathlib import Path

import numba
import numpy as np
from numba import njit


def prefer_wide_vectors() -> str | None:
    """Let LLVM use the whole AVX-512 register (16 floats) in netspec's loops, not half of it.

    LLVM tunes Intel's AVX-512 cores to prefer 256-bit vectors ("prefer-256-bit": the clock
    may drop when 512-bit units run, which pays off only in long loops). netspec's kernels are
    long loops of multiply-adds, which OpenBLAS runs 512 bits wide on the same cores: on a
    2-core Emerald Rapids VM, cifar10_quick's training step 60.3 -> 54.1 ms, the direct
    convolutions 1.2-1.3x faster. Applied before numba builds its code generator (the first
    compile or cache load); a NUMBA_CPU_FEATURES the user set is kept. numba keys its on-disk
    cache by these features, so a cache built without them is not reused. Returns the features
    set, or None where nothing changed (no AVX-512, or set by the user)."""
    import llvmlite.binding as ll
    from numba.core import codegen
    try:
        host = ll.get_host_cpu_features()
    except RuntimeError:  # LLVM cannot tell this CPU's features: leave numba's choice
        return None
    if numba.config.CPU_FEATURES is not None or not host.get("avx512f"):
        return None
    numba.config.CPU_FEATURES = codegen.get_host_cpu_features() + ",-prefer-256-bit"
    return numba.config.CPU_FEATURES


prefer_wide_vectors()


def key_cache_by_sources(folder: Path = Path(__file__).parent) -> str | None:
    """Keep the compiled kernels on disk in a folder named by a hash of every kernel source
    file (in the package's __pycache__), so that editing or upgrading any of them compiles
    afresh. numba keys each cached kernel by its own file alone, while kernels inline helpers
    and LLVM IR from the others (simd.py, sums.py, gemm.py): a changed helper would otherwise
    run in its old form from a stale cache, silently. A NUMBA_CACHE_DIR the user set is kept.
    Returns the folder set, or None."""
    if numba.config.CACHE_DIR:
        return None
    digest = hashlib.sha256()
    for path in sorted(folder.glob("*.py")):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    numba.config.CACHE_DIR = str(folder / "__pycache__" / f"kernels-{digest.hexdigest()[:16]}")
    return numba.config.CACHE_DIR


key_cache_by_sources()

#: calls whose largest array holds fewer elements than this run on the calling thread alone
SERIAL_BELOW = 1 << 17

#: plain jitted helpers that kernels call (no loops of their own to share out)
serial = njit(cache=True, nogil=True)

# parallel only, for the dot-product kernels (direct convolutions, matvec): reassociation lets
# LLVM vectorise their sums, whose order is still fixed at compile time, so one build serves
# every thread count; no fast-math assumptions about NaN or infinity, which must propagate
vectorised = njit(parallel=True, cache=True, nogil=True, fastmath={"reassoc", "contract"})
#: the loops that vectorised kernels share, compiled with the same flags
vectorised_helper = njit(cache=True, nogil=True, fastmath={"reassoc", "contract"}, inline="always")


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
