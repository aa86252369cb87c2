"""SoftmaxWithLoss and Accuracy: hand-worked values, Caffe's normalisation and clamp, gradients."""
import math
import re

import numpy as np
import pytest

from conftest import assert_gradients, make_layer, run
from netspec.blob import Blob

SCORES = np.random.default_rng(0).normal(size=(4, 5, 3))
LABELS = np.array([[0, 1, 2], [4, 3, 2], [2, 2, 1], [0, 0, 4]])


def test_softmax_loss_hand_worked():
    _, _, top = run('type: "SoftmaxWithLoss"', np.array([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]]),
                    np.array([2, 0]), ntop=2)
    expected = (math.log(1 + math.exp(-1) + math.exp(-2)) + math.log(3)) / 2
    assert top[0].data == pytest.approx(expected, rel=1e-12)
    np.testing.assert_allclose(top[1].data[1], [1 / 3] * 3)


def test_softmax_loss_clamps_at_flt_min_like_caffe():
    _, _, top = run('type: "SoftmaxWithLoss"', np.array([[0.0, 200.0]]), np.array([0]))
    assert top[0].data == pytest.approx(87.3365, abs=1e-4)  # -log(FLT_MIN)


@pytest.mark.parametrize("loss_param,norm", [
    ("", lambda valid: valid),                                   # VALID by default
    ("loss_param { normalization: FULL }", lambda valid: 12),
    ("loss_param { normalization: BATCH_SIZE }", lambda valid: 4),
    ("loss_param { normalization: NONE }", lambda valid: 1),
    ("loss_param { normalize: false }", lambda valid: 4),        # legacy bool -> BATCH_SIZE
])
def test_softmax_loss_normalisation_with_ignore_label(loss_param, norm):
    text = f'type: "SoftmaxWithLoss" {loss_param}'
    ignore = 2
    text = text.replace("loss_param {", f"loss_param {{ ignore_label: {ignore}") if loss_param \
        else f'type: "SoftmaxWithLoss" loss_param {{ ignore_label: {ignore} }}'
    _, _, top = run(text, SCORES, LABELS)
    p = np.exp(SCORES) / np.exp(SCORES).sum(axis=1, keepdims=True)
    valid = LABELS != ignore
    picked = np.take_along_axis(p, LABELS[:, None, :], axis=1)[:, 0]
    expected = -(np.log(picked) * valid).sum() / norm(valid.sum())
    assert top[0].data == pytest.approx(expected, rel=1e-12)
    assert_gradients(text, SCORES, LABELS, check_bottom=[0])


def test_softmax_loss_gradient_scales_with_loss_weight():
    layer, bottom, top = run('type: "SoftmaxWithLoss"', SCORES[:, :, 0], LABELS[:, 0])
    top[0].diff[...] = 3.0
    layer.backward(top, [True, False], bottom)
    p = np.exp(SCORES[:, :, 0]) / np.exp(SCORES[:, :, 0]).sum(axis=1, keepdims=True)
    p[np.arange(4), LABELS[:, 0]] -= 1
    np.testing.assert_allclose(bottom[0].diff, 3.0 * p / 4)


def test_softmax_loss_against_torch():
    torch = pytest.importorskip("torch")
    x = torch.tensor(SCORES, requires_grad=True)
    y = torch.nn.functional.cross_entropy(x, torch.tensor(LABELS), ignore_index=2)
    y.backward()
    layer, bottom, top = run('type: "SoftmaxWithLoss" loss_param { ignore_label: 2 }',
                             SCORES, LABELS)
    assert float(top[0].data) == pytest.approx(y.item(), rel=1e-12)
    top[0].diff[...] = 1
    layer.backward(top, [True, False], bottom)
    np.testing.assert_allclose(bottom[0].diff, x.grad.numpy(), atol=1e-14)


