"""The device conformance suite: every case of layer_cases.py on every device module.

On `cpu` (the numba module) each case is the numeric gradient check; on every other device
(`torch-cpu` in CI: PyTorch's CPU tensors, the very code a GPU runs; `cuda` / `mps` where
present) forward and backward must equal the CPU module's (float64 to 1e-10 relative, float32
to 1e-5) and the numeric gradient check must pass there too. On torch-cpu, numpy may not
touch a tensor while a layer runs on the device (a CUDA tensor would refuse it): the test
makes such a call fail, as it would on a GPU."""
from __future__ import annotations

import numpy as np
import pytest

import netspec
from netspec.blob import Blob
from netspec.device import on_device, placed, resolve, running_on
from netspec.gradcheck import check_layer

from conftest import make_layer
from layer_cases import CASES

torch = pytest.importorskip("torch", reason="the torch device module needs PyTorch "
                                           "(pip install 'netspec[gpu]')")


def _devices():
    out = [pytest.param("cpu", id="cpu"), pytest.param("torch-cpu", id="torch-cpu")]
    out.append(pytest.param("cuda", id="cuda", marks=pytest.mark.skipif(
        not torch.cuda.is_available(), reason="no CUDA GPU on this machine")))
    out.append(pytest.param("mps", id="mps", marks=pytest.mark.skipif(
        not torch.backends.mps.is_available(), reason="no Apple MPS device on this machine")))
    return out


DEVICES = _devices()

#: layer types that run on the host beside a device net, and why (everything else must run
#: on the device: the suite checks it does)
HOST_ONLY = {
    "Python": "the user's numpy code, as pycaffe's Python layers run on the CPU",
    "Input": "data enters on the host and is copied to the device when a layer asks",
    "Data": "reads LMDB on the host; each batch is copied to the device",
    "DummyData": "generated on the host by the fillers",
    "MemoryData": "the user's arrays, on the host",
    "ImageData": "decodes images on the host",
    "HDF5Data": "reads HDF5 on the host",
    "HDF5Output": "writes HDF5 from the host",
    "WindowData": "reads image windows on the host",
}


@pytest.fixture(autouse=True)
def numpy_refuses_device_tensors(monkeypatch):
    """While a layer runs on the device, turning a tensor into a numpy array fails, as it
    does for a CUDA tensor: a layer that mixes numpy into device code is caught on the CPU."""
    original = torch.Tensor.__array__

    def guarded(self, *args, **kwargs):
        if on_device.get() is not None:
            raise TypeError("numpy touched a device tensor inside a device pass")
        return original(self, *args, **kwargs)
    monkeypatch.setattr(torch.Tensor, "__array__", guarded)


class OnDevice:
    """A layer run through a device's context, as a device net runs it."""

    def __init__(self, layer, device):
        self.layer, self.device = layer, device
        self.where = device if device.is_torch and layer.runs_on_device else None

    def __getattr__(self, name):
        return getattr(self.layer, name)

    def setup(self, bottom, top):
        with placed(self.device), running_on(self.where):
            self.layer.setup(bottom, top)

    def reshape(self, bottom, top):
        with placed(self.device), running_on(self.where):
            self.layer.reshape(bottom, top)

    def forward(self, bottom, top):
        with placed(self.device), running_on(self.where):
            self.layer.forward(bottom, top)

    def backward(self, top, propagate_down, bottom):
        with placed(self.device), running_on(self.where):
            self.layer.backward(top, propagate_down, bottom)


def _blobs(device, arrays, dtype):
    with placed(device):
        out = []
        for a in arrays:
            b = Blob(np.shape(a), dtype)
            b.data[...] = a
            out.append(b)
        return out


