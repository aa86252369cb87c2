"""Element-wise layers: each a single ONNX operator, or a short chain where Caffe folds a
scale and shift into one layer (Power, Exp, Log)."""
from __future__ import annotations

from onnx import TensorProto

from . import converter

_SAME = {"Sigmoid": "Sigmoid", "TanH": "Tanh", "AbsVal": "Abs", "BNLL": "Softplus",
         "Softplus": "Softplus"}


@converter(*_SAME)
def same_operator(g, layer, bottoms, tops):
    g.node(_SAME[layer.type], bottoms, tops[0])


@converter("ReLU")
def relu(g, layer, bottoms, tops):
    slope = layer.p.negative_slope
    if slope:
        g.node("LeakyRelu", bottoms, tops[0], alpha=slope)
    else:
        g.node("Relu", bottoms, tops[0])


@converter("ELU")
def elu(g, layer, bottoms, tops):
    g.node("Elu", bottoms, tops[0], alpha=layer.p.alpha)


@converter("PReLU")
def prelu(g, layer, bottoms, tops):
    """The slopes (C,) stored as (C, 1, ...) so that they broadcast over (N, C, ...)."""
    trailing = len(g.shape(bottoms[0])) - 2
    slope = g.param(layer, 0, lambda a: a if a.ndim == 0 else a.reshape((-1,) + (1,) * trailing))
    g.node("PRelu", [bottoms[0], slope], tops[0])


@converter("Dropout")
def dropout(g, layer, bottoms, tops):
    """The identity at TEST; at TRAIN ONNX's own Dropout, which scales kept values by
    1 / (1 - ratio) as Caffe does."""
    if layer.phase == 1:
        g.node("Identity", bottoms, tops[0])
        return
    ratio = g.const(layer.p.dropout_ratio)
    training = g.const(True, dtype=bool)
    g.node("Dropout", [bottoms[0], ratio, training], tops[0])


@converter("Power")
def power(g, layer, bottoms, tops):
    p = layer.p
    if p.power == 1.0:
        g.finish(g.scaled(bottoms[0], p.scale, p.shift, tops[0]), tops[0])
    else:
        g.node("Pow", [g.scaled(bottoms[0], p.scale, p.shift), g.const(p.power)], tops[0])


@converter("Exp")
def exp(g, layer, bottoms, tops):
    """base ^ (shift + scale x) = exp(ln(base) shift + ln(base) scale x)."""
    p = layer.p
    g.node("Exp", [g.scaled(bottoms[0], p.log_base * p.scale, p.log_base * p.shift)], tops[0])


@converter("Log")
def log(g, layer, bottoms, tops):
    p = layer.p
    y = g.node("Log", [g.scaled(bottoms[0], p.scale, p.shift)],
               tops[0] if p.log_base == 1.0 else None)
    if p.log_base != 1.0:
        g.node("Mul", [y, g.const(1.0 / p.log_base)], tops[0])


@converter("Threshold")
def threshold(g, layer, bottoms, tops):
    above = g.node("Greater", [bottoms[0], g.const(layer.p.threshold)])
    g.node("Cast", [above], tops[0], to=TensorProto.FLOAT)


@converter("Clip")
def clip(g, layer, bottoms, tops):
    g.node("Clip", [bottoms[0], g.const(layer.p.min), g.const(layer.p.max)], tops[0])


@converter("Swish")
def swish(g, layer, bottoms, tops):
    """x sigmoid(beta x)."""
    gate = g.node("Sigmoid", [g.scaled(bottoms[0], layer.p.beta)])
    g.node("Mul", [bottoms[0], gate], tops[0])
