"""Data-parallel training over MPI (`mpiexec -n N netspec train ...`), as Caffe's multi-GPU
solvers: every process holds the whole net, reads its own shard of the data (Data layers
stride the source by rank), and after backward the parameter gradients are summed across
processes and divided by N before the update, which every process then applies alike, so the
weights stay identical without further traffic.

The gradient sum overlaps backward: parameters are grouped into buckets in the order
backward finishes them, and each bucket's non-blocking allreduce starts as soon as its last
gradient is final (PyTorch DDP's scheme; Caffe's NCCL callbacks do the same per layer).

A single process never imports mpi4py: `start()` looks at the launcher's environment first."""
from __future__ import annotations

import os

import numpy as np

#: the environment variables MPI launchers set for every process (MPICH/hydra, Open MPI,
#: PMIx, Slurm)
_SIZE_VARIABLES = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "PMIX_SIZE", "MPI_LOCALNRANKS")
BUCKET_BYTES = 4 << 20
#: the watcher (see World.watch): reads until the rank's end of the pipe closes; the first
#: rank of the job to end unplanned takes the marker file and is the one named (mpiexec then
#: kills the others, whose watchers stay quiet)
_WATCHER = """
import os, sys, time
fd, line, marker, said = int(sys.argv[1]), sys.argv[2], sys.argv[3], b""
while chunk := os.read(fd, 64):
    said += chunk
if said == b"failed":  # the rank said why itself and left the marker: clear it up later
    time.sleep(10)
    try:
        os.remove(marker)
    except OSError:
        pass
elif said != b"done":
    try:
        os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        sys.exit()
    print(line, file=sys.stderr, flush=True)
    os.close(2)
    time.sleep(10)  # the other ranks' watchers look for the marker meanwhile
    os.remove(marker)
"""


def launched_size() -> int:
    """How many processes the launcher started (1 without one)."""
    for name in _SIZE_VARIABLES:
        value = os.environ.get(name, "")
        if value.isdigit():
            return int(value)
    return 1


def start():
    """The MPI world when this process is one of several, else None (mpi4py not imported).
    Tells netspec.solver_count() / solver_rank(), which the data layers shard by."""
    if launched_size() < 2:
        return None
    try:
        from mpi4py import MPI
    except ImportError:
        from .errors import NetspecError
        raise NetspecError("started by mpiexec with several processes, but mpi4py is not "
                           "installed: pip install 'netspec[mpi]'") from None
    from . import compat
    world = World(MPI)
    world.watch()
    compat.set_solver_count(world.size)
    compat.set_solver_rank(world.rank)
    return world


