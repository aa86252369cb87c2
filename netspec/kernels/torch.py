"""The torch device module: the kernel surface of kernels/cpu, run by PyTorch's operators on
torch tensors of any device (CUDA and ROCm through cuDNN / MIOpen and cuBLAS, Apple's MPS,
or torch's CPU tensors, which is how CI checks this very code without a GPU).

The same names and contracts as the CPU module (DESIGN.md "Devices and kernels"): each
function writes into arrays its caller owns, says whether it assigns or adds, and takes an
empty array or None as "none". Caffe's semantics are kept where PyTorch's differ: pooling's
ceil rounding and padding rule, AVE's divisor (the window clipped to the padded input), the
argmax mask as a flat h * W + w index, LRN's channel window, Adam's eps placement."""
from __future__ import annotations

import functools
import math

import numpy as np
import torch
import torch.nn.functional as F



def _none(a) -> bool:
    return a is None or a.numel() == 0


# -- element-wise (neuron) layers ---------------------------------------------------------------
def relu(x, slope, y):
    y.copy_(torch.where(x > 0, x, x * float(slope)))


def relu_grad(y, dy, slope, dx):
    dx.copy_(torch.where(y > 0, dy, dy * float(slope)))


def sigmoid(x, y):
    y.copy_(0.5 * (1.0 + torch.tanh(0.5 * x)))


def sigmoid_grad(y, dy, dx):
    dx.copy_(dy * y * (1 - y))


def tanh(x, y):
    y.copy_(torch.tanh(x))


def tanh_grad(y, dy, dx):
    dx.copy_(dy * (1 - y * y))


def softplus(x, y):
    y.copy_(torch.clamp(x, min=0) + torch.log1p(torch.exp(-torch.abs(x))))


def softplus_grad(y, dy, dx):
    dx.copy_(-dy * torch.expm1(-y))


def elu(x, alpha, y):
    y.copy_(torch.where(x > 0, x, float(alpha) * torch.expm1(x)))


def elu_grad(x, y, dy, alpha, dx):
    dx.copy_(torch.where(x > 0, dy, dy * (y + float(alpha))))


def swish(x, beta, s, y):
    s.copy_(0.5 * (1.0 + torch.tanh(0.5 * float(beta) * x)))
    y.copy_(x * s)


def swish_grad(y, s, dy, beta, dx):
    by = float(beta) * y
    dx.copy_(dy * (by + s * (1 - by)))


def uniform(shape, like, generator):
    """Uniform [0, 1) draws on like's device from its generator (Layer.uniform)."""
    shape = (shape,) if isinstance(shape, int) else tuple(shape)
    return torch.rand(shape, generator=generator, device=like.device, dtype=like.dtype)


def dropout(x, u, ratio, scale, y, mask):
    """u: the layer's uniform draws, on the device (Layer.uniform)."""
    mask.copy_(u >= ratio)
    y.copy_(torch.where(mask, x * float(scale), torch.zeros((), dtype=x.dtype, device=x.device)))


def dropout_grad(dy, mask, scale, dx):
    dx.copy_(torch.where(mask, dy * float(scale), torch.zeros((), dtype=dy.dtype,
                                                               device=dy.device)))


def add_relu(a, b, slope, y):
    s = a + b
    y.copy_(torch.where(s > 0, s, s * float(slope)))


# -- softmax ------------------------------------------------------------------------------------
def softmax(x, y):
    """Softmax over axis 1 of x (outer, C, inner)."""
    y.copy_(torch.softmax(x, dim=1))


def softmax_labels(x, labels, ignore, has_ignore, y, picked, as_int, valid):
    """As the CPU module's: y = softmax(x) over axis 1; per position the label as an int (0
    where it does not count), whether it counts, the probability it picks; returns the flat
    index of the first counted label outside [0, C) or not finite, else outer * inner, as a
    0-d tensor (read later: Layer.check_values)."""
    softmax(x, y)
    c = x.shape[1]
    finite = torch.isfinite(labels)
    k = torch.where(finite, labels, torch.full_like(labels, -1)).to(torch.int64)
    counts = (k != ignore) if has_ignore else torch.ones_like(k, dtype=torch.bool)
    bad = counts & ((k < 0) | (k >= c) | ~finite)
    k = torch.where(counts & ~bad, k, torch.zeros_like(k))
    as_int.copy_(k)
    valid.copy_(counts)
    picked.copy_(torch.gather(y, 1, k[:, None, :])[:, 0, :])
    return first_true(bad.reshape(-1))


