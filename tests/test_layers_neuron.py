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
    ('type: "BNLL"', lambda x: np.log1p(np.exp(x))),
    ('type: "ELU" elu_param { alpha: 0.5 }', lambda x: np.where(x > 0, x, 0.5 * np.expm1(x))),
    ('type: "AbsVal"', np.abs),
    ('type: "Power" power_param { power: 2 scale: 0.5 shift: 3 }', lambda x: (3 + 0.5 * x) ** 2),
    ('type: "Power" power_param { power: 0.5 scale: 1 shift: 4 }', lambda x: np.sqrt(4 + x)),
    ('type: "Exp"', np.exp),
    ('type: "Exp" exp_param { base: 2 scale: 0.5 shift: 1 }', lambda x: 2 ** (1 + 0.5 * x)),
    ('type: "Log" log_param { shift: 5 }', lambda x: np.log(5 + x)),
    ('type: "Log" log_param { base: 10 scale: 2 shift: 8 }', lambda x: np.log10(8 + 2 * x)),
    ('type: "Clip" clip_param { min: -0.5 max: 0.75 }', lambda x: np.clip(x, -0.5, 0.75)),
    ('type: "Swish" swish_param { beta: 1.5 }', lambda x: x / (1 + np.exp(-1.5 * x))),
    ('type: "Threshold" threshold_param { threshold: 0.25 }', lambda x: (x > 0.25) * 1.0),
])
def test_values_gradients_and_in_place(text, f):
    _, _, top = run(text, X)
    np.testing.assert_allclose(top[0].data, f(X), rtol=1e-12)
    kinks = {"ReLU": 0.0, "AbsVal": 0.0, "Threshold": 0.25}
    kink = next((v for k, v in kinks.items() if f'"{k}"' in text), None)
    if "Clip" in text:
        assert_gradients(text, X[np.abs(np.abs(X - 0.125) - 0.625) > 1e-3])
    else:
        assert_gradients(text, X, kink=kink, kink_range=1e-4)
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


@pytest.mark.parametrize("shared", [False, True])
def test_prelu_values_gradients_and_default_slope(shared):
    text = f'type: "PReLU" prelu_param {{ channel_shared: {str(shared).lower()} }}'
    layer, _, top = run(text, X)
    assert layer.blobs[0].shape == (() if shared else (3,))
    np.testing.assert_allclose(layer.blobs[0].data, 0.25)  # Caffe's default filler
    np.testing.assert_allclose(top[0].data, np.where(X > 0, X, 0.25 * X))
    assert_gradients(text + ' ', X, kink=0.0, kink_range=1e-4)


def test_prelu_in_place_gradient_and_learned_slopes():
    layer = make_layer('type: "PReLU" prelu_param { filler { type: "constant" value: 0.1 } }')
    b = blobs(X)[0]
    layer.setup([b], [b])
    layer.forward([b], [b])
    b.diff[...] = 1.0
    layer.backward([b], [True], [b])
    np.testing.assert_allclose(layer.blobs[0].diff, (X * (X <= 0)).sum(axis=(0, 2)))
    np.testing.assert_allclose(b.diff, np.where(X > 0, 1.0, 0.1))


def test_neuron_parameter_errors():
    from netspec.layers import LayerSetupError
    with pytest.raises(LayerSetupError, match="base must be -1"):
        make_layer('type: "Log" log_param { base: -2 }')
    with pytest.raises(LayerSetupError, match="min must be <= max"):
        make_layer('type: "Clip" clip_param { min: 1 max: 0 }')
    with pytest.raises(LayerSetupError, match=r"max must be given \(clip_param needs min and max"):
        run('type: "Clip" clip_param { min: 1 }', X)


torch = pytest.importorskip("torch")


def test_elu_and_prelu_match_torch():
    x = torch.tensor(X, requires_grad=True)
    y = torch.nn.functional.elu(x, alpha=0.5)
    dy = np.random.default_rng(3).normal(size=X.shape)
    y.backward(torch.tensor(dy))
    layer, bottom, top = run('type: "ELU" elu_param { alpha: 0.5 }', X)
    top[0].diff[...] = dy
    layer.backward(top, [True], bottom)
    np.testing.assert_allclose(top[0].data, y.detach().numpy(), atol=1e-14)
    np.testing.assert_allclose(bottom[0].diff, x.grad.numpy(), atol=1e-14)

    layer, bottom, top = run('type: "PReLU" prelu_param { filler { type: "uniform" } }', X)
    x = torch.tensor(X, requires_grad=True)
    a = torch.tensor(layer.blobs[0].data.copy(), requires_grad=True)
    y = torch.nn.functional.prelu(x, a)
    y.backward(torch.tensor(dy))
    top[0].diff[...] = dy
    layer.backward(top, [True], bottom)
    np.testing.assert_allclose(top[0].data, y.detach().numpy(), atol=1e-14)
    np.testing.assert_allclose(bottom[0].diff, x.grad.numpy(), atol=1e-14)
    np.testing.assert_allclose(layer.blobs[0].diff, a.grad.numpy(), atol=1e-13)
