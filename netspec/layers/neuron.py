"""Element-wise (neuron) layers. All work in place (top == bottom): backward reads only the top
data or a saved mask, never an input that in-place forward has overwritten."""
from __future__ import annotations

import numpy as np
from pydantic import Field, model_validator

from ..blob import buffer
from ..kernels import flat, kernels_for
from ..params import ParamView
from ..proto import netspec_pb2 as pb
from ..registry import register_layer
from .base import Layer, LayerSetupError, xp_of


class Neuron(Layer):
    """One bottom, one top of the same shape."""
    runs_on_device = True

    def reshape(self, bottom, top):
        top[0].reshape(bottom[0].shape)

    def keep_input(self, bottom, top) -> np.ndarray:
        """The input for backward: a copy when in place (forward is about to overwrite it)."""
        x = bottom[0].data
        self.x = self.keep_for_backward(x, top[0] is bottom[0])
        return x


class ReLUView(ParamView):
    negative_slope: float = 0.0


@register_layer("ReLU")
class ReLU(Neuron):
    """max(0, x) + negative_slope * min(0, x); gradient 1 where x > 0, negative_slope elsewhere."""
    param_field = "relu_param"
    Params = ReLUView
    summary = "rectified linear unit (leaky with negative_slope)"

    def forward(self, bottom, top):
        x = bottom[0].data
        kernels_for(x).relu(flat(x), self.p.negative_slope, flat(top[0].data))

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:  # the output has the input's sign, so in-place is safe
            y = top[0].data
            kernels_for(y).relu_grad(flat(y), flat(top[0].diff), self.p.negative_slope,
                                     flat(bottom[0].diff))


@register_layer("Sigmoid")
class Sigmoid(Neuron):
    """1 / (1 + exp(-x)); gradient y (1 - y)."""
    summary = "logistic sigmoid"

    def forward(self, bottom, top):
        x = bottom[0].data  # computed as 0.5 (1 + tanh(x / 2)): no overflow
        kernels_for(x).sigmoid(flat(x), flat(top[0].data))

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            y = top[0].data
            kernels_for(y).sigmoid_grad(flat(y), flat(top[0].diff), flat(bottom[0].diff))


@register_layer("TanH")
class TanH(Neuron):
    """tanh(x); gradient 1 - y^2."""
    summary = "hyperbolic tangent"

    def forward(self, bottom, top):
        x = bottom[0].data
        kernels_for(x).tanh(flat(x), flat(top[0].data))

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            y = top[0].data
            kernels_for(y).tanh_grad(flat(y), flat(top[0].diff), flat(bottom[0].diff))


@register_layer("BNLL")
class BNLL(Neuron):
    """Caffe's binomial normal log likelihood, log(1 + exp(x)) (the same function as
    Softplus); gradient sigmoid(x) = 1 - exp(-y)."""
    summary = "log(1 + exp(x)) (binomial normal log likelihood)"

    def forward(self, bottom, top):
        x = bottom[0].data
        kernels_for(x).softplus(flat(x), flat(top[0].data))

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            y = top[0].data
            kernels_for(y).softplus_grad(flat(y), flat(top[0].diff), flat(bottom[0].diff))


@register_layer("Softplus")
class Softplus(BNLL):
    """log(1 + exp(x)), the seeds' exercise layer; gradient sigmoid(x) = 1 - exp(-y)."""
    summary = "log(1 + exp(x)), a smooth ReLU"


class DropoutView(ParamView):
    dropout_ratio: float = Field(0.5, ge=0.0, lt=1.0)
    scale_train: bool = True


