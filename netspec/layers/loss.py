"""Loss and metric layers: SoftmaxWithLoss (Caffe's normalisation modes, FLT_MIN clamp), Accuracy."""
from __future__ import annotations

import numpy as np
from pydantic import Field, model_validator

from ..kernels import kernels_for
from ..params import ParamView
from ..proto import netspec_pb2 as pb
from ..registry import register_layer
from .base import Layer, LayerSetupError, canonical_axis, xp_device, xp_of
from .common import softmax

FLT_MIN = np.float32(np.finfo(np.float32).tiny)  # Caffe clamps p at FLT_MIN: loss <= 87.3365


def normalization_mode(lp: pb.LossParameter, default: str) -> str:
    """LossParameter's normalization, else the legacy `normalize` bool (VALID / BATCH_SIZE),
    else the layer's Caffe default."""
    if lp.HasField("normalization"):
        return pb.LossParameter.NormalizationMode.Name(lp.normalization)
    if lp.HasField("normalize"):
        return "VALID" if lp.normalize else "BATCH_SIZE"
    return default


def normaliser(mode: str, outer: int, inner: int, valid: int) -> float:
    """Caffe's get_normalizer: FULL, VALID, BATCH_SIZE or NONE, at least 1."""
    value = {"FULL": outer * inner, "VALID": valid, "BATCH_SIZE": outer, "NONE": 1}[mode]
    return max(1.0, float(value))


def spec_normaliser(spec: pb.LayerParameter, outer: int, inner: int) -> float:
    """The normaliser a layer's loss_param asks for; BATCH_SIZE when it names none (Caffe's
    Euclidean, Hinge, MultinomialLogistic and Contrastive losses divide by the batch size)."""
    mode = normalization_mode(spec.loss_param, "BATCH_SIZE")
    return normaliser(mode, outer, inner, outer * inner)


class SoftmaxLossView(ParamView):
    loss_param: pb.LossParameter
    softmax_param: pb.SoftmaxParameter
    ignore_label: int | None = None
    normalization: str = "VALID"
    axis: int = 1

    @model_validator(mode="after")
    def _read(self):
        lp = self.loss_param
        if lp.HasField("ignore_label"):
            self.ignore_label = lp.ignore_label
        self.normalization = normalization_mode(lp, "VALID")
        self.axis = self.softmax_param.axis
        return self


def label_positions(scores_shape, label_shape, axis, layer_type):
    """(outer, inner) sizes around the class axis; the label must hold outer * inner values."""
    outer = int(np.prod(scores_shape[:axis]))
    inner = int(np.prod(scores_shape[axis + 1:]))
    if int(np.prod(label_shape)) != outer * inner:
        raise LayerSetupError(
            f"{layer_type} needs one label per prediction: scores {scores_shape} with classes on "
            f"axis {axis} give {outer * inner} predictions, label shape {label_shape} holds "
            f"{int(np.prod(label_shape))}")
    return outer, inner


def class_labels(layer, bottom, outer: int, inner: int, axis: int, ignore_label: int | None):
    """bottom[1]'s labels as (outer, inner) ints (0 where ignored) and the mask of those that
    count; a label outside [0, classes) is an error, not an index that wraps around (raised by
    layer.check_values: at once on the CPU, at the next read on a device, where the bad
    labels are read as 0 meanwhile)."""
    labels = bottom[1].data.reshape(outer, inner)
    xp = xp_of(labels)
    finite = xp.isfinite(labels)
    as_int = xp.astype(xp.where(finite, labels, xp.full_like(labels, -1)), xp.int64)
    valid = xp.ones(as_int.shape, dtype=xp.bool, device=xp_device(labels)) \
        if ignore_label is None else as_int != ignore_label
    classes = bottom[0].shape[axis]
    bad = valid & ((as_int < 0) | (as_int >= classes) | ~finite)
    layer.check_values(kernels_for(bad).first_true(xp.reshape(bad, (-1,))), labels,
                       lambda v: out_of_range(v, classes))
    return xp.where(valid & ~bad, as_int, xp.zeros_like(as_int)), valid