def run_case(text, arrays, options, device, dtype):
    """setup, forward, backward (seeded top diffs) on `device`; host copies of the tops, the
    bottoms' diffs and the parameters' diffs."""
    device = resolve(device)
    options = dict(options)
    layer = OnDevice(make_layer(text, options.get("phase", 0), dtype=dtype), device)
    bottom = _blobs(device, arrays, dtype)
    with placed(device):
        top = [Blob((), dtype) for _ in range(options.get("ntop", 1))]
    layer.setup(bottom, top)
    layer.forward(bottom, top)
    rng = np.random.default_rng(7)
    for t in top:
        t.diff[...] = rng.standard_normal(t.shape)
    for p in layer.blobs:
        p.diff[...] = 0
    check = options.get("check_bottom")
    prop = [check is None or i in check for i in range(len(bottom))]
    layer.backward(top, prop, bottom)
    return (layer, [t.data.copy() for t in top],
            [b.diff.copy() for i, b in enumerate(bottom) if prop[i]],
            [p.diff.copy() for p in layer.blobs])


CASE_LIST = [(t, i, case) for t, cases in sorted(CASES.items()) for i, case in enumerate(cases)]
CASE_IDS = [f"{t}-{i}" for t, i, _ in CASE_LIST]


def draws_random(type_, text, options) -> bool:
    """Dropout and STOCHASTIC pooling at TRAIN: a device draws from its own generator (as
    Caffe's curand differs from its CPU stream), so they cannot equal the CPU module's numbers;
    the numeric check and test_random_layers_* below check them there."""
    return options.get("phase", 0) == 0 and (type_ == "Dropout" or "STOCHASTIC" in text)


def _assert_close(mine, ref, rtol, what):
    for k, (a, b) in enumerate(zip(mine, ref)):
        scale = max(float(np.abs(b).max()) if b.size else 0.0, 1e-30)
        err = float(np.abs(a.astype(np.float64) - b).max()) / scale if b.size else 0.0
        assert err <= rtol, f"{what} {k}: relative difference {err:.3g} > {rtol:g}"


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("type_,index,case", CASE_LIST, ids=CASE_IDS)
def test_layer_case_float64(type_, index, case, device):
    """float64: the device equals the CPU module to 1e-10, and passes the numeric check."""
    text, arrays, options = case
    layer, tops, bottom_diffs, param_diffs = run_case(text, arrays, options, device, np.float64)
    if device != "cpu":
        assert layer.runs_on_device or type_ in HOST_ONLY, \
            f"{type_} does not run on the device (and is not listed in HOST_ONLY)"
    if device != "cpu" and not draws_random(type_, text, options):
        _, ref_tops, ref_bottoms, ref_params = run_case(text, arrays, options, "cpu",
                                                        np.float64)
        _assert_close(tops, ref_tops, 1e-10, "top")
        _assert_close(bottom_diffs, ref_bottoms, 1e-10, "bottom diff")
        _assert_close(param_diffs, ref_params, 1e-10, "param diff")
    options = dict(options)
    options.pop("ntop", None)
    phase = options.pop("phase", 0)
    dev = resolve(device)
    layer = OnDevice(make_layer(text, phase), dev)
    bottom = _blobs(dev, arrays, np.float64)
    with placed(dev):
        top = [Blob((), np.float64) for _ in range(dict(case[2]).get("ntop", 1))]
    results = check_layer(layer, bottom, top, threshold=options.pop("threshold", 1e-6),
                          **options)
    bad = [r.row(f"{type_} on {device} ") for r in results if not r.ok]
    assert not bad, "gradient mismatch:\n" + "\n".join(bad)


@pytest.mark.parametrize("device", [d for d in DEVICES if d.values[0] != "cpu"])
@pytest.mark.parametrize("type_,index,case", CASE_LIST, ids=CASE_IDS)
def test_layer_case_float32(type_, index, case, device):
    """float32: the device equals the CPU module to 1e-5 (PyTorch's kernels round
    differently, within float32's precision)."""
    text, arrays, options = case
    if draws_random(type_, text, options):
        pytest.skip("draws from the device's generator (test_random_layers_* check it)")
    _, tops, bottom_diffs, param_diffs = run_case(text, arrays, options, device, np.float32)
    _, ref_tops, ref_bottoms, ref_params = run_case(text, arrays, options, "cpu", np.float32)
    _assert_close(tops, ref_tops, 1e-5, "top")
    _assert_close(bottom_diffs, ref_bottoms, 1e-5, "bottom diff")
    _assert_close(param_diffs, ref_params, 1e-5, "param diff")


TORCH_DEVICES = [d for d in DEVICES if d.values[0] != "cpu"]


