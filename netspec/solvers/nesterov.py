"""Nesterov's accelerated gradient, Caffe's form:
V' = momentum V + lr g; W -= (1 + momentum) V' - momentum V."""
from __future__ import annotations

from ..kernels import flat, kernels_for
from .base import Solver


class NesterovSolver(Solver):
    def compute_update_value(self, i, info, rate):
        g = info.blob.diff
        kernels_for(g).nesterov_step(flat(g), flat(self.history[i].data), rate * info.lr_mult,
                                     self.param.momentum)
