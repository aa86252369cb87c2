"""SGD with momentum, Caffe's form: V = momentum V + lr g; W -= V."""
from __future__ import annotations

from ..kernels import flat, kernels_for
from .base import Solver


class SGDSolver(Solver):
    def compute_update_value(self, i, info, rate):
        g = info.blob.diff
        kernels_for(g).momentum_step(flat(g), flat(self.history[i].data), rate * info.lr_mult,
                                     self.param.momentum)