@register_layer("Dropout")
class Dropout(Neuron):
    """At TRAIN keeps each value with probability 1 - ratio and scales by 1 / (1 - ratio);
    at TEST it is the identity (Caffe's scale_train: true)."""
    param_field = "dropout_param"
    Params = DropoutView
    summary = "drop values with probability dropout_ratio at TRAIN (scaled), identity at TEST"

    def layer_setup(self, bottom, top):
        if not self.p.scale_train:
            raise LayerSetupError("scale_train: false is not supported", field="scale_train")
        self.scale = 1.0 / (1.0 - self.p.dropout_ratio)

    def reshape(self, bottom, top):
        super().reshape(bottom, top)
        self.mask = buffer(bottom[0].shape, bool)

    def forward(self, bottom, top):
        x = bottom[0].data
        if self.phase == 0:  # TRAIN: one uniform draw per value
            kernels_for(x).dropout(flat(x), self.uniform(bottom[0].count, x), self.p.dropout_ratio,
                                   self.scale, flat(top[0].data), flat(self.mask))
        else:
            top[0].data[...] = x

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            if self.phase == 0:
                dy = top[0].diff
                kernels_for(dy).dropout_grad(flat(dy), flat(self.mask), self.scale,
                                             flat(bottom[0].diff))
            else:
                bottom[0].diff[...] = top[0].diff


class PReLUView(ParamView):
    channel_shared: bool = False
    filler: pb.FillerParameter


@register_layer("PReLU")
class PReLU(Neuron):
    """max(0, x) + a min(0, x) with a learned slope a per channel (or one, channel_shared);
    Caffe's default filler is constant 0.25."""
    param_field = "prelu_param"
    Params = PReLUView
    summary = "leaky ReLU with learned slopes (per channel or channel_shared)"

    def layer_setup(self, bottom, top):
        if bottom[0].data.ndim < 2:
            raise LayerSetupError(f"needs at least 2 axes (N, C, ...), got {bottom[0].shape}")
        if not self.blobs:
            filler = self.p.filler
            if "filler" not in self.p.set_fields:
                filler = pb.FillerParameter(type="constant", value=0.25)
            self.add_param(() if self.p.channel_shared else (bottom[0].shape[1],), filler)

    def _slope(self, x):
        a = self.blobs[0].data
        return a if a.ndim == 0 else a.reshape((1, -1) + (1,) * (x.ndim - 2))

    def forward(self, bottom, top):
        x = self.keep_input(bottom, top)
        top[0].data[...] = xp_of(x).where(x > 0, x, x * self._slope(x))

    def backward(self, top, propagate_down, bottom):
        x, dy = self.x, top[0].diff
        xp = xp_of(x)
        negative = x <= 0
        grad_a = xp.where(negative, dy * x, xp.zeros_like(x))
        axes = tuple(i for i in range(x.ndim) if i != 1 or self.blobs[0].data.ndim == 0)
        self.blobs[0].diff[...] += xp.sum(grad_a, axis=axes)
        if propagate_down[0]:
            bottom[0].diff[...] = dy * xp.where(negative, self._slope(x), xp.ones_like(x))


class ELUView(ParamView):
    alpha: float = 1.0


@register_layer("ELU")
class ELU(Neuron):
    """x if x > 0 else alpha (exp(x) - 1); gradient 1, or y + alpha."""
    param_field = "elu_param"
    Params = ELUView
    summary = "exponential linear unit (alpha)"

    def forward(self, bottom, top):
        x = self.keep_input(bottom, top)
        kernels_for(x).elu(flat(x), self.p.alpha, flat(top[0].data))

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            y = top[0].data
            kernels_for(y).elu_grad(flat(self.x), flat(y), flat(top[0].diff), self.p.alpha,
                                    flat(bottom[0].diff))


@register_layer("AbsVal")
class AbsVal(Neuron):
    """|x|; gradient sign(x)."""
    summary = "absolute value"

    def forward(self, bottom, top):
        x = self.keep_input(bottom, top)
        top[0].data[...] = xp_of(x).abs(x)

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            bottom[0].diff[...] = top[0].diff * xp_of(self.x).sign(self.x)


class PowerView(ParamView):
    power: float = 1.0
    scale: float = 1.0
    shift: float = 0.0


@register_layer("Power")
class Power(Neuron):
    """(shift + scale x) ^ power; gradient power scale (shift + scale x) ^ (power - 1)."""
    param_field = "power_param"
    Params = PowerView
    summary = "(shift + scale * x) ^ power"

    def forward(self, bottom, top):
        x = self.keep_input(bottom, top)
        top[0].data[...] = (self.p.shift + self.p.scale * x) ** self.p.power

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            p = self.p
            inner = p.shift + p.scale * self.x
            grad = p.power * p.scale * inner ** (p.power - 1) if p.power != 1 else p.scale
            bottom[0].diff[...] = top[0].diff * grad


