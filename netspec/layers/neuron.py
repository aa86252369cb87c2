"""Element-wise (neuron) layers. All work in place (top == bottom): backward reads only the top
data or a saved mask, never an input that in-place forward has overwritten."""
from __future__ import annotations

import numpy as np
from pydantic import Field

from ..params import ParamView
from ..registry import register_layer
from .base import Layer, LayerSetupError


class Neuron(Layer):
    """One bottom, one top of the same shape."""

    def reshape(self, bottom, top):
        top[0].reshape(bottom[0].shape)


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
        slope = self.p.negative_slope
        top[0].data[...] = np.maximum(x, 0) if slope == 0 else np.where(x > 0, x, x * slope)

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            positive = top[0].data > 0  # same sign as the input, so in-place is safe
            slope = self.p.negative_slope
            bottom[0].diff[...] = top[0].diff * (positive + slope * ~positive)


@register_layer("Sigmoid")
class Sigmoid(Neuron):
    """1 / (1 + exp(-x)); gradient y (1 - y)."""
    summary = "logistic sigmoid"

    def forward(self, bottom, top):
        x = bottom[0].data
        top[0].data[...] = 0.5 * (1.0 + np.tanh(0.5 * x))  # overflow-free form

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            y = top[0].data
            bottom[0].diff[...] = top[0].diff * y * (1.0 - y)


@register_layer("TanH")
class TanH(Neuron):
    """tanh(x); gradient 1 - y^2."""
    summary = "hyperbolic tangent"

    def forward(self, bottom, top):
        top[0].data[...] = np.tanh(bottom[0].data)

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            y = top[0].data
            bottom[0].diff[...] = top[0].diff * (1.0 - y * y)


@register_layer("Softplus")
class Softplus(Neuron):
    """log(1 + exp(x)), the seeds' exercise layer; gradient sigmoid(x) = 1 - exp(-y)."""
    summary = "log(1 + exp(x)), a smooth ReLU"

    def forward(self, bottom, top):
        top[0].data[...] = np.logaddexp(0.0, bottom[0].data)

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            bottom[0].diff[...] = top[0].diff * -np.expm1(-top[0].data)


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

    def forward(self, bottom, top):
        if self.phase == 0:  # TRAIN
            self.mask = self.rng.random(bottom[0].shape) >= self.p.dropout_ratio
            top[0].data[...] = bottom[0].data * self.mask * self.scale
        else:
            top[0].data[...] = bottom[0].data

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            if self.phase == 0:
                bottom[0].diff[...] = top[0].diff * self.mask * self.scale
            else:
                bottom[0].diff[...] = top[0].diff
