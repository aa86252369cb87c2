"""Data-parallel training over MPI, run for real with `mpiexec -n 2` on this machine: the
Caffe equivalence (N ranks with batch b = one process with batch b and iter_size N), faults
that end the whole job with a line naming the rank, and a single process that never loads
mpi4py."""
from __future__ import annotations

import glob
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from netspec import Net, TRAIN, get_solver
from netspec.db import write_datum_lmdb
from netspec.proto import netspec_pb2 as pb
from netspec.spec import read_solver

BIN = Path(sys.executable).parent
MPIEXEC = shutil.which("mpiexec", path=str(BIN)) or shutil.which("mpiexec")
pytestmark = pytest.mark.skipif(MPIEXEC is None, reason="no mpiexec (pip install 'netspec[mpi]')")
NETSPEC = [sys.executable, "-m", "netspec.cli"]

NET = """
name: "parallel"
layer { name: "data" type: "Data" top: "data" top: "label" include { phase: TRAIN }
        data_param { source: "items_lmdb" batch_size: 4 backend: LMDB }
        transform_param { scale: 0.00390625 } }
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"
        convolution_param { num_output: 3 kernel_size: 3
          weight_filler { type: "gaussian" std: 0.3 } bias_filler { type: "gaussian" } } }
layer { name: "relu" type: "ReLU" bottom: "conv" top: "conv" }
layer { name: "ip" type: "InnerProduct" bottom: "conv" top: "ip"
        inner_product_param { num_output: 5
          weight_filler { type: "gaussian" std: 0.3 } bias_filler { type: "gaussian" } } }
LOSS
"""
LOSS = 'layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip" bottom: "label" top: "loss" }'
SOLVER = """
net: "net.prototxt"
base_lr: 0.05
momentum: 0.9
weight_decay: 0.01
lr_policy: "step"
gamma: 0.5
stepsize: 7
max_iter: MAX_ITER
iter_size: ITER_SIZE
display: 5
snapshot_prefix: "snapshots/run"
random_seed: 3
"""


def job(tmp_path, *, iter_size=1, max_iter=20, loss=LOSS, items=48):
    """A training folder: an LMDB of small images, the net and the solver."""
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (items, 1, 6, 6), dtype=np.uint8)
    write_datum_lmdb(str(tmp_path / "items_lmdb"), images, rng.integers(0, 5, items))
    (tmp_path / "net.prototxt").write_text(NET.replace("LOSS", loss))
    (tmp_path / "solver.prototxt").write_text(
        SOLVER.replace("MAX_ITER", str(max_iter)).replace("ITER_SIZE", str(iter_size)))
    return tmp_path


