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
                rerun_setup: bool = True, samples: int | None = None) -> list[GradResult]:
    """Check d(objective)/d(every bottom in check_bottom, every param) of `layer`.

    Layers should be float64. `kink`: skip bottom elements within kink_range of it.
    `samples`: check at most this many randomly chosen elements per blob (large layers)."""
    rng = np.random.default_rng(seed)
    if rerun_setup:
        layer.setup(bottom, top)
    stream = layer.random_state()  # replayed so random layers draw the same mask
    layer.forward(bottom, top)
    weights = [rng.standard_normal(t.shape) for t in top]

    def run_forward():
        layer.set_random_state(stream)
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
        if kink is not None and name.startswith("bottom"):  # kinks are in the inputs
            skip = np.abs(flat - kink) <= kink_range
        if samples is not None and flat.size > samples:
            chosen = np.zeros(flat.size, dtype=bool)
            chosen[rng.choice(flat.size, samples, replace=False)] = True
            skip |= ~chosen
        for k in range(flat.size):
            if skip[k]:
                continue
            orig = flat[k]
            # through blob.data each time: on a device the host copy becomes the current one
            blob.data.reshape(-1)[k] = orig + step
            plus = objective()
            blob.data.reshape(-1)[k] = orig - step
            minus = objective()
            blob.data.reshape(-1)[k] = orig
            nflat[k] = (plus - minus) / (2 * step)
        g = grad.reshape(-1).copy()
        g[skip] = 0
        nflat[skip] = 0
        scale = np.maximum(np.maximum(np.abs(nflat), np.abs(g)), 1.0)
        err = float((np.abs(nflat - g) / scale).max()) if g.size else 0.0
        results.append(GradResult(name, float(np.abs(nflat).sum()), float(np.abs(g).sum()),
                                  err, err <= threshold))
    run_forward()
    return results


def blob_label(layer: Layer, kind: str, index: int, bottom_names: list[str]) -> str:
    """MatConvNet-style names: W and b for a weight/bias pair, else the blob's own name."""
    if kind == "param":
        if len(layer.blobs) <= 2 and layer.type not in ("BatchNorm", "PReLU"):
            return "Wb"[index]
        return f"param{index}"
    return f"d{bottom_names[index]}"


def check_net(net, layer_names=None, *, samples: int = 40, threshold: float = 1e-4,
              step: float = 1e-6, seed: int = 0):
    """Check layers of a (float64) net on the inputs they see in a forward pass: each layer's
    bottoms are copied just before it runs (in-place layers overwrite them). Yields
    (layer name, blob label, GradResult); data layers and metrics are skipped. Elements within
    10 steps of 0 (ReLU's and |x|'s kink) are left out."""
    for i, layer in enumerate(net.layers):
        wanted_layer = (not layer_names or layer.name in layer_names) and not layer.is_data \
            and layer.type not in ("Accuracy", "ArgMax", "Split")
        if wanted_layer:
            bottoms = []
            for b in net.bottom_ids[i]:
                copy = Blob(b.shape, b.dtype)
                copy.data[...] = b.data
                bottoms.append(copy)
            tops = [Blob((), b.dtype) for _ in net.top_ids[i]]
            layer.reshape(bottoms, tops)
            wanted = [j for j in range(len(bottoms)) if layer.allow_force_backward(j)]
            results = check_layer(layer, bottoms, tops, check_bottom=wanted, samples=samples,
                                  threshold=threshold, step=step, seed=seed, rerun_setup=False,
                                  kink=0.0, kink_range=10 * step)
            layer.reshape(net.bottom_ids[i], net.top_ids[i])
            for r in results:
                kind, index = r.name.split()
                yield layer.name, blob_label(layer, kind, int(index), net.layer_bottoms[i]), r
        layer.forward(net.bottom_ids[i], net.top_ids[i])


def fill_inputs(net, rng: np.random.Generator) -> None:
    """Random data for a net's Input blobs: class indices for blobs that feed a label input
    (a bottom that takes no gradient), standard normals otherwise."""
    for name in net.inputs:
        blob = net.blobs[name]
        classes = None
        for i, names in enumerate(net.layer_bottoms):
            for j, bottom in enumerate(names):
                if bottom == name and not net.layers[i].allow_force_backward(j):
                    first = net.bottom_ids[i][0]
                    classes = first.shape[1] if first.data.ndim > 1 else 2
        if classes:
            blob.data[...] = rng.integers(0, classes, size=blob.shape)
        else:
            blob.data[...] = rng.standard_normal(blob.shape)