@pytest.mark.parametrize("bad", [5, -1, 2147483647, float("nan"), float("inf")])
def test_softmax_loss_rejects_labels_outside_the_classes(bad):
    """The first counted label outside [0, C), or not finite, is named; an ignored one is not."""
    from netspec.layers import LayerSetupError
    labels = LABELS.astype(float)
    labels[1, 2] = bad
    with pytest.raises(LayerSetupError, match=re.escape(f"label {bad:g} is out of range for 5")):
        run('type: "SoftmaxWithLoss"', SCORES, labels)
    if math.isfinite(bad):
        _, _, top = run(f'type: "SoftmaxWithLoss" loss_param {{ ignore_label: {int(bad)} }}',
                        SCORES, labels)
        assert math.isfinite(float(top[0].data))


@pytest.mark.parametrize("ignore", [None, 3])
def test_softmax_loss_kernel_matches_numpy(ignore):
    """float32 as trained: the fused kernel's probabilities, labels (fractions truncated as
    numpy casts them) and loss are the bits of softmax + take_along_axis + log in numpy."""
    from netspec.layers.common import softmax
    from netspec.layers.loss import FLT_MIN
    rng = np.random.default_rng(7)
    x = rng.normal(size=(6, 5, 2, 3)).astype(np.float32)
    labels = rng.integers(0, 5, size=(6, 1, 2, 3)) + rng.choice([0.0, 0.25, 0.75], (6, 1, 2, 3))
    extra = "" if ignore is None else f" loss_param {{ ignore_label: {ignore} }}"
    layer = make_layer(f'type: "SoftmaxWithLoss"{extra}')
    bottom = [Blob(x.shape, np.float32), Blob(labels.shape, np.float32)]
    bottom[0].data[...], bottom[1].data[...] = x, labels
    top = [Blob((), np.float32), Blob((), np.float32)]
    layer.setup(bottom, top)
    layer.forward(bottom, top)
    prob = softmax(x, 1).reshape(6, 5, 6)
    as_int = labels.astype(np.float32).astype(np.int64).reshape(6, 6)
    valid = np.ones_like(as_int, bool) if ignore is None else as_int != ignore
    safe = np.where(valid, as_int, 0)
    picked = np.take_along_axis(prob, safe[:, None, :], axis=1)[:, 0, :]
    losses = -np.log(np.maximum(picked, FLT_MIN))
    np.testing.assert_array_equal(top[1].data.reshape(6, 5, 6), prob)
    np.testing.assert_array_equal(layer.labels, safe)
    np.testing.assert_array_equal(layer.valid, valid)
    assert top[0].data == np.float32((losses * valid).sum() / valid.sum())


def test_label_count_mismatch_is_an_error():
    from netspec.layers import LayerSetupError
    with pytest.raises(LayerSetupError, match="one label per prediction"):
        run('type: "SoftmaxWithLoss"', np.zeros((4, 3)), np.zeros(5))


def test_accuracy_top1_topk_ties_and_ignore():
    scores = np.array([[0.1, 0.7, 0.2], [0.5, 0.3, 0.2], [0.3, 0.3, 0.4], [0.2, 0.2, 0.6]])
    labels = np.array([1, 1, 0, 0])
    _, _, top = run('type: "Accuracy"', scores, labels, ntop=2)
    assert float(top[0].data) == 0.25
    np.testing.assert_allclose(top[1].data, [0.0, 0.5, 0.0])  # per class: 0/2, 1/2, no items
    _, _, top = run('type: "Accuracy" accuracy_param { top_k: 2 }', scores, labels)
    # row 2: label 0 ties with class 1 (0.3 >= 0.3) so two classes are "at least as good": miss
    assert float(top[0].data) == 0.5
    _, _, top = run('type: "Accuracy" accuracy_param { ignore_label: 0 }', scores, labels)
    assert float(top[0].data) == 0.5


def test_accuracy_spatial_axis():
    scores = np.zeros((2, 3, 2))
    scores[0, 1, 0] = scores[0, 2, 1] = scores[1, 0, 0] = scores[1, 0, 1] = 1
    labels = np.array([[1, 2], [0, 1]])
    _, _, top = run('type: "Accuracy"', scores, labels)
    assert float(top[0].data) == 0.75


