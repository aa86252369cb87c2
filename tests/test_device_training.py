"""Training through the torch device module equals training through the CPU module (CI runs it
on torch's CPU tensors: the very code a GPU runs): every solver type and lr policy, snapshots
that cross devices, pycaffe habits, the NaN stop, LeNet on MNIST, the tool's device flags, and
a CPU-only run that never imports torch."""
import subprocess
import sys

import logging

import numpy as np
import pytest

from conftest import ROOT
from netspec import TEST, TRAIN, Net, get_solver
from netspec.db import write_datum_lmdb
from netspec.device import gpu_available
from netspec.errors import DivergedError, SpecError
from netspec.spec import read_solver

torch = pytest.importorskip("torch", reason="the torch device needs netspec[gpu]")
DEVICE = "torch-cpu"

NET_TEMPLATE = """
name: "small"
layer { name: "data" type: "Data" top: "data" top: "label"
        transform_param { scale: 0.00390625 }
        data_param { source: "items_lmdb" batch_size: 4 backend: LMDB } }
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"
        param { lr_mult: 1 } param { lr_mult: 2 decay_mult: 0 }
        convolution_param { num_output: 4 kernel_size: 3 pad: 1
          weight_filler { type: "gaussian" std: 0.3 } bias_filler { type: "gaussian" } } }
layer { name: "relu" type: "ReLU" bottom: "conv" top: "conv" }
layer { name: "pool" type: "Pooling" bottom: "conv" top: "pool"
        pooling_param { pool: MAX kernel_size: 3 stride: 2 } }
{dropout}layer { name: "ip" type: "InnerProduct" bottom: "pool" top: "ip"
        inner_product_param { num_output: 3
          weight_filler { type: "gaussian" std: 0.3 } bias_filler { type: "gaussian" } } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip" bottom: "label" top: "loss" }
layer { name: "acc" type: "Accuracy" bottom: "ip" bottom: "label" top: "acc"
        include { phase: TEST } }
"""
#: the cross-device equalities run without Dropout: a device draws its masks from its own
#: generator (as Caffe's curand differs from its CPU stream)
NET = NET_TEMPLATE.replace("{dropout}", "")
DROPOUT_NET = NET_TEMPLATE.replace("{dropout}", """layer { name: "drop" type: "Dropout" bottom: "pool" top: "pool"
        dropout_param { dropout_ratio: 0.25 } }
""")
SOLVER = dict(net='"net.prototxt"', base_lr=0.05, lr_policy='"fixed"', momentum=0.9,
              weight_decay=0.01, max_iter=20, random_seed=5, snapshot_prefix='"snap"',
              snapshot_after_train="false", test_iter=2, test_interval=10, display=5)
TYPES = {"SGD": {}, "Nesterov": {}, "AdaGrad": dict(momentum=0), "RMSProp": dict(momentum=0),
         "AdaDelta": dict(base_lr=1.0, momentum=0.95), "Adam": dict(base_lr=0.01)}
POLICIES = {"fixed": {}, "step": dict(gamma=0.5, stepsize=7), "exp": dict(gamma=0.95),
            "inv": dict(gamma=0.1, power=0.75), "multistep": dict(gamma=0.5, stepvalue=[5, 12]),
            "poly": dict(power=2.0), "sigmoid": dict(gamma=-0.5, stepsize=10)}


@pytest.fixture
def folder(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (32, 1, 8, 8), dtype=np.uint8)
    write_datum_lmdb(str(tmp_path / "items_lmdb"), images, rng.integers(0, 3, 32))
    (tmp_path / "net.prototxt").write_text(NET)
    (tmp_path / "dropout.prototxt").write_text(DROPOUT_NET)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def write_solver(folder, **settings):
    lines = []
    for k, v in {**SOLVER, **settings}.items():
        for item in (v if isinstance(v, list) else [v]):
            lines.append(f"{k}: {item}")
    (folder / "solver.prototxt").write_text("\n".join(lines) + "\n")
    return str(folder / "solver.prototxt")


def trained(path, device, iters=None, resume=None):
    solver = get_solver(path, np.float64, device=device, max_iter=iters)
    solver.solve(resume)
    return solver


def assert_same_weights(a, b, rtol=1e-10):
    assert len(a.net.learnable_params) == len(b.net.learnable_params)
    for pa, pb in zip(a.net.learnable_params, b.net.learnable_params):
        x, y = pa.blob.data, pb.blob.data
        assert isinstance(x, np.ndarray) and isinstance(y, np.ndarray)
        assert np.abs(x - y).max() <= rtol * max(np.abs(x).max(), 1e-30), pa.owner