# -- inner product ------------------------------------------------------------------------------
def linear(w, x, out):
    """out (B, N) = x (B, K) @ w (N, K)^T."""
    torch.mm(x, w.t(), out=out) if out.is_contiguous() else out.copy_(x @ w.t())


def linear_input_grad(dy, w, dx):
    """dx (B, K) = dy (B, N) @ w (N, K)."""
    torch.mm(dy, w, out=dx) if dx.is_contiguous() else dx.copy_(dy @ w)


def add_linear_weight_grad(dw, dy, x):
    """dw (N, K) += dy (B, N)^T @ x (B, K)."""
    dw.addmm_(dy.t(), x)


def matmul_add(out, a, b):
    """out (M, N) += a (M, K) @ b (K, N)."""
    out.addmm_(a, b)


def matmul(a, b, out):
    """out = a @ b."""
    out.copy_(a @ b)


def add_bias(x, bias):
    """x (N, M, P) += bias[m], in place."""
    x += bias.reshape(1, -1, 1)


def add_channel_sums(x, out):
    """out[m] += the sum over n, p of x (N, M, P), in float64 (bias gradients)."""
    out += x.sum(dim=(0, 2), dtype=torch.float64).to(out.dtype)


# -- normalisation ------------------------------------------------------------------------------
def channel_affine(x, sub, mul, add, y):
    """y = (x - sub[c]) * mul[c] + add[c] over x (N, C, P); an empty sub or add is 0."""
    v = x if _none(sub) else x - sub.reshape(1, -1, 1)
    v = v * mul.reshape(1, -1, 1)
    if not _none(add):
        v = v + add.reshape(1, -1, 1)
    y.copy_(v)


def channel_affine_twice(x, sub, mul, scale, shift, relu_, slope, y):
    """BatchNorm with stored statistics, then a Scale (empty: none; an empty shift: none),
    then with `relu_` a ReLU, in the order of the three layers' own operations."""
    v = (x - sub.reshape(1, -1, 1)) * mul.reshape(1, -1, 1)
    if not _none(scale):
        v = v * scale.reshape(1, -1, 1)
        if not _none(shift):
            v = v + shift.reshape(1, -1, 1)
    if relu_:
        v = torch.where(v > 0, v, v * float(slope))
    y.copy_(v)


def channel_mean_var(x, mean, var):
    """Per-channel mean and biased variance of x (N, C, P), in float64."""
    d = x.to(torch.float64)
    mu = d.mean(dim=(0, 2))
    mean.copy_(mu)
    var.copy_(((d - mu.reshape(1, -1, 1)) ** 2).mean(dim=(0, 2)))


def batch_norm_grad(dy, y, inv_std, dx):
    """dx = (dy - mean(dy) - y mean(dy y)) inv_std, per channel of (N, C, P), in float64."""
    d, yy = dy.to(torch.float64), y.to(torch.float64)
    m1 = d.mean(dim=(0, 2), keepdim=True)
    m2 = (d * yy).mean(dim=(0, 2), keepdim=True)
    dx.copy_((d - m1 - yy * m2) * inv_std.to(torch.float64).reshape(1, -1, 1))


def _channel_window_sums(a, size):
    """Sums of a (N, C, P) over the channels within (size - 1) // 2 of each channel (clipped
    to [0, C)): LRN's ACROSS_CHANNELS window."""
    half = (size - 1) // 2
    padded = F.pad(a[:, None], (0, 0, half, half))  # (N, 1, C + 2 half, P)
    return F.avg_pool2d(padded, (2 * half + 1, 1), stride=1, divisor_override=1)[:, 0]


def lrn_across(x, size, alpha_over_n, k, beta, scale, y):
    """scale = k + alpha/n (sum of x^2 over the window); y = x scale^-beta, over (N, C, P)."""
    scale.copy_(float(k) + float(alpha_over_n) * _channel_window_sums(x * x, size))
    y.copy_(x * scale.pow(-float(beta)))


def lrn_across_grad(x, dy, scale, size, alpha_over_n, beta, dx):
    """dx_j = dy_j s_j^-beta - 2 beta alpha/n x_j sum_{i near j} dy_i x_i s_i^(-beta-1)."""
    beta = float(beta)
    ratio = dy * x * scale.pow(-beta - 1)
    dx.copy_(dy * scale.pow(-beta)
             - 2 * beta * float(alpha_over_n) * x * _channel_window_sums(ratio, size))


