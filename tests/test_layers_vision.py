"""Convolution and Pooling: hand-worked values, Caffe's rounding, gradient checks, torch oracle."""
import numpy as np
import pytest

from conftest import assert_gradients, distinct, make_layer, run
from netspec.blob import Blob

CONV = ('type: "Convolution" convolution_param {{ num_output: {m} {extra} '
        'weight_filler {{ type: "gaussian" }} bias_filler {{ type: "gaussian" }} }}')


# -- seed 002: 5x5 input, 2x2 kernel, stride 1 -----------------------------------------------
SEED_O = np.array([[0.51, 0.9, 0.88, 0.84, 0.05],
                   [0.4, 0.62, 0.22, 0.59, 0.1],
                   [0.11, 0.2, 0.74, 0.33, 0.14],
                   [0.47, 0.01, 0.85, 0.7, 0.09],
                   [0.76, 0.19, 0.72, 0.17, 0.57]])
SEED_DELTA = np.array([[0, 0, 0.0686, 0],
                       [0, 0.0364, 0, 0],
                       [0, 0.0467, 0, 0],
                       [0, 0, 0, -0.0681]])


def test_seed_002_weight_gradient():
    layer, bottom, top = run('type: "Convolution" convolution_param { num_output: 1 '
                             'kernel_size: 2 bias_term: false }', SEED_O[None, None])
    assert top[0].shape == (1, 1, 4, 4)
    top[0].diff[...] = SEED_DELTA
    layer.backward(top, [True], bottom)
    np.testing.assert_allclose(layer.blobs[0].diff[0, 0],
                               [[0.044606, 0.094061], [0.011262, 0.068288]], atol=1e-6)


def test_seed_002_forward_is_cross_correlation():
    layer, bottom, top = run('type: "Convolution" convolution_param { num_output: 1 '
                             'kernel_size: 2 }', SEED_O[None, None])
    w, b = layer.blobs[0].data[0, 0], layer.blobs[1].data[0]
    expected = np.array([[(SEED_O[i:i + 2, j:j + 2] * w).sum() + b for j in range(4)]
                         for i in range(4)])
    np.testing.assert_allclose(top[0].data[0, 0], expected)


def test_seed_004_input_delta_is_full_convolution_with_rotated_kernel():
    layer, bottom, top = run('type: "Convolution" convolution_param { num_output: 1 '
                             'kernel_size: 2 bias_term: false }', SEED_O[None, None])
    w = layer.blobs[0].data[0, 0]
    top[0].diff[...] = SEED_DELTA
    layer.backward(top, [True], bottom)
    padded = np.pad(SEED_DELTA, 1)
    rot = w[::-1, ::-1]
    expected = np.array([[(padded[i:i + 2, j:j + 2] * rot).sum() for j in range(5)]
                         for i in range(5)])
    np.testing.assert_allclose(bottom[0].diff[0, 0], expected)


@pytest.mark.parametrize("extra,shape", [
    ("kernel_size: 3", (2, 3, 6, 5)),
    ("kernel_size: 3 stride: 2 pad: 1", (2, 3, 7, 6)),
    ("kernel_size: 2 stride: 3", (1, 2, 8, 7)),
    ("kernel_h: 2 kernel_w: 3 stride_h: 1 stride_w: 2 pad_h: 1 pad_w: 0", (2, 2, 5, 7)),
    ("kernel_size: 3 dilation: 2", (1, 2, 7, 7)),
    ("kernel_size: 3 group: 2 pad: 1", (2, 4, 5, 5)),
    ("kernel_size: 1 bias_term: false", (2, 3, 4, 4)),
    ("kernel_size: 1 group: 2", (1, 4, 3, 5)),  # one image, pointwise: no im2col at all
    ("kernel_size: 3 pad: 1", (1, 2, 4, 4)),
])
def test_convolution_gradients(extra, shape):
    m = 4
    assert_gradients(CONV.format(m=m, extra=extra), np.random.default_rng(0).normal(size=shape))


@pytest.mark.parametrize("extra,shape", [("kernel_size: 3 pad: 1", (2, 3, 5, 5)),
                                         ("kernel_size: 1", (1, 3, 4, 4))])
def test_convolution_gradients_at_test_phase(extra, shape):
    """TEST-phase convolutions share one workspace and recompute their columns in backward."""
    assert_gradients(CONV.format(m=3, extra=extra), np.random.default_rng(0).normal(size=shape),
                     phase=1)


@pytest.fixture
def small_pieces(monkeypatch):
    """Cut even a small batch into pieces of 2 images (the path big batches take)."""
    from netspec.kernels.cpu import workers
    monkeypatch.setattr(workers, "MIN_COLUMNS", 1)
    monkeypatch.setattr(workers, "MIN_ELEMENTS", 1)
    monkeypatch.setattr(workers, "MAX_PIECES", 3)


