"""The CPU kernels against plain numpy references, and their results independent of threads."""
from __future__ import annotations

from pathlib import Path

import numba
import numpy as np
import pytest

from netspec.kernels import cpu

rng = np.random.default_rng(7)

# (N, C, H, W, kh, kw, sh, sw, ph, pw, dh, dw)
GEOMETRIES = [(2, 3, 7, 6, 3, 2, 1, 2, 1, 0, 1, 1), (1, 2, 9, 9, 3, 3, 2, 2, 2, 1, 2, 1),
              (3, 1, 5, 5, 1, 1, 1, 1, 0, 0, 1, 1), (2, 2, 4, 6, 5, 3, 3, 1, 2, 2, 1, 2),
              # 5-wide filters (a width compiled as a constant): padded, strided, dilated
              (2, 3, 9, 10, 5, 5, 1, 1, 2, 2, 1, 1), (1, 2, 12, 11, 3, 5, 2, 2, 0, 3, 1, 2),
              # square windows, no padding (im2row's unpadded kernel): constant and run-time
              (2, 3, 12, 12, 5, 5, 1, 1, 0, 0, 1, 1), (2, 2, 9, 8, 3, 3, 2, 2, 0, 0, 1, 1),
              (1, 2, 7, 9, 4, 4, 1, 2, 0, 0, 1, 1)]


def out_size(size, k, s, p, d):
    return (size + 2 * p - (d * (k - 1) + 1)) // s + 1


def im2col_reference(x, kh, kw, sh, sw, ph, pw, dh, dw):
    n, c, h, w = x.shape
    oh, ow = out_size(h, kh, sh, ph, dh), out_size(w, kw, sw, pw, dw)
    xp = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    col = np.zeros((c, kh, kw, n, oh, ow), x.dtype)
    for i in range(kh):
        for j in range(kw):
            for y in range(oh):
                for q in range(ow):
                    col[:, i, j, :, y, q] = xp[:, :, y * sh + i * dh, q * sw + j * dw].T
    return col.reshape(c * kh * kw, n * oh * ow)