@pytest.mark.parametrize("kind", list(TYPES))
def test_each_solver_type_on_the_torch_device_equals_the_cpu(folder, kind):
    path = write_solver(folder, type=f'"{kind}"', lr_policy='"step"', gamma=0.5, stepsize=7,
                        **TYPES[kind])
    cpu, dev = trained(path, "cpu"), trained(path, DEVICE)
    assert str(dev.net.device) == DEVICE and str(cpu.net.device) == "cpu"
    assert isinstance(dev.net.learnable_params[0].blob.data, np.ndarray)  # host view
    assert_same_weights(cpu, dev)
    assert float(dev.smoothed_loss) == pytest.approx(float(cpu.smoothed_loss), rel=1e-10)
    for a, b in zip(cpu.history, dev.history):
        np.testing.assert_allclose(b.data, a.data, rtol=1e-9, atol=1e-14)


@pytest.mark.parametrize("policy", list(POLICIES))
def test_each_lr_policy_on_the_torch_device_equals_the_cpu(folder, policy):
    path = write_solver(folder, lr_policy=f'"{policy}"', max_iter=20, **POLICIES[policy])
    cpu, dev = trained(path, "cpu"), trained(path, DEVICE)
    assert dev.last_rate == cpu.last_rate
    assert_same_weights(cpu, dev)


@pytest.mark.parametrize("extra", [dict(iter_size=2), dict(clip_gradients=0.1),
                                   dict(regularization_type='"L1"')])
def test_iter_size_clipping_and_l1_on_the_torch_device(folder, extra):
    path = write_solver(folder, **extra)
    assert_same_weights(trained(path, "cpu"), trained(path, DEVICE))


@pytest.mark.parametrize("first,then", [("cpu", DEVICE), (DEVICE, "cpu")])
def test_a_snapshot_resumes_on_the_other_device_to_the_same_weights(folder, first, then):
    path = write_solver(folder, type='"Adam"', base_lr=0.01, snapshot=10)
    straight = trained(path, "cpu")
    trained(path, first, iters=10)
    resumed = trained(path, then, resume="snap_iter_10.solverstate")
    assert resumed.iter == 20
    assert_same_weights(straight, resumed)


@pytest.mark.parametrize("device", ["cpu", DEVICE])
def test_a_dropout_net_resumes_bit_exact_on_the_same_device(folder, device):
    """The device generator's state rides in the snapshot: 10 + 10 iterations equal 20."""
    path = write_solver(folder, net='"dropout.prototxt"', snapshot=10)
    straight = trained(path, device)
    trained(path, device, iters=10)
    resumed = trained(path, device, resume="snap_iter_10.solverstate")
    assert_same_weights(straight, resumed, rtol=0)
    if device != "cpu":  # and the masks came from the device, not numpy
        assert straight.device_rng is not None
        assert straight.net.layer_dict["drop"].device_rng is straight.device_rng


@pytest.mark.parametrize("first,then", [("cpu", DEVICE), (DEVICE, "cpu")])
def test_a_dropout_net_moves_between_devices(folder, caplog, monkeypatch, first, then):
    """Resumed on another kind of device: the weights, history and host stream carry over;
    a device stream the snapshot lacks starts anew, said in the log."""
    path = write_solver(folder, net='"dropout.prototxt"', snapshot=10)
    trained(path, first, iters=10)
    monkeypatch.setattr(logging.getLogger("netspec"), "propagate", True)  # (CLI runs unset it)
    caplog.set_level("INFO", logger="netspec")
    resumed = trained(path, then, resume="snap_iter_10.solverstate")
    assert resumed.iter == 20
    assert ("holds no random stream for torch-cpu" in caplog.text) == (then == DEVICE)
    assert all(np.isfinite(p.blob.data).all() for p in resumed.net.learnable_params)


def test_snapshots_are_the_same_bytes_from_either_device(folder):
    path = write_solver(folder, max_iter=3)
    dev = trained(path, DEVICE)
    dev.net.save("dev.caffemodel")
    cpu = Net("net.prototxt", TRAIN, dtype=np.float64, weights="dev.caffemodel")
    cpu.save("cpu.caffemodel")
    assert (folder / "dev.caffemodel").read_bytes() == (folder / "cpu.caffemodel").read_bytes()