@pytest.mark.parametrize("extra,phase", [("kernel_size: 3 pad: 1", 0),
                                         ("kernel_size: 3 stride: 2 group: 2", 0),
                                         ("kernel_size: 1", 0),  # pointwise, pieces of 2 images
                                         ("kernel_size: 3 pad: 1", 1)])
def test_convolution_gradients_in_pieces(small_pieces, extra, phase):
    """A batch of 5 cut into pieces of 2, 2 and 1 images: the weight gradient is the sum of
    the pieces' terms, and every piece does its own im2col, GEMM and col2im."""
    layer, _, _ = run(CONV.format(m=4, extra=extra), np.zeros((5, 4, 5, 5)))
    assert layer.plan.piece == 2
    assert_gradients(CONV.format(m=4, extra=extra),
                     np.random.default_rng(0).normal(size=(5, 4, 5, 5)), phase=phase)


@pytest.mark.parametrize("phase", [0, 1])
def test_convolution_gradients_in_chunks_of_pieces(small_pieces, monkeypatch, phase):
    """A column buffer too small for the batch: chunks of whole pieces, one after another
    (the second chunk must not reuse columns the first one wrote over)."""
    from netspec.kernels.cpu import conv as cpu_conv
    from netspec.layers import vision
    monkeypatch.setattr(cpu_conv, "COL_ELEMENTS", 3 * 4 * 9 * 25)
    layer, _, _ = run(CONV.format(m=4, extra="kernel_size: 3 pad: 1"), np.zeros((5, 4, 5, 5)))
    assert (layer.plan.chunk, layer.plan.piece) == (2, 2)
    assert_gradients(CONV.format(m=4, extra="kernel_size: 3 pad: 1"),
                     np.random.default_rng(0).normal(size=(5, 4, 5, 5)), phase=phase)


def test_convolution_pieces_give_the_same_bits_on_any_thread_count(small_pieces):
    """Pieces are cut by shape, not by threads, and their terms summed in order: training
    in pieces on one thread or on every core gives bit-identical weights."""
    import netspec
    from netspec.kernels.cpu import workers
    x = np.random.default_rng(5).normal(size=(7, 3, 6, 6))
    results = []
    for threads in (1, 4):
        netspec.set_threads(threads)
        assert (workers._pool is not None) == (threads > 1 and workers._thread_safe_kernels())
        layer, bottom, top = run(CONV.format(m=5, extra="kernel_size: 3 pad: 1"), x)
        for _ in range(3):
            layer.forward(bottom, top)
            top[0].diff[...] = top[0].data
            layer.backward(top, [True], bottom)
        results.append((top[0].data.copy(), bottom[0].diff.copy(), layer.blobs[0].diff.copy()))
    netspec.set_threads()
    for a, b in zip(*results):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("extra,shape", [("kernel_size: 3 pad: 1", (5, 4, 5, 5)),
                                         ("kernel_size: 3 stride: 2 group: 2", (5, 4, 7, 6)),
                                         ("kernel_size: 2 dilation: 2 pad: 1", (3, 2, 6, 6))])
def test_training_row_layout_matches_columns(small_pieces, monkeypatch, extra, shape):
    """Training convolutions with few filters keep im2row's rows (ROWS): the same forward and
    gradients as Caffe's column layout, in pieces, grouped, strided and dilated."""
    from netspec.kernels.cpu import conv as cpu_conv
    from netspec.layers import vision
    x = np.random.default_rng(3).normal(size=shape).astype(np.float32)
    results = []
    for rows in (True, False):
        monkeypatch.setattr(cpu_conv, "ROWS", rows)
        spec = make_layer(CONV.format(m=4, extra=extra)).spec
        layer = vision.Convolution(spec, 0, np.float32, np.random.default_rng(0))
        bottom, top = [Blob(shape, np.float32)], [Blob((), np.float32)]
        bottom[0].data[...] = x
        layer.setup(bottom, top)
        assert layer.plan.row_layout == rows
        layer.forward(bottom, top)
        top[0].diff[...] = np.random.default_rng(4).normal(size=top[0].shape)
        layer.blobs[0].diff[...] = 1
        layer.backward(top, [True], bottom)
        results.append((top[0].data.copy(), bottom[0].diff.copy(), layer.blobs[0].diff.copy(),
                        layer.blobs[1].diff.copy()))
    for a, b in zip(*results):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


@pytest.fixture
def direct_everywhere(monkeypatch):
    """Let the direct kernels take every pass their tiles fit (not only the fast ones)."""
    from netspec.kernels.cpu import conv as cpu_conv
    from netspec.layers import vision
    monkeypatch.setattr(cpu_conv, "DIRECT_MIN_RUN", 0)
    monkeypatch.setattr(cpu_conv, "DIRECT_MAX_WASTE", float("inf"))
    monkeypatch.setattr(cpu_conv, "DIRECT_MIN_PLANE", 0)