def valid_normaliser(mode: str, outer: int, inner: int, valid):
    """normaliser() whose VALID count stays an array (on a device: no read to the host)."""
    if mode != "VALID" or isinstance(valid, np.ndarray):  # (the host: a Python float)
        return normaliser(mode, outer, inner, int(valid.sum()) if mode == "VALID" else 0)
    xp = xp_of(valid)
    return xp.clip(xp.astype(xp.sum(valid), xp.float64), min=1.0)


def first(diff):
    """The value of a loss top's diff (its loss weight); on a device a 0-d tensor, never read
    to the host."""
    return diff.flat[0] if isinstance(diff, np.ndarray) else diff.reshape(-1)[0]


def out_of_range(label, classes: int) -> str:
    return (f"label {label:g} is out of range for {classes} classes "
            f"(labels must be 0 to {classes - 1})")


@register_layer("SoftmaxWithLoss")
class SoftmaxWithLoss(Layer):
    """Softmax then multinomial log loss, -log max(p[label], FLT_MIN), normalised as
    LossParameter says (VALID: by non-ignored count, BATCH_SIZE, FULL, NONE).
    Backward: (p - onehot(label)) * loss_weight / normaliser; ignored labels get 0."""
    Params = SoftmaxLossView
    bottoms = (2, 2)
    tops = (1, 2)
    is_loss = True
    runs_on_device = True
    summary = "softmax + multinomial logistic loss; ignore_label, normalization"

    def allow_force_backward(self, bottom_index):
        return bottom_index == 0

    def reshape(self, bottom, top):
        scores = bottom[0].shape
        self.axis = canonical_axis(self.p.axis, len(scores))
        self.outer, self.inner = label_positions(scores, bottom[1].shape, self.axis, self.type)
        top[0].reshape(())
        if len(top) > 1:
            top[1].reshape(scores)

    def _labels(self, bottom):
        return class_labels(self, bottom, self.outer, self.inner, self.axis, self.p.ignore_label)

    def _normaliser(self, valid):
        return valid_normaliser(self.p.normalization, self.outer, self.inner, valid)

    def forward(self, bottom, top):
        x = bottom[0].data
        xp = xp_of(x)
        shape = (self.outer, x.shape[self.axis], self.inner)
        prob = xp.empty_like(x)
        self.prob = prob.reshape(shape)
        labels = bottom[1].data.reshape(self.outer, self.inner)
        where = xp_device(x)
        as_int = xp.empty(labels.shape, dtype=xp.int64, device=where)
        valid = xp.empty(labels.shape, dtype=xp.bool, device=where)
        picked = xp.empty(labels.shape, dtype=x.dtype, device=where)
        ignore = self.p.ignore_label
        bad = kernels_for(x).softmax_labels(x.reshape(shape), labels, ignore or 0,
                                            ignore is not None, self.prob, picked, as_int, valid)
        self.check_values(bad, labels, lambda v: out_of_range(v, shape[1]))
        losses = -xp.log(xp.clip(picked, min=float(FLT_MIN)))
        self.labels, self.valid = as_int, valid  # for backward (bottom[1] is not changed)
        self.norm = self._normaliser(valid)
        top[0].data[...] = xp.sum(xp.where(valid, losses, xp.zeros_like(losses))) / self.norm
        if len(top) > 1:
            top[1].data[...] = prob

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        labels, valid = self.labels, self.valid
        xp = xp_of(self.prob)
        scale = first(top[0].diff) / self.norm
        # (p - onehot) * valid * scale, each element rounded as in that order
        classes = xp.arange(self.prob.shape[1], device=xp_device(self.prob))[None, :, None]
        onehot = xp.astype(classes == labels[:, None, :], self.prob.dtype)
        grad = (self.prob - onehot) * scale
        bottom[0].diff[...] = (grad * xp.astype(valid[:, None, :], grad.dtype)).reshape(
            bottom[0].shape)


