"""Shape and plumbing layers: values against numpy, errors, gradient checks."""
import numpy as np
import pytest

from conftest import assert_gradients, distinct, run
from netspec.layers import LayerSetupError

RNG = np.random.default_rng(0)
X = RNG.normal(size=(2, 3, 4, 5))


def test_flatten():
    _, _, top = run('type: "Flatten"', X)
    assert top[0].shape == (2, 60)
    _, _, top = run('type: "Flatten" flatten_param { axis: 1 end_axis: 2 }', X)
    assert top[0].shape == (2, 12, 5)
    np.testing.assert_array_equal(top[0].data, X.reshape(2, 12, 5))
    assert_gradients('type: "Flatten" flatten_param { axis: 2 }', X)


@pytest.mark.parametrize("param,shape", [
    ("shape { dim: 0 dim: -1 }", (2, 60)),
    ("shape { dim: 0 dim: 3 dim: 20 }", (2, 3, 20)),
    ("shape { dim: 6 dim: 2 } axis: 1 num_axes: 2", (2, 6, 2, 5)),
    ("shape { dim: -1 } axis: -3", (2, 3, 20)),  # Caffe: start = ndim + 1 + axis
    ("shape { dim: 1 } axis: 1 num_axes: 0", (2, 1, 3, 4, 5)),
])
def test_reshape(param, shape):
    _, _, top = run(f'type: "Reshape" reshape_param {{ {param} }}', X)
    assert top[0].shape == shape
    np.testing.assert_array_equal(top[0].data.ravel(), X.ravel())
    assert_gradients(f'type: "Reshape" reshape_param {{ {param} }}', X)


def test_reshape_errors():
    with pytest.raises(LayerSetupError, match="holds 14 values"):
        run('type: "Reshape" reshape_param { shape { dim: 2 dim: 7 } }', X)
    with pytest.raises(LayerSetupError, match="only one dimension"):
        run('type: "Reshape" reshape_param { shape { dim: -1 dim: -1 } }', X)


@pytest.mark.parametrize("axis", [0, 1, 3, -1])
def test_concat_and_slice_round_trip(axis):
    parts = np.split(X, [1, 2] if X.shape[axis] > 2 else [1], axis=axis)
    _, _, top = run(f'type: "Concat" concat_param {{ axis: {axis} }}', *parts)
    np.testing.assert_array_equal(top[0].data, X)
    assert_gradients(f'type: "Concat" concat_param {{ axis: {axis} }}', *parts)
    points = " ".join(f"slice_point: {p}" for p in ([1, 2] if X.shape[axis] > 2 else [1]))
    text = f'type: "Slice" slice_param {{ axis: {axis} {points} }}'
    _, _, tops = run(text, X, ntop=len(parts))
    for t, part in zip(tops, parts):
        np.testing.assert_array_equal(t.data, part)
    assert_gradients(text, X, ntop=len(parts))


def test_legacy_concat_dim_and_equal_slices():
    _, _, top = run('type: "Concat" concat_param { concat_dim: 0 }', X, X)
    assert top[0].shape == (4, 3, 4, 5)
    _, _, tops = run('type: "Slice" slice_param { axis: 3 }', X, ntop=5)
    assert [t.shape for t in tops] == [(2, 3, 4, 1)] * 5
    with pytest.raises(LayerSetupError, match="differ off axis"):
        run('type: "Concat"', X, X[:, :, :3])


@pytest.mark.parametrize("op,f", [
    ("SUM", lambda a, b, c: a + b + c),
    ("SUM coeff: 1 coeff: -2 coeff: 0.5", lambda a, b, c: a - 2 * b + 0.5 * c),
    ("PROD", lambda a, b, c: a * b * c),
    ("MAX", lambda a, b, c: np.maximum(np.maximum(a, b), c)),
])
def test_eltwise(op, f):
    a, b, c = distinct((3, 3, 2, 4), 1)  # no ties between the three inputs
    _, _, top = run(f'type: "Eltwise" eltwise_param {{ operation: {op} }}', a, b, c)
    np.testing.assert_allclose(top[0].data, f(a, b, c))
    assert_gradients(f'type: "Eltwise" eltwise_param {{ operation: {op} }}', a, b, c)