DIRECT_CASES = [  # (m, extra, shape, which passes run direct: forward, input grad, weight grad)
    (6, "kernel_size: 3 pad: 1", (2, 5, 6, 7), (True, True, True)),  # edge tiles overlap
    (7, "kernel_size: 5 pad: 2", (2, 5, 5, 9), (True, True, True)),
    (14, "kernel_size: 3 pad: 1", (1, 4, 5, 6), (True, True, True)),  # two tasks of dW tiles
    (4, "kernel_size: 3 stride: 2 pad: 1", (2, 3, 9, 9), (True, False, False)),
    (5, "kernel_h: 2 kernel_w: 3 pad_h: 1 pad_w: 0", (2, 4, 5, 7), (True, True, True)),
    (8, "kernel_size: 3 group: 2 pad: 1", (2, 8, 5, 6), (True, True, True)),
    (4, "kernel_size: 3 dilation: 2", (1, 3, 9, 9), (False, False, False)),
    (2, "kernel_size: 3", (1, 4, 6, 6), (False, True, False)),  # 2 filters: no tile of 4
    (3, "kernel_h: 1 kernel_w: 3 pad_w: 1", (2, 4, 3, 8), (False, True, False)),  # 3: no tile
    (9, "kernel_h: 1 kernel_w: 5 pad_w: 2", (1, 2, 3, 8), (True, False, True)),  # taps: 5
    (6, "kernel_size: 3 pad: 1", (1, 2, 5, 6), (True, False, True)),  # 9 taps: tiles overlap
]


@pytest.mark.parametrize("phase", [0, 1])
@pytest.mark.parametrize("m,extra,shape,passes", DIRECT_CASES)
def test_convolution_gradients_direct(direct_everywhere, m, extra, shape, passes, phase):
    """The direct kernels (no im2col): forward, input and weight gradients against numeric
    differentiation, with the passes they do not fit left to im2col + GEMM."""
    layer, _, _ = run(CONV.format(m=m, extra=extra), np.zeros(shape), phase=phase)
    assert (layer.plan.direct_forward, layer.plan.direct_input_grad, layer.plan.direct_weight_grad) == passes
    assert_gradients(CONV.format(m=m, extra=extra),
                     np.random.default_rng(0).normal(size=shape), phase=phase)


@pytest.mark.parametrize("m,extra,shape,passes", DIRECT_CASES[:5])
def test_convolution_direct_matches_columns(direct_everywhere, monkeypatch, m, extra, shape,
                                            passes):
    """float32 as trained: the direct kernels agree with im2col + GEMM, weight gradients add
    to what the diff held (iter_size accumulates), and the bits do not depend on threads."""
    assert_direct_matches_columns(monkeypatch, m, extra, shape)


PLANE_CASES = [  # (m, extra, shape): forward by the planes kernel (runs too short for rows)
    (4, "kernel_size: 5", (2, 1, 14, 18)),  # one channel, as LeNet's conv1
    (5, "kernel_size: 5 pad: 2", (2, 3, 12, 16)),  # an odd filter count: pairs overlap
    (6, "kernel_size: 5 group: 2 pad: 2", (1, 4, 12, 16)),
    (2, "kernel_h: 3 kernel_w: 10 pad_w: 1", (1, 2, 4, 40)),  # two passes a kernel row
]


@pytest.mark.parametrize("phase", [0, 1])
@pytest.mark.parametrize("m,extra,shape", PLANE_CASES)
def test_convolution_gradients_planes(m, extra, shape, phase):
    """The planes kernel's forward against numeric differentiation; in training only beside
    a direct weight gradient (else im2col's columns serve both passes)."""
    layer, _, _ = run(CONV.format(m=m, extra=extra), np.zeros(shape), phase=phase)
    assert not layer.plan.direct_forward
    assert layer.plan.plane_forward == (phase == 1 or layer.plan.direct_weight_grad)
    assert_gradients(CONV.format(m=m, extra=extra),
                     np.random.default_rng(0).normal(size=shape), phase=phase)


@pytest.mark.parametrize("m,extra,shape", PLANE_CASES[:2])
def test_convolution_planes_match_columns(monkeypatch, m, extra, shape):
    assert_direct_matches_columns(monkeypatch, m, extra, shape)


WINDOW_CASES = [  # (m, extra, shape, (forward, input grad) by the windows kernel)
    (8, "kernel_size: 3 pad: 1", (2, 6, 4, 8), (True, True)),  # 8 wide: two rows a vector
    (7, "kernel_size: 5 pad: 2", (1, 6, 3, 17), (True, True)),  # rows split across vectors
    (12, "kernel_size: 3 group: 2 pad: 1", (1, 12, 3, 16), (True, True)),  # filters overlap
    (6, "kernel_size: 3", (2, 5, 5, 10), (True, False)),  # unpadded: the images as they are
    (6, "kernel_size: 3 pad: 1", (1, 6, 3, 12), (True, True)),  # 12 wide: parts of 12 + 4,
    (6, "kernel_size: 3 pad: 1", (1, 4, 6, 9), (False, False)),  # 8 + 8, 4 + 12; 9: 3 rows
]


