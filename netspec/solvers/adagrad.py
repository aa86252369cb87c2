"""AdaGrad, Caffe's form: H += g^2; W -= lr g / (sqrt(H) + delta). No momentum."""
from __future__ import annotations

from ..kernels import flat, kernels_for
from .base import Solver


class AdaGradSolver(Solver):
    no_momentum = True

    def compute_update_value(self, i, info, rate):
        g = info.blob.diff
        kernels_for(g).adagrad_step(flat(g), flat(self.history[i].data), rate * info.lr_mult,
                                    self.param.delta)
