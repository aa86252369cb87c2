"""Validated view of a SolverParameter; errors name the solver file, line and field."""
from __future__ import annotations

import difflib

from pydantic import Field, model_validator

from ..params import ParamView
from ..proto import netspec_pb2 as pb
from .lr_policy import POLICIES

TYPES = ("SGD", "Nesterov", "AdaGrad", "RMSProp", "AdaDelta", "Adam")
_LEGACY = {"SGD": "SGD", "NESTEROV": "Nesterov", "ADAGRAD": "AdaGrad", "RMSPROP": "RMSProp",
           "ADADELTA": "AdaDelta", "ADAM": "Adam"}


def solver_type(param: pb.SolverParameter) -> str:
    """`type`, or the legacy `solver_type` enum upgraded to its type string, as Caffe does."""
    if not param.HasField("type") and param.HasField("solver_type"):
        return _LEGACY[pb.SolverParameter.SolverType.Name(param.solver_type)]
    return param.type


class SolverSettings(ParamView):
    base_lr: float = Field(ge=0)
    lr_policy: str = ""
    gamma: float = 0.0
    power: float = 0.0
    stepsize: int = 0
    stepvalue: list[int] = []
    momentum: float = Field(0.0, ge=0)
    weight_decay: float = Field(0.0, ge=0)
    regularization_type: str = "L2"
    clip_gradients: float = -1.0
    max_iter: int = Field(0, ge=0)
    iter_size: int = Field(1, ge=1)
    display: int = Field(0, ge=0)
    average_loss: int = Field(1, ge=1)
    test_interval: int = Field(0, ge=0)
    test_iter: list[int] = []
    snapshot: int = Field(0, ge=0)
    type: str = "SGD"
    solver_type: str = "SGD"
    delta: float = Field(1e-8, gt=0)
    rms_decay: float = Field(0.99, ge=0, lt=1)
    momentum2: float = Field(0.999, ge=0, lt=1)

    @model_validator(mode="after")
    def _consistent(self):
        if self.lr_policy not in POLICIES:
            raise ValueError(f"lr_policy must be one of {', '.join(POLICIES)}. "
                             f"Received: lr_policy={self.lr_policy!r}")
        if self.lr_policy in ("step", "sigmoid") and self.lr_policy == "step" and self.stepsize <= 0:
            raise ValueError(f"stepsize must be > 0 for lr_policy 'step'. "
                             f"Received: stepsize={self.stepsize}")
        if self.lr_policy == "multistep":
            if not self.stepvalue:
                raise ValueError("stepvalue must list the iterations for lr_policy 'multistep'")
            if any(b <= a for a, b in zip(self.stepvalue, self.stepvalue[1:])):
                raise ValueError(f"stepvalue must be increasing. Received: {self.stepvalue}")
        if self.lr_policy == "inv" and self.gamma < 0:
            raise ValueError(f"gamma must be >= 0 for lr_policy 'inv' (1 + gamma * iter would "
                             f"reach 0). Received: gamma={self.gamma}")
        if self.lr_policy == "poly" and self.max_iter <= 0:
            raise ValueError("max_iter must be > 0 for lr_policy 'poly'")
        if self.regularization_type not in ("L1", "L2"):
            raise ValueError(f"regularization_type must be L1 or L2. "
                             f"Received: {self.regularization_type!r}")
        kind = self.type if "type" in self.set_fields or "solver_type" not in self.set_fields \
            else _LEGACY[self.solver_type]
        if kind not in TYPES:
            close = difflib.get_close_matches(kind, TYPES, n=1, cutoff=0.5) or [
                t for t in TYPES if t.lower() == kind.lower()]
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ValueError(f"type {kind!r} is not a solver type{hint}; known: "
                             f"{', '.join(TYPES)}")
        if kind in ("AdaGrad", "RMSProp") and self.momentum != 0:
            raise ValueError(f"momentum cannot be used with {kind} (Caffe's rule). "
                             f"Received: momentum={self.momentum}")
        if any(n <= 0 for n in self.test_iter):
            raise ValueError(f"test_iter must be > 0. Received: {self.test_iter}")
        return self
