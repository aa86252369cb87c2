"""CPU worker threads: a layer's work cut into independent pieces, run on every core at once.

Why: OpenBLAS spreads one GEMM over the cores poorly for a convolution's shapes (a few dozen
filter rows against thousands of columns), and im2col / col2im are memory moves that gain
most from staying on one core's cache. Cutting the batch into pieces of whole images, each
piece doing its im2col, single-threaded GEMM and col2im on one core, ran cifar10_quick's
convolutions 1.3-1.5x faster than one multi-threaded GEMM over the whole batch.

Pieces are cut by shape alone, never by the thread count, and whatever the pieces produce
together (a weight gradient) is summed by the caller in piece order: results are the same
with 1 or 16 threads and whichever thread takes which piece. Inside a piece, BLAS and numba
run single-threaded (numba's thread count is per thread; BLAS's is set around each run)."""
from __future__ import annotations

import math
import threading
from concurrent.futures import ThreadPoolExecutor, wait

#: pieces hold at least this many GEMM columns (output positions): narrower GEMMs lose speed
MIN_COLUMNS = 1024
#: and this many im2col elements: a smaller piece costs more to hand over than it gains
#: (LeNet's conv1, 25 rows x 576 columns an image, ran 1.3x faster in pieces of 16-32 than of 4)
MIN_ELEMENTS = 1 << 18
#: and a batch is cut into at most this many pieces (more only add hand-over cost)
MAX_PIECES = 16

_pool: ThreadPoolExecutor | None = None
_threads = 1
_blas = None  # threadpoolctl's controllers of the loaded BLAS libraries


def _single_threaded_worker() -> None:
    import numba
    numba.set_num_threads(1)


def set_workers(n: int, blas_threads: int) -> None:
    """n threads take the pieces, the caller's and n - 1 workers (called by
    threads.set_threads); BLAS goes back to blas_threads after each run."""
    global _pool, _threads, _blas
    from threadpoolctl import ThreadpoolController
    if _pool is not None and _threads != n:
        _pool.shutdown(wait=True)
        _pool = None
    _threads = n
    _blas = (ThreadpoolController().select(user_api="blas").lib_controllers, blas_threads)
    if n > 1 and _pool is None and _thread_safe_kernels():
        _pool = ThreadPoolExecutor(n - 1, thread_name_prefix="netspec-worker",
                                   initializer=_single_threaded_worker)


def _thread_safe_kernels() -> bool:
    """numba's default 'workqueue' layer aborts when two threads launch kernels at once;
    OpenMP and TBB allow it. Without either, pieces run one after another."""
    import numba
    try:
        from numba.np.ufunc import parallel
        parallel._launch_threads()  # loads the layer numba will use (no-op once loaded)
        return numba.threading_layer() in ("omp", "tbb")
    except Exception:  # noqa: BLE001 - any doubt: run pieces one after another
        return False


def piece_size(images: int, plane: int, rows: int) -> int:
    """Images per piece for a batch of `images` whose GEMM has `plane` columns of `rows` per
    image."""
    return max(1, math.ceil(MIN_COLUMNS / max(1, plane)),
               math.ceil(MIN_ELEMENTS / max(1, plane * rows)), math.ceil(images / MAX_PIECES))


def run(task, start: int, stop: int, size: int) -> None:
    """task(index, first, last) for each piece [first, last) of [start, stop) of `size` items:
    the calling thread and n - 1 workers take the pieces one by one from a shared list, each
    with one-thread BLAS and kernels (waking fewer sleeping threads: 4 empty pieces took 94 us
    handed to the pool, most of it waking workers); one piece runs here with every core."""
    pieces = [(k, s, min(stop, s + size)) for k, s in enumerate(range(start, stop, size))]
    if len(pieces) == 1 or _pool is None:
        for piece in pieces:
            task(*piece)
        return
    import numba
    controllers, restore = _blas
    claim, lock = iter(pieces), threading.Lock()

    def take_pieces():
        while True:
            with lock:
                piece = next(claim, None)
            if piece is None:
                return
            task(*piece)

    kernel_threads = numba.get_num_threads()
    for lib in controllers:
        lib.set_num_threads(1)
    numba.set_num_threads(1)
    try:
        helpers = [_pool.submit(take_pieces) for _ in range(min(_threads, len(pieces)) - 1)]
        try:
            take_pieces()
        finally:
            wait(helpers)  # every piece finished (or failed) before BLAS gets its threads back
    finally:
        numba.set_num_threads(kernel_threads)
        for lib in controllers:
            lib.set_num_threads(restore)
    for helper in helpers:
        helper.result()  # a helper's error, if any
