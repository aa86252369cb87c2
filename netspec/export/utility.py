"""InnerProduct, Softmax, Split and the shape and plumbing layers (Flatten, Reshape, Concat,
Slice, Eltwise, Tile, Crop, Reduction, ArgMax, Embed, Silence, Parameter)."""
from __future__ import annotations

from onnx import TensorProto

from . import ExportError, converter


@converter("InnerProduct")
def inner_product(g, layer, bottoms, tops):
    """axis 1: Flatten + Gemm (the form every runtime fuses); a later axis: Reshape to
    (..., K) + MatMul (+ Add). Weights stay in Caffe's layout, (num_output, K) or transposed."""
    p, x = layer.p, bottoms[0]
    shape = g.shape(x)
    weight = g.param(layer, 0)
    bias = g.param(layer, 1) if p.bias_term else None
    if layer.axis == 1:
        if len(shape) != 2:
            x = g.node("Flatten", [x], axis=1)
        g.node("Gemm", [x, weight] + ([bias] if bias else []), tops[0],
               transB=0 if p.transpose else 1)
        return
    k = 1
    for d in shape[layer.axis:]:
        k *= d
    x = g.reshape(x, [*shape[:layer.axis], k])
    if not p.transpose:
        weight = g.node("Transpose", [weight], perm=[1, 0])
    y = g.node("MatMul", [x, weight], None if bias else tops[0])
    if bias:
        g.node("Add", [y, bias], tops[0])


@converter("Softmax")
def softmax(g, layer, bottoms, tops):
    g.node("Softmax", bottoms, tops[0], axis=layer.axis)


@converter("Split")
def split(g, layer, bottoms, tops):
    for top in tops:
        g.node("Identity", bottoms, top)


@converter("Flatten")
def flatten(g, layer, bottoms, tops):
    """Axes before `axis` copied (0), the merged axis inferred (-1), later ones as they are."""
    shape = g.shape(bottoms[0])
    nd = len(shape)
    a, e = layer.p.axis % nd, layer.p.end_axis % nd
    g.node("Reshape", [bottoms[0], g.ints([0] * a + [-1] + list(shape[e + 1:]))], tops[0])


@converter("Reshape")
def reshape(g, layer, bottoms, tops):
    """Caffe's 0 (copy) and -1 (infer) mean the same in ONNX's Reshape as long as the copied
    axes keep their position, which holds for the axes before and inside the reshaped range."""
    shape, p = g.shape(bottoms[0]), layer.p
    start = p.axis if p.axis >= 0 else len(shape) + 1 + p.axis
    end = len(shape) if p.num_axes == -1 else start + p.num_axes
    dims = [0] * start + [int(d) for d in p.shape.dim] + list(shape[end:])
    g.node("Reshape", [bottoms[0], g.ints(dims)], tops[0])


@converter("Concat")
def concat(g, layer, bottoms, tops):
    g.node("Concat", bottoms, tops[0], axis=layer.axis)


@converter("Slice")
def slice_(g, layer, bottoms, tops):
    size = g.shape(bottoms[0])[layer.axis]
    bounds = [0, *layer.points, size]
    if g.dynamic_batch and layer.axis == 0:
        raise ExportError("slicing along the batch axis needs a fixed batch (--batch N)")
    sizes = [hi - lo for lo, hi in zip(bounds, bounds[1:])]
    g.node("Split", [bottoms[0], g.ints(sizes)], outputs=list(tops), axis=layer.axis)


@converter("Eltwise")
def eltwise(g, layer, bottoms, tops):
    op, coeff = layer.p.operation, list(layer.p.coeff)
    if op == "SUM":
        terms = [x if c == 1.0 else g.node("Mul", [x, g.const(c)])
                 for x, c in zip(bottoms, coeff or [1.0] * len(bottoms))]
        g.node("Sum", terms, tops[0])
    elif op == "PROD":
        y = bottoms[0]
        for i, x in enumerate(bottoms[1:], start=2):
            y = g.node("Mul", [y, x], tops[0] if i == len(bottoms) else None)
    else:
        g.node("Max", bottoms, tops[0])


@converter("Tile")
def tile(g, layer, bottoms, tops):
    repeats = [1] * len(g.shape(bottoms[0]))
    repeats[layer.axis] = layer.p.tiles
    g.node("Tile", [bottoms[0], g.ints(repeats)], tops[0])


@converter("Crop")
def crop(g, layer, bottoms, tops):
    axes, starts, ends = [], [], []
    for axis, index in enumerate(layer.index):
        if index == slice(None):
            continue
        if axis == 0 and g.dynamic_batch:
            if index.start:
                raise ExportError("cropping the batch axis needs a fixed batch (--batch N)")
            continue
        axes.append(axis)
        starts.append(index.start)
        ends.append(index.stop)
    g.node("Slice", [bottoms[0], g.ints(starts), g.ints(ends), g.ints(axes)], tops[0])


_REDUCE = {"SUM": "ReduceSum", "ASUM": "ReduceL1", "SUMSQ": "ReduceSumSquare",
           "MEAN": "ReduceMean"}


@converter("Reduction")
def reduction(g, layer, bottoms, tops):
    coeff = layer.p.coeff
    axes = range(layer.axis, len(g.shape(bottoms[0])))
    y = g.reduce(_REDUCE[layer.p.operation], bottoms[0], axes,
                 tops[0] if coeff == 1.0 else None, keepdims=0)
    if coeff != 1.0:
        g.node("Mul", [y, g.const(coeff)], tops[0])


@converter("ArgMax")
def argmax(g, layer, bottoms, tops):
    """TopK (ties: the lower index first, as netspec). Without an axis: per item over all its
    values, indices (and values) as channels of (N, 1 or 2, top_k)."""
    p, x = layer.p, bottoms[0]
    axis = 1 if p.axis is None else layer.axis
    if p.axis is None:
        x = g.node("Flatten", [x], axis=1)
    values, indices = g.unique(f"{layer.name}/values"), g.unique(f"{layer.name}/indices")
    g.node("TopK", [x, g.ints([p.top_k])], outputs=[values, indices], axis=axis, largest=1,
           sorted=1)
    if p.axis is not None:
        if p.out_max_val:
            g.node("Identity", [values], tops[0])
        else:
            g.node("Cast", [indices], tops[0], to=TensorProto.FLOAT)
        return
    channels = [g.node("Cast", [indices], to=TensorProto.FLOAT)]
    if p.out_max_val:
        channels.append(values)
    one = g.ints([1])
    channels = [g.node("Unsqueeze", [c, one], None if p.out_max_val else tops[0])
                for c in channels]
    if p.out_max_val:
        g.node("Concat", channels, tops[0], axis=1)


@converter("Embed")
def embed(g, layer, bottoms, tops):
    index = g.node("Cast", bottoms, to=TensorProto.INT64)
    y = g.node("Gather", [g.param(layer, 0), index], None if layer.p.bias_term else tops[0],
               axis=0)
    if layer.p.bias_term:
        g.node("Add", [y, g.param(layer, 1)], tops[0])


@converter("Silence")
def silence(g, layer, bottoms, tops):
    """No outputs, nothing to compute."""


@converter("Parameter")
def parameter(g, layer, bottoms, tops):
    g.node("Identity", [g.param(layer, 0)], tops[0])
