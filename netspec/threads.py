"""One thread setting for BLAS and the compiled kernels (`--threads N`, OMP_NUM_THREADS).

Two thread pools share the cores: OpenBLAS's for the GEMMs and numba's for the kernels. Left
at their defaults, each pool's idle workers spin for a long while after their work (OpenBLAS
about 2^28 cycles), taking the cores the other pool needs next, and far worse when another
process holds a core (a LeNet pass went from 33 ms to 1.7 s). So, before numpy loads OpenBLAS,
netspec asks both to sleep when idle (`prepare_environment`; values a user set are kept), and
`set_threads` sets both pools' sizes through threadpoolctl and numba."""
from __future__ import annotations

import os
import sys

#: what netspec sets, unless the user did, before OpenBLAS and OpenMP read their environment
QUIET_WORKERS = {"OPENBLAS_THREAD_TIMEOUT": "4", "OMP_WAIT_POLICY": "PASSIVE"}

_blas_spins = False  # True when OpenBLAS was loaded before netspec could quiet its workers
_configured = False


def prepare_environment() -> None:
    """Called by `import netspec` first thing: quiet idle workers if OpenBLAS is not loaded yet."""
    global _blas_spins
    _blas_spins = "numpy" in sys.modules and "OPENBLAS_THREAD_TIMEOUT" not in os.environ
    for key, value in QUIET_WORKERS.items():
        os.environ.setdefault(key, value)


def default_threads() -> int:
    """OMP_NUM_THREADS when set, else every core this process may run on."""
    value = os.environ.get("OMP_NUM_THREADS", "")
    if value.isdigit() and int(value) > 0:
        return int(value)
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def set_threads(n: int | None = None) -> int:
    """Use n threads (default: `default_threads()`) for the kernels and for BLAS. If numpy was
    imported before netspec, OpenBLAS's workers spin and BLAS gets one thread (the kernels
    keep n): two spinning pools on the same cores are slower than one. n worker threads take
    the pieces a layer cuts its work into (kernels/workers.py)."""
    global _configured
    import numba
    from threadpoolctl import threadpool_limits
    from .kernels.cpu.workers import set_workers
    _configured = True
    n = max(1, n or default_threads())
    numba.set_num_threads(min(n, numba.config.NUMBA_NUM_THREADS))
    blas = 1 if _blas_spins else n
    threadpool_limits(limits=blas, user_api="blas")
    set_workers(n, blas)
    return n


def configure_once() -> None:
    """The default setting, applied when the first kernel runs unless set_threads came first."""
    if not _configured:
        set_threads()