WINDOW_WEIGHT_CASES = [  # (m, extra, shape): dW by the windows kernel (KW x C/G >= 64)
    (7, "kernel_size: 3 pad: 1", (2, 22, 4, 5)),  # 5 filters a tile and 2 alone
    (12, "kernel_size: 3 group: 2", (1, 44, 6, 7)),  # groups, unpadded
    (5, "kernel_h: 2 kernel_w: 5 pad_h: 1 pad_w: 2", (1, 15, 4, 4)),  # 75 columns: a partial
]


@pytest.mark.parametrize("m,extra,shape", WINDOW_WEIGHT_CASES)
def test_convolution_weight_gradient_windows(direct_everywhere, monkeypatch, m, extra, shape):
    """The windows kernel's weight gradient against numeric differentiation and against
    im2col + GEMM (float32, added to what the diff held, the same bits on 1 and 2 threads)."""
    layer, _, _ = run(CONV.format(m=m, extra=extra), np.zeros(shape), phase=0)
    assert layer.plan.window_weight_grad and not layer.plan.direct_weight_grad
    assert_gradients(CONV.format(m=m, extra=extra),
                     np.random.default_rng(0).normal(size=shape), phase=0)
    assert_direct_matches_columns(monkeypatch, m, extra, shape)


SCATTER_CASES = [  # (m, extra, shape): the input gradient added window by window
    (7, "kernel_size: 3", (2, 22, 6, 7)),  # "valid": no direct input gradient; pairs of rows
    (6, "kernel_size: 3 stride: 2 pad: 1", (1, 22, 9, 8)),  # strided, padded, an odd row
    (8, "kernel_size: 3 group: 2", (1, 44, 5, 6)),
    (5, "kernel_size: 5", (1, 30, 7, 7)),  # 150 inputs a window: two runs of vectors
]


@pytest.mark.parametrize("m,extra,shape", SCATTER_CASES)
def test_convolution_input_gradient_scattered(monkeypatch, m, extra, shape):
    """input_grad_windows against numeric differentiation and against im2col + GEMM (float32,
    the same bits on 1 and 2 threads)."""
    layer, _, _ = run(CONV.format(m=m, extra=extra), np.zeros(shape), phase=0)
    assert layer.plan.scatter_input_grad and not layer.plan.direct_input_grad
    assert_gradients(CONV.format(m=m, extra=extra),
                     np.random.default_rng(0).normal(size=shape), phase=0)
    assert_direct_matches_columns(monkeypatch, m, extra, shape)


def test_weight_gradient_windows_only_where_they_pay():
    """Windows of fewer than WINDOW_MIN_RUN inputs (3 channels x 5: the tile sums), or more
    than DIRECT_MAX_FILTERS filters a group (GEMM's), keep the other paths."""
    few, _, _ = run(CONV.format(m=8, extra="kernel_size: 5 pad: 2"), np.zeros((1, 3, 12, 12)))
    many, _, _ = run(CONV.format(m=65, extra="kernel_size: 3 pad: 1"), np.zeros((1, 22, 4, 5)))
    assert not few.plan.window_weight_grad and few.plan.direct_weight_grad
    assert not many.plan.window_weight_grad


@pytest.mark.parametrize("phase", [0, 1])
@pytest.mark.parametrize("m,extra,shape,passes", WINDOW_CASES)
def test_convolution_gradients_windows(direct_everywhere, m, extra, shape, passes, phase):
    """The windows kernel (output positions as vectors, 6 filters a tile) where it fits:
    forward and input gradient against numeric differentiation."""
    layer, _, _ = run(CONV.format(m=m, extra=extra), np.zeros(shape), phase=phase)
    assert (layer.plan.window_forward, layer.plan.window_input_grad) == passes
    assert_gradients(CONV.format(m=m, extra=extra),
                     np.random.default_rng(0).normal(size=shape), phase=phase)


@pytest.mark.parametrize("m,extra,shape,passes", WINDOW_CASES[:4])
def test_convolution_windows_match_columns(direct_everywhere, monkeypatch, m, extra, shape,
                                           passes):
    assert_direct_matches_columns(monkeypatch, m, extra, shape)