# -- pooling: Caffe's windows on a padded input, then PyTorch's operators --------------------------
def _padded(x, kh, kw, sh, sw, ph, pw, oh, ow, value):
    """x padded so that floor-mode windows without padding are Caffe's (oh, ow) windows: ph /
    pw before, as many after as the last window reaches (value: -inf for MAX, 0 for sums)."""
    h, w = x.shape[2], x.shape[3]
    bottom = max(0, (oh - 1) * sh + kh - ph - h)
    right = max(0, (ow - 1) * sw + kw - pw - w)
    return F.pad(x, (pw, right, ph, bottom), value=value)


def _windows(x, kh, kw, sh, sw, ph, pw, oh, ow):
    """(N C, kh kw, oh ow) of each output's window over x zero-padded as Caffe's."""
    n, c = x.shape[:2]
    xp = _padded(x, kh, kw, sh, sw, ph, pw, oh, ow, 0.0).reshape(n * c, 1, *_hw(x, kh, kw, sh,
                                                                                 sw, ph, pw,
                                                                                 oh, ow))
    cols = F.unfold(xp, (kh, kw), stride=(sh, sw))  # (NC, K, L) with L >= oh ow
    lh = (xp.shape[2] - kh) // sh + 1
    lw = (xp.shape[3] - kw) // sw + 1
    return cols.reshape(n * c, kh * kw, lh, lw)[:, :, :oh, :ow].reshape(n * c, kh * kw, -1)


def _hw(x, kh, kw, sh, sw, ph, pw, oh, ow):
    h, w = x.shape[2], x.shape[3]
    return (ph + h + max(0, (oh - 1) * sh + kh - ph - h),
            pw + w + max(0, (ow - 1) * sw + kw - pw - w))


def _unwindows(cols, shape, kh, kw, sh, sw, ph, pw, oh, ow):
    """The adjoint of _windows: each window's values (N C, kh kw, oh ow) added where they lie,
    as an (N, C, H, W) tensor."""
    n, c, h, w = shape
    hp, wp = _hw(torch.empty(0, 0, h, w), kh, kw, sh, sw, ph, pw, oh, ow)
    lh, lw = (hp - kh) // sh + 1, (wp - kw) // sw + 1
    full = cols.new_zeros(n * c, kh * kw, lh, lw)
    full[:, :, :oh, :ow] = cols.reshape(n * c, kh * kw, oh, ow)
    img = F.fold(full.reshape(n * c, kh * kw, -1), (hp, wp), (kh, kw), stride=(sh, sw))
    return img.reshape(n, c, hp, wp)[:, :, ph:ph + h, pw:pw + w]


