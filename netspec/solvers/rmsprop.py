"""RMSProp, Caffe's form: H = d H + (1 - d) g^2; W -= lr g / (sqrt(H) + delta), d = rms_decay.
No momentum."""
from __future__ import annotations

from ..kernels import flat, kernels_for
from .base import Solver


class RMSPropSolver(Solver):
    no_momentum = True

    def compute_update_value(self, i, info, rate):
        g = info.blob.diff
        kernels_for(g).rmsprop_step(flat(g), flat(self.history[i].data), rate * info.lr_mult,
                                    self.param.rms_decay, self.param.delta)
