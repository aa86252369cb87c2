"""Loss and metric layers: SoftmaxWithLoss (Caffe's normalisation modes, FLT_MIN clamp), Accuracy."""
from __future__ import annotations

import numpy as np
from pydantic import Field, model_validator

from ..kernels import kernels_for
from ..params import ParamView
from ..proto import netspec_pb2 as pb
from ..registry import register_layer
from .base import Layer, LayerSetupError, canonical_axis
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


def class_labels(bottom, outer: int, inner: int, axis: int, ignore_label: int | None):
    """bottom[1]'s labels as (outer, inner) ints (0 where ignored) and the mask of those that
    count; a label outside [0, classes) is an error, not an index that wraps around."""
    labels = bottom[1].data.reshape(outer, inner)
    as_int = np.nan_to_num(labels, nan=-1, posinf=-1, neginf=-1).astype(np.int64)
    valid = np.ones(as_int.shape, dtype=bool) if ignore_label is None else as_int != ignore_label
    classes = bottom[0].shape[axis]
    bad = valid & ((as_int < 0) | (as_int >= classes) | ~np.isfinite(labels))
    if bad.any():
        raise LayerSetupError(out_of_range(labels[bad][0], classes))
    return np.where(valid, as_int, 0), valid


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
        return class_labels(bottom, self.outer, self.inner, self.axis, self.p.ignore_label)

    def _normaliser(self, valid_count):
        return normaliser(self.p.normalization, self.outer, self.inner, valid_count)

    def forward(self, bottom, top):
        x = bottom[0].data
        shape = (self.outer, x.shape[self.axis], self.inner)
        prob = np.empty_like(x)
        self.prob = prob.reshape(shape)
        labels = bottom[1].data.reshape(self.outer, self.inner)
        as_int = np.empty(labels.shape, np.int64)
        valid = np.empty(labels.shape, bool)
        picked = np.empty(labels.shape, x.dtype)
        ignore = self.p.ignore_label
        bad = kernels_for(x).softmax_labels(x.reshape(shape), labels, ignore or 0,
                                            ignore is not None, self.prob, picked, as_int, valid)
        if bad < labels.size:
            raise LayerSetupError(out_of_range(labels.flat[bad], shape[1]))
        losses = -np.log(np.maximum(picked, FLT_MIN))
        self.labels, self.valid = as_int, valid  # for backward (bottom[1] is not changed)
        self.norm = self._normaliser(int(valid.sum()))
        top[0].data[...] = (losses * valid).sum() / self.norm
        if len(top) > 1:
            top[1].data[...] = prob

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        labels, valid = self.labels, self.valid
        scale = top[0].diff.flat[0] / self.norm
        # (p - onehot) * valid * scale, each element rounded as in that order
        grad = bottom[0].diff.reshape(self.prob.shape)
        np.multiply(self.prob, scale, out=grad)
        at = labels[:, None, :]
        np.put_along_axis(grad, at, (np.take_along_axis(self.prob, at, axis=1) - 1) * scale,
                          axis=1)
        if not valid.all():
            grad *= valid[:, None, :]


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
        safe, valid = class_labels(bottom, self.outer, self.inner, self.axis, self.p.ignore_label)
        true_score = np.take_along_axis(scores, safe[:, None, :], axis=1)
        better = (scores >= true_score).sum(axis=1) - 1  # the true class itself is not "better"
        correct = (better < self.p.top_k) & valid
        count = int(valid.sum())
        top[0].data[...] = correct.sum() / count if count else 0.0
        if len(top) > 1:
            classes = scores.shape[1]
            per_class = np.bincount(safe[valid], minlength=classes)
            hits = np.bincount(safe[correct], minlength=classes)
            top[1].data[...] = np.divide(hits, per_class, out=np.zeros(classes),
                                         where=per_class > 0)


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
        top[0].data[...] = (self.d * self.d).sum() / (2 * self.n)

    def backward(self, top, propagate_down, bottom):
        scale = top[0].diff.flat[0] / self.n
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
        t = bottom[1].data.reshape(x.shape)
        valid = np.ones(x.shape, bool) if self.p.ignore_label is None else t != self.p.ignore_label
        losses = np.logaddexp(0, x) - x * t  # = -(t log s + (1 - t) log(1 - s))
        self.valid, self.sig = valid, 0.5 * (1 + np.tanh(0.5 * x))
        outer = x.shape[0] if x.shape else 1
        self.norm = normaliser(self.p.normalization, outer, x.size // max(outer, 1),
                               int(valid.sum()))
        top[0].data[...] = (losses * valid).sum() / self.norm

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            t = bottom[1].data.reshape(bottom[0].shape)
            scale = top[0].diff.flat[0] / self.norm
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
        sign = np.ones_like(x)
        sign[np.arange(len(x)), bottom[1].data.ravel().astype(np.int64)] = -1
        self.sign = sign
        self.margin = np.maximum(0, 1 + sign * x)
        m = self.margin if self.p.norm == "L1" else self.margin ** 2
        top[0].data[...] = m.sum() / self.n

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        scale = top[0].diff.flat[0] / self.n
        grad = (self.margin > 0) if self.p.norm == "L1" else 2 * self.margin
        bottom[0].diff[...] = (grad * self.sign * scale).reshape(bottom[0].shape)


