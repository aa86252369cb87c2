"""Normalisation layers: BatchNorm (Caffe's three statistics blobs), Scale, Bias, MVN, LRN."""
from __future__ import annotations

import numpy as np
from pydantic import Field, model_validator

from ..blob import buffer
from ..kernels import absent, kernels_for
from ..params import ParamView
from ..proto import netspec_pb2 as pb
from ..registry import register_layer
from .base import Layer, LayerSetupError, canonical_axis, copy_of, xp_device, xp_of


def _channel_view(v: np.ndarray, ndim: int) -> np.ndarray:
    """A per-channel vector shaped to broadcast over (N, C, ...)."""
    return v.reshape((1, -1) + (1,) * (ndim - 2))


class BatchNormView(ParamView):
    use_global_stats: bool | None = None
    moving_average_fraction: float = Field(0.999, ge=0, le=1)
    eps: float = Field(1e-5, gt=0)

    @model_validator(mode="after")
    def _default(self):
        if "use_global_stats" not in self.set_fields:
            self.use_global_stats = None
        return self


@register_layer("BatchNorm")
class BatchNorm(Layer):
    """Caffe's BatchNorm: normalise each channel by batch statistics (TRAIN) or by the stored
    ones (TEST, or use_global_stats). No scale or shift (follow with a Scale layer).

    Blobs, as Caffe: running sum of means, of variances, and the scale factor s; the stored
    statistics are blob / s. Each TRAIN pass: s = f s + 1, mean = f mean + batch mean,
    var = f var + m / (m - 1) batch var (f = moving_average_fraction, m values per channel).
    PyTorch keeps already-averaged running stats with a momentum instead; the normalised
    output at TRAIN is the same (biased batch variance). The blobs never learn: lr_mult 0."""
    param_field = "batch_norm_param"
    Params = BatchNormView
    statistics_blobs = True
    runs_on_device = True
    summary = "normalise per channel by batch or stored statistics (Caffe's 3 blobs)"

    def layer_setup(self, bottom, top):
        self.global_stats = self.p.use_global_stats if self.p.use_global_stats is not None \
            else self.phase == 1
        if not self.blobs:
            c = bottom[0].shape[1] if bottom[0].data.ndim > 1 else 1
            zeros = pb.FillerParameter(type="constant")
            self.add_param((c,), zeros)
            self.add_param((c,), zeros)
            self.add_param((1,), zeros)

    def reshape(self, bottom, top):
        top[0].reshape(bottom[0].shape)

    def _by_channel(self, a):
        return a.reshape(len(a), a.shape[1] if a.ndim > 1 else 1, -1)

    def forward(self, bottom, top):
        x = bottom[0].data
        nd = x.ndim
        xp = xp_of(x)
        kernels = kernels_for(x)
        if self.global_stats:
            mean, var = self._stored_stats()
        else:
            stats = xp.empty((2, x.shape[1] if nd > 1 else 1), dtype=x.dtype, device=xp_device(x))
            mean, var = stats[0], stats[1]
            kernels.channel_mean_var(self._by_channel(x), mean, var)
            m = bottom[0].count // x.shape[1]
            f = self.p.moving_average_fraction
            self.blobs[2].data[...] = self.blobs[2].data * f + 1
            self.blobs[0].data[...] = self.blobs[0].data * f + mean
            self.blobs[1].data[...] = self.blobs[1].data * f + var * (m / max(m - 1, 1))
        self.inv_std = _channel_view(1.0 / xp.sqrt(var + self.p.eps), nd)
        y = top[0].data
        kernels.channel_affine(self._by_channel(x), xp.astype(mean, x.dtype),
                               self.inv_std.reshape(-1), absent(x.dtype), self._by_channel(y))
        if not self.global_stats:  # only batch statistics need the output in backward
            self.y = self.keep_for_backward(y, top[0] is bottom[0])

    def _stored_stats(self):
        s = self.blobs[2].data[:1]  # (an array: on a device, no read to the host)
        xp = xp_of(s)
        factor = xp.where(s == 0, xp.zeros_like(s), 1.0 / xp.where(s == 0, xp.ones_like(s), s))
        return self.blobs[0].data * factor, self.blobs[1].data * factor

    absorbs = ("Scale", "ReLU")

    def forward_fused(self, bottom, top, followers):
        """Normalise, scale and shift (a per-channel Scale) and rectify in one pass: ResNet's
        inference spends three passes over memory here otherwise."""
        x = bottom[0].data
        scale = next((f for f in followers if f.type == "Scale"), None)
        relu = next((f for f in followers if f.type == "ReLU"), None)
        if not self.global_stats or x.ndim < 2 or (scale and not scale.per_channel(x)):
            return False
        mean, var = self._stored_stats()
        xp = xp_of(x)
        self.inv_std = _channel_view(1.0 / xp.sqrt(var + self.p.eps), x.ndim)
        none = absent(x.dtype)
        factor, shift = scale.channel_terms() if scale else (none, none)
        kernels_for(x).channel_affine_twice(
            self._by_channel(x), xp.astype(mean, x.dtype), self.inv_std.reshape(-1),
            factor, shift, relu is not None, relu.p.negative_slope if relu else 0.0,
            self._by_channel(top[0].data))
        return True

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        dy, dx = self._by_channel(top[0].diff), self._by_channel(bottom[0].diff)
        kernels = kernels_for(dy)
        if self.global_stats:
            none = absent(dy.dtype)
            kernels.channel_affine(dy, none, self.inv_std.reshape(-1), none, dx)
        else:
            kernels.batch_norm_grad(dy, self._by_channel(self.y), self.inv_std.reshape(-1), dx)