def assert_direct_matches_columns(monkeypatch, m, extra, shape):
    import netspec
    from netspec.kernels.cpu import conv as cpu_conv
    from netspec.layers import vision
    x = np.random.default_rng(3).normal(size=shape).astype(np.float32)
    results = {}
    for path, threads in (("columns", 2), ("direct", 1), ("direct", 2)):
        monkeypatch.setattr(cpu_conv, "DIRECT", path == "direct")
        netspec.set_threads(threads)
        spec = make_layer(CONV.format(m=m, extra=extra)).spec
        layer = vision.Convolution(spec, 0, np.float32, np.random.default_rng(0))
        bottom, top = [Blob(shape, np.float32)], [Blob((), np.float32)]
        bottom[0].data[...] = x
        layer.setup(bottom, top)
        layer.forward(bottom, top)
        top[0].diff[...] = np.random.default_rng(4).normal(size=top[0].shape)
        layer.blobs[0].diff[...] = 1
        layer.blobs[1].diff[...] = 2
        layer.backward(top, [True], bottom)
        results[path, threads] = (top[0].data.copy(), bottom[0].diff.copy(),
                                  layer.blobs[0].diff.copy(), layer.blobs[1].diff.copy())
    netspec.set_threads()
    for a, b in zip(results["columns", 2], results["direct", 1]):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)
    # the bias gradient, summed beside the direct kernels' copy of dY, keeps its bits
    np.testing.assert_array_equal(results["columns", 2][3], results["direct", 1][3])
    for a, b in zip(results["direct", 1], results["direct", 2]):
        np.testing.assert_array_equal(a, b)


def test_convolution_shapes_and_errors():
    layer, _, top = run(CONV.format(m=5, extra="kernel_size: 3 stride: 2 pad: 1"),
                        np.zeros((2, 3, 7, 8)))
    assert top[0].shape == (2, 5, 4, 4)
    assert layer.blobs[0].shape == (5, 3, 3, 3) and layer.blobs[1].shape == (5,)
    from netspec.layers import LayerSetupError
    with pytest.raises(LayerSetupError, match="larger than the padded input"):
        run(CONV.format(m=2, extra="kernel_size: 5"), np.zeros((1, 1, 3, 3)))
    with pytest.raises(LayerSetupError, match="num_output must be greater than 0"):
        make_layer('type: "Convolution" convolution_param { num_output: 0 kernel_size: 3 }')
    with pytest.raises(LayerSetupError, match="kernel_size must be given"):
        make_layer('type: "Convolution" convolution_param { num_output: 2 }')
    with pytest.raises(LayerSetupError, match="stride must be >= 1"):
        make_layer(CONV.format(m=2, extra="kernel_size: 3 stride: 0"))


# -- pooling -----------------------------------------------------------------------------------
POOL = 'type: "Pooling" pooling_param {{ pool: {pool} {extra} }}'


def test_max_pool_hand_worked_with_mask():
    x = np.array([[1, 3, 2, 0], [4, 2, 1, 5], [0, 1, 7, 2], [3, 6, 1, 1.]])
    layer, bottom, top = run(POOL.format(pool="MAX", extra="kernel_size: 2 stride: 2"),
                             x[None, None], ntop=2)
    np.testing.assert_array_equal(top[0].data[0, 0], [[4, 5], [6, 7]])
    np.testing.assert_array_equal(top[1].data[0, 0], [[4, 7], [13, 10]])  # h * W + w
    top[0].diff[...] = [[[[1, 2], [3, 4]]]]
    layer.backward(top, [True], bottom)
    np.testing.assert_array_equal(bottom[0].diff[0, 0], [[0, 0, 0, 0], [1, 0, 0, 2],
                                                         [0, 0, 4, 0], [0, 3, 0, 0]])


def test_ave_pool_hand_worked_with_padding_counts_pad_in_divisor():
    x = np.arange(1, 10, dtype=float).reshape(1, 1, 3, 3)
    _, _, top = run(POOL.format(pool="AVE", extra="kernel_size: 2 stride: 2 pad: 1"), x)
    # windows [-1,1)x[-1,1) etc., divisor = window area clipped to the PADDED input (4)
    np.testing.assert_allclose(top[0].data[0, 0], [[1 / 4, (2 + 3) / 4], [(4 + 7) / 4,
                                                                         (5 + 6 + 8 + 9) / 4]])


def test_pool_output_size_rounds_up_like_caffe():
    _, _, top = run(POOL.format(pool="MAX", extra="kernel_size: 2 stride: 2"),
                    distinct((1, 1, 5, 5)))
    assert top[0].shape == (1, 1, 3, 3)  # PyTorch's default floor would give 2x2
    _, _, top = run(POOL.format(pool="MAX", extra="kernel_size: 3 stride: 2"),
                    distinct((1, 1, 6, 6)))
    assert top[0].shape == (1, 1, 3, 3)  # ceil((6-3)/2)+1 = 3
    # with pad, a last window starting inside the padding is dropped: (7+2-3)/2 -> 4, not 5
    _, _, top = run(POOL.format(pool="MAX", extra="kernel_size: 3 stride: 2 pad: 1"),
                    distinct((1, 1, 7, 7)))
    assert top[0].shape == (1, 1, 4, 4)
    _, _, top = run(POOL.format(pool="AVE", extra="global_pooling: true"), distinct((2, 3, 5, 4)))
    assert top[0].shape == (2, 3, 1, 1)