def test_the_nan_stop_names_the_iteration_on_the_device(folder):
    path = write_solver(folder, base_lr=1e6, momentum=0.99, display=0, test_interval=0,
                        max_iter=40)
    with pytest.raises(DivergedError) as cpu_error:
        trained(path, "cpu")
    with pytest.raises(DivergedError) as dev_error:
        trained(path, DEVICE)
    iteration = str(cpu_error.value).split(":")[0]  # "iteration N"
    assert str(dev_error.value).startswith(iteration + ":"), (cpu_error.value, dev_error.value)
    assert not (folder / "snap_iter_40.caffemodel").exists()


DEPLOY = """
name: "deploy"
input: "data" input_shape { dim: 2 dim: 1 dim: 8 dim: 8 }
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"
        convolution_param { num_output: 3 kernel_size: 3
          weight_filler { type: "gaussian" std: 0.3 } bias_filler { type: "gaussian" } } }
layer { name: "pool" type: "Pooling" bottom: "conv" top: "pool"
        pooling_param { pool: AVE kernel_size: 2 stride: 2 } }
layer { name: "ip" type: "InnerProduct" bottom: "pool" top: "ip"
        inner_product_param { num_output: 4 weight_filler { type: "xavier" } } }
layer { name: "prob" type: "Softmax" bottom: "ip" top: "prob" }
"""


def test_pycaffe_habits_on_the_torch_device():
    """`.data[...] =` reaches the next forward, a weight edited from Python takes effect, and
    `.diff` read after backward is current, as on the CPU."""
    cpu = Net(DEPLOY, TEST, dtype=np.float64, seed=1)
    dev = Net(DEPLOY, TEST, dtype=np.float64, seed=1, device=DEVICE)
    assert dev.device.name == DEVICE and "torch-cpu" in repr(dev)
    rng = np.random.default_rng(0)
    for step in range(3):
        x = rng.standard_normal((2, 1, 8, 8))
        for net in (cpu, dev):
            net.blobs["data"].data[...] = x
            if step == 1:  # a weight edited in place from Python
                net.params["conv"][0].data[...] *= -2
            if step == 2:  # and one replaced through the pycaffe params view
                net.params["ip"][1].data[...] = np.arange(4.0)
        out_cpu, out_dev = cpu.forward()["prob"].copy(), dev.forward()["prob"].copy()
        np.testing.assert_allclose(out_dev, out_cpu, rtol=1e-10, atol=1e-14)
        diff = rng.standard_normal(out_cpu.shape)
        g_cpu = cpu.backward(prob=diff)["data"].copy()
        g_dev = dev.backward(prob=diff)["data"]
        assert isinstance(g_dev, np.ndarray)
        np.testing.assert_allclose(g_dev, g_cpu, rtol=1e-9, atol=1e-13)
        np.testing.assert_allclose(dev.params["conv"][0].diff, cpu.params["conv"][0].diff,
                                   rtol=1e-9, atol=1e-13)
    assert not np.allclose(out_cpu, Net(DEPLOY, TEST, dtype=np.float64, seed=1)
                           .forward(data=x)["prob"])  # the edits did change the outputs


def lenet(max_iter, device):
    param = read_solver(ROOT / "models" / "lenet" / "lenet_solver.prototxt")
    param.max_iter, param.snapshot, param.snapshot_after_train = max_iter, 0, False
    param.test_interval, param.random_seed = 0, 1
    return get_solver(param, device=device)


def test_lenet_learns_mnist_through_the_torch_device(mnist_dir, monkeypatch):
    monkeypatch.chdir(ROOT)
    solver = lenet(300, DEVICE)
    solver.solve()
    assert solver.test(0)["accuracy"] >= 0.95


@pytest.mark.slow
def test_lenet_2000_iterations_through_the_torch_device(mnist_dir, monkeypatch):
    monkeypatch.chdir(ROOT)
    solver = lenet(2000, DEVICE)
    solver.solve()
    assert solver.test(0)["accuracy"] >= 0.98


NETSPEC = [sys.executable, "-m", "netspec.cli"]


def run(folder, *args):
    return subprocess.run(NETSPEC + list(args), cwd=folder, capture_output=True, text=True,
                          timeout=300)