class ScaleBiasView(ParamView):
    axis: int = 1
    num_axes: int = Field(1, ge=-1)
    filler: pb.FillerParameter
    bias_term: bool = False
    bias_filler: pb.FillerParameter | None = None  # Scale only


class _Broadcast(Layer):
    """y = x (op) p where p (a learned blob, or bottom 1) covers axes [axis, axis + n) of x."""
    bottoms = (1, 2)
    runs_on_device = True
    default_filler = pb.FillerParameter(type="constant", value=1.0)

    def _span(self, bottom):
        shape = bottom[0].shape
        a = canonical_axis(self.p.axis, len(shape)) if shape else 0
        if len(bottom) > 1:
            n = bottom[1].data.ndim
        else:
            n = len(shape) - a if self.p.num_axes == -1 else self.p.num_axes
        if a + n > len(shape):
            raise LayerSetupError(f"axis {a} + {n} axes exceed the bottom {shape}",
                                  field="num_axes")
        return a, n

    def layer_setup(self, bottom, top):
        a, n = self._span(bottom)
        if len(bottom) == 1 and not self.blobs:
            filler = self.p.filler if "filler" in self.p.set_fields else self.default_filler
            self.add_param(bottom[0].shape[a:a + n], filler)

    def reshape(self, bottom, top):
        a, n = self._span(bottom)
        p_shape = bottom[1].shape if len(bottom) > 1 else self.blobs[0].shape
        if tuple(p_shape) != tuple(bottom[0].shape[a:a + n]):
            raise LayerSetupError(f"{self.type} blob {p_shape} does not match axes {a}..{a + n}"
                                  f" of the bottom {bottom[0].shape}")
        self.bshape = (1,) * a + tuple(p_shape) + (1,) * (bottom[0].data.ndim - a - n)
        self.sum_axes = tuple(range(a)) + tuple(range(a + n, bottom[0].data.ndim))
        top[0].reshape(bottom[0].shape)

    def operand(self, bottom):
        source = bottom[1] if len(bottom) > 1 else self.blobs[0]
        return source, source.data.reshape(self.bshape)

    def add_operand_grad(self, bottom, propagate_down, grad):
        """Sum `grad` (shaped like x) down to the operand; assign to bottom 1, add to a blob."""
        reduced = grad.sum(axis=self.sum_axes) if self.sum_axes else grad
        if len(bottom) > 1:
            if propagate_down[1]:
                bottom[1].diff[...] = reduced.reshape(bottom[1].shape)
        else:
            self.blobs[0].diff[...] += reduced.reshape(self.blobs[0].shape)


@register_layer("Bias")
class Bias(_Broadcast):
    """x + b, b learned (bias_param) or given as bottom 1, broadcast from `axis`."""
    param_field = "bias_param"
    Params = ScaleBiasView
    default_filler = pb.FillerParameter(type="constant", value=0.0)
    summary = "add a (learned or bottom-1) bias broadcast from axis"

    def forward(self, bottom, top):
        top[0].data[...] = bottom[0].data + self.operand(bottom)[1]

    def backward(self, top, propagate_down, bottom):
        self.add_operand_grad(bottom, propagate_down, top[0].diff)
        if propagate_down[0]:
            bottom[0].diff[...] = top[0].diff