def test_tile_crop_reduction_values_and_gradients():
    _, _, top = run('type: "Tile" tile_param { axis: 1 tiles: 3 }', X)
    np.testing.assert_array_equal(top[0].data, np.tile(X, (1, 3, 1, 1)))
    assert_gradients('type: "Tile" tile_param { axis: -1 tiles: 2 }', X)
    ref = np.zeros((2, 3, 2, 3))
    _, _, top = run('type: "Crop" crop_param { axis: 2 offset: 1 offset: 2 }', X, ref)
    np.testing.assert_array_equal(top[0].data, X[:, :, 1:3, 2:5])
    assert_gradients('type: "Crop" crop_param { axis: 1 offset: 0 offset: 1 offset: 1 }',
                     X, np.zeros((2, 2, 2, 3)), check_bottom=[0])
    with pytest.raises(LayerSetupError, match="exceeds axis"):
        run('type: "Crop" crop_param { offset: 3 }', X, ref)


@pytest.mark.parametrize("op,f", [("SUM", np.sum), ("ASUM", lambda v, axis: np.abs(v).sum(axis)),
                                  ("SUMSQ", lambda v, axis: (v * v).sum(axis)),
                                  ("MEAN", np.mean)])
@pytest.mark.parametrize("axis", [0, 1, 3])
def test_reduction(op, f, axis):
    text = f'type: "Reduction" reduction_param {{ operation: {op} axis: {axis} coeff: 2 }}'
    _, _, top = run(text, X)
    expected = 2 * f(X.reshape(*X.shape[:axis], -1), axis=-1)
    np.testing.assert_allclose(top[0].data, expected)
    assert_gradients(text, X, kink=0.0 if op == "ASUM" else None, kink_range=1e-4)


def test_argmax():
    x = np.array([[3.0, 1.0, 4.0, 1.5], [0.0, 9.0, 2.0, 6.0]])
    _, _, top = run('type: "ArgMax" argmax_param { top_k: 2 out_max_val: true }', x)
    np.testing.assert_array_equal(top[0].data, [[[2, 0], [4, 3]], [[1, 3], [9, 6]]])
    _, _, top = run('type: "ArgMax" argmax_param { axis: 1 }', x)
    np.testing.assert_array_equal(top[0].data, [[2], [1]])
    _, _, top = run('type: "ArgMax" argmax_param { axis: 0 out_max_val: true }', x)
    np.testing.assert_array_equal(top[0].data, [[3, 9, 4, 6]])


def test_embed_lookup_and_gradients():
    idx = np.array([[0, 3], [3, 1]])
    text = ('type: "Embed" embed_param { num_output: 4 input_dim: 5 '
            'weight_filler { type: "gaussian" } bias_filler { type: "gaussian" } }')
    layer, _, top = run(text, idx)
    np.testing.assert_allclose(top[0].data, layer.blobs[0].data[idx] + layer.blobs[1].data)
    assert_gradients(text, idx, check_bottom=[])  # repeated index 3 accumulates
    with pytest.raises(LayerSetupError, match="out of range"):
        run(text, np.array([5]))


def test_silence_and_parameter():
    layer, bottom, top = run('type: "Silence"', X, X[0], ntop=0)
    assert top == []
    assert_gradients('type: "Silence"', X, ntop=0)
    text = 'type: "Parameter" parameter_param { shape { dim: 2 dim: 3 } }'
    layer, _, top = run(text, ntop=1)
    assert top[0].shape == (2, 3) and (top[0].data == 0).all()
    layer.blobs[0].data[...] = RNG.normal(size=(2, 3))
    assert_gradients(text)
