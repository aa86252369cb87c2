"""BatchNorm, Scale, Bias, MVN, LRN: Caffe's formulas, gradients, PyTorch where they agree."""
import numpy as np
import pytest

from conftest import assert_gradients, blobs, make_layer, run
from netspec import Net, TEST, TRAIN, SpecError

RNG = np.random.default_rng(0)
X = RNG.normal(size=(4, 3, 5, 4)) * 2 + 1


def test_batchnorm_train_normalises_and_accumulates_caffe_statistics():
    layer, _, top = run('type: "BatchNorm" batch_norm_param { moving_average_fraction: 0.5 }', X)
    y = top[0].data
    np.testing.assert_allclose(y.mean(axis=(0, 2, 3)), 0, atol=1e-12)
    np.testing.assert_allclose(y.var(axis=(0, 2, 3)), 1, rtol=1e-4)  # eps 1e-5
    m = X.size // 3
    np.testing.assert_allclose(layer.blobs[2].data, [1.0])
    np.testing.assert_allclose(layer.blobs[0].data, X.mean(axis=(0, 2, 3)))
    np.testing.assert_allclose(layer.blobs[1].data, X.var(axis=(0, 2, 3)) * m / (m - 1))
    bottom = blobs(X)
    layer.forward(bottom, top)  # second pass: s = 0.5 * 1 + 1
    np.testing.assert_allclose(layer.blobs[2].data, [1.5])
    np.testing.assert_allclose(layer.blobs[0].data, 1.5 * X.mean(axis=(0, 2, 3)))


def test_batchnorm_global_stats_use_stored_statistics():
    layer, bottom, top = run('type: "BatchNorm"', X, phase=TEST)
    assert layer.global_stats  # TEST default
    layer.blobs[0].data[...] = [2.0, 4.0, 6.0]
    layer.blobs[1].data[...] = [8.0, 2.0, 0.5]
    layer.blobs[2].data[...] = 2.0
    layer.forward(bottom, top)
    mean, var = np.array([1, 2, 3.0]), np.array([4, 1, 0.25])
    expected = (X - mean[:, None, None]) / np.sqrt(var[:, None, None] + 1e-5)
    np.testing.assert_allclose(top[0].data, expected)


@pytest.mark.parametrize("text,phase", [
    ('type: "BatchNorm"', TRAIN),
    ('type: "BatchNorm"', TEST),
    ('type: "BatchNorm" batch_norm_param { use_global_stats: false }', TEST),
])
def test_batchnorm_gradients(text, phase):
    assert_gradients(text, X[:, :, :3, :3], phase=phase)
    assert_gradients(text, RNG.normal(size=(6, 4)), phase=phase)  # 2-d input


def test_batchnorm_statistics_are_never_learned():
    spec = ('layer { name: "in" type: "Input" top: "x" input_param { shape { dim: 2 dim: 3 } } }'
            'layer { name: "bn" type: "BatchNorm" bottom: "x" top: "y" }')
    net = Net(spec, TRAIN)
    assert all(p.lr_mult == 0 for p in net.learnable_params)
    with pytest.raises(SpecError, match="statistics blobs cannot be learned"):
        Net(spec.replace('top: "y" }', 'top: "y" param { lr_mult: 1 } }'), TRAIN)


@pytest.mark.parametrize("text,shape", [
    ('type: "Scale"', (3,)),
    ('type: "Scale" scale_param { bias_term: true bias_filler { type: "gaussian" } '
     'filler { type: "gaussian" } }', (3,)),
    ('type: "Scale" scale_param { axis: 1 num_axes: 2 filler { type: "uniform" } }', (3, 5)),
    ('type: "Scale" scale_param { axis: 0 num_axes: -1 filler { type: "gaussian" } }',
     (4, 3, 5, 4)),
    ('type: "Bias" bias_param { filler { type: "gaussian" } }', (3,)),
    ('type: "Bias" bias_param { axis: 2 num_axes: 1 filler { type: "gaussian" } }', (5,)),
])
def test_scale_and_bias_with_learned_operand(text, shape):
    layer, _, top = run(text, X)
    p = layer.blobs[0].data
    bshape = {(3,): (1, 3, 1, 1), (3, 5): (1, 3, 5, 1), (5,): (1, 1, 5, 1)}.get(shape, shape)
    assert p.shape == shape
    if "Bias" in text:
        expected = X + p.reshape(bshape)
    else:
        expected = X * p.reshape(bshape)
        if "bias_term" in text:
            expected = expected + layer.blobs[1].data.reshape(bshape)
    np.testing.assert_allclose(top[0].data, expected)
    assert_gradients(text, X)


