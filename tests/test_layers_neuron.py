"""Element-wise layers: values, in-place use, gradient checks."""
import numpy as np
import pytest

from conftest import assert_gradients, blobs, make_layer, run

X = np.random.default_rng(0).normal(size=(2, 3, 4))


@pytest.mark.parametrize("text,f", [
    ('type: "ReLU"', lambda x: np.maximum(x, 0)),
    ('type: "ReLU" relu_param { negative_slope: 0.25 }', lambda x: np.where(x > 0, x, 0.25 * x)),
    ('type: "Sigmoid"', lambda x: 1 / (1 + np.exp(-x))),
    ('type: "TanH"', np.tanh),
    ('type: "Softplus"', lambda x: np.log1p(np.exp(x))),
])
def test_values_gradients_and_in_place(text, f):
    _, _, top = run(text, X)
    np.testing.assert_allclose(top[0].data, f(X), rtol=1e-12)
    assert_gradients(text, X, kink=0.0 if "ReLU" in text else None, kink_range=1e-4)
    # in place: top is the bottom blob; backward must still be right
    layer = make_layer(text)
    b = blobs(X)[0]
    layer.setup([b], [b])
    layer.forward([b], [b])
    np.testing.assert_allclose(b.data, f(X), rtol=1e-12)
    out_of_place = run(text, X)
    dy = np.random.default_rng(1).normal(size=X.shape)
    out_of_place[2][0].diff[...] = dy
    out_of_place[0].backward(out_of_place[2], [True], out_of_place[1])
    b.diff[...] = dy
    layer.backward([b], [True], [b])
    np.testing.assert_allclose(b.diff, out_of_place[1][0].diff, rtol=1e-12)


def test_softplus_is_stable_for_large_inputs():
    _, _, top = run('type: "Softplus"', np.array([-800.0, 0.0, 800.0]))
    np.testing.assert_allclose(top[0].data, [0.0, np.log(2), 800.0])


def test_sigmoid_and_tanh_by_hand():
    _, _, top = run('type: "Sigmoid"', np.array([0.0, np.log(3)]))
    np.testing.assert_allclose(top[0].data, [0.5, 0.75])


def test_dropout_train_scales_and_test_is_identity():
    x = np.ones((1000, 10))
    layer, bottom, top = run('type: "Dropout" dropout_param { dropout_ratio: 0.3 }', x)
    kept = top[0].data != 0
    np.testing.assert_allclose(top[0].data[kept], 1 / 0.7)
    assert abs(kept.mean() - 0.7) < 0.02
    top[0].diff[...] = 1
    layer.backward(top, [True], bottom)
    np.testing.assert_array_equal(bottom[0].diff, top[0].data)  # same mask, same scale
    _, _, top = run('type: "Dropout" dropout_param { dropout_ratio: 0.3 }', x, phase=1)
    np.testing.assert_array_equal(top[0].data, x)


@pytest.mark.parametrize("phase", [0, 1])
def test_dropout_gradients(phase):
    assert_gradients('type: "Dropout" dropout_param { dropout_ratio: 0.4 }', X, phase=phase)


def test_dropout_ratio_validated():
    from netspec.layers import LayerSetupError
    with pytest.raises(LayerSetupError, match="dropout_ratio must be less than 1"):
        make_layer('type: "Dropout" dropout_param { dropout_ratio: 1.0 }')
