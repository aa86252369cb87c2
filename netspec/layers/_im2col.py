"""im2col / col2im and kernel-tap slicing, shared by convolution and pooling.

Loops run over the kernel's few taps (i, j), never over pixels: for each tap, one strided slice
of the padded input holds the value that tap sees at every output position."""
from __future__ import annotations

import numpy as np


def conv_out_size(size: int, kernel: int, stride: int, pad: int, dilation: int = 1) -> int:
    """Output length of a convolution (floor rounding, as Caffe)."""
    extent = dilation * (kernel - 1) + 1
    return (size + 2 * pad - extent) // stride + 1


def pad_hw(x: np.ndarray, top: int, left: int, bottom: int, right: int, value=0.0) -> np.ndarray:
    if not (top or left or bottom or right):
        return x
    widths = [(0, 0)] * (x.ndim - 2) + [(top, bottom), (left, right)]
    return np.pad(x, widths, mode="constant", constant_values=value)


def tap_slices(kernel, stride, dilation, out):
    """(i, j, (rows, cols)) for every kernel tap: the slices of the padded input that tap reads
    at every output position (row y reads y * stride + i * dilation)."""
    (kh, kw), (sh, sw), (dh, dw), (oh, ow) = kernel, stride, dilation, out
    for i in range(kh):
        for j in range(kw):
            yield i, j, (slice(i * dh, i * dh + sh * (oh - 1) + 1, sh),
                         slice(j * dw, j * dw + sw * (ow - 1) + 1, sw))


def im2col(xp_cn: np.ndarray, kernel, stride, dilation, out, groups: int = 1) -> np.ndarray:
    """Padded input in (C, N, H, W) layout -> columns (G, kh, kw, C/G, N, oh, ow): tap-major
    within each group, so every tap writes (and col2im reads) one contiguous block."""
    c, n = xp_cn.shape[:2]
    col = np.empty((groups, *kernel, c // groups, n, *out), dtype=xp_cn.dtype)
    for i, j, (rows, cols) in tap_slices(kernel, stride, dilation, out):
        col[:, i, j] = xp_cn[:, :, rows, cols].reshape(groups, c // groups, n, *out)
    return col


def col2im(col: np.ndarray, padded_hw, stride, dilation) -> np.ndarray:
    """Adjoint of im2col: columns (G, kh, kw, C/G, N, oh, ow) summed into (C, N, H, W)."""
    g, kh, kw, cg, n, oh, ow = col.shape
    out = np.zeros((g, cg, n, *padded_hw), dtype=col.dtype)
    for i, j, (rows, cols) in tap_slices((kh, kw), stride, dilation, (oh, ow)):
        out[:, :, :, rows, cols] += col[:, i, j]
    return out.reshape(g * cg, n, *padded_hw)


def to_tap_major(w: np.ndarray, groups: int) -> np.ndarray:
    """Filters (G*A, B, kh, kw) as (G, A, kh*kw*B): the row order of im2col's columns."""
    a, b, kh, kw = w.shape
    return np.ascontiguousarray(w.reshape(groups, a // groups, b, kh, kw)
                                .transpose(0, 1, 3, 4, 2)).reshape(groups, a // groups, -1)


def from_tap_major(wt: np.ndarray, shape) -> np.ndarray:
    """Inverse of to_tap_major: (G, A, kh*kw*B) back to filters of `shape` (G*A, B, kh, kw)."""
    g, a = wt.shape[:2]
    _, b, kh, kw = shape
    return wt.reshape(g, a, kh, kw, b).transpose(0, 1, 4, 2, 3).reshape(shape)
