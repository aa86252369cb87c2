"""Adam, Caffe's form (b1 = momentum, b2 = momentum2, eps = delta; two history sets, M then V):
M = b1 M + (1 - b1) g; V = b2 V + (1 - b2) g^2;
W -= lr sqrt(1 - b2^t) / (1 - b1^t) M / (sqrt(V) + eps), with t = iter + 1.

PyTorch's Adam adds eps to the bias-corrected sqrt(V / (1 - b2^t)) instead; the two agree as
eps -> 0 and differ slightly where V is tiny. This is Caffe's placement."""
from __future__ import annotations

import math

import numpy as np

from .base import Solver


class AdamSolver(Solver):
    history_sets = 2

    def compute_update_value(self, i, info, rate):
        g = info.blob.diff
        b1, b2 = self.param.momentum, self.param.momentum2
        m = self.history[i].data
        v = self.history[len(self.net.learnable_params) + i].data
        m *= b1
        m += (1 - b1) * g
        v *= b2
        v += (1 - b2) * g * g
        t = self.iter + 1
        correction = math.sqrt(1 - b2 ** t) / (1 - b1 ** t)
        info.blob.diff[...] = rate * info.lr_mult * correction * m / (np.sqrt(v) + self.param.delta)