@register_layer("Scale")
class Scale(_Broadcast):
    """x * s (+ bias with bias_term), s learned (scale_param, filler default 1) or given as
    bottom 1, broadcast from `axis` over num_axes axes."""
    param_field = "scale_param"
    Params = ScaleBiasView
    summary = "multiply by a (learned or bottom-1) scale broadcast from axis; bias_term"

    def layer_setup(self, bottom, top):
        super().layer_setup(bottom, top)
        if self.p.bias_term and len(self.blobs) == (1 if len(bottom) == 1 else 0):
            a, n = self._span(bottom)
            self.add_param(bottom[0].shape[a:a + n], self.p.bias_filler)

    def forward(self, bottom, top):
        x = bottom[0].data
        self.x = self.keep_for_backward(x, top[0] is bottom[0])
        y, scale = top[0].data, self.operand(bottom)[1]
        if self.per_channel(x):
            by_channel = (len(x), x.shape[1], -1)
            kernels_for(x).channel_affine(self.x.reshape(by_channel), absent(x.dtype),
                                          *self.channel_terms(bottom), y.reshape(by_channel))
            return
        y[...] = self.x * scale
        if self.p.bias_term:
            y += self.blobs[-1].data.reshape(self.bshape)

    def per_channel(self, x) -> bool:
        """One factor per channel of x (N, C, ...): the one-pass kernel applies."""
        return x.ndim > 1 and self.bshape[:2] == (1, x.shape[1]) and \
            max(self.bshape[2:], default=1) == 1

    def channel_terms(self, bottom=()):
        """The per-channel factor and shift (empty without bias_term), as flat arrays."""
        scale = self.operand(bottom)[1].reshape(-1)
        return scale, self.blobs[-1].data if self.p.bias_term else absent(scale.dtype)

    def backward(self, top, propagate_down, bottom):
        dy = top[0].diff
        if self.p.bias_term:
            bias = self.blobs[-1]
            bias.diff[...] += (dy.sum(axis=self.sum_axes) if self.sum_axes
                               else dy).reshape(bias.shape)
        scale = self.operand(bottom)[1]
        self.add_operand_grad(bottom, propagate_down, dy * self.x)
        if propagate_down[0]:
            bottom[0].diff[...] = dy * scale


class MVNView(ParamView):
    normalize_variance: bool = True
    across_channels: bool = False
    eps: float = Field(1e-9, gt=0)


@register_layer("MVN")
class MVN(Layer):
    """Subtract the mean (per item and channel, or per item across channels) and, with
    normalize_variance, divide by (std + eps) as Caffe does (eps outside the square root)."""
    param_field = "mvn_param"
    Params = MVNView
    runs_on_device = True
    summary = "mean (and variance) normalisation per item (and channel)"

    def reshape(self, bottom, top):
        nd = bottom[0].data.ndim
        self.axes = tuple(range(1 if self.p.across_channels else 2, nd))
        top[0].reshape(bottom[0].shape)

    def forward(self, bottom, top):
        x = bottom[0].data
        xp = xp_of(x)
        d = x - xp.mean(x, axis=self.axes, keepdims=True)
        self.d = d
        if self.p.normalize_variance:
            self.std = xp.sqrt(xp.mean(d * d, axis=self.axes, keepdims=True))
            d = d / (self.std + self.p.eps)
        top[0].data[...] = d

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        g = top[0].diff
        xp = xp_of(g)
        dx = g - xp.mean(g, axis=self.axes, keepdims=True)
        if self.p.normalize_variance:
            s, d = self.std, self.d
            den = s + self.p.eps
            mean_gd = xp.mean(g * d, axis=self.axes, keepdims=True)
            dx = dx / den - d * mean_gd / (den * den * xp.clip(
                s, min=xp.finfo(s.dtype).smallest_normal))
        bottom[0].diff[...] = dx


