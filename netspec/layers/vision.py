"""Vision layers: Convolution (im2col + one GEMM per group) and Pooling (MAX with argmax, AVE)."""
from __future__ import annotations

import math

import numpy as np
from pydantic import Field, model_validator

from ..blob import Blob, buffer
from ..params import ParamView, spatial_pair
from ..proto import netspec_pb2 as pb
from ..registry import register_layer
from ..kernels import kernels_for
from .base import Layer, LayerSetupError, RectifiesOutput, xp_of


def conv_out_size(size: int, kernel: int, stride: int, pad: int, dilation: int = 1) -> int:
    """Output length of a convolution (floor rounding, as Caffe)."""
    extent = dilation * (kernel - 1) + 1
    return (size + 2 * pad - extent) // stride + 1


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
class Convolution(RectifiesOutput, Layer):
    """Cross-correlation of (N, C, H, W) with (M, C/group, kh, kw) filters, plus bias.

    The seeds' im2col + GEMM: columns (C kh kw, N oh ow), one GEMM per group; backward is the
    three GEMMs (dW = dY col^T, db = sum dY, dcol = W^T dY) and col2im. How a device runs
    it (on the CPU: direct, windows, rows, Winograd or im2col kernels) is its kernels' plan,
    made here at reshape for each input shape."""
    param_field = "convolution_param"
    Params = ConvolutionView
    runs_on_device = True
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

    def output_size(self, h: int, w: int) -> tuple[int, int]:
        p = self.p
        oh = conv_out_size(h, p.kernel[0], p.strides[0], p.pads[0], p.dilations[0])
        ow = conv_out_size(w, p.kernel[1], p.strides[1], p.pads[1], p.dilations[1])
        if oh < 1 or ow < 1:
            raise LayerSetupError(
                f"kernel {p.kernel} (dilation {p.dilations}) is larger than the padded input "
                f"{h + 2 * p.pads[0]}x{w + 2 * p.pads[1]} (input {h}x{w}, pad {p.pads})",
                field="kernel_size")
        return oh, ow

    def reshape(self, bottom, top):
        n, c, h, w = bottom[0].shape
        self.check_weights(c)
        self.out_hw = self.output_size(h, w)
        top[0].reshape(n, self.p.num_output, *self.out_hw)
        self.plan = kernels_for(self.blobs[0].data).conv_plan(
            self.p, bottom[0].shape, self.out_hw, self.phase, top[0] is bottom[0], self.dtype)

    def bias(self) -> object:
        return self.blobs[1].data if self.p.bias_term else None

    def forward(self, bottom, top):
        x = bottom[0].data
        kernels_for(x).conv_forward(self.plan, x, self.blobs[0].data, self.bias(), top[0].data,
                                    self.relu_slope, inference=not self.runs_backward)

    def backward(self, top, propagate_down, bottom):
        x = bottom[0].data
        kernels_for(x).conv_backward(self.plan, x, self.blobs[0].data, top[0].diff,
                                     bottom[0].diff if propagate_down[0] else None,
                                     self.blobs[0].diff,
                                     self.blobs[1].diff if self.p.bias_term else None)


@register_layer("Deconvolution")
class Deconvolution(Convolution):
    """The adjoint (transpose) of Convolution with the same parameters: weights are
    (C_in, num_output / group, kh, kw), as Caffe and PyTorch's conv_transpose2d; output size
    stride (in - 1) + dilation (k - 1) + 1 - 2 pad. Forward is convolution's data backward
    (GEMM then col2im); backward is a convolution (im2col then GEMM)."""
    summary = "transposed convolution (same parameters as Convolution)"
    absorbs = ()  # its forward is col2im's scatter: no piece is final before the end

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
        top[0].reshape(n, p.num_output, *out)
        self.plan = kernels_for(self.blobs[0].data).deconv_plan(
            p, bottom[0].shape, self.out_hw, self.phase, top[0] is bottom[0], self.dtype)

    def forward(self, bottom, top):
        x = bottom[0].data
        kernels_for(x).deconv_forward(self.plan, x, self.blobs[0].data, self.bias(),
                                      top[0].data)

    def backward(self, top, propagate_down, bottom):
        x = bottom[0].data
        kernels_for(x).deconv_backward(self.plan, x, self.blobs[0].data, top[0].diff,
                                       bottom[0].diff if propagate_down[0] else None,
                                       self.blobs[0].diff,
                                       self.blobs[1].diff if self.p.bias_term else None)


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
        self.out_hw = self.output_size(h, w)
        top[0].reshape(n, c * p.kernel[0] * p.kernel[1], *self.out_hw)

    def geometry(self):
        p = self.p
        return (*p.kernel, *p.strides, *p.pads, *p.dilations, *self.out_hw)

    def forward(self, bottom, top):
        x = bottom[0].data
        kernels_for(x).im2col_forward(x, self.geometry(), top[0].data)

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            dy = top[0].diff
            kernels_for(dy).im2col_backward(dy, self.geometry(), bottom[0].diff)

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
    runs_on_device = True
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
        top[0].reshape(n, c, oh, ow)
        if len(top) > 1:
            if p.pool != "MAX":
                raise LayerSetupError("a second (mask) top needs pool: MAX")
            top[1].reshape(n, c, oh, ow)
        # MAX and STOCHASTIC (TRAIN) remember the flat input index h * W + w each output took
        self.mask = buffer((n, c, oh, ow), np.int32)

    def window(self):
        return (*self.kernel, *self.p.strides)

    def forward(self, bottom, top):
        x, y = bottom[0].data, top[0].data
        kernels = kernels_for(x)
        pads = self.p.pads
        if self.p.pool == "MAX":
            kernels.max_pool(x, *self.window(), *pads, y, self.mask)
            if len(top) > 1:  # Caffe's mask top: the argmax's flat index
                top[1].data[...] = xp_of(y).astype(self.mask, y.dtype)
        elif self.p.pool == "AVE":
            kernels.ave_pool(x, *self.window(), *pads, y)
        elif self.phase == 0:  # STOCHASTIC, TRAIN: one random draw per output
            kernels.stochastic_pool_train(x, *self.window(), self.uniform(y.shape, x), y,
                                          self.mask)
        else:
            kernels.stochastic_pool_test(x, *self.window(), y)

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        x, dy, dx = bottom[0].data, top[0].diff, bottom[0].diff
        kernels = kernels_for(x)
        if self.p.pool == "MAX" or (self.p.pool == "STOCHASTIC" and self.phase == 0):
            kernels.scatter_pool_grad(dy, self.mask, dx)
        elif self.p.pool == "AVE":
            kernels.ave_pool_grad(dy, *self.window(), *self.p.pads, dx)
        else:
            kernels.stochastic_pool_test_grad(x, top[0].data, dy, *self.window(), dx)


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
    runs_on_device = True
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
                pool.device_rng = self.device_rng
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
        y, start = top[0].data.reshape(n, -1), 0
        for pool, out in self.levels:
            pool.forward(bottom, [out])
            size = out.count // n
            y[:, start:start + size] = out.data.reshape(n, -1)
            start += size

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        n = bottom[0].shape[0]
        dy, start = top[0].diff.reshape(n, -1), 0
        total = xp_of(dy).zeros_like(bottom[0].diff)
        for pool, out in self.levels:
            size = out.count // n
            out.diff[...] = dy[:, start:start + size].reshape(out.shape)
            start += size
            pool.backward([out], [True], bottom)
            total = total + bottom[0].diff
        bottom[0].diff[...] = total
