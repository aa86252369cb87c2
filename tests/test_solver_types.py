"""The six update rules: each against formulas written out here (not the solver's helpers),
PyTorch's optimisers where they implement the same rule, bit-exact resume for every type in
both snapshot formats, and signal actions."""
import math
import os
import signal

import numpy as np
import pytest

from netspec import get_solver
from netspec.signals import SignalActions
from netspec.solvers import SOLVERS
from solver_helpers import write_solver

f32 = lambda v: float(np.float32(v))  # noqa: E731  SolverParameter stores floats
LR, MOMENTUM, DECAY, DELTA = f32(0.1), f32(0.9), f32(0.01), f32(1e-8)


def sgd(s, g, lr, t):
    s["v"] = MOMENTUM * s.get("v", 0) + lr * g
    return s["v"]


def nesterov(s, g, lr, t):
    old = s.get("v", 0)
    s["v"] = MOMENTUM * old + lr * g
    return (1 + MOMENTUM) * s["v"] - MOMENTUM * old


def adagrad(s, g, lr, t):
    s["h"] = s.get("h", 0) + g * g
    return lr * g / (np.sqrt(s["h"]) + DELTA)


def rmsprop(s, g, lr, t, d=f32(0.95)):
    s["h"] = d * s.get("h", 0) + (1 - d) * g * g
    return lr * g / (np.sqrt(s["h"]) + DELTA)


def adadelta(s, g, lr, t, m=f32(0.95), delta=f32(1e-6)):
    s["h"] = m * s.get("h", 0) + (1 - m) * g * g
    u = g * np.sqrt((s.get("h2", 0) + delta) / (s["h"] + delta))
    s["h2"] = m * s.get("h2", 0) + (1 - m) * u * u
    return lr * u


def adam(s, g, lr, t, b1=MOMENTUM, b2=f32(0.999)):
    s["m"] = b1 * s.get("m", 0) + (1 - b1) * g
    s["v"] = b2 * s.get("v", 0) + (1 - b2) * g * g
    return lr * math.sqrt(1 - b2 ** (t + 1)) / (1 - b1 ** (t + 1)) * s["m"] / (np.sqrt(s["v"]) + DELTA)


RULES = {
    "SGD": (sgd, {}),
    "Nesterov": (nesterov, {}),
    "AdaGrad": (adagrad, dict(momentum=0)),
    "RMSProp": (rmsprop, dict(momentum=0, rms_decay=0.95)),
    "AdaDelta": (adadelta, dict(momentum=0.95, delta=1e-6)),
    "Adam": (adam, dict(momentum2=0.999)),
}