LOG_THRESHOLD = 1e-20  # Caffe's kLOG_THRESHOLD


@register_layer("MultinomialLogisticLoss")
class MultinomialLogisticLoss(Layer):
    """-sum log(max(p[label], 1e-20)) / N for probabilities p (N, K); gradient -1/p there."""
    bottoms = (2, 2)
    is_loss = True
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
        self.idx = (np.arange(len(p)), bottom[1].data.ravel().astype(np.int64))
        self.picked = np.maximum(p[self.idx], LOG_THRESHOLD)
        top[0].data[...] = -np.log(self.picked).sum() / self.n

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            grad = np.zeros((bottom[0].shape[0], bottom[0].count // bottom[0].shape[0]))
            grad[self.idx] = -top[0].diff.flat[0] / self.picked / self.n
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
        h = (bottom[2].data if len(bottom) > 2 else self.h).reshape(-1)
        if h.size != k * k:
            raise LayerSetupError(f"H must be {k} x {k}, it holds {h.size} values")
        return h.reshape(k, k)

    def forward(self, bottom, top):
        k = bottom[0].shape[self.axis]
        prob = softmax(bottom[0].data, self.axis)
        self.prob = prob.reshape(self.outer, k, self.inner)
        labels, valid = self._labels(bottom)
        hrows = self._matrix(bottom, k)[labels]  # (outer, inner, k)
        logp = np.log(np.maximum(self.prob, LOG_THRESHOLD)).transpose(0, 2, 1)
        self.norm = self._normaliser(int(valid.sum()))
        top[0].data[...] = -(hrows * logp * valid[..., None]).sum() / self.norm
        if len(top) > 1:
            top[1].data[...] = prob

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        k = bottom[0].shape[self.axis]
        labels, valid = self._labels(bottom)
        hrows = self._matrix(bottom, k)[labels].transpose(0, 2, 1)  # (outer, k, inner)
        grad = self.prob * hrows.sum(axis=1, keepdims=True) - hrows
        grad *= valid[:, None, :] * (top[0].diff.flat[0] / self.norm)
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
        self.dist_sq = (self.diff ** 2).sum(axis=1)
        self.sim = bottom[2].data.ravel() != 0
        m = self.p.margin
        if self.p.legacy_version:
            dissimilar = np.maximum(m - self.dist_sq, 0)
        else:
            dissimilar = np.maximum(m - np.sqrt(self.dist_sq), 0) ** 2
        top[0].data[...] = np.where(self.sim, self.dist_sq, dissimilar).sum() / (2 * self.n)

    def backward(self, top, propagate_down, bottom):
        scale = top[0].diff.flat[0] / self.n
        m = self.p.margin
        if self.p.legacy_version:
            coef = -(m - self.dist_sq > 0).astype(float)
        else:
            dist = np.sqrt(self.dist_sq)
            coef = -np.maximum(m - dist, 0) / (dist + 1e-4)  # Caffe's epsilon: off by ~1e-4
        coef = np.where(self.sim, 1.0, coef)[:, None]
        for sign, b, down in zip((1, -1), bottom[:2], propagate_down[:2]):
            if down:
                b.diff[...] = (sign * scale * coef * self.diff).reshape(b.shape)
