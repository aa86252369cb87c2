"""Solver: lr policies by hand, SGD updates against an independent numpy re-derivation, update
order, snapshots, and bit-exact resume."""
import math
import os

import numpy as np
import pytest

from netspec import SpecError, get_solver
from netspec.proto import netspec_pb2 as pb
from netspec.solvers.lr_policy import learning_rate
from netspec.spec import read_binary

from solver_helpers import C, CLASSES, H, W, write_solver  # noqa: F401


# -- learning-rate policies against hand-computed values ---------------------------------------
@pytest.mark.parametrize("settings,iteration,expected", [
    (dict(lr_policy="fixed"), 500, 0.01),
    (dict(lr_policy="step", gamma=0.1, stepsize=100), 250, 0.01 * 0.1 ** 2),
    (dict(lr_policy="exp", gamma=0.99), 10, 0.01 * 0.99 ** 10),
    (dict(lr_policy="inv", gamma=0.0001, power=0.75), 100, 0.00992565),
    (dict(lr_policy="inv", gamma=0.0001, power=0.75), 10000, 0.01 * 2 ** -0.75),
    (dict(lr_policy="poly", power=2, max_iter=1000), 250, 0.01 * 0.75 ** 2),
    (dict(lr_policy="sigmoid", gamma=-0.01, stepsize=300), 300, 0.005),
    (dict(lr_policy="sigmoid", gamma=-0.01, stepsize=300), 500, 0.01 / (1 + math.exp(2))),
])
def test_lr_policy_values(settings, iteration, expected):
    p = pb.SolverParameter(base_lr=0.01, **settings)
    assert learning_rate(p, iteration, 0)[0] == pytest.approx(expected, rel=1e-6)


def test_multistep_advances_and_keeps_its_position():
    p = pb.SolverParameter(base_lr=1.0, lr_policy="multistep", gamma=0.5,
                           stepvalue=[10, 20, 40])
    step = 0
    seen = []
    for it in (0, 9, 10, 19, 25, 40, 100):
        rate, step = learning_rate(p, it, step)
        seen.append((rate, step))
    assert seen == [(1, 0), (1, 0), (0.5, 1), (0.5, 1), (0.25, 2), (0.125, 3), (0.125, 3)]


# -- SGD against an independent numpy re-derivation --------------------------------------------
def reference_sgd(images, labels, w, b, steps, *, batch, iter_size, base_lr, momentum, decay,
                  l1=False, clip=-1.0, rate=lambda it: None):
    """Caffe's update written out: g = mean over iter_size of the loss gradient; clip by global
    norm; + decay * W (L2) or decay * sign(W) (L1) on weights only (bias decay_mult 0);
    V = momentum V + lr * lr_mult * g; W -= V. lr_mult is 1 for W and 2 for b."""
    vw, vb = np.zeros_like(w), np.zeros_like(b)
    pos = 0
    for it in range(steps):
        gw, gb = np.zeros_like(w), np.zeros_like(b)
        for _ in range(iter_size):
            idx = (pos + np.arange(batch)) % len(images)
            pos = (pos + batch) % len(images)
            x = images[idx].reshape(batch, -1)
            z = x @ w.T + b
            p = np.exp(z - z.max(1, keepdims=True))
            p /= p.sum(1, keepdims=True)
            p[np.arange(batch), labels[idx]] -= 1
            gw += p.T @ x / batch
            gb += p.sum(0) / batch
        gw /= iter_size
        gb /= iter_size
        norm = math.sqrt((gw ** 2).sum() + (gb ** 2).sum())
        if 0 <= clip < norm:
            gw, gb = gw * clip / norm, gb * clip / norm
        gw = gw + decay * (np.sign(w) if l1 else w)
        lr = rate(it) or base_lr
        vw = momentum * vw + lr * gw
        vb = momentum * vb + 2 * lr * gb
        w, b = w - vw, b - vb
    return w, b