@pytest.mark.parametrize("pool", ["MAX", "AVE"])
@pytest.mark.parametrize("extra,shape", [
    ("kernel_size: 2 stride: 2", (2, 2, 6, 6)),
    ("kernel_size: 2 stride: 2", (2, 2, 5, 7)),        # ceil-mode edge windows
    ("kernel_size: 3 stride: 2", (1, 2, 7, 6)),        # overlapping windows
    ("kernel_size: 3 stride: 1 pad: 1", (1, 2, 5, 5)),
    ("kernel_h: 3 kernel_w: 2 stride_h: 2 stride_w: 1 pad_h: 1", (1, 2, 6, 5)),
    ("global_pooling: true", (2, 3, 4, 3)),
])
def test_pooling_gradients(pool, extra, shape):
    assert_gradients(POOL.format(pool=pool, extra=extra), distinct(shape))


def test_pooling_errors():
    from netspec.layers import LayerSetupError
    with pytest.raises(LayerSetupError, match="pad"):
        make_layer(POOL.format(pool="MAX", extra="kernel_size: 2 pad: 2"))
    with pytest.raises(LayerSetupError, match="pad is not used by STOCHASTIC"):
        make_layer(POOL.format(pool="STOCHASTIC", extra="kernel_size: 2 pad: 1"))


# -- STOCHASTIC pooling, Deconvolution, Im2col ---------------------------------------------------
def test_stochastic_pool_samples_in_proportion_and_averages_at_test():
    x = np.array([[[[1.0, 3.0], [0.0, 0.0]]]])
    picks = []
    for seed in range(400):
        layer = make_layer(POOL.format(pool="STOCHASTIC", extra="kernel_size: 2 stride: 2"),
                           seed=seed)
        from netspec.blob import Blob
        b, t = Blob((1, 1, 2, 2), np.float64), Blob((), np.float64)
        b.data[...] = x
        layer.setup([b], [t])
        layer.forward([b], [t])
        picks.append(float(t.data.ravel()[0]))
    assert set(picks) == {1.0, 3.0} and abs(picks.count(3.0) / 400 - 0.75) < 0.07
    _, _, top = run(POOL.format(pool="STOCHASTIC", extra="kernel_size: 2 stride: 2"), x, phase=1)
    assert float(top[0].data.ravel()[0]) == pytest.approx((1 + 9) / 4)


@pytest.mark.parametrize("phase", [0, 1])
@pytest.mark.parametrize("extra,shape", [("kernel_size: 2 stride: 2", (2, 2, 4, 6)),
                                         ("kernel_size: 3 stride: 2", (1, 2, 7, 6))])
def test_stochastic_pooling_gradients(phase, extra, shape):
    x = np.abs(distinct(shape)) + 0.5  # positive activations, as the method assumes
    assert_gradients(POOL.format(pool="STOCHASTIC", extra=extra), x, phase=phase)


DECONV = CONV.replace("Convolution", "Deconvolution")


@pytest.mark.parametrize("extra,shape", [
    ("kernel_size: 3", (2, 3, 4, 5)),
    ("kernel_size: 4 stride: 2 pad: 1", (2, 2, 3, 3)),
    ("kernel_size: 3 stride: 2 group: 2", (1, 4, 3, 4)),
    ("kernel_h: 2 kernel_w: 3 dilation: 2 stride_h: 2 stride_w: 1", (1, 2, 3, 3)),
    ("kernel_size: 1", (1, 3, 3, 4)),  # one image, pointwise
])
def test_deconvolution_gradients(extra, shape):
    assert_gradients(DECONV.format(m=4, extra=extra), np.random.default_rng(0).normal(size=shape))


def test_deconvolution_is_the_adjoint_of_convolution():
    x = np.random.default_rng(1).normal(size=(2, 3, 7, 9))  # (size + 2 pad - k) % stride == 0
    conv, _, y = run(CONV.format(m=4, extra="kernel_size: 3 stride: 2 pad: 1 bias_term: false"), x)
    deconv = make_layer(DECONV.format(m=3, extra="kernel_size: 3 stride: 2 pad: 1 "
                                                 "bias_term: false"))
    from netspec.blob import Blob
    u = Blob(y[0].shape, np.float64)
    u.data[...] = np.random.default_rng(2).normal(size=y[0].shape)
    out = Blob((), np.float64)
    deconv.setup([u], [out])
    deconv.blobs[0].data[...] = conv.blobs[0].data
    deconv.forward([u], [out])
    assert out.shape == x.shape
    # <conv(x), u> == <x, deconv(u)>: the same weights give adjoint maps
    assert (y[0].data * u.data).sum() == pytest.approx((x * out.data).sum(), rel=1e-12)