@pytest.mark.parametrize("kind", ["Scale", "Bias"])
def test_scale_and_bias_with_second_bottom(kind):
    s = RNG.normal(size=(3, 5))
    text = f'type: "{kind}" {kind.lower()}_param {{ axis: 1 }}'
    layer, _, top = run(text, X, s)
    assert layer.blobs == []
    f = np.multiply if kind == "Scale" else np.add
    np.testing.assert_allclose(top[0].data, f(X, s[None, :, :, None]))
    assert_gradients(text, X, s)


def test_scale_defaults_to_ones_and_works_in_place():
    layer = make_layer('type: "Scale"')
    b = blobs(X)[0]
    layer.setup([b], [b])
    np.testing.assert_array_equal(layer.blobs[0].data, 1.0)
    layer.blobs[0].data[...] = [1.0, 2.0, 3.0]
    layer.forward([b], [b])
    b.diff[...] = 1
    layer.backward([b], [True], [b])
    np.testing.assert_allclose(layer.blobs[0].diff, X.sum(axis=(0, 2, 3)))


@pytest.mark.parametrize("param", ["", "normalize_variance: false", "across_channels: true"])
def test_mvn(param):
    text = f'type: "MVN" mvn_param {{ {param} }}'
    _, _, top = run(text, X)
    axes = (1, 2, 3) if "across" in param else (2, 3)
    d = X - X.mean(axis=axes, keepdims=True)
    if "false" not in param:
        d = d / (d.std(axis=axes, keepdims=True) + 1e-9)
    np.testing.assert_allclose(top[0].data, d, atol=1e-12)
    assert_gradients(text, X[:2, :, :3, :3])


@pytest.mark.parametrize("param", [
    "local_size: 3 alpha: 0.5 beta: 0.75 k: 2",
    "local_size: 5 alpha: 0.1 beta: 0.5",
    "norm_region: WITHIN_CHANNEL local_size: 3 alpha: 0.5 beta: 0.75",
])
def test_lrn_gradients(param):
    assert_gradients(f'type: "LRN" lrn_param {{ {param} }}', RNG.normal(size=(2, 6, 4, 3)))


def test_lrn_within_channel_by_hand():
    x = RNG.normal(size=(1, 1, 3, 3))
    _, _, top = run('type: "LRN" lrn_param { norm_region: WITHIN_CHANNEL local_size: 3 '
                    'alpha: 0.9 beta: 0.6 }', x)
    padded = np.pad(x[0, 0] ** 2, 1)
    avg = np.array([[padded[i:i + 3, j:j + 3].sum() / 9 for j in range(3)] for i in range(3)])
    np.testing.assert_allclose(top[0].data[0, 0], x[0, 0] * (1 + 0.9 * avg) ** -0.6)


torch = pytest.importorskip("torch")


def test_lrn_across_channels_matches_torch():
    x = RNG.normal(size=(2, 7, 4, 3))
    layer, bottom, top = run('type: "LRN" lrn_param { local_size: 5 alpha: 0.3 beta: 0.75 '
                             'k: 2 }', x)
    dy = RNG.normal(size=x.shape)
    top[0].diff[...] = dy
    layer.backward(top, [True], bottom)
    xt = torch.tensor(x, requires_grad=True)
    alpha = float(np.float32(0.3))  # LRNParameter stores a float
    yt = torch.nn.functional.local_response_norm(xt, 5, alpha=alpha, beta=0.75, k=2)
    yt.backward(torch.tensor(dy))
    np.testing.assert_allclose(top[0].data, yt.detach().numpy(), atol=1e-12)
    np.testing.assert_allclose(bottom[0].diff, xt.grad.numpy(), atol=1e-12)


def test_batchnorm_train_output_and_gradient_match_torch():
    layer, bottom, top = run('type: "BatchNorm"', X)
    dy = RNG.normal(size=X.shape)
    top[0].diff[...] = dy
    layer.backward(top, [True], bottom)
    xt = torch.tensor(X, requires_grad=True)
    yt = torch.nn.functional.batch_norm(xt, None, None, training=True, eps=1e-5)
    yt.backward(torch.tensor(dy))
    np.testing.assert_allclose(top[0].data, yt.detach().numpy(), atol=1e-10)
    np.testing.assert_allclose(bottom[0].diff, xt.grad.numpy(), atol=1e-10)
    # the stored statistics differ by design: Caffe keeps sums and a scale factor
    assert layer.blobs[2].data[0] == 1.0
