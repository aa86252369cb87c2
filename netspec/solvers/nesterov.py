"""Nesterov's accelerated gradient, Caffe's form:
V' = momentum V + lr g; W -= (1 + momentum) V' - momentum V."""
from __future__ import annotations

from .base import Solver


class NesterovSolver(Solver):
    def compute_update_value(self, i, info, rate):
        v = self.history[i].data
        previous = v.copy()
        v *= self.param.momentum
        v += rate * info.lr_mult * info.blob.diff
        info.blob.diff[...] = (1 + self.param.momentum) * v - self.param.momentum * previous
