"""LeNet on real MNIST from the shipped spec files. CI runs the short version; the full
10,000-iteration run (>= 99% test accuracy) is marked slow: `pytest -m slow`."""
import pytest

from conftest import ROOT
from netspec import get_solver
from netspec.spec import read_solver


def lenet_solver(monkeypatch, max_iter):
    monkeypatch.chdir(ROOT)  # the spec files use paths relative to the repository root
    param = read_solver(ROOT / "models" / "lenet" / "lenet_solver.prototxt")
    param.max_iter = max_iter
    param.snapshot = 0
    param.snapshot_after_train = False
    param.test_interval = 0
    param.random_seed = 1
    return get_solver(param)


def test_lenet_learns_mnist_in_a_few_hundred_iterations(mnist_dir, monkeypatch):
    solver = lenet_solver(monkeypatch, 300)
    solver.solve()
    scores = solver.test(0)  # all 10,000 test images: 100 batches of 100
    assert scores["accuracy"] >= 0.95, scores


@pytest.mark.slow
def test_lenet_full_schedule_reaches_99_percent(mnist_dir, monkeypatch):
    solver = lenet_solver(monkeypatch, 10000)
    solver.solve()
    assert solver.test(0)["accuracy"] >= 0.99