class AccuracyView(ParamView):
    top_k: int = Field(1, ge=1)
    axis: int = 1
    ignore_label: int | None = None

    @model_validator(mode="after")
    def _unset_ignore(self):
        if "ignore_label" not in self.set_fields:
            self.ignore_label = None
        return self


@register_layer("Accuracy")
class Accuracy(Layer):
    """Fraction of predictions whose true class is among the top_k scores (Caffe counts every
    class scoring >= the true class, so ties go against the prediction). Optional second top:
    accuracy per class. No gradient."""
    param_field = "accuracy_param"
    Params = AccuracyView
    bottoms = (2, 2)
    tops = (1, 2)
    runs_on_device = True
    summary = "top_k classification accuracy (TEST-time metric); ignore_label; per-class top"

    def allow_force_backward(self, bottom_index):
        return False

    def reshape(self, bottom, top):
        scores = bottom[0].shape
        self.axis = canonical_axis(self.p.axis, len(scores))
        if self.p.top_k > scores[self.axis]:
            raise LayerSetupError(f"top_k ({self.p.top_k}) exceeds the number of classes "
                                  f"({scores[self.axis]})", field="top_k")
        self.outer, self.inner = label_positions(scores, bottom[1].shape, self.axis, self.type)
        top[0].reshape(())
        if len(top) > 1:
            top[1].reshape(scores[self.axis])

    def forward(self, bottom, top):
        scores = bottom[0].data.reshape(self.outer, -1, self.inner)
        xp = xp_of(scores)
        safe, valid = class_labels(self, bottom, self.outer, self.inner, self.axis, self.p.ignore_label)
        true_score = xp.take_along_axis(scores, safe[:, None, :], axis=1)
        better = xp.sum(xp.astype(scores >= true_score, xp.int64), axis=1) - 1  # not itself
        correct = (better < self.p.top_k) & valid
        top[0].data[...] = ratio(xp, xp.sum(xp.astype(correct, xp.float64)),
                                 xp.sum(xp.astype(valid, xp.float64)))
        if len(top) > 1:
            classes = xp.arange(scores.shape[1], device=xp_device(scores))
            of_class = safe[..., None] == classes  # (outer, inner, classes)
            per_class = xp.sum(xp.astype(of_class & valid[..., None], xp.float64), axis=(0, 1))
            hits = xp.sum(xp.astype(of_class & correct[..., None], xp.float64), axis=(0, 1))
            top[1].data[...] = ratio(xp, hits, per_class)


def ratio(xp, a, b):
    """a / b where b > 0, else 0 (element-wise, no division by zero)."""
    return xp.where(b > 0, a / xp.where(b > 0, b, xp.ones_like(b)), xp.zeros_like(a))


class LossView(ParamView):
    loss_param: pb.LossParameter
    ignore_label: int | None = None
    normalization: str = "BATCH_SIZE"

    @model_validator(mode="after")
    def _read(self):
        lp = self.loss_param
        if lp.HasField("ignore_label"):
            self.ignore_label = lp.ignore_label
        self.normalization = normalization_mode(lp, "BATCH_SIZE")
        return self


