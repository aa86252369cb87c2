"""Vision layers: Convolution (im2col + one GEMM per group) and Pooling (MAX with argmax, AVE)."""
from __future__ import annotations

import math

import numpy as np
from pydantic import Field, model_validator

from ..blob import Blob
from ..params import ParamView, spatial_pair
from ..proto import netspec_pb2 as pb
from ..registry import register_layer
from ._im2col import (col2im, conv_out_size, from_tap_major, im2col, pad_hw, tap_slices,
                      to_tap_major)
from .base import Layer, LayerSetupError


class ConvolutionView(ParamView):
    num_output: int = Field(gt=0)
    bias_term: bool = True
    pad: list[int] = []
    kernel_size: list[int] = []
    stride: list[int] = []
    dilation: list[int] = []
    pad_h: int = 0
    pad_w: int = 0
    kernel_h: int = 0
    kernel_w: int = 0
    stride_h: int = 0
    stride_w: int = 0
    group: int = Field(1, ge=1)
    axis: int = 1
    weight_filler: pb.FillerParameter
    bias_filler: pb.FillerParameter
    # derived 2-D settings
    kernel: tuple[int, int] = (0, 0)
    strides: tuple[int, int] = (1, 1)
    pads: tuple[int, int] = (0, 0)
    dilations: tuple[int, int] = (1, 1)

    @model_validator(mode="after")
    def _pairs(self):
        has = self.set_fields
        self.kernel = spatial_pair("kernel_size", self.kernel_size, self.kernel_h, self.kernel_w,
                                   "kernel_h" in has or "kernel_w" in has, None)
        self.strides = spatial_pair("stride", self.stride, self.stride_h, self.stride_w,
                                    "stride_h" in has or "stride_w" in has, 1)
        self.pads = spatial_pair("pad", self.pad, self.pad_h, self.pad_w,
                                 "pad_h" in has or "pad_w" in has, 0)
        self.dilations = spatial_pair("dilation", self.dilation, 1, 1, False, 1)
        if min(self.kernel) < 1:
            raise ValueError(f"kernel_size must be >= 1, got {self.kernel}")
        if min(self.strides) < 1:
            raise ValueError(f"stride must be >= 1, got {self.strides}")
        if min(self.pads) < 0:
            raise ValueError(f"pad must be >= 0, got {self.pads}")
        if min(self.dilations) < 1:
            raise ValueError(f"dilation must be >= 1, got {self.dilations}")
        if self.num_output % self.group:
            raise ValueError(f"num_output must be divisible by group ({self.group}). "
                             f"Received: num_output={self.num_output}")
        return self