def test_the_tool_trains_tests_and_times_on_a_named_device(folder):
    write_solver(folder, max_iter=4, display=2, test_interval=0, snapshot_after_train="true")
    done = run(folder, "train", "solver.prototxt", "--device", DEVICE)
    assert done.returncode == 0, done.stderr
    assert "Training on torch-cpu" in done.stdout and "Iteration 4" in done.stdout
    done = run(folder, "test", "--model", "net.prototxt", "--weights", "snap_iter_4.caffemodel",
               "--iterations", "2", "--device", DEVICE)
    assert done.returncode == 0 and "acc = " in done.stdout, done.stderr
    done = run(folder, "time", "net.prototxt", "--iterations", "2", "--device", DEVICE)
    assert done.returncode == 0 and "Average Forward-Backward" in done.stdout, done.stderr
    done = run(folder, "train", "solver.prototxt", "--device", "tpu")
    assert done.returncode == 1 and done.stderr.count("\n") == 1
    assert "unknown device 'tpu'" in done.stderr


@pytest.mark.skipif(gpu_available(), reason="this machine has a GPU")
def test_solver_mode_gpu_without_a_gpu_warns_once_and_trains_on_the_cpu(folder):
    write_solver(folder, max_iter=2, display=1, test_interval=0, solver_mode="GPU")
    done = run(folder, "train", "solver.prototxt")
    assert done.returncode == 0, done.stderr
    warnings = [line for line in (done.stdout + done.stderr).splitlines()
                if "solver_mode: GPU" in line]
    assert len(warnings) == 1 and "training on the CPU" in warnings[0], warnings
    done = run(folder, "train", "solver.prototxt", "--gpu", "0")  # asked for: an error
    assert done.returncode == 1 and done.stderr.count("\n") == 1, done.stderr


def test_a_cpu_run_never_imports_torch(folder):
    write_solver(folder, max_iter=3, test_interval=2)
    code = ("import sys, numpy as np; from netspec import get_solver; "
            "s = get_solver('solver.prototxt', np.float64); s.solve(); "
            "print('torch' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], cwd=folder, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "False"


LABELLED = """
name: "labelled"
input: "data" input_shape { dim: 4 dim: 5 }
input: "label" input_shape { dim: 4 }
layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip"
        inner_product_param { num_output: 3 weight_filler { type: "xavier" } } }
layer { name: "loss" type: "LOSS" bottom: "ip" bottom: "label" top: "loss" }
"""


@pytest.mark.parametrize("kind", ["SoftmaxWithLoss", "Accuracy", "MultinomialLogisticLoss"])
def test_a_label_out_of_range_on_the_device_is_the_cpus_error_read_at_the_next_sync(kind):
    errors = []
    for device in ("cpu", DEVICE):
        net = Net(LABELLED.replace("LOSS", kind), TRAIN, dtype=np.float64, seed=0,
                  device=device)
        net.blobs["data"].data[...] = 1.0
        net.blobs["label"].data[...] = [0, 2, 1, 1]
        net.forward()  # fine
        net.blobs["label"].data[...] = [0, 2, 7, 1]
        with pytest.raises(SpecError) as e:
            net.forward_layers()  # the CPU raises at once; the device only records it
            assert device != "cpu"
            net.blobs["label"].data[...] = [0, 1, 1, 1]
            net.forward_layers()  # a good batch after it does not clear the error
            net.check_deferred()
        errors.append(str(e.value))
    assert errors[0] == errors[1] and "loss" in errors[0] and "7" in errors[0], errors


EMBEDDED = """
name: "embedded"
input: "words" input_shape { dim: 4 }
layer { name: "embed" type: "Embed" bottom: "words" top: "vectors"
        embed_param { num_output: 3 input_dim: 5 weight_filler { type: "xavier" } } }
"""


@pytest.mark.parametrize("bad", [5.0, -1.0, 5.5, float("nan")])
def test_an_embed_index_out_of_range_is_the_same_error_on_either_device(bad):
    """Caffe's Embed checks every index is in [0, input_dim) (truncated): the CPU at once,
    the device at its next read (meanwhile it reads row 0, never outside the table)."""
    errors = []
    for device in ("cpu", DEVICE):
        net = Net(EMBEDDED, TEST, dtype=np.float64, seed=0, device=device)
        net.blobs["words"].data[...] = [0, 4, 1, 2]
        net.forward()
        np.testing.assert_array_equal(net.blobs["vectors"].data[1],
                                      net.params["embed"][0].data[4])
        net.blobs["words"].data[...] = [0, 1, bad, 2]
        with pytest.raises(SpecError) as e:
            net.forward_layers()
            assert device != "cpu"
            net.check_deferred()
        errors.append(str(e.value))
    assert errors[0] == errors[1] and "embed" in errors[0] and "input_dim" in errors[0], errors
