"""Weight fillers with Caffe's formulas (FillerParameter: constant, uniform, gaussian, xavier, msra)."""
from __future__ import annotations

import numpy as np

from .proto import netspec_pb2 as pb


def _fans(shape: tuple[int, ...]) -> tuple[int, int]:
    """Caffe's fan_in = count / shape[0], fan_out = count / shape[1]."""
    count = int(np.prod(shape))
    fan_in = count // shape[0]
    fan_out = count // shape[1] if len(shape) > 1 else count
    return fan_in, fan_out


def _variance_n(p: pb.FillerParameter, shape) -> float:
    fan_in, fan_out = _fans(shape)
    if p.variance_norm == pb.FillerParameter.AVERAGE:
        return (fan_in + fan_out) / 2.0
    if p.variance_norm == pb.FillerParameter.FAN_OUT:
        return float(fan_out)
    return float(fan_in)


def _constant(p, shape, rng):
    return np.full(shape, p.value)


def _uniform(p, shape, rng):
    return rng.uniform(p.min, p.max, size=shape)


def _gaussian(p, shape, rng):
    values = rng.normal(p.mean, p.std, size=shape)
    if p.sparse >= 0:  # each output keeps on average `sparse` nonzero inputs
        keep = rng.random(size=shape) < p.sparse / shape[0]
        values = values * keep
    return values


def _xavier(p, shape, rng):
    scale = np.sqrt(3.0 / _variance_n(p, shape))
    return rng.uniform(-scale, scale, size=shape)


def _msra(p, shape, rng):
    return rng.normal(0.0, np.sqrt(2.0 / _variance_n(p, shape)), size=shape)


FILLERS = {"constant": _constant, "uniform": _uniform, "gaussian": _gaussian,
           "xavier": _xavier, "msra": _msra}


def fill(array: np.ndarray, filler: pb.FillerParameter, rng: np.random.Generator) -> None:
    """Fill `array` in place as Caffe's filler of `filler.type` would."""
    if filler.type not in FILLERS:
        raise ValueError(f"unknown filler type '{filler.type}' (known: {', '.join(FILLERS)})")
    if filler.type in ("xavier", "msra") and filler.sparse != -1:
        raise ValueError(f"filler '{filler.type}' does not support sparse")
    for field in ("value", "min", "max", "mean", "std"):
        if not np.isfinite(getattr(filler, field)):
            raise ValueError(f"filler '{filler.type}': {field} is {getattr(filler, field)}, "
                             f"not a finite number")
    if filler.type == "uniform" and filler.min > filler.max:
        raise ValueError(f"filler 'uniform': min {filler.min:g} is above max {filler.max:g}")
    if filler.type == "gaussian" and filler.std < 0:
        raise ValueError(f"filler 'gaussian': std {filler.std:g} is negative")
    if array.size:
        array[...] = FILLERS[filler.type](filler, array.shape, rng)
