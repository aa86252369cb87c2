"""SoftmaxWithLoss and Accuracy: hand-worked values, Caffe's normalisation and clamp, gradients."""
import math

import numpy as np
import pytest

from conftest import assert_gradients, run

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
