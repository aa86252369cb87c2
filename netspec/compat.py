"""pycaffe's process-wide settings, so ported scripts run unchanged: set_random_seed (the
default seed of nets and solvers created afterwards that name none), and the multi-solver
queries (solver_count and solver_rank: the process's place among data-parallel workers).
The mode and device calls (set_mode_gpu, set_device) are in device.py."""
from __future__ import annotations

import numpy as np

_seed: int | None = None
_solver_count, _solver_rank, _multiprocess = 1, 0, False


def set_random_seed(seed: int) -> None:
    """Seed nets and solvers created from now on that do not set their own seed."""
    global _seed
    _seed = int(seed)


def default_rng(seed: int | None = None) -> np.random.Generator:
    """A generator from `seed`, else from set_random_seed's seed, else from entropy."""
    return np.random.default_rng(seed if seed is not None else _seed)


def has_nccl() -> bool:
    """netspec's ranks sum gradients over MPI (staged through the host), not NCCL."""
    return False


def solver_count() -> int:
    """How many solvers train together (1 unless set for data-parallel work)."""
    return _solver_count


def set_solver_count(count: int) -> None:
    global _solver_count
    if int(count) < 1:
        raise ValueError(f"solver count must be >= 1, got {count}")
    _solver_count = int(count)


def solver_rank() -> int:
    """This process's place among them (0 is the one that logs and snapshots)."""
    return _solver_rank


def set_solver_rank(rank: int) -> None:
    global _solver_rank
    if not 0 <= int(rank) < _solver_count:
        raise ValueError(f"solver rank must be in [0, {_solver_count}), got {rank}")
    _solver_rank = int(rank)


def set_multiprocess(multiprocess: bool) -> None:
    global _multiprocess
    _multiprocess = bool(multiprocess)