def mpirun(folder, ranks, *args, timeout=120):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([MPIEXEC, "-n", str(ranks), *NETSPEC, "train", "solver.prototxt",
                           "--dtype", "float64", *args], cwd=folder, env=env,
                          capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize("device", ["cpu", "torch-cpu"])
def test_two_ranks_equal_one_process_with_iter_size_two(tmp_path, monkeypatch, device):
    """Caffe's documented equivalence: the ranks read disjoint halves of the same 8 items per
    iteration that one process reads in two iter_size passes, so the averaged gradients, and
    after 20 iterations of SGD with momentum, decay and a step schedule the weights, agree;
    on the torch device too (its gradients staged through the host for MPI)."""
    if device != "cpu":
        pytest.importorskip("torch", reason="the torch device needs netspec[gpu]")
    folder = job(tmp_path / "mpi")
    result = mpirun(folder, 2, "--device", device)
    assert result.returncode == 0, result.stdout + result.stderr
    assert (f"Training on {device}" in result.stdout) == (device != "cpu")
    assert "Training on 2 processes (MPI): batch_size 4 per process, effective batch 8" in \
        result.stdout
    assert result.stdout.count("Iteration 5 (") == 1  # only rank 0 reports progress
    one = job(tmp_path / "one", iter_size=2)
    monkeypatch.chdir(one)
    solver = get_solver(read_solver(str(one / "solver.prototxt")), np.float64)
    solver.solve()
    parallel = Net(str(folder / "net.prototxt"), TRAIN, dtype=np.float64,
                   weights=str(folder / "snapshots/run_iter_20.caffemodel"))
    for name in ("conv", "ip"):
        for mine, theirs in zip(solver.net.params[name], parallel.params[name]):
            scale = np.abs(mine.data).max()
            assert np.abs(mine.data - theirs.data).max() <= 1e-6 * scale, name
    assert not np.allclose(solver.net.params["ip"][0].data,  # it did learn
                           Net(str(one / "net.prototxt"), TRAIN, dtype=np.float64,
                               seed=3).params["ip"][0].data)


def test_every_rank_resumes_from_rank_zeros_snapshot(tmp_path):
    folder = job(tmp_path, max_iter=10)
    assert mpirun(folder, 2).returncode == 0
    state = folder / "snapshots/run_iter_10.solverstate"
    assert state.is_file() and not list(folder.glob("snapshots/*.tmp"))
    (folder / "solver.prototxt").write_text(
        (folder / "solver.prototxt").read_text().replace("max_iter: 10", "max_iter: 14"))
    result = mpirun(folder, 2, "--snapshot", str(state))
    assert result.returncode == 0, result.stderr
    assert "Restoring previous solver status" in result.stdout
    assert (folder / "snapshots/run_iter_14.caffemodel").is_file()
    alone = subprocess.run([*NETSPEC, "train", "solver.prototxt", "--snapshot", str(state)],
                           cwd=folder, capture_output=True, text=True, timeout=120)
    assert alone.returncode == 0, alone.stderr  # the same snapshot, now one process


RAISES = """
import netspec


class FailsOnRankOne:
    def setup(self, bottom, top):
        self.calls = 0

    def reshape(self, bottom, top):
        top[0].reshape(*bottom[0].data.shape)

    def forward(self, bottom, top):
        self.calls += 1
        if netspec.solver_rank() == 1 and self.calls == 3:
            raise RuntimeError("out of cheese")
        top[0].data[...] = bottom[0].data

    def backward(self, top, propagate_down, bottom):
        bottom[0].diff[...] = top[0].diff
"""


def test_an_exception_on_one_rank_ends_the_job_with_one_line(tmp_path):
    (tmp_path / "failing_layer.py").write_text(RAISES)
    folder = job(tmp_path, max_iter=1000, loss='layer { name: "py" type: "Python" bottom: "ip" '
                 'top: "ip2" python_param { module: "failing_layer" layer: "FailsOnRankOne" } }'
                 '\n' + LOSS.replace('bottom: "ip"', 'bottom: "ip2"'))
    start = time.perf_counter()
    result = mpirun(folder, 2, timeout=60)
    assert result.returncode != 0 and time.perf_counter() - start < 30
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert errors == ["error: rank 1 of 2: RuntimeError: out of cheese"], result.stderr


def test_a_killed_rank_ends_the_job_within_seconds_naming_it(tmp_path):
    psutil = pytest.importorskip("psutil")
    folder = job(tmp_path, max_iter=10 ** 6)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    launcher = subprocess.Popen([MPIEXEC, "-n", "2", *NETSPEC, "train", "solver.prototxt"],
                                cwd=folder, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
    try:
        victim = None
        deadline = time.time() + 60
        while victim is None and time.time() < deadline:
            time.sleep(0.5)
            for p in psutil.Process(launcher.pid).children(recursive=True):
                try:
                    if p.environ().get("PMI_RANK") == "1" and "netspec.cli" in p.cmdline():
                        victim = p
                except psutil.Error:
                    pass
        assert victim is not None
        time.sleep(3)  # well into training
        os.kill(victim.pid, signal.SIGKILL)
        killed = time.perf_counter()
        _, err = launcher.communicate(timeout=30)
        assert time.perf_counter() - killed < 10
    finally:
        if launcher.poll() is None:
            launcher.kill()
    assert launcher.returncode != 0
    assert f"error: rank 1 of 2 (pid {victim.pid} on " in err, err
    assert "ended without finishing (killed by a signal?)" in err
    assert "error: rank 0" not in err


def test_one_process_never_loads_mpi4py(tmp_path):
    folder = job(tmp_path, max_iter=2)
    code = ("import sys; from netspec.cli import main; sys.argv = ['netspec', 'train', "
            "'solver.prototxt']\ntry:\n    main()\nexcept SystemExit:\n    pass\n"
            "assert 'mpi4py' not in sys.modules, 'mpi4py was imported'\nprint('clean')")
    result = subprocess.run([sys.executable, "-c", code], cwd=folder, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0 and "clean" in result.stdout, result.stderr


def test_data_layers_shard_by_rank(tmp_path, monkeypatch):
    """Rank r of N reads the items whose place in the stream is r modulo N."""
    import netspec
    folder = job(tmp_path)
    monkeypatch.chdir(folder)
    seen = []
    for rank in (0, 1):
        monkeypatch.setattr(netspec.compat, "_solver_count", 2)
        monkeypatch.setattr(netspec.compat, "_solver_rank", rank)
        net = Net(str(folder / "net.prototxt"), 0, dtype=np.float64)
        net.forward_layers(0, 0)
        seen.append(net.blobs["data"].data.copy())
    monkeypatch.setattr(netspec.compat, "_solver_count", 1)
    monkeypatch.setattr(netspec.compat, "_solver_rank", 0)
    net = Net(str(folder / "net.prototxt"), 0, dtype=np.float64)
    net.forward_layers(0, 0)
    first = net.blobs["data"].data.copy()
    net.forward_layers(0, 0)
    stream = np.concatenate([first, net.blobs["data"].data])  # items 0..7
    np.testing.assert_array_equal(seen[0], stream[0::2])
    np.testing.assert_array_equal(seen[1], stream[1::2])


@pytest.mark.parametrize("change,named", [
    (("max_iter: 40", "max_iter: 15"), "max_iter: 15 (rank 0: 40)"),
    (("iter_size: 1", "iter_size: 2"), "iter_size: 2 (rank 0: 1)"),
    (("net.prototxt", "net_b.prototxt"), "the shape of learnable parameter 2 (ip): (7, 48)"),
])
def test_ranks_that_disagree_end_the_job_with_one_line(tmp_path, change, named):
    """Rank 1 with another schedule or other parameter shapes: before any exchange, rank 0
    ends the job naming the rank and the first difference (no hang, no MPI stack); no
    marker file is left in the temporary folder."""
    import tempfile
    folder = job(tmp_path, max_iter=40)
    (folder / "net_b.prototxt").write_text((folder / "net.prototxt").read_text()
                                           .replace("num_output: 5", "num_output: 7"))
    text = (folder / "solver.prototxt").read_text()
    (folder / "solver_b.prototxt").write_text(text.replace(*change))
    before = set(glob.glob(os.path.join(tempfile.gettempdir(), "netspec-mpi-*.failed")))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    common = [*NETSPEC, "train"]
    result = subprocess.run([MPIEXEC, "-n", "1", *common, "solver.prototxt", ":", "-n", "1",
                             *common, "solver_b.prototxt"], cwd=folder, env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and errors[0].startswith("error: rank 0 of 2: rank 1 differs from "
                                                     "rank 0 in "), result.stderr
    assert named in errors[0], errors
    assert "Traceback" not in result.stderr and "truncated" not in result.stderr
    if "max_iter" in named:  # (once) the watcher clears the marker after the others saw it
        def left():
            return set(glob.glob(os.path.join(tempfile.gettempdir(), "netspec-mpi-*.failed")))
        deadline = time.monotonic() + 30
        while not left() <= before and time.monotonic() < deadline:
            time.sleep(0.5)
        assert left() <= before
