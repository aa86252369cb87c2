"""AdaDelta, Caffe's form (m = momentum; two history sets, H then H2):
H = m H + (1 - m) g^2; u = g sqrt((H2 + delta) / (H + delta)); H2 = m H2 + (1 - m) u^2;
W -= lr u."""
from __future__ import annotations

import numpy as np

from .base import Solver


class AdaDeltaSolver(Solver):
    history_sets = 2

    def compute_update_value(self, i, info, rate):
        g = info.blob.diff
        m, delta = self.param.momentum, self.param.delta
        h = self.history[i].data
        h2 = self.history[len(self.net.learnable_params) + i].data
        h *= m
        h += (1 - m) * g * g
        u = g * np.sqrt((h2 + delta) / (h + delta))
        h2 *= m
        h2 += (1 - m) * u * u
        info.blob.diff[...] = rate * info.lr_mult * u