class LRNView(ParamView):
    local_size: int = Field(5, ge=1)
    alpha: float = 1.0
    beta: float = 0.75
    norm_region: str = "ACROSS_CHANNELS"
    k: float = 1.0

    @model_validator(mode="after")
    def _odd(self):
        if self.local_size % 2 == 0:
            raise ValueError(f"local_size must be odd. Received: local_size={self.local_size}")
        return self


def zero_padded(xp, v, axis: int, before: int, after: int):
    """v with `before` and `after` zeros along `axis` (np.pad, for any array namespace)."""
    def zeros(k):
        shape = list(v.shape)
        shape[axis] = k
        return xp.zeros(tuple(shape), dtype=v.dtype, device=xp_device(v))
    return xp.concat([zeros(before), v, zeros(after)], axis=axis)


def clipped_extent(size: int, kernel: int, pad: int) -> np.ndarray:
    """Length of each stride-1 window of `kernel` around every position, clipped to the padded
    input (Caffe's AVE pooling divisor, which WITHIN_CHANNEL LRN is built from)."""
    start = np.arange(size) - pad
    return np.minimum(start + kernel, size + pad) - start


@register_layer("LRN")
class LRN(Layer):
    """Local response normalisation, Caffe's two regions:
    ACROSS_CHANNELS  y = x (k + alpha/n sum_{n channels around} x^2) ^ -beta  (= PyTorch's
                     local_response_norm);
    WITHIN_CHANNEL   y = x (1 + alpha avg_{n x n window, zero-padded} x^2) ^ -beta, where the
                     average divides by n^2 (Caffe builds it from AVE pooling; k is unused)."""
    param_field = "lrn_param"
    Params = LRNView
    runs_on_device = True
    summary = "local response normalisation, ACROSS_CHANNELS or WITHIN_CHANNEL"

    def reshape(self, bottom, top):
        if bottom[0].data.ndim != 4:
            raise LayerSetupError(f"needs a 4-d (N, C, H, W) input, got {bottom[0].shape}")
        top[0].reshape(bottom[0].shape)
        self.scale = buffer(bottom[0].shape, self.dtype)
        if self.p.norm_region == "WITHIN_CHANNEL":
            n, (_, _, h, w) = self.p.local_size, bottom[0].shape
            pad = (n - 1) // 2
            x = bottom[0].data
            self.area = xp_of(x).asarray(
                np.outer(clipped_extent(h, n, pad), clipped_extent(w, n, pad)),
                dtype=x.dtype, device=xp_device(x))

    def _window_sum(self, v):
        """Sum over the n x n window around each position (WITHIN_CHANNEL), zero-padded."""
        n, half = self.p.local_size, (self.p.local_size - 1) // 2
        xp = xp_of(v)
        c = zero_padded(xp, zero_padded(xp, v, 2, half + 1, half), 3, half + 1, half)
        c = xp.cumulative_sum(xp.cumulative_sum(c, axis=2), axis=3)
        return c[:, :, n:, n:] - c[:, :, :-n, n:] - c[:, :, n:, :-n] + c[:, :, :-n, :-n]

    def _channels(self, a):
        return a.reshape(*a.shape[:2], -1)

    def forward(self, bottom, top):
        x = bottom[0].data
        self.x = copy_of(x) if top[0] is bottom[0] else x  # forward itself reads neighbours
        p = self.p
        if p.norm_region == "ACROSS_CHANNELS":
            kernels_for(x).lrn_across(self._channels(self.x), p.local_size, p.alpha / p.local_size,
                                      p.k, p.beta, self._channels(self.scale),
                                      self._channels(top[0].data))
            return
        self.scale[...] = 1.0 + p.alpha / self.area * self._window_sum(x * x)
        top[0].data[...] = self.x * self.scale ** -p.beta

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        p = self.p
        x, dy, s, beta = self.x, top[0].diff, self.scale, p.beta
        if p.norm_region == "ACROSS_CHANNELS":
            kernels_for(x).lrn_across_grad(
                self._channels(x), self._channels(dy), self._channels(s), p.local_size,
                p.alpha / p.local_size, beta, self._channels(bottom[0].diff))
            return
        # d/dx_j of x_i s_i^-beta: direct term, and every window i containing j through s_i
        inner = dy * x * s ** (-beta - 1) * (p.alpha / self.area)
        bottom[0].diff[...] = dy * s ** -beta - 2 * beta * x * self._window_sum(inner)
