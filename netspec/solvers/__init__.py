"""Solvers: the shared loop (base.Solver) and one small class per update rule."""
from __future__ import annotations

import numpy as np

from .base import Solver, default_solver
from .sgd import SGDSolver

SOLVERS = {"SGD": SGDSolver}


def get_solver(solver, dtype=np.float32, **kwargs) -> Solver:
    """The solver class the file's `type` (or legacy `solver_type`) names, constructed."""
    return SGDSolver(solver, dtype, **kwargs)  # the settings view refuses other types for now


__all__ = ["Solver", "SGDSolver", "get_solver", "default_solver", "SOLVERS"]