class World:
    """This process's place among the workers, and the collective operations training needs."""

    def __init__(self, MPI):
        self.MPI = MPI
        self.comm = MPI.COMM_WORLD
        self.rank, self.size = self.comm.Get_rank(), self.comm.Get_size()
        local = self.comm.Split_type(MPI.COMM_TYPE_SHARED)
        self.local_rank = local.Get_rank()
        local.Free()
        self._buckets: list[_Bucket] = []
        self._last_use: dict[int, list[_Bucket]] = {}
        #: send buckets during backward (NETSPEC_MPI_OVERLAP=0: all after it, to measure)
        self.overlap = os.environ.get("NETSPEC_MPI_OVERLAP", "1") != "0"

    # -- start and faults ------------------------------------------------------------------------
    def watch(self) -> None:
        """A rank killed outright (kill -9, the OOM killer) cannot say so, and mpiexec only
        names its pid: a small watcher process, outside the launcher's process group, waits
        on a pipe from this rank and names the rank if the pipe closes without "done"."""
        import atexit
        import socket
        import subprocess
        import sys
        import tempfile
        token = self.comm.bcast(f"netspec-mpi-{os.getpid()}-{os.urandom(4).hex()}", root=0)
        self._marker = os.path.join(tempfile.gettempdir(), f"{token}.failed")
        read_end, self._watch_fd = os.pipe()
        line = (f"error: rank {self.rank} of {self.size} (pid {os.getpid()} on "
                f"{socket.gethostname()}) ended without finishing (killed by a signal?): the "
                f"job stops")
        subprocess.Popen([sys.executable, "-c", _WATCHER, str(read_end), line, self._marker],
                         pass_fds=(read_end,), start_new_session=True,
                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
        os.close(read_end)
        atexit.register(self.unwatch)

    def unwatch(self, word: bytes = b"done") -> None:
        """This rank ends as planned ("done"), or has reported its own error ("failed": its
        watcher removes the marker once the others' watchers have seen it): quiet either way."""
        if getattr(self, "_watch_fd", None) is not None:
            os.write(self._watch_fd, word)
            os.close(self._watch_fd)
            self._watch_fd = None

    def broadcast(self, arrays) -> None:
        """Rank 0's values of `arrays` (weights, solver history) to every rank, in place."""
        for a in arrays:
            self.comm.Bcast(a, root=0)

    def fail(self, error: BaseException, debug: bool = False) -> None:
        """This rank failed: say so in one line naming it, then end every process of the job
        (the others must not wait forever in the next gradient sum). Snapshots already
        written are whole files (they are written atomically)."""
        import sys
        import traceback

        from .errors import NetspecError
        if debug:
            traceback.print_exception(error)
        text = str(error) if isinstance(error, NetspecError) else \
            f"{type(error).__name__}: {error}"
        sys.stdout.flush()
        print(f"error: rank {self.rank} of {self.size}: {text}", file=sys.stderr, flush=True)
        try:  # the ranks mpiexec now stops are not the story: their watchers stay quiet
            os.close(os.open(self._marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
            self.unwatch(b"failed")
        except OSError:
            self.unwatch()
        self.comm.Abort(1)

    def check_same(self, facts: list[tuple[str, str]]) -> None:
        """Before anything is exchanged: every rank must train the same net with the same
        schedule, else the job would hang (other max_iter), die in MPI (other shapes) or be
        silently wrong (iter_size on one rank). Rank 0 ends the job naming the first rank
        and the first fact that differ."""
        from .errors import NetspecError
        everyone = self.comm.allgather(facts)
        mine = dict(everyone[0])
        for rank, theirs in enumerate(everyone[1:], 1):
            if theirs == everyone[0]:
                continue
            other = dict(theirs)
            key = next((k for k in dict.fromkeys([*mine, *other]) if mine.get(k) != other.get(k)))
            if self.rank == 0:
                self.fail(NetspecError(
                    f"rank {rank} differs from rank 0 in {key}: {other.get(key, 'not set')} "
                    f"(rank 0: {mine.get(key, 'not set')}); every rank must train the same net "
                    f"with the same solver settings"))
            self.comm.Barrier()  # (rank 0 ends the job)

    def agree(self, request: str) -> str:
        """One action for all ranks from each one's signal request: stop over snapshot over
        none, so that every rank stops (or snapshots) at the same iteration."""
        order = ("none", "snapshot", "stop")
        return order[self.comm.allreduce(order.index(request), op=self.MPI.MAX)]

    # -- the gradient sum ------------------------------------------------------------------------
    def plan(self, net) -> None:
        """Buckets of parameters in the order backward finishes them: a parameter's gradient is
        final once the first layer that uses it (in forward order) has run backward."""
        first_use: dict[int, int] = {}
        for i, layer in enumerate(net.layers):
            for blob in layer.blobs:
                first_use.setdefault(id(blob), i)
        learnable = {id(p.blob): p.blob for p in net.learnable_params}
        order = sorted(learnable, key=lambda k: -first_use.get(k, 0))
        self._buckets, self._last_use = [], {}
        bucket: list = []
        size = 0
        for key in order:
            bucket.append(learnable[key])
            size += learnable[key].diff.nbytes
            if size >= BUCKET_BYTES:
                self._buckets.append(_Bucket(bucket))
                bucket, size = [], 0
        if bucket:
            self._buckets.append(_Bucket(bucket))
        for b in self._buckets:
            ready_at = min(first_use.get(id(blob), 0) for blob in b.blobs)
            self._last_use.setdefault(ready_at, []).append(b)

    def layer_done(self, index: int) -> None:
        """Called after layer `index`'s backward: start the buckets it completed, and let MPI
        progress the ones in flight."""
        for bucket in self._last_use.get(index, ()):
            bucket.start(self.comm, self.MPI)
        for bucket in self._buckets:
            bucket.progress()

    def finish_gradients(self) -> None:
        """Wait for every bucket (starting any backward did not reach), then set each gradient
        to the mean over the processes."""
        for bucket in self._buckets:
            bucket.start(self.comm, self.MPI)
        for bucket in self._buckets:
            bucket.finish(1.0 / self.size)


class _Bucket:
    """Parameters whose gradients travel together in one contiguous buffer."""

    def __init__(self, blobs):
        self.blobs = blobs
        self.buffer = np.empty(sum(b.diff.size for b in blobs), dtype=blobs[0].diff.dtype)
        self.request = None

    def start(self, comm, MPI) -> None:
        if self.request is not None:
            return
        offset = 0
        for b in self.blobs:
            self.buffer[offset:offset + b.diff.size] = b.diff.ravel()
            offset += b.diff.size
        self.request = comm.Iallreduce(MPI.IN_PLACE, self.buffer, op=MPI.SUM)

    def progress(self) -> None:
        if self.request is not None:
            self.request.Test()

    def finish(self, scale: float) -> None:
        self.request.Wait()
        self.request = None
        offset = 0
        for b in self.blobs:
            np.multiply(self.buffer[offset:offset + b.diff.size].reshape(b.diff.shape), scale,
                        out=b.diff)
            offset += b.diff.size
