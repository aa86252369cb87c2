"""Common layers: InnerProduct, Softmax, Split (inserted by the net for shared blobs)."""
from __future__ import annotations

import numpy as np
from pydantic import Field

from ..blob import buffer
from ..kernels import kernels_for
from ..params import ParamView
from ..proto import netspec_pb2 as pb
from ..registry import register_layer
from .base import Layer, LayerSetupError, RectifiesOutput, canonical_axis, xp_of


class InnerProductView(ParamView):
    num_output: int = Field(gt=0)
    bias_term: bool = True
    weight_filler: pb.FillerParameter
    bias_filler: pb.FillerParameter
    axis: int = 1
    transpose: bool = False


@register_layer("InnerProduct")
class InnerProduct(RectifiesOutput, Layer):
    """y = x W^T + b with x flattened from `axis` on; W is (num_output, K), or (K, num_output)
    with transpose. Backward: dW += dy^T x, db += sum dy, dx = dy W (seed 001's three GEMMs)."""
    param_field = "inner_product_param"
    Params = InnerProductView
    runs_on_device = True
    summary = "fully connected layer: num_output, axis, bias_term, transpose"

    def layer_setup(self, bottom, top):
        self.axis = canonical_axis(self.p.axis, bottom[0].data.ndim)
        k = int(np.prod(bottom[0].shape[self.axis:]))
        if not self.blobs:
            n = self.p.num_output
            self.add_param((k, n) if self.p.transpose else (n, k), self.p.weight_filler)
            if self.p.bias_term:
                self.add_param((n,), self.p.bias_filler)

    def reshape(self, bottom, top):
        shape = bottom[0].shape
        k = int(np.prod(shape[self.axis:]))
        wk = self.blobs[0].shape[0 if self.p.transpose else 1]
        if k != wk:
            raise LayerSetupError(f"input has {k} features per item (shape {shape}, axis "
                                  f"{self.axis}), weights expect {wk}")
        top[0].reshape(*shape[:self.axis], self.p.num_output)

    def _x(self, bottom):
        m = int(np.prod(bottom[0].shape[:self.axis]))
        return bottom[0].data.reshape(m, -1)

    def _w(self):
        """Weights as (K, num_output)."""
        w = self.blobs[0].data
        return w if self.p.transpose else w.T

    def forward(self, bottom, top):
        x = self._x(bottom)
        y = top[0].data.reshape(x.shape[0], self.p.num_output)
        kernels = kernels_for(y)
        if self.p.transpose:
            kernels.matmul(x, self._w(), y)
        else:
            kernels.linear(self.blobs[0].data, x, y)
        if self.p.bias_term:
            kernels.add_bias(y[:, :, None], self.blobs[1].data)
        self.rectify(kernels, y)

    def backward(self, top, propagate_down, bottom):
        dy = top[0].diff.reshape(-1, self.p.num_output)
        x = self._x(bottom)
        kernels = kernels_for(dy)
        if self.p.transpose:
            kernels.matmul_add(self.blobs[0].diff, x.T, dy)
        else:
            kernels.add_linear_weight_grad(self.blobs[0].diff, dy, x)
        if self.p.bias_term:
            kernels.add_channel_sums(dy[:, :, None], self.blobs[1].diff)
        if propagate_down[0] and self.p.transpose:
            kernels.matmul(dy, self._w().T, bottom[0].diff.reshape(x.shape))
        elif propagate_down[0]:
            kernels.linear_input_grad(dy, self.blobs[0].data, bottom[0].diff.reshape(x.shape))


class SoftmaxView(ParamView):
    axis: int = 1


def softmax(x, axis: int, out=None):
    """exp(x - max) / sum along `axis`, into `out` (a new array if None)."""
    out = xp_of(x).empty_like(x) if out is None else out
    shape = (int(np.prod(x.shape[:axis])), x.shape[axis], -1)
    kernels_for(x).softmax(x.reshape(shape), out.reshape(shape))
    return out


@register_layer("Softmax")
class Softmax(Layer):
    """exp(x) / sum exp(x) along `axis`; backward dx = y (dy - sum(dy y))."""
    param_field = "softmax_param"
    Params = SoftmaxView
    runs_on_device = True
    summary = "softmax along axis"

    def reshape(self, bottom, top):
        self.axis = canonical_axis(self.p.axis, bottom[0].data.ndim)
        top[0].reshape(bottom[0].shape)

    def forward(self, bottom, top):
        softmax(bottom[0].data, self.axis, out=top[0].data)

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            y, dy = top[0].data, top[0].diff
            total = xp_of(y).sum(dy * y, axis=self.axis, keepdims=True)
            bottom[0].diff[...] = y * (dy - total)


@register_layer("Split")
class Split(Layer):
    """One blob to several consumers; their gradients are summed (inserted automatically).
    The tops share the bottom's memory, as Caffe's do, unless the net found a consumer that
    rewrites one of them in place (`share`, set by the net): then each top is a copy."""
    tops = (1, None)
    runs_on_device = True
    summary = "one blob to several consumers (gradients summed); inserted automatically"
    share = False

    def reshape(self, bottom, top):
        x = bottom[0].data
        for t in top:
            if t is bottom[0]:
                continue
            if not self.share:
                t.reshape(x.shape)
                continue
            t.data = x  # the same array: nothing to copy in forward
            if t.diff.shape != x.shape:
                t.diff = buffer(x.shape, x.dtype)

    def forward(self, bottom, top):
        if self.share:
            return
        for t in top:
            if t is not bottom[0]:
                t.data[...] = bottom[0].data

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        dx = bottom[0].diff  # only top 0 can be the bottom itself (in place): read first
        if len(top) == 1:
            dx[...] = top[0].diff
        elif isinstance(dx, np.ndarray):  # the tops' diffs summed in order, into the bottom's
            np.add(top[0].diff, top[1].diff, out=dx)
            for t in top[2:]:
                dx += t.diff
        else:
            total = top[0].diff + top[1].diff
            for t in top[2:]:
                total = total + t.diff
            dx[...] = total