class ExpLogView(ParamView):
    base: float = -1.0
    scale: float = 1.0
    shift: float = 0.0

    @model_validator(mode="after")
    def _base(self):
        if self.base != -1 and self.base <= 0:
            raise ValueError(f"base must be -1 (for e) or > 0. Received: base={self.base}")
        return self

    @property
    def log_base(self) -> float:
        return 1.0 if self.base == -1 else float(np.log(self.base))


@register_layer("Exp")
class Exp(Neuron):
    """base ^ (shift + scale x) (base -1 means e); gradient y ln(base) scale."""
    param_field = "exp_param"
    Params = ExpLogView
    summary = "base ^ (shift + scale * x)"

    def forward(self, bottom, top):
        p = self.p
        x = bottom[0].data
        top[0].data[...] = xp_of(x).exp(p.log_base * (p.shift + p.scale * x))

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            bottom[0].diff[...] = top[0].diff * top[0].data * self.p.log_base * self.p.scale


@register_layer("Log")
class Log(Neuron):
    """log_base(shift + scale x) (base -1 means e); gradient scale / ((shift + scale x) ln base)."""
    param_field = "log_param"
    Params = ExpLogView
    summary = "log_base(shift + scale * x)"

    def forward(self, bottom, top):
        x = self.keep_input(bottom, top)
        p = self.p
        top[0].data[...] = xp_of(x).log(p.shift + p.scale * x) / p.log_base

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            p = self.p
            bottom[0].diff[...] = top[0].diff * p.scale / ((p.shift + p.scale * self.x) * p.log_base)


class ThresholdView(ParamView):
    threshold: float = 0.0


@register_layer("Threshold")
class Threshold(Neuron):
    """1 where x > threshold, else 0. A step function: its gradient is 0 wherever it exists
    (Caffe refuses backward; here it passes zeros)."""
    param_field = "threshold_param"
    Params = ThresholdView
    summary = "step function: 1 where x > threshold, else 0"

    def forward(self, bottom, top):
        x = bottom[0].data
        top[0].data[...] = xp_of(x).astype(x > self.p.threshold, x.dtype)

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            bottom[0].diff[...] = 0


class ClipView(ParamView):
    min: float
    max: float

    @model_validator(mode="after")
    def _order(self):
        missing = sorted({"min", "max"} - self.set_fields)
        if missing:
            raise ValueError(f"{missing[0]} must be given (clip_param needs min and max)")
        if self.min > self.max:
            raise ValueError(f"min must be <= max. Received: min={self.min}, max={self.max}")
        return self


@register_layer("Clip")
class Clip(Neuron):
    """min(max(x, min), max); gradient 1 inside [min, max], else 0."""
    param_field = "clip_param"
    Params = ClipView
    summary = "clamp to [min, max]"

    def forward(self, bottom, top):
        x = bottom[0].data
        xp = xp_of(x)
        self.inside = xp.astype((x >= self.p.min) & (x <= self.p.max), x.dtype)
        top[0].data[...] = xp.clip(x, self.p.min, self.p.max)

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            bottom[0].diff[...] = top[0].diff * self.inside


class SwishView(ParamView):
    beta: float = 1.0


@register_layer("Swish")
class Swish(Neuron):
    """x sigmoid(beta x); gradient beta y + s (1 - beta y), s = sigmoid(beta x)."""
    param_field = "swish_param"
    Params = SwishView
    summary = "x * sigmoid(beta * x)"

    def reshape(self, bottom, top):
        super().reshape(bottom, top)
        self.s = buffer(bottom[0].shape, self.dtype)

    def forward(self, bottom, top):
        x = bottom[0].data
        kernels_for(x).swish(flat(x), self.p.beta, flat(self.s), flat(top[0].data))

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            y = top[0].data
            kernels_for(y).swish_grad(flat(y), flat(self.s), flat(top[0].diff), self.p.beta,
                                      flat(bottom[0].diff))
