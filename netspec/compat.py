"""pycaffe's process-wide settings, so ported scripts run unchanged: the mode and device
calls (netspec computes on the CPU) and set_random_seed (the default seed of nets and
solvers created afterwards that name none)."""
from __future__ import annotations

import numpy as np

from .log import logger

_seed: int | None = None


def set_mode_cpu() -> None:
    """netspec always computes on the CPU."""


def set_mode_gpu() -> None:
    logger.warning("netspec has no GPU backend: computing on the CPU")


def set_device(device_id: int) -> None:
    logger.warning("netspec has no GPU backend: set_device(%d) is ignored", device_id)


def set_random_seed(seed: int) -> None:
    """Seed nets and solvers created from now on that do not set their own seed."""
    global _seed
    _seed = int(seed)


def default_rng(seed: int | None = None) -> np.random.Generator:
    """A generator from `seed`, else from set_random_seed's seed, else from entropy."""
    return np.random.default_rng(seed if seed is not None else _seed)
