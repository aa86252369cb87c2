"""SGD with momentum, Caffe's form: V = momentum V + lr g; W -= V."""
from __future__ import annotations

from ..kernels import flat, kernels_for, scalar_like
from .base import Solver


class SGDSolver(Solver):
    applies_updates = True  # one kernel pass decays, steps and applies each parameter

    def regularize(self, info):
        pass  # in sgd_step

    def compute_update_value(self, i, info, rate):
        w, g = info.blob.data, info.blob.diff
        decay = self.param.weight_decay * info.decay_mult
        kernels_for(g).sgd_step(flat(w), flat(g), flat(self.history[i].data),
                                scalar_like(w, decay), self.param.regularization_type == "L1",
                                rate * info.lr_mult, self.param.momentum)
