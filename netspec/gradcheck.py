"""Numeric gradient checking, as Caffe's GradientChecker: central differences on every bottom
and parameter blob of a layer, compared with its backward, relative to the gradient's size.

The objective is sum(top.data * R) for a fixed random R per top (so every output position counts);
kinks (ReLU at 0, max ties) are avoided by the caller's choice of inputs or skipped by `kink`.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .blob import Blob
from .layers.base import Layer


@dataclass
class GradResult:
    name: str          # e.g. "bottom 0" or "param 1"
    empirical: float   # sum of |numeric gradient|
    computed: float    # sum of |analytic gradient|
    max_error: float   # worst |numeric - analytic| / max(|numeric|, |analytic|, 1)
    ok: bool

    def row(self, prefix: str = "") -> str:
        pct = 100.0 * self.max_error
        return (f"{prefix}{self.name:<10} empirical {self.empirical:12.6f}  computed "
                f"{self.computed:12.6f}  error {pct:.4f} %")


def check_layer(layer: Layer, bottom: list[Blob], top: list[Blob], *, step: float = 1e-6,
                threshold: float = 1e-5, check_bottom=None, seed: int = 0,
                kink: float | None = None, kink_range: float = 0.0,
                rerun_setup: bool = True) -> list[GradResult]:
    """Check d(objective)/d(every bottom in check_bottom, every param) of `layer`.

    Layers should be float64. `kink`: skip elements whose input lies within kink_range of it."""
    rng = np.random.default_rng(seed)
    if rerun_setup:
        layer.setup(bottom, top)
    stream = layer.rng.bit_generator.state  # replayed so random layers draw the same mask
    layer.forward(bottom, top)
    weights = [rng.standard_normal(t.shape) for t in top]

    def run_forward():
        layer.rng.bit_generator.state = stream
        layer.forward(bottom, top)

    def objective() -> float:
        run_forward()
        return float(sum((t.data * w).sum() for t, w in zip(top, weights)))

    def analytic():
        run_forward()
        for t, w in zip(top, weights):
            t.diff[...] = w
        for p in layer.blobs:
            p.diff[...] = 0
        for b in bottom:
            b.diff[...] = 0
        prop = [check_bottom is None or i in check_bottom for i in range(len(bottom))]
        layer.backward(top, prop, bottom)
        return [b.diff.copy() for b in bottom], [p.diff.copy() for p in layer.blobs]

    bottom_grads, param_grads = analytic()
    targets = [(f"bottom {i}", b, g) for i, (b, g) in enumerate(zip(bottom, bottom_grads))
               if check_bottom is None or i in check_bottom]
    targets += [(f"param {i}", p, g) for i, (p, g) in enumerate(zip(layer.blobs, param_grads))]
    results = []
    for name, blob, grad in targets:
        numeric = np.zeros_like(grad)
        flat, nflat = blob.data.reshape(-1), numeric.reshape(-1)
        skip = np.zeros(flat.size, dtype=bool)
        if kink is not None:
            skip = np.abs(flat - kink) <= kink_range
        for k in range(flat.size):
            if skip[k]:
                continue
            orig = flat[k]
            flat[k] = orig + step
            plus = objective()
            flat[k] = orig - step
            minus = objective()
            flat[k] = orig
            nflat[k] = (plus - minus) / (2 * step)
        g = grad.reshape(-1).copy()
        g[skip] = 0
        scale = np.maximum(np.maximum(np.abs(nflat), np.abs(g)), 1.0)
        err = float((np.abs(nflat - g) / scale).max()) if g.size else 0.0
        results.append(GradResult(name, float(np.abs(nflat).sum()), float(np.abs(g).sum()),
                                  err, err <= threshold))
    run_forward()
    return results
