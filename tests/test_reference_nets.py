"""Caffe's reference nets (../shared/caffe-models) and our model files set up unchanged, with
the last top's shape and the parameter count worked out by hand here from the definitions."""
import re

import pytest

from conftest import CAFFE_MODELS, ROOT, needs_caffe_models
from netspec import Net, TEST, TRAIN


def conv(c_in, c_out, k, group=1):
    return c_out * (c_in // group) * k * k + c_out


def fc(n_in, n_out):
    return n_in * n_out + n_out


LENET = conv(1, 20, 5) + conv(20, 50, 5) + fc(50 * 4 * 4, 500) + fc(500, 10)
# cifar10_quick: conv 32 5x5 (pad 2) -> pool 3/2 -> conv 32 5x5 -> pool -> conv 64 5x5 -> pool
# -> ip 64 -> ip 10, on 32x32 -> 16 -> 8 -> 4 after the three ceil-rounded pools
CIFAR_QUICK = conv(3, 32, 5) + conv(32, 32, 5) + conv(32, 64, 5) + fc(64 * 4 * 4, 64) + fc(64, 10)
# cifar10_full: same convs, LRN (no parameters), a single ip 10 on 64x4x4
CIFAR_FULL = conv(3, 32, 5) + conv(32, 32, 5) + conv(32, 64, 5) + fc(64 * 4 * 4, 10)
# CaffeNet: conv1 96 11x11/4, conv2 256 5x5 group 2, conv3 384 3x3, conv4 384 group 2,
# conv5 256 group 2, fc6 4096 on 256x6x6, fc7 4096, fc8 1000
CAFFENET = (conv(3, 96, 11) + conv(96, 256, 5, 2) + conv(256, 384, 3) + conv(384, 384, 3, 2)
            + conv(384, 256, 3, 2) + fc(256 * 6 * 6, 4096) + fc(4096, 4096) + fc(4096, 1000))


def test_hand_counts_match_the_published_ones():
    assert (LENET, CIFAR_QUICK, CIFAR_FULL, CAFFENET) == (431080, 145578, 89578, 60965224)


def count(net):
    return sum(b.count for blobs in net.params.values() for b in blobs)


@pytest.mark.parametrize("path,last,shape,params", [
    *[pytest.param(CAFFE_MODELS / path, "prob", shape, params, marks=needs_caffe_models)
      for path, shape, params in [
          ("examples/mnist/lenet.prototxt", (64, 10), LENET),
          ("examples/cifar10/cifar10_quick.prototxt", (1, 10), CIFAR_QUICK),
          ("examples/cifar10/cifar10_full.prototxt", (1, 10), CIFAR_FULL),
          ("models/bvlc_reference_caffenet/deploy.prototxt", (10, 1000), CAFFENET)]],
    (ROOT / "models/lenet/lenet.prototxt", "prob", (64, 10), LENET),
    (ROOT / "models/cifar10_quick/cifar10_quick.prototxt", "prob", (1, 10), CIFAR_QUICK),
])
def test_deploy_nets_set_up(path, last, shape, params):
    net = Net(str(path), TEST)
    assert net.blobs[last].shape == shape
    assert count(net) == params


DATA_SHAPES = {"mnist": (1, 28, 28), "cifar": (3, 32, 32), "imagenet": (3, 227, 227)}


def with_dummy_data(text: str, item_shape) -> str:
    """Swap each Data layer for a DummyData of the shapes it would produce (no database)."""
    def swap(match):
        block = match.group(0)
        batch = int(re.search(r"batch_size:\s*(\d+)", block).group(1))
        crop = re.search(r"crop_size:\s*(\d+)", block)
        c, h, w = item_shape if not crop else (item_shape[0], int(crop.group(1)),
                                               int(crop.group(1)))
        include = re.search(r"include\s*\{[^}]*\}", block)
        name = re.search(r'name:\s*"([^"]*)"', block).group(1)
        return (f'layer {{ name: "{name}" type: "DummyData" top: "data" top: "label" '
                f'{include.group(0) if include else ""} dummy_data_param {{ '
                f'shape {{ dim: {batch} dim: {c} dim: {h} dim: {w} }} shape {{ dim: {batch} }} }} }}')
    return re.sub(r'layer \{\s*name: "[^"]*"\s*type: "Data".*?\n\}', swap, text, flags=re.S)


@pytest.mark.parametrize("path,kind,params,outputs", [
    ("examples/mnist/lenet_train_test.prototxt", "mnist", LENET, ["accuracy", "loss"]),
    ("examples/cifar10/cifar10_quick_train_test.prototxt", "cifar", CIFAR_QUICK,
     ["accuracy", "loss"]),
    ("examples/cifar10/cifar10_full_train_test.prototxt", "cifar", CIFAR_FULL,
     ["accuracy", "loss"]),
    ("models/bvlc_reference_caffenet/train_val.prototxt", "imagenet", CAFFENET,
     ["accuracy", "loss"]),
])
@needs_caffe_models
def test_train_test_nets_set_up_in_both_phases(path, kind, params, outputs):
    text = with_dummy_data((CAFFE_MODELS / path).read_text(), DATA_SHAPES[kind])
    assert count(Net(text, TRAIN)) == params
    test = Net(text, TEST)
    assert test.outputs == outputs and count(test) == params


@needs_caffe_models
def test_the_mnist_autoencoder_with_stages_sets_up():
    text = with_dummy_data((CAFFE_MODELS / "examples/mnist/mnist_autoencoder.prototxt")
                           .read_text(), DATA_SHAPES["mnist"])
    train = Net(text, TRAIN)
    assert "cross_entropy_loss" in train.outputs
    test = Net(text, TEST, stages=["test-on-test"])
    assert test.blobs["decode1neuron"].shape[1:] == (784,)
