"""The model-zoo deploy nets shipped in models/zoo (AlexNet, CaffeNet, GoogLeNet, VGG-16,
ResNet-50, SqueezeNet 1.1): the files are what models/zoo/make_zoo.py writes, they set up with
the published parameter counts and output shapes, and their layer names are the published
files' (so the published weights load by name)."""
import importlib.util

import pytest

from conftest import CAFFE_MODELS, ROOT, needs_caffe_models
from netspec import Net, TEST
from netspec.proto import netspec_pb2 as pb
from netspec.spec import read_text

ZOO = ROOT / "models" / "zoo"


def make_zoo():
    spec = importlib.util.spec_from_file_location("make_zoo", ZOO / "make_zoo.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("name,shape,learnable", [
    ("alexnet", (10, 1000), 60_965_224),
    ("caffenet", (10, 1000), 60_965_224),
    ("googlenet", (10, 1000), 6_998_552),
    ("squeezenet11", (10, 1000, 1, 1), 1_235_496),
    ("resnet50", (1, 1000), 25_557_096),   # Caffe's: conv1 has a bias; BN/Scale as blobs
    ("vgg16", (1, 1000), 138_357_544),
])
def test_zoo_file_is_the_scripts_and_sets_up(name, shape, learnable):
    path = ZOO / f"{name}.prototxt"
    assert read_text(path, pb.NetParameter()) == make_zoo().named(name)
    net = Net(str(path), TEST)
    assert net.blobs["prob"].shape == shape
    assert sum(p.blob.count for p in net.learnable_params if p.lr_mult) == learnable


@needs_caffe_models
def test_caffenet_has_the_published_layer_names_and_weight_shapes():
    published = Net(str(CAFFE_MODELS / "models/bvlc_reference_caffenet/deploy.prototxt"), TEST)
    ours = Net(str(ZOO / "caffenet.prototxt"), TEST)
    assert [l.name for l in ours.layers] == [l.name for l in published.layers]
    assert {k: [b.shape for b in v] for k, v in ours.params.items()} == \
        {k: [b.shape for b in v] for k, v in published.params.items()}