# -- the rest of Caffe's losses -----------------------------------------------------------------
A = np.random.default_rng(5).normal(size=(4, 3, 2))
B = np.random.default_rng(6).normal(size=(4, 3, 2))


def test_euclidean_loss():
    _, _, top = run('type: "EuclideanLoss"', A, B)
    assert float(top[0].data) == pytest.approx(((A - B) ** 2).sum() / 8)
    assert_gradients('type: "EuclideanLoss"', A, B)


@pytest.mark.parametrize("param,norm", [("", 4), ("loss_param { normalization: FULL }", 24),
                                        ("loss_param { normalization: NONE }", 1)])
def test_sigmoid_cross_entropy(param, norm):
    t = (np.random.default_rng(7).random(A.shape) > 0.5).astype(float)
    text = f'type: "SigmoidCrossEntropyLoss" {param}'
    _, _, top = run(text, A * 10, t)
    s = 1 / (1 + np.exp(-A * 10))
    expected = -(t * np.log(s) + (1 - t) * np.log(1 - s)).sum() / norm
    assert float(top[0].data) == pytest.approx(expected, rel=1e-10)
    assert_gradients(text, A, t, check_bottom=[0])


def test_sigmoid_cross_entropy_ignore_label_counts_valid():
    t = np.array([[1.0, 0.0, -1.0]])
    text = 'type: "SigmoidCrossEntropyLoss" loss_param { ignore_label: -1 normalization: VALID }'
    _, _, top = run(text, np.array([[0.0, 0.0, 5.0]]), t)
    assert float(top[0].data) == pytest.approx(np.log(2))
    assert_gradients(text, np.array([[0.3, -0.2, 5.0]]), t, check_bottom=[0])


@pytest.mark.parametrize("norm", ["L1", "L2"])
def test_hinge_loss(norm):
    x = np.array([[0.5, -2.0, 0.3], [1.5, 0.2, -0.8]])
    labels = np.array([0, 2])
    _, _, top = run(f'type: "HingeLoss" hinge_loss_param {{ norm: {norm} }}', x, labels)
    margins = np.array([[0.5, 0, 1.3], [2.5, 1.2, 1.8]])
    expected = (margins if norm == "L1" else margins ** 2).sum() / 2
    assert float(top[0].data) == pytest.approx(expected)
    assert_gradients(f'type: "HingeLoss" hinge_loss_param {{ norm: {norm} }}',
                     np.random.default_rng(1).normal(size=(5, 4)) * 3,
                     np.array([0, 1, 2, 3, 1]), check_bottom=[0])


def test_multinomial_logistic_loss():
    p = np.random.default_rng(2).random((4, 5)) + 0.1
    p /= p.sum(1, keepdims=True)
    labels = np.array([0, 4, 2, 2])
    _, _, top = run('type: "MultinomialLogisticLoss"', p, labels)
    assert float(top[0].data) == pytest.approx(-np.log(p[np.arange(4), labels]).mean())
    assert_gradients('type: "MultinomialLogisticLoss"', p, labels, check_bottom=[0])


def test_infogain_loss_identity_is_softmax_loss_and_gradients():
    scores, labels = SCORES[:, :, 0], LABELS[:, 0]
    _, _, soft = run('type: "SoftmaxWithLoss"', scores, labels)
    _, _, info = run('type: "InfogainLoss"', scores, labels, np.eye(5))
    assert float(info[0].data) == pytest.approx(float(soft[0].data), rel=1e-12)
    h = np.random.default_rng(3).random((5, 5))
    assert_gradients('type: "InfogainLoss"', scores, labels, h, check_bottom=[0])
    assert_gradients('type: "InfogainLoss" loss_param { ignore_label: 2 normalization: FULL }',
                     SCORES, LABELS, h, check_bottom=[0])


