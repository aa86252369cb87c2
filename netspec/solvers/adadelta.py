"""AdaDelta, Caffe's form (m = momentum; two history sets, H then H2):
H = m H + (1 - m) g^2; u = g sqrt((H2 + delta) / (H + delta)); H2 = m H2 + (1 - m) u^2;
W -= lr u."""
from __future__ import annotations

from ..kernels import flat, kernels_for
from .base import Solver


class AdaDeltaSolver(Solver):
    history_sets = 2

    def compute_update_value(self, i, info, rate):
        g = info.blob.diff
        h = self.history[i].data
        h2 = self.history[len(self.net.learnable_params) + i].data
        kernels_for(g).adadelta_step(flat(g), flat(h), flat(h2), rate * info.lr_mult,
                                     self.param.momentum, self.param.delta)