@register_layer("Convolution")
class Convolution(Layer):
    """Cross-correlation of (N, C, H, W) with (M, C/group, kh, kw) filters, plus bias.

    im2col as a strided view, then one GEMM per group; backward is the three GEMMs of the seeds
    (dW = dY col^T, db = sum dY, dcol = W^T dY) and col2im over the kernel taps."""
    param_field = "convolution_param"
    Params = ConvolutionView
    summary = "2-D convolution (im2col + GEMM): num_output, kernel/stride/pad/dilation, group"

    def layer_setup(self, bottom, top):
        p = self.p
        if p.axis not in (1, -3) or bottom[0].data.ndim != 4:
            raise LayerSetupError(f"needs a 4-d (N, C, H, W) input with channels on axis 1, "
                                  f"got shape {bottom[0].shape}")
        channels = bottom[0].shape[1]
        if channels % p.group:
            raise LayerSetupError(f"input channels ({channels}) must be divisible by group "
                                  f"({p.group})", field="group")
        if not self.blobs:
            self.add_param(self.weight_shape(channels), p.weight_filler)
            if p.bias_term:
                self.add_param((p.num_output,), p.bias_filler)

    def weight_shape(self, channels: int) -> tuple[int, ...]:
        p = self.p
        return (p.num_output, channels // p.group, *p.kernel)

    def check_weights(self, channels: int) -> None:
        expected = self.weight_shape(channels)
        if self.blobs[0].shape != expected:
            raise LayerSetupError(f"weights have shape {self.blobs[0].shape}, input needs {expected}")

    def reshape(self, bottom, top):
        p = self.p
        n, c, h, w = bottom[0].shape
        self.check_weights(c)
        oh = conv_out_size(h, p.kernel[0], p.strides[0], p.pads[0], p.dilations[0])
        ow = conv_out_size(w, p.kernel[1], p.strides[1], p.pads[1], p.dilations[1])
        if oh < 1 or ow < 1:
            raise LayerSetupError(
                f"kernel {p.kernel} (dilation {p.dilations}) is larger than the padded input "
                f"{h + 2 * p.pads[0]}x{w + 2 * p.pads[1]} (input {h}x{w}, pad {p.pads})",
                field="kernel_size")
        self.out_hw = (oh, ow)
        top[0].reshape(n, p.num_output, oh, ow)

    def forward(self, bottom, top):
        p = self.p
        x = bottom[0].data
        n = x.shape[0]
        xp = pad_hw(x, p.pads[0], p.pads[1], p.pads[0], p.pads[1])
        cn = np.ascontiguousarray(xp.transpose(1, 0, 2, 3))  # (C, N, H, W): taps copy rows
        self.col = im2col(cn, p.kernel, p.strides, p.dilations, self.out_hw, p.group).reshape(
            p.group, -1, n * self.out_hw[0] * self.out_hw[1])
        self.wt = to_tap_major(self.blobs[0].data, p.group)  # (group, M/group, kh*kw*C/group)
        y = np.empty((p.group, self.wt.shape[1], self.col.shape[2]), dtype=x.dtype)
        for g in range(p.group):  # one 2-D GEMM per group (BLAS; stacked matmul is not)
            np.matmul(self.wt[g], self.col[g], out=y[g])
        y = y.reshape(p.num_output, n, *self.out_hw)
        if p.bias_term:
            y += self.blobs[1].data[:, None, None, None]
        top[0].data[...] = y.transpose(1, 0, 2, 3)

    def backward(self, top, propagate_down, bottom):
        p = self.p
        n, c, h, w_ = bottom[0].shape
        mg = p.num_output // p.group
        dy = np.ascontiguousarray(top[0].diff.transpose(1, 0, 2, 3)).reshape(p.group, mg, -1)
        weight = self.blobs[0]
        dwt = np.empty_like(self.wt)
        for g in range(p.group):
            np.matmul(dy[g], self.col[g].T, out=dwt[g])
        weight.diff += from_tap_major(dwt, weight.shape)
        if p.bias_term:
            self.blobs[1].diff += dy.reshape(p.num_output, -1).sum(axis=1)
        if propagate_down[0]:
            dcol = np.empty_like(self.col)  # group, kh*kw*C/group, N*oh*ow
            for g in range(p.group):
                np.matmul(self.wt[g].T, dy[g], out=dcol[g])
            dcol = dcol.reshape(p.group, *p.kernel, c // p.group, n, *self.out_hw)
            (ph, pw) = p.pads
            dx = col2im(dcol, (h + 2 * ph, w_ + 2 * pw), p.strides, p.dilations)
            bottom[0].diff[...] = dx[:, :, ph:ph + h, pw:pw + w_].transpose(1, 0, 2, 3)


@register_layer("Deconvolution")
class Deconvolution(Convolution):
    """The adjoint (transpose) of Convolution with the same parameters: weights are
    (C_in, num_output / group, kh, kw), as Caffe and PyTorch's conv_transpose2d; output size
    stride (in - 1) + dilation (k - 1) + 1 - 2 pad. Forward is convolution's data backward
    (GEMM then col2im); backward is a convolution (im2col then GEMM)."""
    summary = "transposed convolution (same parameters as Convolution)"

    def weight_shape(self, channels: int) -> tuple[int, ...]:
        p = self.p
        return (channels, p.num_output // p.group, *p.kernel)

    def reshape(self, bottom, top):
        p = self.p
        n, c, h, w = bottom[0].shape
        self.check_weights(c)
        out = [s * (i - 1) + d * (k - 1) + 1 - 2 * pad for i, s, d, k, pad in
               zip((h, w), p.strides, p.dilations, p.kernel, p.pads)]
        if min(out) < 1:
            raise LayerSetupError(f"output size {out} is not positive (pad {p.pads} too large)",
                                  field="pad")
        self.out_hw = tuple(out)
        self.in_hw = (h, w)
        top[0].reshape(n, p.num_output, *out)

    def forward(self, bottom, top):
        p = self.p
        x = bottom[0].data
        n, c = x.shape[:2]
        mg = p.num_output // p.group
        xg = np.ascontiguousarray(x.transpose(1, 0, 2, 3)).reshape(p.group, c // p.group, -1)
        self.wt = to_tap_major(self.blobs[0].data, p.group)  # g, C/g, kh*kw*M/g
        col = np.empty((p.group, self.wt.shape[2], xg.shape[2]), dtype=x.dtype)
        for g in range(p.group):
            np.matmul(self.wt[g].T, xg[g], out=col[g])
        col = col.reshape(p.group, *p.kernel, mg, n, *self.in_hw)
        (ph, pw), (oh, ow) = p.pads, self.out_hw
        y = col2im(col, (oh + 2 * ph, ow + 2 * pw), p.strides, p.dilations)[
            :, :, ph:ph + oh, pw:pw + ow]
        if p.bias_term:
            y = y + self.blobs[1].data[:, None, None, None]
        top[0].data[...] = y.transpose(1, 0, 2, 3)

    def backward(self, top, propagate_down, bottom):
        p = self.p
        x = bottom[0].data
        n, c = x.shape[:2]
        dy = top[0].diff
        if p.bias_term:
            self.blobs[1].diff += dy.sum(axis=(0, 2, 3))
        (ph, pw) = p.pads
        dyp = np.ascontiguousarray(pad_hw(dy, ph, pw, ph, pw).transpose(1, 0, 2, 3))
        dcol = im2col(dyp, p.kernel, p.strides, p.dilations, self.in_hw, p.group).reshape(
            p.group, -1, n * self.in_hw[0] * self.in_hw[1])  # g, kh*kw*M/g, N*H*W
        xg = np.ascontiguousarray(x.transpose(1, 0, 2, 3)).reshape(p.group, c // p.group, -1)
        weight = self.blobs[0]
        dwt = np.empty_like(self.wt)
        for g in range(p.group):
            np.matmul(xg[g], dcol[g].T, out=dwt[g])
        weight.diff += from_tap_major(dwt, weight.shape)
        if propagate_down[0]:
            dx = np.empty_like(xg)
            for g in range(p.group):
                np.matmul(self.wt[g], dcol[g], out=dx[g])
            bottom[0].diff[...] = dx.reshape(c, n, *self.in_hw).transpose(1, 0, 2, 3)


@register_layer("Im2col")
class Im2col(Convolution):
    """The im2col step alone: (N, C, H, W) -> (N, C kh kw, oh, ow) patches (Caffe's layout:
    channel-major, then kernel row, then kernel column)."""
    summary = "image patches as channels (kernel/stride/pad/dilation as Convolution)"

    class Params(ConvolutionView):
        num_output: int = 1  # unused by Im2col

    def layer_setup(self, bottom, top):
        if bottom[0].data.ndim != 4:
            raise LayerSetupError(f"needs a 4-d (N, C, H, W) input, got {bottom[0].shape}")

    def reshape(self, bottom, top):
        p = self.p
        n, c, h, w = bottom[0].shape
        oh = conv_out_size(h, p.kernel[0], p.strides[0], p.pads[0], p.dilations[0])
        ow = conv_out_size(w, p.kernel[1], p.strides[1], p.pads[1], p.dilations[1])
        if oh < 1 or ow < 1:
            raise LayerSetupError("kernel is larger than the padded input", field="kernel_size")
        self.out_hw = (oh, ow)
        top[0].reshape(n, c * p.kernel[0] * p.kernel[1], oh, ow)

    def forward(self, bottom, top):
        p = self.p
        xp = pad_hw(bottom[0].data, p.pads[0], p.pads[1], p.pads[0], p.pads[1])
        col = im2col(np.ascontiguousarray(xp.transpose(1, 0, 2, 3)), p.kernel, p.strides,
                     p.dilations, self.out_hw)[0]  # kh, kw, C, N, oh, ow
        top[0].data[...] = col.transpose(3, 2, 0, 1, 4, 5).reshape(top[0].shape)

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        p = self.p
        n, c, h, w = bottom[0].shape
        col = top[0].diff.reshape(n, c, *p.kernel, *self.out_hw).transpose(2, 3, 1, 0, 4, 5)
        (ph, pw) = p.pads
        dx = col2im(np.ascontiguousarray(col)[None], (h + 2 * ph, w + 2 * pw), p.strides,
                    p.dilations)
        bottom[0].diff[...] = dx[:, :, ph:ph + h, pw:pw + w].transpose(1, 0, 2, 3)


class PoolingView(ParamView):
    pool: str = "MAX"
    pad: int = 0
    pad_h: int = 0
    pad_w: int = 0
    kernel_size: int = 0
    kernel_h: int = 0
    kernel_w: int = 0
    stride: int = 1
    stride_h: int = 0
    stride_w: int = 0
    global_pooling: bool = False
    round_mode: str = "CEIL"
    kernel: tuple[int, int] = (0, 0)
    strides: tuple[int, int] = (1, 1)
    pads: tuple[int, int] = (0, 0)

    @model_validator(mode="after")
    def _pairs(self):
        has = self.set_fields
        if self.pool == "STOCHASTIC" and ("pad" in has or "pad_h" in has or "pad_w" in has):
            raise ValueError("pad is not used by STOCHASTIC pooling (Caffe ignores it): remove it")
        kh = "kernel_h" in has or "kernel_w" in has
        if self.global_pooling:
            if "kernel_size" in has or kh:
                raise ValueError("kernel_size cannot be given with global_pooling")
        else:
            self.kernel = spatial_pair("kernel_size", [self.kernel_size] if "kernel_size" in has
                                       else [], self.kernel_h, self.kernel_w, kh, None)
        self.strides = spatial_pair("stride", [self.stride] if "stride" in has else [],
                                    self.stride_h, self.stride_w,
                                    "stride_h" in has or "stride_w" in has, 1)
        self.pads = spatial_pair("pad", [self.pad] if "pad" in has else [], self.pad_h, self.pad_w,
                                 "pad_h" in has or "pad_w" in has, 0)
        if not self.global_pooling and min(self.kernel) < 1:
            raise ValueError(f"kernel_size must be >= 1, got {self.kernel}")
        if min(self.strides) < 1:
            raise ValueError(f"stride must be >= 1, got {self.strides}")
        if self.global_pooling and (self.pads != (0, 0) or self.strides != (1, 1)):
            raise ValueError("global_pooling requires pad 0 and stride 1")
        if not self.global_pooling and (self.pads[0] >= self.kernel[0]
                                        or self.pads[1] >= self.kernel[1]):
            raise ValueError(f"pad {self.pads} must be smaller than kernel {self.kernel}")
        return self


def pooled_size(size: int, kernel: int, stride: int, pad: int, ceil: bool = True) -> int:
    """Caffe's output size: ceil rounding, then drop a last window that starts in the padding."""
    rounding = math.ceil if ceil else math.floor
    out = int(rounding((size + 2 * pad - kernel) / stride)) + 1
    if pad and (out - 1) * stride >= size + pad:
        out -= 1
    return out


@register_layer("Pooling")
class Pooling(Layer):
    """MAX (remembers the argmax; an optional second top returns it as Caffe's mask), AVE
    (divides by the window size clipped to the padded input, as Caffe) or STOCHASTIC pooling
    (TRAIN: picks one value per window with probability proportional to it, for non-negative
    inputs; TEST: the values' own weighted average sum(x^2) / sum(x)).

    Output size rounds UP (Caffe), unlike PyTorch's default floor: a 2x2/2 pool of a 5x5 map
    gives 3x3 here."""
    param_field = "pooling_param"
    Params = PoolingView
    tops = (1, 2)
    summary = "MAX / AVE / STOCHASTIC pooling with Caffe's ceil rounding; global_pooling"

    def reshape(self, bottom, top):
        p = self.p
        if bottom[0].data.ndim != 4:
            raise LayerSetupError(f"needs a 4-d (N, C, H, W) input, got shape {bottom[0].shape}")
        n, c, h, w = bottom[0].shape
        self.kernel = (h, w) if p.global_pooling else p.kernel
        ceil = p.round_mode == "CEIL"
        (kh, kw), (sh, sw), (ph, pw) = self.kernel, p.strides, p.pads
        if kh > h + 2 * ph or kw > w + 2 * pw:
            raise LayerSetupError(f"kernel {self.kernel} is larger than the padded input "
                                  f"{h + 2 * ph}x{w + 2 * pw}", field="kernel_size")
        oh, ow = pooled_size(h, kh, sh, ph, ceil), pooled_size(w, kw, sw, pw, ceil)
        self.out_hw = (oh, ow)
        # windows that tile the input exactly: pool by reshaping instead of by taps
        self.tiled = (sh, sw) == (kh, kw) and (ph, pw) == (0, 0) and h == oh * kh and \
            w == ow * kw and p.pool != "STOCHASTIC"
        # padded extent that every window fits in (windows may run past the bottom/right pad)
        self.padded = (max(h + 2 * ph, (oh - 1) * sh + kh), max(w + 2 * pw, (ow - 1) * sw + kw))
        top[0].reshape(n, c, oh, ow)
        if len(top) > 1:
            if p.pool != "MAX":
                raise LayerSetupError("a second (mask) top needs pool: MAX")
            top[1].reshape(n, c, oh, ow)
        if p.pool == "AVE":
            self.area = np.outer(self._clipped_extent(h, kh, sh, ph, oh),
                                 self._clipped_extent(w, kw, sw, pw, ow)).astype(self.dtype)

    @staticmethod
    def _clipped_extent(size, kernel, stride, pad, out):
        start = np.arange(out) * stride - pad
        return np.minimum(start + kernel, size + pad) - start

    def _taps(self):
        return enumerate(tap_slices(self.kernel, self.p.strides, (1, 1), self.out_hw))

    def _padded(self, x, fill):
        (h, w), (ph, pw) = x.shape[2:], self.p.pads
        return pad_hw(x, ph, pw, self.padded[0] - h - ph, self.padded[1] - w - pw, fill)

    def _tiles(self, x):
        """(N, C, oh, ow, kh*kw) copy of the windows, tap order i * kw + j (tiled case)."""
        n, c = x.shape[:2]
        (oh, ow), (kh, kw) = self.out_hw, self.kernel
        return x.reshape(n, c, oh, kh, ow, kw).transpose(0, 1, 2, 4, 3, 5).reshape(
            n, c, oh, ow, kh * kw)

    def _untile(self, v, shape):
        n, c, h, w = shape
        (oh, ow), (kh, kw) = self.out_hw, self.kernel
        return v.reshape(n, c, oh, ow, kh, kw).transpose(0, 1, 2, 4, 3, 5).reshape(shape)

    def forward(self, bottom, top):
        x = bottom[0].data
        if self.tiled:
            v = self._tiles(x)
            if self.p.pool == "MAX":
                self.argmax = v.argmax(axis=-1)  # first maximum in scan order, as Caffe
                top[0].data[...] = np.take_along_axis(v, self.argmax[..., None], -1)[..., 0]
                if len(top) > 1:
                    top[1].data[...] = self._mask_index(x.shape[3])
            else:
                top[0].data[...] = v.mean(axis=-1)
        elif self.p.pool == "MAX":
            xp = self._padded(x, -np.inf)
            best = argmax = None
            for t, (_, _, (rows, cols)) in self._taps():
                v = xp[:, :, rows, cols]
                if best is None:
                    best, argmax = v.copy(), np.zeros(v.shape, dtype=np.int32)
                else:
                    better = v > best  # strict: the first maximum in scan order wins (Caffe)
                    np.copyto(best, v, where=better)
                    np.copyto(argmax, t, where=better)
            self.argmax = argmax
            top[0].data[...] = best
            if len(top) > 1:
                top[1].data[...] = self._mask_index(x.shape[3])
        elif self.p.pool == "AVE":
            xp = self._padded(x, 0.0)
            total = np.zeros(top[0].shape, dtype=x.dtype)
            for _, (_, _, (rows, cols)) in self._taps():
                total += xp[:, :, rows, cols]
            top[0].data[...] = total / self.area
        else:
            top[0].data[...] = self._stochastic(self._padded(x, 0.0))

    def _stochastic(self, xp):
        """TRAIN: the first tap whose running sum reaches u * sum (u uniform), as Caffe;
        TEST: sum(x^2) / sum(x) (0 where the window sums to 0)."""
        values = [xp[:, :, rows, cols] for _, (_, _, (rows, cols)) in self._taps()]
        total = sum(values)
        if self.phase == 0:
            threshold = self.rng.random(total.shape) * total
            running = np.zeros_like(total)
            picked = np.zeros_like(total)
            self.argmax = np.full(total.shape, -1, dtype=np.int32)
            for t, v in enumerate(values):
                running += v
                take = (self.argmax < 0) & (running >= threshold)
                np.copyto(self.argmax, t, where=take)
                np.copyto(picked, v, where=take)
            return picked
        self.total, self.values = total, values
        squares = sum(v * v for v in values)
        return np.divide(squares, total, out=np.zeros_like(total), where=total > 0)

    def _mask_index(self, width):
        """Caffe's mask top: the argmax as a flat index h * W + w into the input plane."""
        kw = self.kernel[1]
        (sh, sw), (ph, pw) = self.p.strides, self.p.pads
        oh, ow = self.out_hw
        hh = np.arange(oh)[:, None] * sh - ph + self.argmax // kw
        ww = np.arange(ow)[None, :] * sw - pw + self.argmax % kw
        return hh * width + ww

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        n, c, h, w = bottom[0].shape
        dy = top[0].diff
        kk = self.kernel[0] * self.kernel[1]
        if self.tiled:
            if self.p.pool == "MAX":
                grad = np.zeros((*dy.shape, kk), dtype=dy.dtype)
                np.put_along_axis(grad, self.argmax[..., None], dy[..., None], -1)
            else:
                grad = np.broadcast_to((dy / kk)[..., None], (*dy.shape, kk))
            bottom[0].diff[...] = self._untile(grad, bottom[0].shape)
            return
        dxp = np.zeros((n, c, *self.padded), dtype=dy.dtype)
        if self.p.pool == "MAX" or (self.p.pool == "STOCHASTIC" and self.phase == 0):
            for t, (_, _, (rows, cols)) in self._taps():
                dxp[:, :, rows, cols] += np.where(self.argmax == t, dy, 0)
        elif self.p.pool == "STOCHASTIC":  # d(sum v^2 / sum v)/dv = (2 v - y) / sum v
            y = top[0].data
            safe = np.where(self.total > 0, self.total, 1)
            for (_, (_, _, (rows, cols))), v in zip(self._taps(), self.values):
                dxp[:, :, rows, cols] += np.where(self.total > 0, dy * (2 * v - y) / safe, 0)
        else:
            share = dy / self.area
            for _, (_, _, (rows, cols)) in self._taps():
                dxp[:, :, rows, cols] += share
        ph, pw = self.p.pads
        bottom[0].diff[...] = dxp[:, :, ph:ph + h, pw:pw + w]


class SPPView(ParamView):
    pyramid_height: int = Field(gt=0)
    pool: str = "MAX"

    @model_validator(mode="after")
    def _pool(self):
        if self.pool == "STOCHASTIC":
            raise ValueError("pool STOCHASTIC is not supported by SPP (MAX and AVE are)")
        return self


@register_layer("SPP")
class SPP(Layer):
    """Spatial pyramid pooling: level l pools the whole map into 2^l x 2^l bins (kernel
    ceil(size / bins), stride = kernel, pad to cover the remainder, as Caffe), each level
    flattened, all concatenated: (N, C * sum 4^l). One level alone gives (N, C, 1, 1)."""
    param_field = "spp_param"
    Params = SPPView
    summary = "spatial pyramid pooling (pyramid_height levels of 2^l x 2^l bins)"

    def reshape(self, bottom, top):
        n, c, h, w = bottom[0].shape
        self.levels = []
        for level in range(self.p.pyramid_height):
            bins = 2 ** level
            kh, kw = -(-h // bins), -(-w // bins)
            spec = pb.LayerParameter(name=f"{self.name}_level{level}", type="Pooling")
            pp = spec.pooling_param
            pp.pool = pb.PoolingParameter.PoolMethod.Value(self.p.pool)
            pp.kernel_h, pp.kernel_w, pp.stride_h, pp.stride_w = kh, kw, kh, kw
            pp.pad_h, pp.pad_w = (kh * bins - h + 1) // 2, (kw * bins - w + 1) // 2
            try:
                pool = Pooling(spec, self.phase, self.dtype, self.rng)
            except LayerSetupError as e:
                raise LayerSetupError(f"level {level} ({bins}x{bins} bins of {h}x{w}): {e}")
            out = Blob((), self.dtype)
            pool.setup(bottom, [out])
            self.levels.append((pool, out))
        if self.p.pyramid_height == 1:
            top[0].reshape(self.levels[0][1].shape)
        else:
            top[0].reshape(n, sum(out.count // n for _, out in self.levels))

    def forward(self, bottom, top):
        n = bottom[0].shape[0]
        for pool, out in self.levels:
            pool.forward(bottom, [out])
        top[0].data[...] = np.concatenate([out.data.reshape(n, -1) for _, out in self.levels],
                                          axis=1).reshape(top[0].shape)

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        n = bottom[0].shape[0]
        dy, start, total = top[0].diff.reshape(n, -1), 0, np.zeros_like(bottom[0].data)
        for pool, out in self.levels:
            size = out.count // n
            out.diff[...] = dy[:, start:start + size].reshape(out.shape)
            start += size
            pool.backward([out], [True], bottom)
            total += bottom[0].diff
        bottom[0].diff[...] = total
