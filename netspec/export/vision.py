"""Convolution, Deconvolution, Im2col, Pooling and SPP as ONNX Conv / ConvTranspose / pools.

Caffe's pooling rounds its output size up and clips windows to the padded input; ONNX's
ceil_mode differs between versions and runtimes, so pools are written with ceil_mode 0 and
explicit end padding that yields exactly Caffe's windows (and ignores a window that Caffe
drops because it starts in the padding). AVE pooling then divides by the full
window and is rescaled by a constant map to Caffe's clipped divisor where the two differ."""
from __future__ import annotations

import numpy as np
from onnx import TensorProto

from . import ExportError, converter


def _conv_attrs(p, group: int) -> dict:
    return dict(kernel_shape=list(p.kernel), strides=list(p.strides),
                pads=[*p.pads, *p.pads], dilations=list(p.dilations), group=group)


@converter("Convolution", "Deconvolution")
def convolution(g, layer, bottoms, tops):
    p = layer.p
    inputs = [bottoms[0], g.param(layer, 0)]
    if p.bias_term:
        inputs.append(g.param(layer, 1))
    op = "Conv" if layer.type == "Convolution" else "ConvTranspose"
    g.node(op, inputs, tops[0], **_conv_attrs(p, p.group))


@converter("Im2col")
def im2col(g, layer, bottoms, tops):
    """A grouped convolution with one-hot filters: output channel c kh kw + i kw + j holds
    input channel c at kernel offset (i, j), Caffe's column order."""
    p = layer.p
    c = g.shape(bottoms[0])[1]
    kh, kw = p.kernel
    taps = np.eye(kh * kw, dtype=np.float32).reshape(kh * kw, 1, kh, kw)
    filters = g.const(np.tile(taps, (c, 1, 1, 1)), f"{layer.name}/one_hot")
    g.node("Conv", [bottoms[0], filters], tops[0], **_conv_attrs(p, c))


def caffe_end_pad(size: int, kernel: int, stride: int, pad: int, out: int) -> int:
    """End padding with which ONNX's floor-rounded pool makes Caffe's `out` windows: up to the
    end of Caffe's last window (never negative; the tests check every small geometry)."""
    return max(0, (out - 1) * stride + kernel - size - pad)


def caffe_ave_divisor(size: int, kernel: int, stride: int, pad: int, out: int) -> np.ndarray:
    """Caffe's AVE divisor per output along one axis: the window clipped to [-pad, size+pad)."""
    start = np.arange(out) * stride - pad
    return np.minimum(start + kernel, size + pad) - start


def pool_value(g, x: str, method: str, kernel, strides, pads, out_hw, output: str,
               mask_output: str | None = None) -> str:
    """Caffe's MAX / AVE / STOCHASTIC (TEST) pooling of x (N, C, H, W) into `output`."""
    h, w = g.shape(x)[2:]
    (kh, kw), (sh, sw), (ph, pw), (oh, ow) = kernel, strides, pads, out_hw
    attrs = dict(kernel_shape=[kh, kw], strides=[sh, sw],
                 pads=[ph, pw, caffe_end_pad(h, kh, sh, ph, oh), caffe_end_pad(w, kw, sw, pw, ow)])
    if method == "MAX":
        if mask_output is None:
            return g.node("MaxPool", [x], output, **attrs)
        index = g.unique(f"{g.layer}/argmax")
        g.node("MaxPool", [x], outputs=[output, index], **attrs)
        # ONNX indexes (n, c, h, w) of the whole input; Caffe's mask is h W + w in the plane
        plane = g.node("Mod", [index, g.const(h * w, dtype=np.int64)])
        g.node("Cast", [plane], mask_output, to=TensorProto.FLOAT)
        return output
    if method == "AVE":
        divisor = np.outer(caffe_ave_divisor(h, kh, sh, ph, oh),
                           caffe_ave_divisor(w, kw, sw, pw, ow))
        if np.all(divisor == kh * kw):
            return g.node("AveragePool", [x], output, count_include_pad=1, **attrs)
        mean = g.node("AveragePool", [x], count_include_pad=1, **attrs)
        return g.node("Mul", [mean, g.const((kh * kw / divisor)[None, None])], output)
    # STOCHASTIC at TEST: sum(x^2) / sum(x) per window (0 where the sum is 0); the two
    # averages share their divisor, so their ratio is the ratio of the sums
    squares = g.node("AveragePool", [g.node("Mul", [x, x])], count_include_pad=1, **attrs)
    total = g.node("AveragePool", [x], count_include_pad=1, **attrs)
    zero = g.const(0.0)
    ratio = g.node("Div", [squares, total])
    return g.node("Where", [g.node("Greater", [total, zero]), ratio, zero], output)


@converter("Pooling")
def pooling(g, layer, bottoms, tops):
    p = layer.p
    if p.pool == "STOCHASTIC" and layer.phase == 0:
        raise ExportError("STOCHASTIC pooling in phase TRAIN draws at random: export the TEST "
                          "phase (--phase TEST), whose weighted average ONNX can express")
    if p.global_pooling and len(tops) == 1 and p.pool != "STOCHASTIC":
        g.node("GlobalMaxPool" if p.pool == "MAX" else "GlobalAveragePool", bottoms, tops[0])
        return
    pool_value(g, bottoms[0], p.pool, layer.kernel, p.strides, p.pads, layer.out_hw, tops[0],
               tops[1] if len(tops) > 1 else None)


@converter("SPP")
def spp(g, layer, bottoms, tops):
    """Each level pooled as its own Pooling, flattened per item, all concatenated."""
    x = bottoms[0]
    if len(layer.levels) == 1:
        pool, _ = layer.levels[0]
        pool_value(g, x, pool.p.pool, pool.kernel, pool.p.strides, pool.p.pads, pool.out_hw,
                   tops[0])
        return
    flat = []
    for pool, out in layer.levels:
        y = pool_value(g, x, pool.p.pool, pool.kernel, pool.p.strides, pool.p.pads,
                       pool.out_hw, g.unique(f"{layer.name}/level"))
        flat.append(g.reshape(y, (out.shape[0], out.count // out.shape[0])))
    g.node("Concat", flat, tops[0], axis=1)
