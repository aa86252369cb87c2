"""RMSProp, Caffe's form: H = d H + (1 - d) g^2; W -= lr g / (sqrt(H) + delta), d = rms_decay.
No momentum."""
from __future__ import annotations

import numpy as np

from .base import Solver


class RMSPropSolver(Solver):
    no_momentum = True

    def compute_update_value(self, i, info, rate):
        g = info.blob.diff
        h = self.history[i].data
        d = self.param.rms_decay
        h *= d
        h += (1 - d) * g * g
        info.blob.diff[...] = rate * info.lr_mult * g / (np.sqrt(h) + self.param.delta)
