"""AdaGrad, Caffe's form: H += g^2; W -= lr g / (sqrt(H) + delta). No momentum."""
from __future__ import annotations

import numpy as np

from .base import Solver


class AdaGradSolver(Solver):
    no_momentum = True

    def compute_update_value(self, i, info, rate):
        g = info.blob.diff
        h = self.history[i].data
        h += g * g
        info.blob.diff[...] = rate * info.lr_mult * g / (np.sqrt(h) + self.param.delta)