def test_infogain_matrix_from_a_binaryproto(tmp_path):
    from netspec.blob import Blob
    from netspec.spec import write_binary
    h = Blob((1, 1, 5, 5), np.float32)
    h.data[...] = np.eye(5) * 2
    write_binary(tmp_path / "h.binaryproto", h.to_proto())
    _, _, top = run(f'type: "InfogainLoss" infogain_loss_param {{ source: '
                    f'"{tmp_path}/h.binaryproto" }}', SCORES[:, :, 0], LABELS[:, 0])
    _, _, soft = run('type: "SoftmaxWithLoss"', SCORES[:, :, 0], LABELS[:, 0])
    assert float(top[0].data) == pytest.approx(2 * float(soft[0].data), rel=1e-6)


@pytest.mark.parametrize("legacy", ["false", "true"])
def test_contrastive_loss(legacy):
    a = np.random.default_rng(8).normal(size=(6, 3)) * 0.5
    b = np.random.default_rng(9).normal(size=(6, 3)) * 0.5
    y = np.array([1, 0, 1, 0, 0, 1])
    text = f'type: "ContrastiveLoss" contrastive_loss_param {{ margin: 1.5 legacy_version: {legacy} }}'
    _, _, top = run(text, a, b, y)
    d2 = ((a - b) ** 2).sum(1)
    far = np.maximum(1.5 - d2, 0) if legacy == "true" else np.maximum(1.5 - np.sqrt(d2), 0) ** 2
    assert float(top[0].data) == pytest.approx(np.where(y == 1, d2, far).sum() / 12)
    # Caffe's gradient divides by (d + 1e-4) instead of d: a ~1e-4 relative difference
    assert_gradients(text, a, b, y, check_bottom=[0, 1], threshold=1e-3)


LOSS_CASES = {
    "EuclideanLoss": ([A, B], [0, 1]),
    "SigmoidCrossEntropyLoss": ([A, (B > 0) * 1.0], [0]),
    "HingeLoss": ([A[:, :, 0], np.array([0, 2, 1, 1])], [0]),
    "MultinomialLogisticLoss": ([np.abs(A[:, :, 0]) + 0.1, np.array([0, 2, 1, 1])], [0]),
    "InfogainLoss": ([A[:, :, 0], np.array([0, 2, 1, 1]), np.eye(3) + 0.5], [0]),
    "ContrastiveLoss": ([A[:, :, 0], B[:, :, 0], np.array([1, 0, 0, 1])], [0, 1]),
    "SoftmaxWithLoss": ([A[:, :, 0], np.array([0, 2, 1, 1])], [0]),
}


@pytest.mark.parametrize("kind", sorted(LOSS_CASES))
def test_every_loss_honours_normalization_and_loss_weight(kind):
    arrays, down = LOSS_CASES[kind]
    none = run(f'type: "{kind}" loss_param {{ normalization: NONE }}', *arrays)
    batch = run(f'type: "{kind}" loss_param {{ normalization: BATCH_SIZE }}', *arrays)
    assert float(none[2][0].data) == pytest.approx(4 * float(batch[2][0].data), rel=1e-12)
    # backward scales by the top diff, which the net sets to the loss_weight
    grads = []
    for weight in (1.0, 2.5):
        layer, bottom, top = run(f'type: "{kind}"', *arrays)
        top[0].diff[...] = weight
        layer.backward(top, [i in down for i in range(len(bottom))], bottom)
        grads.append(bottom[0].diff.copy())
    np.testing.assert_allclose(grads[1], 2.5 * grads[0], rtol=1e-12)


@pytest.mark.parametrize("bad", [10, -1, 2147483647, float("nan")])
def test_accuracy_rejects_labels_outside_the_classes(bad):
    """Caffe would index past its scores (and numpy wraps -1 to the last class): an error."""
    from netspec.layers import LayerSetupError
    scores = np.random.default_rng(0).normal(size=(3, 10))
    with pytest.raises(LayerSetupError, match=r"out of range for 10 classes"):
        run('type: "Accuracy"', scores, [1, bad, 2])
    layer, _, top = run('type: "Accuracy" accuracy_param { ignore_label: -1 }', scores, [1, -1, 2])
    assert 0 <= float(top[0].data) <= 1