def test_im2col_layout_and_gradients():
    x = np.arange(2 * 2 * 3 * 3, dtype=float).reshape(2, 2, 3, 3)
    _, _, top = run('type: "Im2col" convolution_param { kernel_size: 2 }', x)
    assert top[0].shape == (2, 8, 2, 2)
    # channel 0, tap (0, 1) at output (1, 0) reads x[0, 0, 1, 1]
    assert top[0].data[0, 1, 1, 0] == x[0, 0, 1, 1]
    assert top[0].data[1, 4 + 3, 0, 1] == x[1, 1, 1, 2]
    assert_gradients('type: "Im2col" convolution_param { kernel_size: 2 stride: 2 pad: 1 }',
                     np.random.default_rng(0).normal(size=(2, 2, 5, 4)))


# -- PyTorch as an independent oracle ------------------------------------------------------------
torch = pytest.importorskip("torch")


@pytest.mark.parametrize("spec,torch_fn,extra,kw,shape", [
    (CONV, "conv2d", "kernel_size: 3 stride: 2 pad: 1 group: 2",
     dict(stride=2, padding=1, groups=2), (2, 4, 9, 8)),
    (CONV, "conv2d", "kernel_h: 2 kernel_w: 3 dilation: 2", dict(dilation=2), (2, 4, 9, 8)),
    (DECONV, "conv_transpose2d", "kernel_size: 3 stride: 2 pad: 1 group: 2",
     dict(stride=2, padding=1, groups=2), (2, 4, 5, 4)),
    (DECONV, "conv_transpose2d", "kernel_size: 4 stride: 2 pad: 1 dilation: 2",
     dict(stride=2, padding=1, dilation=2), (2, 4, 5, 4)),
], ids=["conv-group", "conv-dilated", "deconv-group", "deconv-dilated"])
def test_convolutions_match_torch(spec, torch_fn, extra, kw, shape):
    x = np.random.default_rng(3).normal(size=shape)
    layer, bottom, top = run(spec.format(m=6, extra=extra), x)
    dy = np.random.default_rng(4).normal(size=top[0].shape)
    top[0].diff[...] = dy
    layer.backward(top, [True], bottom)
    xt = torch.tensor(x, requires_grad=True)
    wt = torch.tensor(layer.blobs[0].data, requires_grad=True)
    bt = torch.tensor(layer.blobs[1].data, requires_grad=True)
    yt = getattr(torch.nn.functional, torch_fn)(xt, wt, bt, **kw)
    yt.backward(torch.tensor(dy))
    assert yt.shape == top[0].shape
    np.testing.assert_allclose(top[0].data, yt.detach().numpy(), atol=1e-10)
    np.testing.assert_allclose(bottom[0].diff, xt.grad.numpy(), atol=1e-10)
    np.testing.assert_allclose(layer.blobs[0].diff, wt.grad.numpy(), atol=1e-10)
    np.testing.assert_allclose(layer.blobs[1].diff, bt.grad.numpy(), atol=1e-10)


@pytest.mark.parametrize("pool", ["MAX", "AVE"])
def test_pooling_matches_torch_with_ceil_mode(pool):
    x = distinct((2, 3, 7, 7), seed=2)
    layer, bottom, top = run(POOL.format(pool=pool, extra="kernel_size: 3 stride: 2 pad: 1"), x)
    dy = np.random.default_rng(4).normal(size=top[0].shape)
    top[0].diff[...] = dy
    layer.backward(top, [True], bottom)
    xt = torch.tensor(x, requires_grad=True)
    f = torch.nn.functional
    yt = f.max_pool2d(xt, 3, 2, 1, ceil_mode=True) if pool == "MAX" else \
        f.avg_pool2d(xt, 3, 2, 1, ceil_mode=True, count_include_pad=True)
    yt.backward(torch.tensor(dy))
    assert yt.shape == top[0].shape
    np.testing.assert_allclose(top[0].data, yt.detach().numpy(), atol=1e-12)
    np.testing.assert_allclose(bottom[0].diff, xt.grad.numpy(), atol=1e-12)



def test_spp_levels_by_hand():
    x = distinct((2, 3, 8, 8))
    _, _, top = run('type: "SPP" spp_param { pyramid_height: 3 }', x)
    assert top[0].shape == (2, 3 * (1 + 4 + 16))
    level0 = top[0].data[:, :3]
    np.testing.assert_array_equal(level0, x.max(axis=(2, 3)))
    level1 = top[0].data[:, 3:15].reshape(2, 3, 2, 2)
    np.testing.assert_array_equal(level1, x.reshape(2, 3, 2, 4, 2, 4).max(axis=(3, 5)))
    _, _, top = run('type: "SPP" spp_param { pyramid_height: 1 pool: AVE }', x)
    np.testing.assert_allclose(top[0].data, x.mean(axis=(2, 3), keepdims=True))


