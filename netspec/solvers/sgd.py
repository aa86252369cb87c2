"""Stochastic gradient descent with momentum, Caffe's form: V = momentum V + lr g; W -= V."""
from __future__ import annotations

from .base import Solver


class SGDSolver(Solver):
    def compute_update_value(self, i, info, rate):
        history = self.history[i].data
        local_rate = rate * info.lr_mult
        history *= self.param.momentum
        history += local_rate * info.blob.diff
        info.blob.diff[...] = history
