"""BatchNorm (Caffe's three blobs, the scale factor applied), Scale, Bias, MVN, LRN."""
from __future__ import annotations

import numpy as np

from . import converter
from .vision import pool_value


@converter("BatchNorm")
def batch_norm(g, layer, bottoms, tops):
    """Stored statistics: ONNX BatchNormalization with mean = blob0 / s and var = blob1 / s
    (s, the third blob, is Caffe's moving-average factor; 0 means no statistics yet). Batch
    statistics (use_global_stats false): written out with ReduceMean."""
    x, c = bottoms[0], g.shape(bottoms[0])[1]
    eps = layer.p.eps
    if layer.global_stats:
        s = float(layer.blobs[2].data.reshape(-1)[0])
        factor = 0.0 if s == 0 else 1.0 / s
        mean = g.param(layer, 0, lambda a: a * factor)
        var = g.param(layer, 1, lambda a: a * factor)
        ones = g.const(np.ones(c), f"{layer.name}/unit_scale")
        zeros = g.const(np.zeros(c), f"{layer.name}/zero_shift")
        g.node("BatchNormalization", [x, ones, zeros, mean, var], tops[0], epsilon=eps)
        return
    axes = [a for a in range(len(g.shape(x))) if a != 1]
    centred = g.node("Sub", [x, g.reduce("ReduceMean", x, axes)])
    var = g.reduce("ReduceMean", g.node("Mul", [centred, centred]), axes)
    std = g.node("Sqrt", [g.node("Add", [var, g.const(eps)])])
    g.node("Div", [centred, std], tops[0])


def _operand_shape(layer) -> tuple[list[int], int]:
    """The operand's broadcast shape from its first axis on (ONNX aligns shapes from the
    right, so leading ones are not needed), and that first axis (0 for a scalar operand)."""
    kept = [i for i in range(len(layer.bshape)) if i not in layer.sum_axes]
    first = kept[0] if kept else len(layer.bshape)
    return list(layer.bshape[first:]), first


@converter("Scale", "Bias")
def scale_or_bias(g, layer, bottoms, tops):
    """x * s (+ b) or x + b, the operand learned (stored broadcastable, trailing ones added)
    or bottom 1 (reshaped the same way)."""
    shape, first = _operand_shape(layer)
    if len(bottoms) > 1:
        operand = bottoms[1]
        if tuple(shape) != g.shape(operand):
            operand = g.reshape(operand, shape, keep_batch=first == 0)
    else:
        operand = g.param(layer, 0, lambda a: a.reshape(shape))
    op = "Mul" if layer.type == "Scale" else "Add"
    bias = layer.type == "Scale" and layer.p.bias_term
    y = g.node(op, [bottoms[0], operand], None if bias else tops[0])
    if bias:
        g.node("Add", [y, g.param(layer, len(layer.blobs) - 1, lambda a: a.reshape(shape))],
               tops[0])


@converter("MVN")
def mvn(g, layer, bottoms, tops):
    """x - mean, divided by (std + eps) with normalize_variance (eps outside the root)."""
    x = bottoms[0]
    centred = g.node("Sub", [x, g.reduce("ReduceMean", x, layer.axes)],
                     None if layer.p.normalize_variance else tops[0])
    if layer.p.normalize_variance:
        std = g.node("Sqrt", [g.reduce("ReduceMean", g.node("Mul", [centred, centred]),
                                       layer.axes)])
        g.node("Div", [centred, g.node("Add", [std, g.const(layer.p.eps)])], tops[0])


@converter("LRN")
def lrn(g, layer, bottoms, tops):
    """ACROSS_CHANNELS is ONNX's LRN (same formula, k as bias); WITHIN_CHANNEL is
    x (1 + alpha avg_{n x n} x^2) ^ -beta with Caffe's AVE pooling divisor."""
    p, x = layer.p, bottoms[0]
    if p.norm_region == "ACROSS_CHANNELS":
        g.node("LRN", [x], tops[0], size=p.local_size, alpha=p.alpha, beta=p.beta, bias=p.k)
        return
    n, pad = p.local_size, (p.local_size - 1) // 2
    squares = g.node("Mul", [x, x])
    g.set_shape(squares, g.shape(x))
    mean = pool_value(g, squares, "AVE", (n, n), (1, 1), (pad, pad), g.shape(x)[2:],
                      g.unique(f"{layer.name}/window_mean"))
    scale = g.scaled(mean, p.alpha, 1.0)
    g.node("Mul", [x, g.node("Pow", [scale, g.const(-p.beta)])], tops[0])
