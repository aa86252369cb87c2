"""Adam, Caffe's form (b1 = momentum, b2 = momentum2, eps = delta; two history sets, M then V):
M = b1 M + (1 - b1) g; V = b2 V + (1 - b2) g^2;
W -= lr sqrt(1 - b2^t) / (1 - b1^t) M / (sqrt(V) + eps), with t = iter + 1.

PyTorch's Adam adds eps to the bias-corrected sqrt(V / (1 - b2^t)) instead; the two agree as
eps -> 0 and differ slightly where V is tiny. This is Caffe's placement."""
from __future__ import annotations

import math

from ..kernels import flat, kernels_for
from .base import Solver


class AdamSolver(Solver):
    history_sets = 2

    def compute_update_value(self, i, info, rate):
        g = info.blob.diff
        b1, b2 = self.param.momentum, self.param.momentum2
        m = self.history[i].data
        v = self.history[len(self.net.learnable_params) + i].data
        t = self.iter + 1
        correction = math.sqrt(1 - b2 ** t) / (1 - b1 ** t)
        kernels_for(g).adam_step(flat(g), flat(m), flat(v), rate * info.lr_mult, b1, b2,
                                 correction, self.param.delta)