def max_pool(x, kh, kw, sh, sw, ph, pw, y, mask):
    """Max of each window (clipped to the input); mask = the flat index h * W + w of the first
    maximum in scan order (Caffe's argmax; PyTorch's ties go the same way)."""
    oh, ow = y.shape[2], y.shape[3]
    w = x.shape[3]
    xp = _padded(x, kh, kw, sh, sw, ph, pw, oh, ow, -math.inf)
    values, where = F.max_pool2d(xp, (kh, kw), (sh, sw), return_indices=True)
    values, where = values[:, :, :oh, :ow], where[:, :, :oh, :ow]
    wp = xp.shape[3]
    y.copy_(values)
    if wp == w and ph == 0:  # nothing padded before or beside: torch's index is Caffe's
        mask.copy_(where)
    else:
        mask.copy_((where // wp - ph) * w + (where % wp - pw))


def scatter_pool_grad(dy, mask, dx):
    """dx = each dy added at the input position its mask names (MAX, STOCHASTIC TRAIN)."""
    n, c = dx.shape[:2]
    dx.zero_()
    dx.view(n * c, -1).scatter_add_(1, mask.reshape(n * c, -1).to(torch.int64),
                                    dy.reshape(n * c, -1))


@functools.lru_cache(maxsize=64)
def _ave_divisors(h, w, kh, kw, sh, sw, ph, pw, oh, ow):
    """Caffe's AVE divisor of each output: its window clipped to the padded input."""
    def extents(out, stride, pad, kernel, size):
        start = np.arange(out) * stride - pad
        return np.minimum(start + kernel, size + pad) - start
    return np.outer(extents(oh, sh, ph, kh, h), extents(ow, sw, pw, kw, w))


def _divisors(x, kh, kw, sh, sw, ph, pw, oh, ow):
    d = _ave_divisors(x.shape[2], x.shape[3], kh, kw, sh, sw, ph, pw, oh, ow)
    return torch.from_numpy(d).to(device=x.device, dtype=x.dtype)


def ave_pool(x, kh, kw, sh, sw, ph, pw, y):
    """Window sums over x zero-padded as Caffe's (torch's pooling kernel with divisor 1), over
    Caffe's divisors (each window clipped to the padded input)."""
    oh, ow = y.shape[2], y.shape[3]
    xp = _padded(x, kh, kw, sh, sw, ph, pw, oh, ow, 0.0)
    sums = F.avg_pool2d(xp, (kh, kw), (sh, sw), divisor_override=1)[:, :, :oh, :ow]
    y.copy_(sums / _divisors(x, kh, kw, sh, sw, ph, pw, oh, ow))


def ave_pool_grad(dy, kh, kw, sh, sw, ph, pw, dx):
    """Each output's dy / divisor added over its window (the adjoint of ave_pool)."""
    oh, ow = dy.shape[2], dy.shape[3]
    n, c, h, w = dx.shape
    hp, wp = _hw(dx, kh, kw, sh, sw, ph, pw, oh, ow)
    full = dy.new_zeros(n, c, (hp - kh) // sh + 1, (wp - kw) // sw + 1)
    full[:, :, :oh, :ow] = dy / _divisors(dx, kh, kw, sh, sw, ph, pw, oh, ow)
    spread = torch.ops.aten.avg_pool2d_backward(full, dx.new_empty(n, c, hp, wp), [kh, kw],
                                                [sh, sw], [0, 0], False, True, 1)
    dx.copy_(spread[:, :, ph:ph + h, pw:pw + w])


def stochastic_pool_train(x, kh, kw, sh, sw, uniform, y, mask):
    """In each window the first position whose running sum reaches u * sum (u: the layer's
    uniform draws); mask holds its flat index, y its value."""
    n, c, h, w = x.shape
    oh, ow = y.shape[2], y.shape[3]
    cols = _windows(x, kh, kw, sh, sw, 0, 0, oh, ow)                 # (NC, K, L)
    u = uniform.reshape(n * c, 1, -1)
    threshold = u * cols.sum(dim=1, keepdim=True)
    reached = torch.cumsum(cols, dim=1) >= threshold
    arg = reached.to(torch.uint8).argmax(dim=1)                       # first reached (else 0)
    pos = torch.arange(oh * ow, device=x.device)
    rows = (pos // ow) * sh + arg // kw
    cols_ = (pos % ow) * sw + arg % kw
    mask.copy_((rows * w + cols_).reshape(mask.shape))
    y.copy_(torch.gather(cols, 1, arg[:, None, :])[:, 0].reshape(y.shape))


def stochastic_pool_test(x, kh, kw, sh, sw, y):
    """Each window's values weighted by themselves: sum(x^2) / sum(x) (0 if the sum is 0)."""
    cols = _windows(x, kh, kw, sh, sw, 0, 0, y.shape[2], y.shape[3])
    total, squares = cols.sum(dim=1), (cols * cols).sum(dim=1)
    safe = torch.where(total > 0, total, torch.ones_like(total))
    y.copy_(torch.where(total > 0, squares / safe, torch.zeros_like(total)).reshape(y.shape))


def stochastic_pool_test_grad(x, y, dy, kh, kw, sh, sw, dx):
    """(2 x - y) / sum(x) for each window with a positive sum."""
    n, c = x.shape[:2]
    oh, ow = y.shape[2], y.shape[3]
    cols = _windows(x, kh, kw, sh, sw, 0, 0, oh, ow)
    total = cols.sum(dim=1, keepdim=True)
    yy, g = y.reshape(n * c, 1, -1), dy.reshape(n * c, 1, -1)
    safe = torch.where(total > 0, total, torch.ones_like(total))
    share = torch.where(total > 0, g * (2 * cols - yy) / safe, torch.zeros_like(cols))
    dx.copy_(_unwindows(share, dx.shape, kh, kw, sh, sw, 0, 0, oh, ow))


# -- convolution: cuDNN / MIOpen / Metal through PyTorch's operators -----------------------------
class ConvPlan:
    """Geometry for F.conv2d and aten.convolution_backward (nothing to choose: the library
    picks its algorithm)."""

    def __init__(self, p, transposed: bool):
        self.stride, self.padding = list(p.strides), list(p.pads)
        self.dilation, self.groups = list(p.dilations), p.group
        self.transposed = transposed


def conv_plan(p, x_shape, out_hw, phase, in_place, dtype):
    return ConvPlan(p, transposed=False)


def deconv_plan(p, x_shape, out_hw, phase, in_place, dtype):
    return ConvPlan(p, transposed=True)


def conv_forward(plan, x, w, b, y, relu_slope=None, inference=False):
    out = F.conv2d(x, w, b, plan.stride, plan.padding, plan.dilation, plan.groups)
    if relu_slope is not None:
        out = torch.where(out > 0, out, out * float(relu_slope))
    y.copy_(out)


def deconv_forward(plan, x, w, b, y, relu_slope=None, inference=False):
    y.copy_(F.conv_transpose2d(x, w, b, plan.stride, plan.padding, 0, plan.groups,
                               plan.dilation))


def conv_backward(plan, x, w, dy, dx, dw, db):
    """dw += dL/dw, db += dL/db (None: no bias), dx = dL/dx (None: not wanted)."""
    outputs = w.shape[1] * plan.groups if plan.transposed else w.shape[0]
    gx, gw, gb = torch.ops.aten.convolution_backward(
        dy, x, w, [outputs] if db is not None else None, plan.stride, plan.padding,
        plan.dilation, plan.transposed, [0, 0], plan.groups,
        [dx is not None, True, db is not None])
    if dx is not None:
        dx.copy_(gx)
    dw += gw
    if db is not None:
        db += gb


deconv_backward = conv_backward


def im2col_forward(x, geometry, y):
    """y (N, C kh kw, oh, ow) = the patches of x (Caffe's order: channel, kernel row, column)."""
    kh, kw, sh, sw, ph, pw, dh, dw, oh, ow = geometry
    y.copy_(F.unfold(x, (kh, kw), (dh, dw), (ph, pw), (sh, sw)).reshape(y.shape))


def im2col_backward(dy, geometry, dx):
    kh, kw, sh, sw, ph, pw, dh, dw, oh, ow = geometry
    n, rows = dy.shape[:2]
    dx.copy_(F.fold(dy.reshape(n, rows, -1), dx.shape[2:], (kh, kw), (dh, dw), (ph, pw),
                    (sh, sw)))


# -- solvers: one parameter's update (flat tensors), as the CPU module's -------------------------
def add_decay(w, decay, l1, g):
    g += float(decay) * (torch.sign(w) if l1 else w)


def sgd_step(w, g, v, decay, l1, rate, momentum):
    """Weight decay into g, v = momentum v + rate g, g = v (the update) and w -= g."""
    grad = g + float(decay) * (torch.sign(w) if l1 else w)
    v.mul_(float(momentum)).add_(grad, alpha=float(rate))
    g.copy_(v)
    w -= g


def nesterov_step(g, v, rate, momentum):
    previous = v.clone()
    v.mul_(float(momentum)).add_(g, alpha=float(rate))
    g.copy_((1 + float(momentum)) * v - float(momentum) * previous)


def adagrad_step(g, h, rate, delta):
    h.addcmul_(g, g)
    g.copy_(float(rate) * g / (h.sqrt() + float(delta)))


def rmsprop_step(g, h, rate, decay, delta):
    h.mul_(float(decay)).addcmul_(g, g, value=1 - float(decay))
    g.copy_(float(rate) * g / (h.sqrt() + float(delta)))


def adadelta_step(g, h, h2, rate, momentum, delta):
    m, delta = float(momentum), float(delta)
    h.mul_(m).addcmul_(g, g, value=1 - m)
    u = g * torch.sqrt((h2 + delta) / (h + delta))
    h2.mul_(m).addcmul_(u, u, value=1 - m)
    g.copy_(float(rate) * u)


def adam_step(g, m, v, rate, beta1, beta2, correction, eps):
    b1, b2 = float(beta1), float(beta2)
    m.mul_(b1).add_(g, alpha=1 - b1)
    v.mul_(b2).addcmul_(g, g, value=1 - b2)
    g.copy_(float(rate) * float(correction) * m / (v.sqrt() + float(eps)))


def add_rows(table, rows, values):
    """table[rows[i]] += values[i], repeated rows adding up (Embed's weight gradient)."""
    table.index_add_(0, rows.to(torch.int64), values)


def first_true(flags):
    """The index of the first True of a 1-d bool tensor, else its size, as a 0-d tensor (no
    host read)."""
    return torch.where(flags.any(), flags.to(torch.uint8).argmax(), flags.numel())


def all_finite(arrays):
    """A 0-d bool tensor: no NaN or inf in any of `arrays` (no host read)."""
    return torch.stack([torch.isfinite(a).all() for a in arrays]).all()


def sum_squares(x):
    """sum(x^2) as a 0-d tensor, in float64 where the device has it (MPS has not)."""
    wide = x.float() if x.device.type == "mps" else x.double()
    return torch.sum(wide * wide)