def gradients(images, labels, w, b, pos, batch):
    """d(mean softmax log loss)/d(w, b) for one batch, written out."""
    idx = (pos + np.arange(batch)) % len(images)
    x = images[idx].reshape(batch, -1)
    z = x @ w.T + b
    p = np.exp(z - z.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    p[np.arange(batch), labels[idx]] -= 1
    return p.T @ x / batch, p.sum(0) / batch


def reference(images, labels, w, b, steps, rule, batch=4, iter_size=1, l1=False, clip=-1.0):
    """Gradients summed over iter_size batches and clipped by their global L2 norm (Caffe's
    ApplyUpdate clips before it normalises), divided by iter_size, then decay (L2: + decay W,
    L1: + decay sign(W)) with decay_mult 1/0 and lr_mult 1/2 for weight/bias, as the test net
    declares; then the rule."""
    params, states, pos = [w, b], [{}, {}], 0
    for t in range(steps):
        grads = [np.zeros_like(w), np.zeros_like(b)]
        for _ in range(iter_size):
            for k, g in enumerate(gradients(images, labels, params[0], params[1], pos, batch)):
                grads[k] += g
            pos += batch
        norm = math.sqrt(sum((g ** 2).sum() for g in grads))
        if 0 <= clip < norm:
            grads = [g * clip / norm for g in grads]
        grads = [g / iter_size for g in grads]
        for k, (g, lr_mult, decay_mult) in enumerate(zip(grads, (1, 2), (1, 0))):
            g = g + DECAY * decay_mult * (np.sign(params[k]) if l1 else params[k])
            params[k] = params[k] - rule(states[k], g, LR * lr_mult, t)
    return params


def test_every_caffe_type_is_registered():
    assert set(SOLVERS) == set(RULES)


@pytest.mark.parametrize("kind", list(RULES))
@pytest.mark.parametrize("extra,ref", [
    ({}, {}),
    (dict(iter_size=2, regularization_type='"L1"', clip_gradients=0.05),
     dict(iter_size=2, l1=True, clip=f32(0.05))),
], ids=["plain", "iter_size+L1+clip"])
def test_update_rule_matches_formula(data, kind, extra, ref):
    folder, images, labels = data
    rule, settings = RULES[kind]
    solver = get_solver(write_solver(folder, type=f'"{kind}"', **settings, **extra), np.float64)
    assert type(solver).__name__ == f"{kind}Solver"
    w0, b0 = (solver.net.params["ip"][i].data.copy() for i in (0, 1))
    solver.step(6)
    w, b = reference(images, labels, w0, b0, 6, rule, **ref)
    np.testing.assert_allclose(solver.net.params["ip"][0].data, w, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(solver.net.params["ip"][1].data, b, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("legacy,kind", [("SGD", "SGD"), ("NESTEROV", "Nesterov"),
                                         ("ADAGRAD", "AdaGrad"), ("RMSPROP", "RMSProp"),
                                         ("ADADELTA", "AdaDelta"), ("ADAM", "Adam")])
def test_legacy_solver_type_enum(data, legacy, kind):
    folder, _, _ = data
    settings = dict(RULES[kind][1])
    settings.pop("momentum2", None)
    solver = get_solver(write_solver(folder, solver_type=legacy, **settings))
    assert type(solver).__name__ == f"{kind}Solver"


torch = pytest.importorskip("torch")


def torch_optimizer(kind, params):
    groups = [dict(params=[params[0]], lr=LR, weight_decay=DECAY),
              dict(params=[params[1]], lr=2 * LR, weight_decay=0.0)]
    if kind == "SGD":  # constant lr: torch's v = m v + g is Caffe's V / lr
        return torch.optim.SGD(groups, momentum=MOMENTUM)
    if kind == "Adam":  # Caffe adds eps to sqrt(V), torch to sqrt(V / (1 - b2^t)): eps -> 0
        return torch.optim.Adam(groups, betas=(MOMENTUM, f32(0.999)), eps=f32(1e-12))
    if kind == "RMSProp":
        return torch.optim.RMSprop(groups, alpha=f32(0.95), eps=DELTA, momentum=0)
    return torch.optim.Adagrad(groups, eps=DELTA)


@pytest.mark.parametrize("kind", ["SGD", "Adam", "RMSProp", "AdaGrad"])
def test_matches_torch_optim_over_20_steps(data, kind):
    folder, images, labels = data
    settings = dict(RULES[kind][1], **(dict(delta=1e-12) if kind == "Adam" else {}))
    solver = get_solver(write_solver(folder, type=f'"{kind}"', **settings), np.float64)
    params = [torch.tensor(solver.net.params["ip"][i].data.copy(), requires_grad=True)
              for i in (0, 1)]
    opt = torch_optimizer(kind, params)
    for t in range(20):
        idx = (t * 4 + np.arange(4)) % len(images)
        x = torch.tensor(images[idx].reshape(4, -1))
        opt.zero_grad()
        torch.nn.functional.cross_entropy(x @ params[0].T + params[1],
                                          torch.tensor(labels[idx])).backward()
        opt.step()
    solver.step(20)
    for i in (0, 1):
        np.testing.assert_allclose(solver.net.params["ip"][i].data, params[i].detach().numpy(),
                                   rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("kind", list(RULES))
@pytest.mark.parametrize("fmt", ["BINARYPROTO", "HDF5"])
def test_resume_is_bit_exact_for_every_type(data, kind, fmt):
    folder, _, _ = data
    path = write_solver(folder, type=f'"{kind}"', dropout=True, max_iter=8, snapshot=4,
                        snapshot_format=fmt, **RULES[kind][1])
    straight = get_solver(path)
    straight.solve()
    ext = ".h5" if fmt == "HDF5" else ""
    assert os.path.exists(f"{folder}/snap_iter_4.caffemodel{ext}")
    resumed = get_solver(path)
    resumed.restore(f"{folder}/snap_iter_4.solverstate{ext}")
    resumed.solve()
    for a, b in zip(straight.history, resumed.history):
        np.testing.assert_array_equal(a.data, b.data)
    for a, b in zip(straight.net.learnable_params, resumed.net.learnable_params):
        np.testing.assert_array_equal(a.blob.data, b.blob.data)
    sets = 2 if kind in ("Adam", "AdaDelta") else 1
    assert len(straight.history) == sets * len(straight.net.learnable_params)


def test_hdf5_layout_is_caffes(data):
    h5py = pytest.importorskip("h5py")
    folder, _, _ = data
    solver = get_solver(write_solver(folder, type='"Adam"', snapshot_format="HDF5"))
    solver.step(2)
    model, state = solver.snapshot()
    assert model.endswith("snap_iter_2.caffemodel.h5") and state.endswith(".solverstate.h5")
    with h5py.File(model) as f:
        assert list(f["data"]) == ["ip"] and list(f["data/ip"]) == ["0", "1"]
        np.testing.assert_array_equal(f["data/ip/0"][()], solver.net.params["ip"][0].data)
    with h5py.File(state) as f:
        assert f["iter"][0] == 2 and f["current_step"][0] == 0
        assert f["learned_net"][()].decode() == model
        assert sorted(f["history"], key=int) == ["0", "1", "2", "3"]  # M for w, b; then V


def test_stop_request_snapshots_and_stops(data, caplog):
    folder, _, _ = data
    solver = get_solver(write_solver(folder, max_iter=100, snapshot_after_train="true"))
    solver.action_request = lambda: "stop" if solver.iter == 3 else "none"
    with caplog.at_level("INFO", logger="netspec"):
        solver.solve()
    assert solver.iter == 3
    assert os.path.exists(f"{folder}/snap_iter_3.solverstate")
    assert "Optimization stopped early." in caplog.text


def test_snapshot_request_snapshots_and_goes_on(data):
    folder, _, _ = data
    solver = get_solver(write_solver(folder, max_iter=5))
    solver.action_request = lambda: "snapshot" if solver.iter == 2 else "none"
    solver.solve()
    assert solver.iter == 5 and os.path.exists(f"{folder}/snap_iter_2.caffemodel")


def test_signals_map_to_actions():
    with SignalActions("snapshot", "stop") as actions:
        assert actions() == "none"
        os.kill(os.getpid(), signal.SIGINT)
        assert actions() == "snapshot" and actions() == "none"
        os.kill(os.getpid(), signal.SIGHUP)
        assert actions() == "stop"
    with pytest.raises(ValueError, match="sigint_effect must be one of"):
        SignalActions("explode")


def test_shared_parameters_are_updated_once_with_the_summed_gradient(data):
    folder, images, labels = data
    path = write_solver(folder, momentum=0, weight_decay=0)
    net = (folder / "net.prototxt").read_text()
    second = net.split('layer { name: "loss"')[0].split('layer { name: "ip"')[1]
    second = 'layer { name: "ip2"' + second.replace('top: "ip"', 'top: "ip2"')
    net = net.replace('param { lr_mult: 1 decay_mult: 1 } param { lr_mult: 2 decay_mult: 0 }',
                      'param { name: "w" } param { name: "b" }')
    second = second.replace('param { lr_mult: 1 decay_mult: 1 } param { lr_mult: 2 decay_mult: 0 }',
                            'param { name: "w" } param { name: "b" }')
    net = net.replace('layer { name: "loss"', second + 'layer { name: "loss2" type: '
                      '"SoftmaxWithLoss" bottom: "ip2" bottom: "label" top: "loss2" }\n'
                      'layer { name: "loss"')
    (folder / "net.prototxt").write_text(net)
    solver = get_solver(path, np.float64)
    shared = solver.net.params["ip"][0]
    assert solver.net.params["ip2"][0] is shared and len(solver.net.learnable_params) == 2
    w0, b0 = shared.data.copy(), solver.net.params["ip"][1].data.copy()
    gw, gb = gradients(images, labels, w0, b0, 0, 4)
    solver.step(1)  # two losses through the same weights: gradient doubles, applied once
    np.testing.assert_allclose(shared.data, w0 - LR * 2 * gw, rtol=1e-12, atol=1e-14)