WINOGRAD_CASES = [  # (m, extra, shape): 3x3 stride-1 forward passes by Winograd
    (5, "kernel_size: 3 pad: 1", (2, 4, 7, 9)),  # odd output: the last tiles cut
    (4, "kernel_size: 3", (1, 3, 6, 5)),  # no padding
    (6, "kernel_size: 3 pad: 2 group: 3", (3, 6, 5, 4)),  # groups, padding past a tile
    (3, "kernel_size: 3 pad: 1 bias_term: false", (5, 2, 3, 3)),  # tiny planes, no bias
    (6, "kernel_size: 3 pad: 1 group: 2", (1, 4, 9, 8)),  # one image: its GEMMs cut instead
]


def winograd_layer(monkeypatch, m, extra, shape, dtype, tile=2, one_piece=False):
    """A Convolution that runs no backward (inference), by Winograd F(tile x tile, 3x3) (0:
    im2col); small thresholds and pieces so these shapes take it, in several chunks and pieces
    (or each chunk as one piece, its products cut instead)."""
    from netspec.kernels.cpu import workers
    from netspec.kernels.cpu import conv as cpu_conv
    from netspec.layers import vision
    monkeypatch.setattr(cpu_conv, "WINOGRAD", tile > 0)
    monkeypatch.setattr(cpu_conv, "WINOGRAD_MIN_CHANNELS", 1)
    monkeypatch.setattr(cpu_conv, "WINOGRAD_MIN_TILES", 1)
    monkeypatch.setattr(cpu_conv, "WINOGRAD_4X4_MIN", 1 if tile == 4 else 1 << 30)
    monkeypatch.setattr(cpu_conv, "WINOGRAD_ONE_PIECE_TILES", 1 << 30 if one_piece else 0)
    monkeypatch.setattr(cpu_conv, "COL_ELEMENTS", 9 * shape[1] * 81 * 2)  # chunks of ~2 images
    monkeypatch.setattr(workers, "MIN_COLUMNS", 1)
    monkeypatch.setattr(workers, "MIN_ELEMENTS", 1)
    spec = make_layer(CONV.format(m=m, extra=extra)).spec
    layer = vision.Convolution(spec, 1, dtype, np.random.default_rng(0))
    layer.runs_backward = False
    bottom, top = [Blob(shape, dtype)], [Blob((), dtype)]
    bottom[0].data[...] = np.random.default_rng(3).normal(size=shape)
    layer.setup(bottom, top)
    assert layer.plan.winograd_tile == tile
    return layer, bottom, top


@pytest.mark.parametrize("one_piece", [False, True])
@pytest.mark.parametrize("tile", [2, 4])
@pytest.mark.parametrize("m,extra,shape", WINOGRAD_CASES)
def test_winograd_forward_matches_columns(monkeypatch, m, extra, shape, tile, one_piece):
    """Against im2col + GEMM: to float64 rounding, in float32 within float32's rounding times
    the transforms' growth (F(4x4)'s 4s, 5s and 8s: ~10x F(2x2)'s), and the same bits on one
    thread and on two."""
    import netspec
    out = {}
    for dtype, method, threads in ((np.float64, 0, 2), (np.float64, tile, 2),
                                   (np.float32, tile, 1), (np.float32, tile, 2)):
        netspec.set_threads(threads)
        layer, bottom, top = winograd_layer(monkeypatch, m, extra, shape, dtype, method,
                                            one_piece)
        layer.forward(bottom, top)
        out[dtype, method, threads] = top[0].data.copy()
    netspec.set_threads()
    exact = out[np.float64, 0, 2]
    np.testing.assert_allclose(out[np.float64, tile, 2], exact, rtol=1e-12, atol=1e-12)
    scale = np.abs(exact).max()
    np.testing.assert_allclose(out[np.float32, tile, 2], exact, atol=(2e-6 * tile ** 2) * scale)
    np.testing.assert_array_equal(out[np.float32, tile, 1], out[np.float32, tile, 2])


def test_winograd_only_where_no_backward_runs(monkeypatch):
    """A layer that runs backward keeps im2col's forward (its columns serve the weight
    gradient), so training numerics are untouched."""
    from netspec.kernels.cpu import winograd
    layer, bottom, top = winograd_layer(monkeypatch, *WINOGRAD_CASES[0], np.float64)
    layer.runs_backward = True

    def refuse(*args):
        raise AssertionError("Winograd ran in a layer that runs backward")
    monkeypatch.setattr(winograd, "inputs", refuse)
    layer.forward(bottom, top)
    layer.runs_backward = False
    with pytest.raises(AssertionError, match="Winograd ran"):
        layer.forward(bottom, top)