class PairLoss(Layer):
    """Two same-count bottoms (prediction, target) and a scalar loss."""
    bottoms = (2, 2)
    is_loss = True
    runs_on_device = True

    def reshape(self, bottom, top):
        if bottom[0].count != bottom[1].count:
            raise LayerSetupError(f"bottoms must hold the same number of values: "
                                  f"{bottom[0].shape} vs {bottom[1].shape}")
        top[0].reshape(())
        outer = bottom[0].shape[0] if bottom[0].shape else 1
        self.n = spec_normaliser(self.spec, outer, bottom[0].count // max(outer, 1))


@register_layer("EuclideanLoss")
class EuclideanLoss(PairLoss):
    """sum((a - b)^2) / (2 N), N = the first axis (or loss_param's normalization);
    gradients +-(a - b) / N to both bottoms."""
    summary = "sum of squared differences / 2N"

    def forward(self, bottom, top):
        self.d = bottom[0].data - bottom[1].data.reshape(bottom[0].shape)
        top[0].data[...] = xp_of(self.d).sum(self.d * self.d) / (2 * self.n)

    def backward(self, top, propagate_down, bottom):
        scale = first(top[0].diff) / self.n
        for sign, b, down in zip((1, -1), bottom, propagate_down):
            if down:
                b.diff[...] = (sign * scale * self.d).reshape(b.shape)


@register_layer("SigmoidCrossEntropyLoss")
class SigmoidCrossEntropyLoss(PairLoss):
    """-sum(t log s(x) + (1 - t) log(1 - s(x))), computed stably from the scores x; targets
    equal to ignore_label are skipped; normalised as LossParameter says (default BATCH_SIZE).
    Gradient (s(x) - t) / normaliser; none to the targets."""
    Params = LossView
    summary = "cross-entropy of sigmoid(scores) against targets in [0, 1]"

    def allow_force_backward(self, bottom_index):
        return bottom_index == 0

    def forward(self, bottom, top):
        x = bottom[0].data
        xp = xp_of(x)
        t = bottom[1].data.reshape(x.shape)
        valid = xp.ones(x.shape, dtype=xp.bool, device=xp_device(x)) \
            if self.p.ignore_label is None else t != self.p.ignore_label
        losses = xp.logaddexp(xp.zeros_like(x), x) - x * t  # -(t log s + (1 - t) log(1 - s))
        self.valid = xp.astype(valid, x.dtype)
        self.sig = 0.5 * (1 + xp.tanh(0.5 * x))
        outer = x.shape[0] if x.shape else 1
        self.norm = valid_normaliser(self.p.normalization, outer, bottom[0].count //
                                     max(outer, 1), valid)
        top[0].data[...] = xp.sum(losses * self.valid) / self.norm

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            t = bottom[1].data.reshape(bottom[0].shape)
            scale = first(top[0].diff) / self.norm
            bottom[0].diff[...] = (self.sig - t) * self.valid * scale


class HingeView(ParamView):
    norm: str = "L1"


@register_layer("HingeLoss")
class HingeLoss(Layer):
    """One-vs-all hinge: margins max(0, 1 - x_label) and max(0, 1 + x_other), summed (L1) or
    squared and summed (L2), divided by the batch size."""
    param_field = "hinge_loss_param"
    Params = HingeView
    bottoms = (2, 2)
    is_loss = True
    runs_on_device = True
    summary = "one-vs-all hinge loss, L1 or L2"

    def allow_force_backward(self, bottom_index):
        return bottom_index == 0

    def reshape(self, bottom, top):
        n = bottom[0].shape[0]
        if bottom[1].count != n:
            raise LayerSetupError(f"needs one label per item: {n} items, {bottom[1].count} "
                                  f"labels")
        top[0].reshape(())
        self.n = spec_normaliser(self.spec, n, bottom[0].count // n)

    def forward(self, bottom, top):
        x = bottom[0].data.reshape(bottom[0].shape[0], -1)
        xp = xp_of(x)
        self.sign = 1 - 2 * xp.astype(label_onehot(xp, bottom[1].data, x), x.dtype)
        self.margin = xp.clip(1 + self.sign * x, min=0)
        m = self.margin if self.p.norm == "L1" else self.margin ** 2
        top[0].data[...] = xp.sum(m) / self.n

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        scale = first(top[0].diff) / self.n
        xp = xp_of(self.margin)
        grad = xp.astype(self.margin > 0, self.margin.dtype) if self.p.norm == "L1" \
            else 2 * self.margin
        bottom[0].diff[...] = (grad * self.sign * scale).reshape(bottom[0].shape)


def label_onehot(xp, labels, scores):
    """(N, K) booleans: True at each item's label (labels: N values, scores: (N, K))."""
    classes = xp.arange(scores.shape[1], device=xp_device(scores))
    return xp.astype(labels.reshape(-1), xp.int64)[:, None] == classes[None, :]


LOG_THRESHOLD = 1e-20  # Caffe's kLOG_THRESHOLD


@register_layer("MultinomialLogisticLoss")
class MultinomialLogisticLoss(Layer):
    """-sum log(max(p[label], 1e-20)) / N for probabilities p (N, K); gradient -1/p there."""
    bottoms = (2, 2)
    is_loss = True
    runs_on_device = True
    summary = "-log(probability of the label), for inputs that are already probabilities"

    def allow_force_backward(self, bottom_index):
        return bottom_index == 0

    def reshape(self, bottom, top):
        n = bottom[0].shape[0]
        if bottom[1].count != n:
            raise LayerSetupError("needs one label per item")
        top[0].reshape(())
        self.n = spec_normaliser(self.spec, n, 1)

    def forward(self, bottom, top):
        p = bottom[0].data.reshape(bottom[0].shape[0], -1)
        xp = xp_of(p)
        labels, _ = class_labels(self, bottom, p.shape[0], 1, 1, None)
        self.onehot = label_onehot(xp, labels, p)
        picked = xp.sum(xp.where(self.onehot, p, xp.zeros_like(p)), axis=1, keepdims=True)
        self.picked = xp.clip(picked, min=LOG_THRESHOLD)
        top[0].data[...] = -xp.sum(xp.log(self.picked)) / self.n

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            xp = xp_of(self.picked)
            value = -first(top[0].diff) / self.picked / self.n
            grad = xp.where(self.onehot, value, xp.zeros_like(value))
            bottom[0].diff[...] = grad.reshape(bottom[0].shape)


class InfogainView(SoftmaxLossView):
    infogain_loss_param: pb.InfogainLossParameter
    source: str = ""
    axis: int = 1

    @model_validator(mode="after")
    def _source(self):
        self.source = self.infogain_loss_param.source
        self.axis = self.infogain_loss_param.axis
        return self


@register_layer("InfogainLoss")
class InfogainLoss(SoftmaxWithLoss):
    """Softmax, then -sum_k H[label, k] log max(p_k, 1e-20), normalised as LossParameter says.
    H (K x K) is bottom 2 or the binaryproto infogain_loss_param.source. With H = identity it
    is SoftmaxWithLoss. Gradient p_k sum_j H[label, j] - H[label, k] (Caffe's)."""
    Params = InfogainView
    bottoms = (2, 3)
    tops = (1, 2)
    runs_on_device = True
    summary = "softmax loss weighted by an infogain matrix H"

    def allow_force_backward(self, bottom_index):
        return bottom_index == 0

    def layer_setup(self, bottom, top):
        self.h = None
        if len(bottom) < 3:
            if not self.p.source:
                raise LayerSetupError("needs a third bottom (H) or infogain_loss_param.source",
                                      field="source")
            from ..blob import proto_array
            from ..spec import read_binary
            self.h = proto_array(read_binary(self.p.source, pb.BlobProto()), np.float64)

    def _matrix(self, bottom, k):
        if len(bottom) > 2:
            h = bottom[2].data.reshape(-1)
        else:  # the file's H, where the scores are
            x = bottom[0].data
            h = xp_of(x).asarray(self.h.reshape(-1), dtype=x.dtype, device=xp_device(x))
        if h.shape[0] != k * k:
            raise LayerSetupError(f"H must be {k} x {k}, it holds {h.shape[0]} values")
        return h.reshape(k, k)

    def forward(self, bottom, top):
        k = bottom[0].shape[self.axis]
        prob = softmax(bottom[0].data, self.axis)
        xp = xp_of(prob)
        self.prob = prob.reshape(self.outer, k, self.inner)
        labels, valid = self._labels(bottom)
        hrows = self._matrix(bottom, k)[labels]  # (outer, inner, k)
        logp = xp.permute_dims(xp.log(xp.clip(self.prob, min=LOG_THRESHOLD)), (0, 2, 1))
        self.norm = self._normaliser(valid)
        top[0].data[...] = -xp.sum(hrows * logp * xp.astype(valid[..., None], logp.dtype)) \
            / self.norm
        if len(top) > 1:
            top[1].data[...] = prob

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        k = bottom[0].shape[self.axis]
        labels, valid = self._labels(bottom)
        xp = xp_of(self.prob)
        hrows = xp.permute_dims(self._matrix(bottom, k)[labels], (0, 2, 1))  # (outer, k, inner)
        grad = self.prob * xp.sum(hrows, axis=1, keepdims=True) - hrows
        grad = grad * (xp.astype(valid[:, None, :], grad.dtype) * (first(top[0].diff) /
                                                                   self.norm))
        bottom[0].diff[...] = grad.reshape(bottom[0].shape)


class ContrastiveView(ParamView):
    margin: float = 1.0
    legacy_version: bool = False


@register_layer("ContrastiveLoss")
class ContrastiveLoss(Layer):
    """For pairs (a, b) with similarity y: sum(y d^2 + (1 - y) max(margin - d, 0)^2) / 2N,
    d = ||a - b|| (legacy_version: max(margin - d^2, 0) for dissimilar pairs)."""
    param_field = "contrastive_loss_param"
    Params = ContrastiveView
    bottoms = (3, 3)
    is_loss = True
    runs_on_device = True
    summary = "contrastive loss for siamese pairs (margin, legacy_version)"

    def allow_force_backward(self, bottom_index):
        return bottom_index < 2

    def reshape(self, bottom, top):
        if bottom[0].shape != bottom[1].shape or bottom[2].count != bottom[0].shape[0]:
            raise LayerSetupError(f"needs a, b of one shape and one similarity per pair: "
                                  f"{bottom[0].shape}, {bottom[1].shape}, {bottom[2].shape}")
        top[0].reshape(())
        self.n = spec_normaliser(self.spec, bottom[0].shape[0], 1)

    def forward(self, bottom, top):
        n = bottom[0].shape[0]
        self.diff = (bottom[0].data - bottom[1].data).reshape(n, -1)
        xp = xp_of(self.diff)
        self.dist_sq = xp.sum(self.diff ** 2, axis=1)
        self.sim = bottom[2].data.reshape(-1) != 0
        m = self.p.margin
        if self.p.legacy_version:
            dissimilar = xp.clip(m - self.dist_sq, min=0)
        else:
            dissimilar = xp.clip(m - xp.sqrt(self.dist_sq), min=0) ** 2
        top[0].data[...] = xp.sum(xp.where(self.sim, self.dist_sq, dissimilar)) / (2 * self.n)

    def backward(self, top, propagate_down, bottom):
        scale = first(top[0].diff) / self.n
        m = self.p.margin
        xp = xp_of(self.dist_sq)
        if self.p.legacy_version:
            coef = -xp.astype(m - self.dist_sq > 0, self.dist_sq.dtype)
        else:
            dist = xp.sqrt(self.dist_sq)
            coef = -xp.clip(m - dist, min=0) / (dist + 1e-4)  # Caffe's epsilon: off by ~1e-4
        coef = xp.where(self.sim, xp.ones_like(coef), coef)[:, None]
        for sign, b, down in zip((1, -1), bottom[:2], propagate_down[:2]):
            if down:
                b.diff[...] = (sign * scale * coef * self.diff).reshape(b.shape)
