"""Solvers: the shared loop (base.Solver) and one small class per update rule."""
from __future__ import annotations

import os

import numpy as np

from ..proto import netspec_pb2 as pb
from ..spec import read_solver
from .adadelta import AdaDeltaSolver
from .adagrad import AdaGradSolver
from .adam import AdamSolver
from .base import Solver, default_solver
from .nesterov import NesterovSolver
from .rmsprop import RMSPropSolver
from .settings import solver_type
from .sgd import SGDSolver

SOLVERS = {"SGD": SGDSolver, "Nesterov": NesterovSolver, "AdaGrad": AdaGradSolver,
           "RMSProp": RMSPropSolver, "AdaDelta": AdaDeltaSolver, "Adam": AdamSolver}


def get_solver(solver, dtype=np.float32, **kwargs) -> Solver:
    """The solver class the file's `type` (or legacy `solver_type` enum) names, constructed.
    An unknown type is reported by the settings check with the file and line."""
    param = solver if isinstance(solver, pb.SolverParameter) else read_solver(os.fspath(solver))
    cls = SOLVERS.get(solver_type(param), Solver)
    return cls(solver, dtype, **kwargs)


__all__ = ["Solver", "get_solver", "default_solver", "SOLVERS", *[c.__name__ for c in
                                                                   SOLVERS.values()]]