@pytest.mark.parametrize("extra,ref", [
    ({}, {}),
    (dict(iter_size=3), dict(iter_size=3)),
    (dict(regularization_type='"L1"'), dict(l1=True)),
    (dict(clip_gradients=0.05), dict(clip=0.05)),
    (dict(lr_policy='"step"', gamma=0.5, stepsize=2),
     dict(rate=lambda it: float(np.float32(0.1)) * 0.5 ** (it // 2))),
])
def test_sgd_matches_independent_formula(data, extra, ref):
    folder, images, labels = data
    solver = get_solver(write_solver(folder, **extra), np.float64)
    w0 = solver.net.params["ip"][0].data.copy()
    b0 = solver.net.params["ip"][1].data.copy()
    solver.step(5)
    f32 = lambda v: float(np.float32(v))  # noqa: E731  SolverParameter stores floats
    kw = dict(batch=4, iter_size=1, base_lr=f32(0.1), momentum=f32(0.9), decay=f32(0.01))
    kw.update({k: f32(v) if isinstance(v, float) else v for k, v in ref.items()})
    w, b = reference_sgd(images, labels, w0, b0, 5, **kw)
    np.testing.assert_allclose(solver.net.params["ip"][0].data, w, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(solver.net.params["ip"][1].data, b, rtol=1e-10, atol=1e-12)
    assert solver.iter == 5


def test_parameters_change_only_after_every_layer_ran_backward(data):
    folder, _, _ = data
    solver = get_solver(write_solver(folder), np.float64)
    before = [p.blob.data.copy() for p in solver.net.learnable_params]
    seen = []
    for layer in solver.net.layers:
        original = layer.backward

        def spy(top, prop, bottom, original=original):
            seen.append(all(np.array_equal(p.blob.data, b) for p, b in
                            zip(solver.net.learnable_params, before)))
            original(top, prop, bottom)
        layer.backward = spy
    solver.step(1)
    assert seen and all(seen)
    assert not np.array_equal(solver.net.learnable_params[0].blob.data, before[0])


def test_test_nets_share_the_train_weights_and_report_means(data):
    folder, _, _ = data
    solver = get_solver(write_solver(folder, test_iter=3, test_interval=100), np.float64)
    assert solver.test_nets[0].params["ip"][0] is solver.net.params["ip"][0]
    means = solver.test(0)
    assert set(means) == {"acc", "loss"} and 0 <= means["acc"] <= 1


def test_snapshot_files_are_caffes_layout(data):
    folder, _, _ = data
    solver = get_solver(write_solver(folder))
    solver.step(2)
    model, state_path = solver.snapshot()
    assert model == f"{folder}/snap_iter_2.caffemodel"
    assert state_path == f"{folder}/snap_iter_2.solverstate"
    assert sorted(f for f in os.listdir(folder) if "snap" in f) == [
        "snap_iter_2.caffemodel", "snap_iter_2.solverstate"]  # nothing half-written left
    state = read_binary(state_path, pb.SolverState())
    assert state.iter == 2 and state.learned_net == model and len(state.history) == 2
    weights = read_binary(model, pb.NetParameter())
    ip = [l for l in weights.layer if l.name == "ip"][0]
    assert list(ip.blobs[0].shape.dim) == [CLASSES, C * H * W]
    np.testing.assert_array_equal(np.array(ip.blobs[0].data, dtype=np.float32).reshape(
        CLASSES, -1), solver.net.params["ip"][0].data)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_resume_is_bit_exact(data, dtype):
    folder, _, _ = data
    path = write_solver(folder, dropout=True, batch=5, max_iter=8, test_iter=2,
                        test_interval=3, lr_policy='"multistep"', gamma=0.5,
                        stepvalue=[2, 5], snapshot=4)
    straight = get_solver(path, dtype)
    straight.solve()
    resumed = get_solver(path, dtype)
    resumed.restore(f"{folder}/snap_iter_4.solverstate")
    assert resumed.iter == 4 and resumed.current_step == 1
    resumed.solve()
    for a, b in zip(straight.net.learnable_params, resumed.net.learnable_params):
        np.testing.assert_array_equal(a.blob.data, b.blob.data)
    for a, b in zip(straight.history, resumed.history):
        np.testing.assert_array_equal(a.data, b.data)


def test_random_seed_makes_runs_reproducible(data):
    folder, _, _ = data
    path = write_solver(folder, dropout=True)
    a, b = get_solver(path), get_solver(path)
    a.step(3)
    b.step(3)
    np.testing.assert_array_equal(a.net.params["ip"][0].data, b.net.params["ip"][0].data)


@pytest.mark.parametrize("change,match,line", [
    (dict(lr_policy='"step"'), "stepsize must be > 0 for lr_policy 'step'", None),
    (dict(lr_policy='"cosine"'), "lr_policy must be one of", "lr_policy"),
    (dict(type='"Adams"'), "type 'Adams' is not a solver type \\(did you mean 'Adam'\\?\\)",
     "type"),
    (dict(type='"RMSProp"'), "momentum cannot be used with RMSProp", "momentum"),
    (dict(test_iter=[1, 2]), "test_iter has 2 values for 1 test nets", "test_iter"),
])
def test_solver_setting_errors(data, change, match, line):
    folder, _, _ = data
    path = write_solver(folder, **change)
    if "test_iter" in change:  # a generic `net:` may serve any number of test_iter entries;
        text = open(path).read()  # explicit test_net files must match test_iter one to one
        open(path, "w").write(text.replace('net: "net.prototxt"', 'train_net: "net.prototxt"\n'
                                                                   'test_net: "net.prototxt"'))
    with pytest.raises(SpecError, match=match) as e:
        get_solver(path)
    assert str(e.value).startswith(path)
    if line:
        text = open(path).read().splitlines()
        assert text[e.value.line - 1].startswith(line)


def test_missing_data_source_says_how_to_create_it(data):
    folder, _, _ = data
    path = write_solver(folder)
    (folder / "net.prototxt").write_text(
        (folder / "net.prototxt").read_text().replace("train_lmdb", "missing_lmdb"))
    with pytest.raises(SpecError, match=r"Data 'data': data source .*missing_lmdb' not found "
                                        r"\(create an LMDB from images with `netspec "
                                        r"convert-imageset`, or MNIST / CIFAR-10 with `netspec "
                                        r"data get mnist\|cifar10`\)"):
        get_solver(path)