@pytest.mark.parametrize("g", GEOMETRIES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_im2col_and_its_adjoint(g, dtype):
    n, c, h, w, kh, kw, sh, sw, ph, pw, dh, dw = g
    x = rng.standard_normal((n, c, h, w)).astype(dtype)
    oh, ow = out_size(h, kh, sh, ph, dh), out_size(w, kw, sw, pw, dw)
    col = np.full((c * kh * kw, n * oh * ow), np.nan, dtype)
    cpu.im2col(x, kh, kw, sh, sw, ph, pw, dh, dw, oh, ow, col)
    np.testing.assert_array_equal(col, im2col_reference(x, kh, kw, sh, sw, ph, pw, dh, dw))
    # col2im is the adjoint: <im2col(x), c> == <x, col2im(c)>
    c_ = rng.standard_normal(col.shape)
    dx = np.full(x.shape, np.nan)
    cpu.col2im(c_, kh, kw, sh, sw, ph, pw, dh, dw, oh, ow, dx)
    assert np.isclose((col * c_).sum(), (x * dx).sum(), rtol=1e-5)


@pytest.mark.parametrize("g", GEOMETRIES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_im2row_is_im2col_transposed_and_row2im_its_adjoint(g, dtype):
    n, c, h, w, kh, kw, sh, sw, ph, pw, dh, dw = g
    x = rng.standard_normal((n, c, h, w)).astype(dtype)
    oh, ow = out_size(h, kh, sh, ph, dh), out_size(w, kw, sw, pw, dw)
    rows = np.full((n * oh * ow, c * kh * kw), np.nan, dtype)
    cpu.im2row(x, kh, kw, sh, sw, ph, pw, dh, dw, oh, ow, rows)
    np.testing.assert_array_equal(rows, im2col_reference(x, kh, kw, sh, sw, ph, pw, dh, dw).T)
    r = rng.standard_normal(rows.shape).astype(dtype)
    dx, expected = np.full(x.shape, np.nan, dtype), np.full(x.shape, np.nan, dtype)
    cpu.row2im(r, kh, kw, sh, sw, ph, pw, dh, dw, oh, ow, dx)
    cpu.col2im(np.ascontiguousarray(r.T), kh, kw, sh, sw, ph, pw, dh, dw, oh, ow, expected)
    np.testing.assert_allclose(dx, expected, rtol=1e-12 if dtype == np.float64 else 1e-5,
                               atol=1e-12 if dtype == np.float64 else 1e-5)
    assert np.isclose((rows * r).sum(), (x * dx).sum(), rtol=1e-5)


@pytest.mark.parametrize("kw", [3, 5])
def test_constant_filter_widths_give_the_bits_of_the_run_time_width(monkeypatch, kw):
    """im2row / row2im compile 3- and 5-wide filters as constants (launch.by_filter_width):
    the same bits as the build that reads the width at run time, padded windows included."""
    from netspec.kernels.cpu import launch
    x = rng.standard_normal((2, 3, 9, 11)).astype(np.float32)
    geometry = (3, kw, 1, 1, 1, 2, 1, 1, out_size(9, 3, 1, 1, 1), out_size(11, kw, 1, 2, 1))
    rows_shape = (2 * geometry[-2] * geometry[-1], 3 * 3 * kw)
    results = []
    for widths in (launch.CONSTANT_WIDTHS, ()):
        monkeypatch.setattr(launch, "CONSTANT_WIDTHS", widths)
        rows, dx = np.empty(rows_shape, np.float32), np.empty_like(x)
        cpu.im2row(x, *geometry, rows)
        cpu.row2im(rows * 0.5 + 1, *geometry, dx)
        results.append((rows, dx))
    for constant, run_time in zip(*results):
        np.testing.assert_array_equal(constant, run_time)


def test_rows_to_images_transposes_and_adds_bias():
    y = rng.standard_normal((3 * 4, 5)).astype(np.float32)
    bias = rng.standard_normal(5).astype(np.float32)
    out = np.full((3, 5, 4), np.nan, np.float32)
    cpu.rows_to_images(y, bias, out)
    np.testing.assert_array_equal(out, y.reshape(3, 4, 5).transpose(0, 2, 1) + bias[:, None])
    cpu.rows_to_images(y, bias[:0], out)
    np.testing.assert_array_equal(out, y.reshape(3, 4, 5).transpose(0, 2, 1))


def pool_windows(x, kh, kw, sh, sw, ph, pw, oh, ow, pad_value):
    """Every output's window from a padded copy, (N, C, oh, ow, kh*kw), and the flat index
    of each window position in the unpadded input (-1 in the padding)."""
    n, c, h, w = x.shape
    extra_h, extra_w = max(0, (oh - 1) * sh + kh - h - ph), max(0, (ow - 1) * sw + kw - w - pw)
    xp = np.pad(x, ((0, 0), (0, 0), (ph, extra_h), (pw, extra_w)), constant_values=pad_value)
    index = np.pad(np.arange(h * w).reshape(h, w), ((ph, extra_h), (pw, extra_w)),
                   constant_values=-1)
    win = np.stack([xp[:, :, i:i + sh * (oh - 1) + 1:sh, j:j + sw * (ow - 1) + 1:sw]
                    for i in range(kh) for j in range(kw)], axis=-1)
    idx = np.stack([index[i:i + sh * (oh - 1) + 1:sh, j:j + sw * (ow - 1) + 1:sw]
                    for i in range(kh) for j in range(kw)], axis=-1)
    return win, idx


@pytest.mark.parametrize("geom", [(3, 3, 2, 2, 1, 1), (2, 2, 2, 2, 0, 0), (3, 2, 1, 2, 0, 1),
                                  (3, 3, 2, 2, 0, 0)])
@pytest.mark.parametrize("size", [(7, 8), (8, 6)])  # (8, 6) at 2x2/2: the unrolled tiling path
@pytest.mark.parametrize("ties", [False, True])
def test_max_and_ave_pooling_match_references(geom, size, ties):
    kh, kw, sh, sw, ph, pw = geom
    h, w = size
    x = rng.standard_normal((2, 3, h, w))
    if ties:  # equal values in a window: the first in scan order wins, as numpy's argmax
        x = np.round(x)
    oh = -(-(h + 2 * ph - kh) // sh) + 1
    ow = -(-(w + 2 * pw - kw) // sw) + 1
    y, mask = np.empty((2, 3, oh, ow)), np.empty((2, 3, oh, ow), np.int32)
    cpu.max_pool(x, kh, kw, sh, sw, ph, pw, y, mask)
    win, idx = pool_windows(x, kh, kw, sh, sw, ph, pw, oh, ow, -np.inf)
    np.testing.assert_array_equal(y, win.max(-1))
    np.testing.assert_array_equal(mask, np.take_along_axis(
        np.broadcast_to(idx, win.shape), win.argmax(-1)[..., None], -1)[..., 0])
    cpu.ave_pool(x, kh, kw, sh, sw, ph, pw, y)
    zwin, _ = pool_windows(x, kh, kw, sh, sw, ph, pw, oh, ow, 0.0)
    hs = np.arange(oh) * sh - ph
    ws = np.arange(ow) * sw - pw
    area = np.outer(np.minimum(hs + kh, h + ph) - hs, np.minimum(ws + kw, w + pw) - ws)
    np.testing.assert_allclose(y, zwin.sum(-1) / area, rtol=1e-12)


@pytest.mark.parametrize("kernel", [2, 3])
def test_max_pool_keeps_a_window_first_nan(kernel):
    """A NaN first in its window wins it (Caffe compares with >, which a NaN never passes);
    a NaN later in a window is passed over. Both unrolled paths and the general one."""
    x = rng.standard_normal((1, 1, 6, 6))
    x[0, 0, 0, 0] = np.nan  # first of window (0, 0)
    x[0, 0, 2, 3] = np.nan  # inside window (1, 1) for 2x2/2, (1, 1) for 3x3/2 as well
    oh = 3 if kernel == 2 else 2
    y, mask = np.empty((1, 1, oh, oh)), np.empty((1, 1, oh, oh), np.int32)
    cpu.max_pool(x, kernel, kernel, 2, 2, 0, 0, y, mask)
    assert np.isnan(y[0, 0, 0, 0]) and mask[0, 0, 0, 0] == 0
    assert not np.isnan(y[0, 0, 1, 1])
    window = x[0, 0, 2:2 + kernel, 2:2 + kernel]
    assert y[0, 0, 1, 1] == np.nanmax(window)


@pytest.mark.parametrize("plane", [1, 7, 8, 19, 576])
def test_channel_sums_match_float64(plane):
    x = rng.standard_normal((3, 4, plane)).astype(np.float32)
    out = np.ones(4, np.float32)
    cpu.add_channel_sums(x, out)
    np.testing.assert_allclose(out, 1 + x.astype(np.float64).sum((0, 2)), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("h, w", [(2, 2), (4, 6), (24, 24), (8, 14)])
def test_2x2_max_pool_by_pairs_gives_the_window_loops_bits(dtype, h, w):
    """The 2x2 stride-2 kernel (pairs of columns) picks the same first maximum as the general
    window loop: ties, NaN first or later in a window, +0 against -0, values and mask."""
    x = rng.integers(-2, 2, (2, 3, h, w)).astype(dtype)
    x[0, 0, 0, 0] = np.nan
    x[0, 1, 1, 0] = np.nan
    x[1, 1] = -0.0
    x[1, 1, ::2, 1::3] = 0.0
    outs = []
    for run in (cpu.max_pool, cpu._max_pool_windows):
        y = np.empty((2, 3, h // 2, w // 2), dtype)
        mask = np.empty(y.shape, np.int32)
        run(x, 2, 2, 2, 2, 0, 0, y, mask)
        outs.append((y.view(f"u{y.itemsize}"), mask))
    np.testing.assert_array_equal(outs[0][0], outs[1][0])
    np.testing.assert_array_equal(outs[0][1], outs[1][1])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("h, w, pad", [(5, 5, 0), (13, 13, 0), (8, 14, 0), (9, 12, 1),
                                       (14, 13, 1), (7, 8, 2), (3, 4, 0)])
def test_3x3_stride_2_max_pool_by_pairs_gives_the_window_loops_bits(dtype, h, w, pad):
    """3x3 windows at stride 2 (rows read as pairs from an even or an odd start, odd and even
    widths, padded, ceil-rounded windows cut by the edge): the window loop's first maxima."""
    x = rng.integers(-2, 2, (2, 3, h, w)).astype(dtype)
    x[0, 0, 0, 0] = np.nan
    x[0, 1, 1, 1:4] = np.nan
    x[1, 1] = -0.0
    x[1, 1, ::2, 1::3] = 0.0
    size = [-(-(d + 2 * pad - 3) // 2) + 1 for d in (h, w)]
    size = [s - 1 if (s - 1) * 2 >= d + pad else s for s, d in zip(size, (h, w))]
    outs = []
    for run in (cpu.max_pool, cpu._max_pool_windows):
        y = np.empty((2, 3, *size), dtype)
        mask = np.empty(y.shape, np.int32)
        run(x, 3, 3, 2, 2, pad, pad, y, mask)
        outs.append((y.view(f"u{y.itemsize}"), mask))
    np.testing.assert_array_equal(outs[0][0], outs[1][0])
    np.testing.assert_array_equal(outs[0][1], outs[1][1])


@pytest.mark.parametrize("n, m", [(64, 500), (1, 4096), (7, 257)])
def test_one_position_bias_paths_give_the_general_kernels_bits(n, m):
    """An InnerProduct's bias add and bias gradient (P = 1) run along the rows; each element
    gets the same operations in the same order as in the per-channel kernels."""
    x = rng.standard_normal((n, m, 1)).astype(np.float32)
    x[0, :3] = -0.0
    bias = rng.standard_normal(m).astype(np.float32)
    rows, channels = x.copy(), x.copy()
    cpu.add_bias(rows, bias)
    cpu._add_bias(channels, bias)
    np.testing.assert_array_equal(rows.view(np.uint32), channels.view(np.uint32))
    sums, reference = (np.full(m, 0.5, np.float32) for _ in range(2))
    cpu.add_channel_sums(x, sums)
    cpu._add_channel_sums(x, reference)
    np.testing.assert_array_equal(sums.view(np.uint32), reference.view(np.uint32))
    np.testing.assert_allclose(sums, 0.5 + x.astype(np.float64).sum((0, 2)), rtol=1e-6)


def test_small_calls_run_on_the_calling_thread_large_ones_on_all(monkeypatch):
    """A small call (under launch.SERIAL_BELOW elements) runs with numba's thread count at one
    for its duration, a large one on every thread; the count is restored after each call,
    and the bits are the same either way."""
    from netspec.kernels.cpu import launch
    seen = []
    original = cpu._add_bias.parallel
    monkeypatch.setattr(cpu._add_bias, "parallel",
                        lambda *a: (seen.append(numba.get_num_threads()), original(*a)))
    bias = rng.standard_normal(6).astype(np.float32)
    small, large = (rng.standard_normal((2, 6, n)).astype(np.float32) for n in (5, 20000))
    outputs, counts = [], []
    many = numba.config.NUMBA_NUM_THREADS
    for x in (small, large):
        for threads in (1, many):
            numba.set_num_threads(threads)
            y = x.copy()
            cpu.add_bias(y, bias)
            outputs.append(y)
            counts.append(numba.get_num_threads())
    numba.set_num_threads(many)
    assert seen == [1, 1, 1, many]
    assert counts == [1, many, 1, many]
    assert large.size >= launch.SERIAL_BELOW > small.size
    for y, x in zip(outputs, (small, small, large, large)):
        np.testing.assert_array_equal(y, x + bias[:, None])


def test_results_do_not_depend_on_the_thread_count(monkeypatch):
    from netspec.kernels.cpu import launch
    monkeypatch.setattr(launch, "SERIAL_BELOW", 0)  # every call in parallel on many threads
    x = rng.standard_normal((4, 6, 11, 11)).astype(np.float32)
    col = np.empty((6 * 9, 4 * 81), np.float32)
    results = []
    for threads in (1, numba.config.NUMBA_NUM_THREADS):
        numba.set_num_threads(threads)
        cpu.im2col(x, 3, 3, 1, 1, 0, 0, 1, 1, 9, 9, col)
        dx = np.empty_like(x)
        cpu.col2im(col, 3, 3, 1, 1, 0, 0, 1, 1, 9, 9, dx)
        sums = np.zeros(6, np.float32)
        cpu.add_channel_sums(x.reshape(4, 6, -1), sums)
        results.append((dx.copy(), sums))
    numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)
    np.testing.assert_array_equal(results[0][0], results[1][0])
    np.testing.assert_array_equal(results[0][1], results[1][1])


def test_softmax_and_lrn_match_numpy():
    x = rng.standard_normal((3, 7, 5))
    y = np.empty_like(x)
    cpu.softmax(x, y)
    e = np.exp(x - x.max(1, keepdims=True))
    np.testing.assert_allclose(y, e / e.sum(1, keepdims=True), rtol=1e-13)
    scale, out = np.empty_like(x), np.empty_like(x)
    cpu.lrn_across(x, 3, 0.1, 2.0, 0.75, scale, out)
    sq = np.pad(x * x, ((0, 0), (1, 1), (0, 0)))
    ref_scale = 2.0 + 0.1 * (sq[:, :-2] + sq[:, 1:-1] + sq[:, 2:])
    np.testing.assert_allclose(scale, ref_scale, rtol=1e-13)
    np.testing.assert_allclose(out, x * ref_scale ** -0.75, rtol=1e-13)
    # float32, beta 0.75 (computed by square roots) and another beta (by pow): float32's rounding
    x32 = x.astype(np.float32)
    for beta in (0.75, 0.6):
        scale, out = np.empty_like(x32), np.empty_like(x32)
        cpu.lrn_across(x32, 3, np.float32(0.1), np.float32(2), np.float32(beta), scale, out)
        sq = np.pad(x32.astype(np.float64) ** 2, ((0, 0), (1, 1), (0, 0)))
        ref = 2.0 + 0.1 * (sq[:, :-2] + sq[:, 1:-1] + sq[:, 2:])
        np.testing.assert_allclose(out, x32 * ref ** -float(np.float32(beta)), rtol=5e-7)


def test_channel_statistics_and_batch_norm_gradient():
    x = rng.standard_normal((4, 3, 10))
    mean, var = np.empty(3), np.empty(3)
    cpu.channel_mean_var(x, mean, var)
    np.testing.assert_allclose(mean, x.mean(axis=(0, 2)), rtol=1e-13)
    np.testing.assert_allclose(var, x.var(axis=(0, 2)), rtol=1e-13)
    y, dy, inv = rng.standard_normal((3, 4, 3, 10))[0], rng.standard_normal((4, 3, 10)), \
        rng.random(3) + 0.5
    dx = np.empty_like(dy)
    cpu.batch_norm_grad(dy, y, inv, dx)
    ref = (dy - dy.mean((0, 2), keepdims=True) - y * (dy * y).mean((0, 2), keepdims=True)) * \
        inv[None, :, None]
    np.testing.assert_allclose(dx, ref, rtol=1e-12)
    out = np.empty_like(x)
    cpu.channel_affine(x, mean, inv, var, out)
    np.testing.assert_allclose(out, (x - mean[None, :, None]) * inv[None, :, None]
                               + var[None, :, None], rtol=1e-13)


def test_solver_steps_match_their_formulas():
    g0, h0, h20 = rng.standard_normal(50), rng.random(50), rng.random(50)
    w0 = rng.standard_normal(50)
    for l1 in (False, True):
        w, g, v = w0.copy(), g0.copy(), h0.copy()
        cpu.sgd_step(w, g, v, 0.01, l1, 0.1, 0.9)
        decayed = g0 + 0.01 * (np.sign(w0) if l1 else w0)
        np.testing.assert_allclose(v, 0.9 * h0 + 0.1 * decayed)
        np.testing.assert_array_equal(g, v)
        np.testing.assert_allclose(w, w0 - v)
    g, v = g0.copy(), h0.copy()
    cpu.nesterov_step(g, v, 0.1, 0.9)
    np.testing.assert_allclose(g, 1.9 * (0.9 * h0 + 0.1 * g0) - 0.9 * h0)
    g, h = g0.copy(), h0.copy()
    cpu.adagrad_step(g, h, 0.1, 1e-8)
    np.testing.assert_allclose(g, 0.1 * g0 / (np.sqrt(h0 + g0 ** 2) + 1e-8))
    g, h = g0.copy(), h0.copy()
    cpu.rmsprop_step(g, h, 0.1, 0.98, 1e-8)
    np.testing.assert_allclose(g, 0.1 * g0 / (np.sqrt(0.98 * h0 + 0.02 * g0 ** 2) + 1e-8))
    g, h, h2 = g0.copy(), h0.copy(), h20.copy()
    cpu.adadelta_step(g, h, h2, 0.5, 0.95, 1e-6)
    hh = 0.95 * h0 + 0.05 * g0 ** 2
    u = g0 * np.sqrt((h20 + 1e-6) / (hh + 1e-6))
    np.testing.assert_allclose(g, 0.5 * u)
    np.testing.assert_allclose(h2, 0.95 * h20 + 0.05 * u ** 2)
    g, m, v = g0.copy(), h0.copy(), h20.copy()
    cpu.adam_step(g, m, v, 0.01, 0.9, 0.999, 0.3, 1e-8)
    mm, vv = 0.9 * h0 + 0.1 * g0, 0.999 * h20 + 0.001 * g0 ** 2
    np.testing.assert_allclose(g, 0.01 * 0.3 * mm / (np.sqrt(vv) + 1e-8))


def test_matmul_add_accumulates_block_by_block(monkeypatch):
    """out += a @ b through the small buffer, several blocks of rows (and a transposed a, as
    the weight gradients pass it): exact on integer-valued floats."""
    from netspec.kernels.cpu import gemm
    monkeypatch.setattr(gemm, "BLOCK", 40)
    rng = np.random.default_rng(0)
    a = rng.integers(-4, 5, (3, 11)).astype(np.float32).T  # (11, 3), not C-contiguous
    b = rng.integers(-4, 5, (3, 7)).astype(np.float32)
    out = rng.integers(-4, 5, (11, 7)).astype(np.float32)
    expected = out + a @ b
    cpu.matmul_add(out, a, b)
    assert np.array_equal(out, expected)


@pytest.mark.parametrize("batch", [1, 4, 5, 7, 16, 64])
@pytest.mark.parametrize("rows", [4, 5, 7, 64, 1001])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_linear_matches_float64_on_any_thread_count(monkeypatch, batch, rows, dtype):
    """The small-batch products of an InnerProduct (batch 1: rows in blocks of four; 4 to 64:
    tiles of four rows x four images, the last of each overlapping): exact on integer-valued
    floats, within float32 rounding on random ones, the same bits on one thread and on all; a
    NaN or infinity in a row reaches that row's outputs, in an image that image's."""
    from netspec.kernels.cpu import gemm
    monkeypatch.setattr(gemm, "MATVEC_FROM", 0)
    monkeypatch.setattr(gemm, "SKINNY_MIN_OUTPUTS", 4)
    gen = np.random.default_rng(rows)
    w = gen.integers(-4, 5, (rows, 300)).astype(dtype)
    x = gen.integers(-4, 5, (batch, 300)).astype(dtype)
    out = np.full((batch, rows), 7, dtype)
    cpu.linear(w, x, out)
    assert np.array_equal(out, x.astype(np.float64) @ w.astype(np.float64).T)
    w = gen.standard_normal((rows, 300)).astype(dtype)
    x = gen.standard_normal((batch, 300)).astype(dtype)
    w[rows // 2, 3], w[rows - 1, 0] = np.nan, np.inf
    x[batch - 1, 7] = np.nan
    results = []
    for threads in (1, numba.config.NUMBA_NUM_THREADS):
        numba.set_num_threads(threads)
        cpu.linear(w, x, out)
        results.append(out.copy())
    numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)
    np.testing.assert_array_equal(results[0], results[1])
    expected = x.astype(np.float64) @ w.astype(np.float64).T
    assert np.array_equal(np.isnan(out), np.isnan(expected))
    assert np.isnan(out[:, rows // 2]).all() and np.isnan(out[batch - 1]).all()
    np.testing.assert_allclose(out, expected, rtol=1e-4 if dtype == np.float32 else 1e-12,
                               atol=1e-4 if dtype == np.float32 else 1e-12)


@pytest.mark.parametrize("batch", [1, 3, 4, 7, 64])
@pytest.mark.parametrize("rows", [4, 6, 7, 64])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_linear_gradients_match_float64_on_any_thread_count(monkeypatch, batch, rows, dtype):
    """An InnerProduct's small-batch gradients: dw += dy^T x (register tiles of five rows, the
    rest one by one, in bands of rows) and dx = dy w (columns in chunks): exact on integer-valued floats (dw
    added to what it held), within float32 rounding on random ones, the same bits on one
    thread and on all; a NaN in an image reaches that image's terms only."""
    from netspec.kernels.cpu import gemm
    monkeypatch.setattr(gemm, "MATVEC_FROM", 0)
    monkeypatch.setattr(gemm, "INPUT_GRAD_FROM", 0)
    monkeypatch.setattr(gemm, "SKINNY_MIN_OUTPUTS", 4)
    monkeypatch.setattr(gemm, "COLUMNS", 128)  # three chunks of 300 columns
    gen = np.random.default_rng(batch * rows)
    w = gen.integers(-4, 5, (rows, 300)).astype(dtype)
    x = gen.integers(-4, 5, (batch, 300)).astype(dtype)
    dy = gen.integers(-4, 5, (batch, rows)).astype(dtype)
    dw = gen.integers(-4, 5, (rows, 300)).astype(dtype)
    expected = dw.astype(np.float64) + dy.astype(np.float64).T @ x.astype(np.float64)
    cpu.add_linear_weight_grad(dw, dy, x)
    assert np.array_equal(dw, expected)
    dx = np.full((batch, 300), 7, dtype)
    cpu.linear_input_grad(dy, w, dx)
    assert np.array_equal(dx, dy.astype(np.float64) @ w.astype(np.float64))
    w, x = gen.standard_normal((rows, 300)).astype(dtype), gen.standard_normal((batch, 300)).astype(dtype)
    dy = gen.standard_normal((batch, rows)).astype(dtype)
    x[batch - 1, 5], dy[batch - 1, rows - 1] = np.nan, np.nan
    results = []
    for threads in (1, numba.config.NUMBA_NUM_THREADS):
        numba.set_num_threads(threads)
        dw, dx = np.ones((rows, 300), dtype), np.empty((batch, 300), dtype)
        cpu.add_linear_weight_grad(dw, dy, x)
        cpu.linear_input_grad(dy, w, dx)
        results.append((dw, dx))
    numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)
    for a, b in zip(*results):
        np.testing.assert_array_equal(a, b)
    dw, dx = results[0]
    x64, dy64 = x.astype(np.float64), dy.astype(np.float64)
    dw_expected, dx_expected = 1 + dy64.T @ x64, dy64 @ w.astype(np.float64)
    assert np.array_equal(np.isnan(dw), np.isnan(dw_expected))
    assert np.isnan(dw[:, 5]).all() and np.isnan(dw[rows - 1]).all()
    assert np.array_equal(np.isnan(dx), np.isnan(dx_expected)) and np.isnan(dx[batch - 1]).all()
    tol = 1e-4 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(dw, dw_expected, rtol=tol, atol=tol)
    np.testing.assert_allclose(dx, dx_expected, rtol=tol, atol=tol)


def test_pieces_run_once_each_and_errors_reach_the_caller():
    """workers.run: the caller and the workers share the pieces; each runs exactly once, with
    one-thread BLAS and kernels; an error reaches the caller after every piece has finished,
    and the thread settings come back."""
    import threading

    import netspec
    from threadpoolctl import threadpool_info

    from netspec.kernels.cpu import workers
    netspec.set_threads(2)
    seen, lock = [], threading.Lock()

    def task(k, first, last):
        with lock:
            seen.append((k, first, last, numba.get_num_threads(),
                         [i["num_threads"] for i in threadpool_info()
                          if i["user_api"] == "blas"]))
    workers.run(task, 3, 12, 2)
    assert sorted(p[:3] for p in seen) == [(0, 3, 5), (1, 5, 7), (2, 7, 9), (3, 9, 11),
                                           (4, 11, 12)]
    if workers._pool is not None:
        assert all(p[3] == 1 and set(p[4]) <= {1} for p in seen)

    def failing(k, first, last):
        if k == 1:
            raise ValueError("piece 1")
        task(k, first, last)
    seen.clear()
    with pytest.raises(ValueError, match="piece 1"):
        workers.run(failing, 0, 4, 1)
    # on the workers every other piece still runs; one after another, the error stops them
    assert sorted(p[0] for p in seen) == ([0, 2, 3] if workers._pool is not None else [0])
    assert numba.get_num_threads() == min(2, numba.config.NUMBA_NUM_THREADS)
    netspec.set_threads()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_tile_sums_keeps_lane_partial_sums(dtype):
    """simd.tile_sums: 2 rows x 3 columns of dot products over a multiple of the lanes, added
    lane by lane (lane q % LANES holds position q's terms) to what the partial sums held."""
    from numba import njit

    from netspec.kernels.cpu.simd import tile_sums

    @njit
    def run(rows, cols, length, acc):
        tile_sums(rows, (0, 70), cols, (1, 2, 40), length, acc)

    gen = np.random.default_rng(0)
    lanes = 64 // np.dtype(dtype).itemsize
    rows, cols = (gen.integers(-4, 5, 140).astype(dtype), gen.integers(-4, 5, 100).astype(dtype))
    acc = gen.integers(-4, 5, (6, lanes)).astype(dtype)
    expected = acc.astype(np.float64).copy()
    length = 3 * lanes
    for r, rs in enumerate((0, 70)):
        for t, cs in enumerate((1, 2, 40)):
            terms = rows[rs:rs + length].astype(np.float64) * cols[cs:cs + length]
            expected[3 * r + t] += terms.reshape(-1, lanes).sum(axis=0)
    run(rows, cols, length, acc)
    assert np.array_equal(acc, expected)
    before = acc.copy()
    run(rows, cols, 0, acc)  # nothing to add
    assert np.array_equal(acc, before)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_broadcast_tile_add_continues_sums_under_lane_masks(dtype):
    """simd.broadcast_tile_add: a 2 x 3-vector tile, out[o_r + LANES v + l] += sum over k of
    a[a_r + k a_step] b[b_start + k b_step + LANES v + l], only for the lanes l < b_lanes[v]
    (a partial vector and an empty one), the rest of out untouched; exact on integers."""
    from numba import njit

    from netspec.kernels.cpu.simd import broadcast_tile_add

    lanes = 64 // np.dtype(dtype).itemsize
    valid = (lanes, 3, 0)

    @njit
    def run(a, b, steps, out):
        broadcast_tile_add(a, (1, 4), 7, b, 2, 3 * lanes + 5, valid, steps, out,
                           (0, 4 * lanes))

    gen = np.random.default_rng(0)
    steps = 9
    a = gen.integers(-4, 5, 7 * steps).astype(dtype)
    b = gen.integers(-4, 5, (3 * lanes + 5) * steps + 3 * lanes).astype(dtype)
    out = gen.integers(-4, 5, 8 * lanes).astype(dtype)
    expected = out.astype(np.float64).copy()
    for r, (a_r, o_r) in enumerate(((1, 0), (4, 4 * lanes))):
        for v, count in enumerate(valid):
            for k in range(steps):
                start = 2 + k * (3 * lanes + 5) + lanes * v
                expected[o_r + lanes * v:o_r + lanes * v + count] += (
                    a[a_r + 7 * k] * b[start:start + count].astype(np.float64))
    run(a, b, steps, out)
    assert np.array_equal(out, expected)
    before = out.copy()
    run(a, b, 0, out)  # nothing to add
    assert np.array_equal(out, before)


@pytest.mark.parametrize("accumulate", [False, True])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_window_tile_reads_two_segments_a_vector(dtype, accumulate):
    """simd.window_tile (out = init + sums) and window_tile_add (out += sums): each vector's
    lanes from two segments of b at their own starts (lanes outside both: 0), steps through
    an offsets table, stores only the lanes below out_lanes; exact on integers."""
    from numba import njit

    from netspec.kernels.cpu.simd import window_tile, window_tile_add

    lanes = 64 // np.dtype(dtype).itemsize
    tile = window_tile_add if accumulate else window_tile
    segments = (3, 40, 90, 0)  # vector 0: lanes [0, 5) from 3, [5, L - 2) from 40;
    bounds = (0, 5, 5, lanes - 2, 1, lanes, 0, 0)  # vector 1: lanes [1, L) from 90 only

    @njit
    def run(a, b, offsets, steps, out):
        tile(a, (0, 11), b, 2, offsets, segments, bounds, steps, (1.5, -2.0), out,
             (0, 3 * lanes), (lanes, lanes - 1))

    gen = np.random.default_rng(1)
    steps = 6
    a = gen.integers(-4, 5, 11 + steps).astype(dtype)
    b = gen.integers(-4, 5, 300).astype(dtype)
    offsets = gen.integers(0, 100, steps).astype(np.int64)
    out = gen.integers(-4, 5, 6 * lanes).astype(dtype)
    expected = out.astype(np.float64).copy()
    for r, (a_r, o_r, init) in enumerate(((0, 0, 1.5), (11, 3 * lanes, -2.0))):
        for v, count in enumerate((lanes, lanes - 1)):
            for l in range(count):
                total = expected[o_r + lanes * v + l] if accumulate else init
                for k in range(steps):
                    for s in range(2):
                        lo, hi = bounds[4 * v + 2 * s], bounds[4 * v + 2 * s + 1]
                        if lo <= l < hi:
                            total += a[a_r + k] * float(b[2 + offsets[k] + segments[2 * v + s] + l])
                expected[o_r + lanes * v + l] = total
    run(a, b, offsets, steps, out)
    assert np.array_equal(out, expected)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_sum_run_adds_in_its_documented_order(dtype):
    """sums.sum_run: element i into running sum i % 8 (a vector of eight float64 lanes), the
    tail into sum 0, then ((s0 + s1) + (s2 + s3)) + ((s4 + s5) + (s6 + s7)): the same bits as
    that order written out in Python, for runs shorter than, equal to and longer than 8."""
    from numba import njit, uint64

    from netspec.kernels.cpu.sums import sum_run

    @njit
    def run(src, start, length):
        return sum_run(src, uint64(start), length)

    gen = np.random.default_rng(0)
    src = (gen.standard_normal(700) * 10.0 ** gen.integers(-6, 7, 700)).astype(dtype)
    for start, length in ((0, 0), (3, 5), (1, 8), (2, 9), (5, 577), (0, 700)):
        lanes = [0.0] * 8
        whole = length // 8 * 8
        for q in range(whole):
            lanes[q % 8] += float(src[start + q])
        for q in range(whole, length):
            lanes[0] += float(src[start + q])
        s = lanes
        expected = ((s[0] + s[1]) + (s[2] + s[3])) + ((s[4] + s[5]) + (s[6] + s[7]))
        assert run(src, start, length) == expected


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_copy_padded_copies_then_zeros_to_the_width(dtype):
    """simd.copy_padded: dst[d:d + width] = src[s:s + count] then zeros, nothing else
    written, for widths within one vector, across several and at a vector's edge."""
    from numba import njit

    from netspec.kernels.cpu.simd import copy_padded

    @njit
    def run(src, s, dst, d, count, width):
        copy_padded(src, s, dst, d, count, width)

    src = np.arange(1, 101, dtype=dtype)
    for s, d, count, width in ((0, 0, 0, 0), (3, 1, 5, 5), (2, 4, 24, 28), (0, 3, 16, 16),
                               (7, 2, 17, 40), (1, 0, 0, 9)):
        dst = np.full(64, -1, dtype)
        run(src, s, dst, d, count, width)
        expected = np.full(64, -1, dtype)
        expected[d:d + width] = 0
        expected[d:d + count] = src[s:s + count]
        assert np.array_equal(dst, expected), (s, d, count, width)


def test_kernel_cache_keyed_by_every_kernel_source(monkeypatch, tmp_path):
    """launch.key_cache_by_sources: the compiled kernels' folder is named by a hash of all the
    kernel sources (a changed helper file compiles afresh); a NUMBA_CACHE_DIR the user set is
    kept as it is."""
    import subprocess
    import sys

    from netspec.kernels.cpu import launch
    assert numba.config.CACHE_DIR.startswith(str(Path(launch.__file__).parent / "__pycache__"))
    (tmp_path / "a.py").write_text("x = 1\n")
    (tmp_path / "b.py").write_text("y = 2\n")
    monkeypatch.setattr(numba.config, "CACHE_DIR", "")
    first = launch.key_cache_by_sources(tmp_path)
    assert first.startswith(str(tmp_path / "__pycache__" / "kernels-"))
    monkeypatch.setattr(numba.config, "CACHE_DIR", "")
    assert launch.key_cache_by_sources(tmp_path) == first  # the same sources, the same folder
    (tmp_path / "b.py").write_text("y = 3\n")
    monkeypatch.setattr(numba.config, "CACHE_DIR", "")
    assert launch.key_cache_by_sources(tmp_path) != first
    code = "import numba, netspec.kernels.cpu.launch; print(numba.config.CACHE_DIR)"
    env = {**__import__("os").environ, "NUMBA_CACHE_DIR": str(tmp_path / "mine")}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out == str(tmp_path / "mine")


def test_wide_vectors_on_avx512_unless_the_user_chose_features():
    """launch.prefer_wide_vectors: on an AVX-512 host, numba builds with LLVM's prefer-256-bit
    tuning off; a NUMBA_CPU_FEATURES the user set is kept as it is."""
    import subprocess
    import sys

    import llvmlite.binding as ll
    from netspec.kernels.cpu import launch  # noqa: F401 - applies the setting on import
    wide = bool(ll.get_host_cpu_features().get("avx512f"))
    assert (numba.config.CPU_FEATURES or "").endswith(",-prefer-256-bit") == wide
    code = ("import numba, netspec.kernels.cpu.launch as l; "
            "print(l.prefer_wide_vectors(), numba.config.CPU_FEATURES)")
    env = {**__import__("os").environ, "NUMBA_CPU_FEATURES": "+sse2"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         check=True).stdout.split()
    assert out == ["None", "+sse2"]
