"""Shared test helpers: build one layer from prototxt text, and run the numeric gradient check."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from netspec.blob import Blob
from netspec.gradcheck import check_layer
from netspec.proto import netspec_pb2 as pb
from netspec.registry import get_layer_class
from netspec.spec import parse_text

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
CAFFE_MODELS = SHARED / "caffe-models"
#: tests of Caffe's own reference files run where ../shared/caffe-models sits beside the
#: checkout (CI); a plain clone runs everything else
needs_caffe_models = pytest.mark.skipif(
    not CAFFE_MODELS.is_dir(), reason="Caffe's reference files (../shared/caffe-models) absent")
MNIST_DIR = ROOT / "data" / "mnist"


def make_layer(text: str, phase: int = 0, seed: int = 0, dtype=np.float64):
    lp = parse_text(text, pb.LayerParameter(name="under_test"))
    if not lp.name:
        lp.name = "under_test"
    cls = get_layer_class(lp.type)
    return cls(lp, phase, dtype, np.random.default_rng(seed))


def blobs(*arrays) -> list[Blob]:
    out = []
    for a in arrays:
        a = np.asarray(a, dtype=np.float64)
        b = Blob(a.shape, np.float64)
        b.data[...] = a
        out.append(b)
    return out


def run(text: str, *arrays, ntop: int = 1, phase: int = 0):
    """Set up and run forward; returns (layer, bottom, top)."""
    layer = make_layer(text, phase)
    bottom = blobs(*arrays)
    top = [Blob((), np.float64) for _ in range(ntop)]
    layer.setup(bottom, top)
    layer.forward(bottom, top)
    return layer, bottom, top


def assert_gradients(text: str, *arrays, ntop: int = 1, phase: int = 0, check_bottom=None,
                     threshold: float = 1e-6, **kw):
    """Numeric (central differences, float64) vs analytic gradient of every bottom and param."""
    layer = make_layer(text, phase)
    bottom = blobs(*arrays)
    top = [Blob((), np.float64) for _ in range(ntop)]
    results = check_layer(layer, bottom, top, check_bottom=check_bottom, threshold=threshold, **kw)
    assert results, "nothing was checked"
    bad = [r.row(f"{layer.type} ") for r in results if not r.ok]
    assert not bad, "gradient mismatch:\n" + "\n".join(bad)
    return results


def distinct(shape, seed=0, scale=0.1):
    """Values with no ties (so max pooling has no kinks) in random order."""
    n = int(np.prod(shape))
    return (np.random.default_rng(seed).permutation(n).reshape(shape) - n / 2) * scale


@pytest.fixture
def mnist_dir():
    if not (MNIST_DIR / "mnist_train_lmdb" / "data.mdb").exists():
        pytest.skip("MNIST not fetched: run `netspec data get mnist` (make test does)")
    return MNIST_DIR


@pytest.fixture
def in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture
def data(tmp_path):
    """A 24-image LMDB in tmp_path: (folder, images scaled to [0, 1), labels)."""
    from solver_helpers import make_data
    return make_data(tmp_path)
