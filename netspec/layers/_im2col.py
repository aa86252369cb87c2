"""Sliding windows over the last two axes, shared by convolution and pooling.

`windows` is a strided VIEW (no copy) of every kernel tap at every output position;
`add_windows` is its adjoint (col2im): it sums tap gradients back into the input, looping only
over the few kernel taps, never over pixels.
"""
from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import as_strided


def conv_out_size(size: int, kernel: int, stride: int, pad: int, dilation: int = 1) -> int:
    """Output length of a convolution (floor rounding, as Caffe)."""
    extent = dilation * (kernel - 1) + 1
    return (size + 2 * pad - extent) // stride + 1


def pad_hw(x: np.ndarray, top: int, left: int, bottom: int, right: int, value=0.0) -> np.ndarray:
    if not (top or left or bottom or right):
        return x
    widths = [(0, 0)] * (x.ndim - 2) + [(top, bottom), (left, right)]
    return np.pad(x, widths, mode="constant", constant_values=value)


def windows(xp: np.ndarray, kernel, stride, dilation, out) -> np.ndarray:
    """View of shape (..., kh, kw, oh, ow): element [..., i, j, y, x] is
    xp[..., y*sh + i*dh, x*sw + j*dw]."""
    (kh, kw), (sh, sw), (dh, dw), (oh, ow) = kernel, stride, dilation, out
    *lead, _, _ = xp.shape
    s = xp.strides
    return as_strided(xp, shape=(*lead, kh, kw, oh, ow),
                      strides=(*s[:-2], s[-2] * dh, s[-1] * dw, s[-2] * sh, s[-1] * sw),
                      writeable=False)


def add_windows(grad: np.ndarray, padded_shape, stride, dilation) -> np.ndarray:
    """Adjoint of `windows`: grad (..., kh, kw, oh, ow) summed into an array of padded_shape."""
    *_, kh, kw, oh, ow = grad.shape
    (sh, sw), (dh, dw) = stride, dilation
    out = np.zeros(padded_shape, dtype=grad.dtype)
    for i in range(kh):
        for j in range(kw):
            out[..., i * dh:i * dh + sh * (oh - 1) + 1:sh,
                j * dw:j * dw + sw * (ow - 1) + 1:sw] += grad[..., i, j, :, :]
    return out