@pytest.mark.parametrize("device", TORCH_DEVICES)
def test_random_layers_draw_on_the_device(device):
    """Dropout on a device: the draws come from the device generator (numpy's stream does
    not move), drop dropout_ratio of the values, keep the rest scaled, and replay from the
    generator's state; the gradient follows the same mask."""
    x = np.random.default_rng(3).standard_normal((200, 500)) + 5.0  # never 0
    layer, tops, bottom_diffs, _ = run_case(
        'type: "Dropout" dropout_param { dropout_ratio: 0.4 }', [x], {}, device, np.float64)
    assert layer.device_rng is not None and layer.device_rng.device.type == \
        resolve(device).torch.type
    assert layer.rng.bit_generator.state == np.random.default_rng(0).bit_generator.state
    y = tops[0]
    keep = 1 - float(np.float32(0.4))  # the spec's float
    kept = y != 0
    assert abs(kept.mean() - 0.6) < 0.01
    np.testing.assert_allclose(y[kept], x[kept] / keep, rtol=1e-12)
    dy = np.random.default_rng(7).standard_normal(x.shape)
    np.testing.assert_allclose(bottom_diffs[0], np.where(kept, dy / keep, 0), rtol=1e-12)
    state = layer.random_state()
    with placed(resolve(device)):
        bottom, top = _blobs(resolve(device), [x], np.float64), [Blob((), np.float64)]
    layer.reshape(bottom, top)
    layer.forward(bottom, top)
    first = top[0].data.copy()
    assert (first != y).any(), "a second forward drew the same mask"
    layer.set_random_state(state)
    layer.forward(bottom, top)
    np.testing.assert_array_equal(top[0].data, first)


@pytest.mark.parametrize("device", TORCH_DEVICES)
def test_stochastic_pooling_draws_in_proportion(device):
    """STOCHASTIC pooling on a device picks each window's element with probability
    value / window sum (Caffe's rule): windows (1, 3) give 3 three times in four."""
    x = np.tile([1.0, 3.0], 10000).reshape(1, 1, 1, 20000)
    _, tops, _, _ = run_case('type: "Pooling" pooling_param { pool: STOCHASTIC kernel_h: 1 '
                             'kernel_w: 2 stride_h: 1 stride_w: 2 }', [x], {}, device,
                             np.float64)
    y = tops[0].ravel()
    assert set(np.unique(y)) <= {1.0, 3.0}
    assert abs((y == 3.0).mean() - 0.75) < 0.015


PIPELINE = """
input: "data" input_shape { dim: 64 dim: 256 }
layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip"
        inner_product_param { num_output: 512 weight_filler { type: "gaussian" std: 0.1 } } }
layer { name: "ip2" type: "InnerProduct" bottom: "ip" top: "ip2"
        inner_product_param { num_output: 512 weight_filler { type: "gaussian" std: 0.1 } } }
"""


@pytest.mark.parametrize("device", TORCH_DEVICES)
def test_batches_written_on_the_host_reach_the_device_in_order(device):
    """A host layer's top on CUDA lives in pinned memory and is copied asynchronously; the
    host waits for a copy before it rewrites the buffer, so every batch the device reads is
    the one written for it (forwards queued back to back, outputs read at the end)."""
    net = netspec.Net(PIPELINE, netspec.TEST, seed=1, device=device)
    ref = netspec.Net(PIPELINE, netspec.TEST, seed=1, device="cpu")
    batches = np.random.default_rng(5).standard_normal((6, 64, 256)).astype(np.float32)
    outs = []
    for b in batches:
        net.blobs["data"].data[...] = b
        net.forward_layers()
        with placed(net.device), running_on(net.device):
            outs.append(net.blobs["ip2"].data.clone())  # stays on the device
    if net.device.torch.type == "cuda":
        assert torch.from_numpy(net.blobs["data"].data).is_pinned()
    for b, out in zip(batches, outs):
        ref.blobs["data"].data[...] = b
        ref.forward()
        np.testing.assert_allclose(out.cpu().numpy(), ref.blobs["ip2"].data, rtol=1e-4,
                                   atol=1e-5)
