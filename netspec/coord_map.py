"""pycaffe's caffe.coord_map for nets built with the DSL: how coordinates of one top map to
another's (FCN-style nets align and crop score maps with it).

A map is (axis, scale, shift): output coordinate = scale * input coordinate + shift on the
spatial axes after `axis` (None: any axis, for point-wise layers). Convolution, Pooling and
Im2col map by 1/stride with shift (pad - (k - 1) / 2) / stride, taking the dilated kernel
extent; Deconvolution the inverse; Crop shifts by -offset."""
from __future__ import annotations

import numpy as np

from .dsl import Function, Top, layer
from .registry import get_layer_class

#: layers that keep every coordinate where it is
PASS_THROUGH_LAYERS = ["AbsVal", "BatchNorm", "Bias", "BNLL", "Dropout", "Eltwise", "ELU",
                       "Log", "LRN", "Exp", "MVN", "Power", "ReLU", "PReLU", "Scale",
                       "Sigmoid", "Split", "TanH", "Threshold", "Clip", "Swish", "Softplus"]


class UndefinedMapException(Exception):
    """The layer has no coordinate mapping (e.g. InnerProduct, global pooling)."""


class AxisMismatchException(Exception):
    """Two maps act on different axes and cannot be composed."""


def _configured(fn: Function):
    """The layer object for a DSL call (parameters validated, nothing set up)."""
    layers: dict = {}
    fn.to_layer(layers, {}, {})
    spec = layers[fn]
    return get_layer_class(spec.type)(spec, 1)


def coord_map(fn: Function):
    """(axis, scale, shift) of one layer, from its input to its output."""
    if fn.type_name in ("Convolution", "Deconvolution", "Im2col", "Pooling"):
        p = _configured(fn).p
        if fn.type_name == "Pooling" and p.global_pooling:
            raise UndefinedMapException
        axis = getattr(p, "axis", 1) % 4
        stride, pad = np.array(p.strides, float), np.array(p.pads, float)
        dilation = np.array(getattr(p, "dilations", (1, 1)), float)
        extent = (np.array(p.kernel, float) - 1) * dilation + 1
        if all(v[0] == v[1] for v in (stride, pad, extent)):  # square: one value, as pycaffe
            stride, pad, extent = stride[:1], pad[:1], extent[:1]
        if fn.type_name == "Deconvolution":
            return axis, stride, (extent - 1) / 2 - pad
        return axis, 1 / stride, (pad - (extent - 1) / 2) / stride
    if fn.type_name in PASS_THROUGH_LAYERS:
        return None, 1, 0
    if fn.type_name == "Crop":
        p = _configured(fn).p
        return p.axis - 1, 1, -np.array(p.offset or [0], float)
    raise UndefinedMapException


def compose(base_map, next_map):
    """base_map then next_map: scales multiply, the further shift is scaled by the first."""
    ax1, a1, b1 = base_map
    ax2, a2, b2 = next_map
    if ax1 is None:
        ax = ax2
    elif ax2 is None or ax1 == ax2:
        ax = ax1
    else:
        raise AxisMismatchException
    return ax, a1 * a2, a1 * b2 + b1


def inverse(coord_map):
    """The map back from output to input coordinates."""
    ax, a, b = coord_map
    return ax, 1 / a, -b / a


def _mappable_bottoms(top: Top):
    """The bottoms a map walks through: all of them, but only the first of a Crop (the
    second only gives the size)."""
    bottoms = top.fn.inputs
    return bottoms[:1] if top.fn.type_name == "Crop" else bottoms


def _walk_back(start: Top):
    """(top, the maps of the layers from `top` up to `start`, composed) for `start` and each
    ancestor that layers with a coordinate map lead back to."""
    maps = {start: (None, 1, 0)}
    frontier = [start]
    while frontier:
        top = frontier.pop()
        yield top, maps[top]
        try:
            step = coord_map(top.fn)
        except UndefinedMapException:
            continue
        for bottom in _mappable_bottoms(top):
            maps[bottom] = compose(maps[top], step)
            frontier.append(bottom)


def coord_map_from_to(top_from: Top, top_to: Top):
    """The map from `top_from`'s coordinates to `top_to`'s, through their nearest common
    ancestor blob; RuntimeError if spatial layers do not connect them."""
    from_maps = dict(_walk_back(top_from))
    for top, to_map in _walk_back(top_to):
        if top in from_maps:
            return compose(to_map, inverse(from_maps[top]))
    raise RuntimeError("Could not compute map between tops; are they connected by spatial "
                       "layers?")


def crop(top_from: Top, top_to: Top) -> Top:
    """A Crop layer that cuts `top_from` to `top_to`'s size at the offset their coordinate
    map implies (the FCN idiom: L.Crop of the upsampled scores to the data)."""
    ax, a, b = coord_map_from_to(top_from, top_to)
    a, b = np.atleast_1d(a), np.atleast_1d(b)
    if not np.all(a == 1):
        raise ValueError(f"scale mismatch on crop (a = {a})")
    if not np.all(b <= 0):
        raise ValueError(f"cannot crop negative offset (b = {b})")
    if not np.all(np.round(b) == b):
        raise ValueError(f"cannot crop noninteger offset (b = {b})")
    return layer("Crop")(top_from, top_to, crop_param=dict(
        axis=ax + 1, offset=[int(v) for v in -np.round(b).astype(int)]))
