"""SGD with momentum, Caffe's form: V = momentum V + lr g; W -= V."""
from __future__ import annotations

from .base import Solver


class SGDSolver(Solver):
    def compute_update_value(self, i, info, rate):
        v = self.history[i].data
        v *= self.param.momentum
        v += rate * info.lr_mult * info.blob.diff
        info.blob.diff[...] = v
