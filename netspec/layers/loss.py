"""Loss and metric layers: SoftmaxWithLoss (Caffe's normalisation modes, FLT_MIN clamp), Accuracy."""
from __future__ import annotations

import numpy as np
from pydantic import Field, model_validator

from ..params import ParamView
from ..proto import netspec_pb2 as pb
from ..registry import register_layer
from .base import Layer, LayerSetupError, canonical_axis
from .common import softmax

FLT_MIN = np.float32(np.finfo(np.float32).tiny)  # Caffe clamps p at FLT_MIN: loss <= 87.3365


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
        if not lp.HasField("normalization") and lp.HasField("normalize"):
            self.normalization = "VALID" if lp.normalize else "BATCH_SIZE"
        else:
            self.normalization = pb.LossParameter.NormalizationMode.Name(lp.normalization)
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
        """Labels as (outer, inner) ints, and the mask of those that count."""
        labels = bottom[1].data.reshape(self.outer, self.inner).astype(np.int64)
        valid = np.ones_like(labels, dtype=bool) if self.p.ignore_label is None \
            else labels != self.p.ignore_label
        classes = bottom[0].shape[self.axis]
        bad = valid & ((labels < 0) | (labels >= classes))
        if bad.any():
            raise LayerSetupError(f"label {labels[bad][0]} is out of range for {classes} classes")
        return np.where(valid, labels, 0), valid

    def _normaliser(self, valid_count):
        mode = self.p.normalization
        value = {"FULL": self.outer * self.inner, "VALID": valid_count,
                 "BATCH_SIZE": self.outer, "NONE": 1}[mode]
        return max(1.0, float(value))

    def forward(self, bottom, top):
        x = bottom[0].data
        prob = softmax(x, self.axis)
        self.prob = prob.reshape(self.outer, -1, self.inner)
        labels, valid = self._labels(bottom)
        picked = np.take_along_axis(self.prob, labels[:, None, :], axis=1)[:, 0, :]
        losses = -np.log(np.maximum(picked, FLT_MIN))
        self.valid = valid
        self.norm = self._normaliser(int(valid.sum()))
        top[0].data[...] = (losses * valid).sum() / self.norm
        if len(top) > 1:
            top[1].data[...] = prob

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        labels, valid = self._labels(bottom)
        grad = self.prob.copy()
        np.put_along_axis(grad, labels[:, None, :],
                          np.take_along_axis(grad, labels[:, None, :], axis=1) - 1, axis=1)
        grad *= valid[:, None, :]
        scale = top[0].diff.flat[0] / self.norm
        bottom[0].diff[...] = (grad * scale).reshape(bottom[0].shape)


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
        labels = bottom[1].data.reshape(self.outer, self.inner).astype(np.int64)
        valid = np.ones_like(labels, dtype=bool) if self.p.ignore_label is None \
            else labels != self.p.ignore_label
        safe = np.where(valid, labels, 0)
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
