"""Model-zoo architectures (AlexNet, VGG-16, GoogLeNet, ResNet-50, SqueezeNet 1.1) set up as
deploy nets with the published parameter counts and the right output shapes."""
import pytest

import zoo
from netspec import Net, TEST


@pytest.mark.parametrize("build,shape,learnable", [
    (zoo.alexnet, (10, 1000), 60_965_224),
    (zoo.googlenet, (10, 1000), 6_998_552),
    (zoo.squeezenet11, (10, 1000, 1, 1), 1_235_496),
    (zoo.resnet50, (1, 1000), 25_557_096),   # Caffe's: conv1 has a bias; BN/Scale as blobs
    (zoo.vgg16, (1, 1000), 138_357_544),
], ids=["alexnet", "googlenet", "squeezenet1.1", "resnet50", "vgg16"])
def test_zoo_net_sets_up(build, shape, learnable):
    net = Net(build(), TEST)
    assert net.blobs["prob"].shape == shape
    assert sum(p.blob.count for p in net.learnable_params if p.lr_mult) == learnable
