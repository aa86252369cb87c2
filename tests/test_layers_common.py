"""InnerProduct, Softmax, Split: values against plain formulas, gradient checks."""
import numpy as np
import pytest

from conftest import assert_gradients, make_layer, run

IP = ('type: "InnerProduct" inner_product_param {{ num_output: 4 {extra} '
      'weight_filler {{ type: "gaussian" }} bias_filler {{ type: "gaussian" }} }}')


@pytest.mark.parametrize("extra,shape", [
    ("", (3, 2, 2, 2)),
    ("axis: 2", (2, 3, 5)),
    ("transpose: true", (3, 6)),
    ("bias_term: false", (3, 6)),
    ("axis: -1", (2, 3, 5)),
])
def test_inner_product_gradients(extra, shape):
    assert_gradients(IP.format(extra=extra), np.random.default_rng(0).normal(size=shape))


def test_inner_product_forward_and_shapes():
    x = np.random.default_rng(1).normal(size=(3, 2, 5))
    layer, _, top = run(IP.format(extra=""), x)
    w, b = layer.blobs[0].data, layer.blobs[1].data
    assert w.shape == (4, 10) and top[0].shape == (3, 4)
    np.testing.assert_allclose(top[0].data, x.reshape(3, 10) @ w.T + b)
    layer, _, top = run(IP.format(extra="axis: 2 transpose: true"), x)
    assert layer.blobs[0].shape == (5, 4) and top[0].shape == (3, 2, 4)
    np.testing.assert_allclose(top[0].data, x @ layer.blobs[0].data + layer.blobs[1].data)


def test_inner_product_rejects_bad_config():
    from netspec.layers import LayerSetupError
    with pytest.raises(LayerSetupError) as e:
        make_layer('type: "InnerProduct" inner_product_param { num_output: 0 }')
    assert str(e.value) == "num_output must be greater than 0. Received: num_output=0"
    assert e.value.field == "num_output"


@pytest.mark.parametrize("axis,shape", [(1, (2, 5)), (1, (2, 3, 4)), (-1, (2, 3, 4)), (0, (4, 3))])
def test_softmax(axis, shape):
    x = np.random.default_rng(2).normal(size=shape) * 3
    _, _, top = run(f'type: "Softmax" softmax_param {{ axis: {axis} }}', x)
    e = np.exp(x)
    np.testing.assert_allclose(top[0].data, e / e.sum(axis=axis, keepdims=True))
    assert_gradients(f'type: "Softmax" softmax_param {{ axis: {axis} }}', x)


def test_softmax_is_stable():
    _, _, top = run('type: "Softmax"', np.array([[1000.0, 1000.0, -1000.0]]))
    np.testing.assert_allclose(top[0].data, [[0.5, 0.5, 0.0]])


def test_split_copies_and_sums_gradients():
    x = np.random.default_rng(3).normal(size=(2, 3))
    layer, bottom, top = run('type: "Split"', x, ntop=3)
    for t in top:
        np.testing.assert_array_equal(t.data, x)
    assert_gradients('type: "Split"', x, ntop=3)


def test_softmax_matches_torch():
    torch = pytest.importorskip("torch")
    x = np.random.default_rng(4).normal(size=(2, 3, 4))
    layer, bottom, top = run('type: "Softmax" softmax_param { axis: 1 }', x)
    dy = np.random.default_rng(5).normal(size=x.shape)
    top[0].diff[...] = dy
    layer.backward(top, [True], bottom)
    xt = torch.tensor(x, requires_grad=True)
    yt = torch.softmax(xt, dim=1)
    yt.backward(torch.tensor(dy))
    np.testing.assert_allclose(top[0].data, yt.detach().numpy(), atol=1e-14)
    np.testing.assert_allclose(bottom[0].diff, xt.grad.numpy(), atol=1e-14)
