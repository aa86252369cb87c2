"""The well-known model-zoo architectures written with netspec's DSL, as deploy nets with the
layer choices and the layer and blob names of the Caffe model zoo's published deploy files,
so that the published .caffemodel weights load into them by name:

    python models/zoo/make_zoo.py      # writes models/zoo/<name>.prototxt

tests/test_model_zoo.py checks the files against this script and the published parameter
counts."""
import sys
from pathlib import Path

from netspec import NetSpec, layers as L, params as P
from netspec.spec import to_text

MAX, AVE = P.Pooling.MAX, P.Pooling.AVE


def _input(n, batch, size):
    n.data = L.Input(shape=dict(dim=[batch, 3, size, size]))
    return n.data


def _conv_relu(n, x, conv, relu, num, k, stride=1, pad=0, group=1):
    """A convolution named `conv` and its in-place ReLU named `relu`."""
    n[conv] = L.Convolution(x, num_output=num, kernel_size=k, stride=stride, pad=pad,
                            group=group)
    n[relu] = L.ReLU(n[conv], in_place=True)
    return n[conv]


def _fc_relu_drop(n, x, index, num, ratio=0.5):
    n[f"fc{index}"] = L.InnerProduct(x, num_output=num)
    n[f"relu{index}"] = L.ReLU(n[f"fc{index}"], in_place=True)
    n[f"drop{index}"] = L.Dropout(n[f"fc{index}"], dropout_ratio=ratio, in_place=True)
    return n[f"fc{index}"]


def _softmax_classifier(n, x, name, classes=1000):
    n[name] = L.InnerProduct(x, num_output=classes)
    n.prob = L.Softmax(n[name])


def _alexnet(batch, pool_then_norm):
    n = NetSpec()
    x = _input(n, batch, 227)

    def reduce(x, i):
        steps = [("pool", lambda x: L.Pooling(x, pool=MAX, kernel_size=3, stride=2)),
                 ("norm", lambda x: L.LRN(x, local_size=5, alpha=1e-4, beta=0.75))]
        for kind, make in (steps if pool_then_norm else steps[::-1]):
            n[f"{kind}{i}"] = make(x)
            x = n[f"{kind}{i}"]
        return x
    x = reduce(_conv_relu(n, x, "conv1", "relu1", 96, 11, stride=4), 1)
    x = reduce(_conv_relu(n, x, "conv2", "relu2", 256, 5, pad=2, group=2), 2)
    x = _conv_relu(n, x, "conv3", "relu3", 384, 3, pad=1)
    x = _conv_relu(n, x, "conv4", "relu4", 384, 3, pad=1, group=2)
    x = _conv_relu(n, x, "conv5", "relu5", 256, 3, pad=1, group=2)
    n.pool5 = L.Pooling(x, pool=MAX, kernel_size=3, stride=2)
    x = _fc_relu_drop(n, _fc_relu_drop(n, n.pool5, 6, 4096), 7, 4096)
    _softmax_classifier(n, x, "fc8")
    return n.to_proto()


def alexnet(batch=10):
    """bvlc_alexnet: normalisation before pooling."""
    return _alexnet(batch, pool_then_norm=False)


def caffenet(batch=10):
    """BVLC's reference CaffeNet: AlexNet with pooling before normalisation."""
    return _alexnet(batch, pool_then_norm=True)


def vgg16(batch=1):
    """VGG_ILSVRC_16_layers."""
    n = NetSpec()
    x = _input(n, batch, 224)
    for block, (width, repeat) in enumerate(((64, 2), (128, 2), (256, 3), (512, 3), (512, 3)),
                                            start=1):
        for i in range(1, repeat + 1):
            x = _conv_relu(n, x, f"conv{block}_{i}", f"relu{block}_{i}", width, 3, pad=1)
        n[f"pool{block}"] = L.Pooling(x, pool=MAX, kernel_size=2, stride=2)
        x = n[f"pool{block}"]
    x = _fc_relu_drop(n, _fc_relu_drop(n, x, 6, 4096), 7, 4096)
    _softmax_classifier(n, x, "fc8")
    return n.to_proto()


def _inception(n, x, name, c1, c3r, c3, c5r, c5, proj):
    def branch(x, kind, num, k, pad=0):
        return _conv_relu(n, x, f"{name}/{kind}", f"{name}/relu_{kind}", num, k, pad=pad)
    a = branch(x, "1x1", c1, 1)
    b = branch(branch(x, "3x3_reduce", c3r, 1), "3x3", c3, 3, pad=1)
    c = branch(branch(x, "5x5_reduce", c5r, 1), "5x5", c5, 5, pad=2)
    n[f"{name}/pool"] = L.Pooling(x, pool=MAX, kernel_size=3, stride=1, pad=1)
    d = branch(n[f"{name}/pool"], "pool_proj", proj, 1)
    n[f"{name}/output"] = L.Concat(a, b, c, d)
    return n[f"{name}/output"]


def googlenet(batch=10):
    """bvlc_googlenet's deploy net (no auxiliary classifiers)."""
    n = NetSpec()
    x = _input(n, batch, 224)
    x = _conv_relu(n, x, "conv1/7x7_s2", "conv1/relu_7x7", 64, 7, stride=2, pad=3)
    n["pool1/3x3_s2"] = L.Pooling(x, pool=MAX, kernel_size=3, stride=2)
    n["pool1/norm1"] = L.LRN(n["pool1/3x3_s2"], local_size=5, alpha=1e-4, beta=0.75)
    x = _conv_relu(n, n["pool1/norm1"], "conv2/3x3_reduce", "conv2/relu_3x3_reduce", 64, 1)
    x = _conv_relu(n, x, "conv2/3x3", "conv2/relu_3x3", 192, 3, pad=1)
    n["conv2/norm2"] = L.LRN(x, local_size=5, alpha=1e-4, beta=0.75)
    n["pool2/3x3_s2"] = L.Pooling(n["conv2/norm2"], pool=MAX, kernel_size=3, stride=2)
    x = n["pool2/3x3_s2"]
    stages = [("3", "ab", [(64, 96, 128, 16, 32, 32), (128, 128, 192, 32, 96, 64)]),
              ("4", "abcde", [(192, 96, 208, 16, 48, 64), (160, 112, 224, 24, 64, 64),
                              (128, 128, 256, 24, 64, 64), (112, 144, 288, 32, 64, 64),
                              (256, 160, 320, 32, 128, 128)]),
              ("5", "ab", [(256, 160, 320, 32, 128, 128), (384, 192, 384, 48, 128, 128)])]
    for stage, letters, configs in stages:
        for letter, cfg in zip(letters, configs):
            x = _inception(n, x, f"inception_{stage}{letter}", *cfg)
        if stage != "5":
            pool = f"pool{stage}/3x3_s2"
            n[pool] = L.Pooling(x, pool=MAX, kernel_size=3, stride=2)
            x = n[pool]
    n["pool5/7x7_s1"] = L.Pooling(x, pool=AVE, kernel_size=7, stride=1)
    n["pool5/drop_7x7_s1"] = L.Dropout(n["pool5/7x7_s1"], dropout_ratio=0.4, in_place=True)
    _softmax_classifier(n, n["pool5/7x7_s1"], "loss3/classifier")
    return n.to_proto()


def _conv_bn(n, x, suffix, num, k, stride=1, pad=0, relu=True, bias=False, conv=None):
    """Kaiming He's block: conv `res<suffix>` (or `conv`), BatchNorm `bn<suffix>` and Scale
    `scale<suffix>` in place, then ReLU `<conv>_relu`."""
    conv = conv or f"res{suffix}"
    n[conv] = L.Convolution(x, num_output=num, kernel_size=k, stride=stride, pad=pad,
                            bias_term=bias)
    n[f"bn{suffix}"] = L.BatchNorm(n[conv], use_global_stats=True, in_place=True)
    n[f"scale{suffix}"] = L.Scale(n[conv], bias_term=True, in_place=True)
    if relu:
        n[f"{conv}_relu"] = L.ReLU(n[conv], in_place=True)
    return n[conv]


def resnet50(batch=1):
    """Kaiming He's Caffe ResNet-50: conv + BatchNorm + Scale, bottlenecks, stride in the
    first 1x1 of each stage, projection shortcuts."""
    n = NetSpec()
    x = _input(n, batch, 224)
    x = _conv_bn(n, x, "_conv1", 64, 7, stride=2, pad=3, bias=True, conv="conv1")
    n.pool1 = L.Pooling(x, pool=MAX, kernel_size=3, stride=2)
    x = n.pool1
    for stage, (width, blocks, stride) in enumerate(((64, 3, 1), (128, 4, 2), (256, 6, 2),
                                                    (512, 3, 2)), start=2):
        for b in range(blocks):
            block = f"{stage}{'abcdef'[b]}"
            s = stride if b == 0 else 1
            shortcut = _conv_bn(n, x, f"{block}_branch1", 4 * width, 1, stride=s,
                                relu=False) if b == 0 else x
            y = _conv_bn(n, x, f"{block}_branch2a", width, 1, stride=s)
            y = _conv_bn(n, y, f"{block}_branch2b", width, 3, pad=1)
            y = _conv_bn(n, y, f"{block}_branch2c", 4 * width, 1, relu=False)
            n[f"res{block}"] = L.Eltwise(shortcut, y)
            n[f"res{block}_relu"] = L.ReLU(n[f"res{block}"], in_place=True)
            x = n[f"res{block}"]
    n.pool5 = L.Pooling(x, pool=AVE, kernel_size=7, stride=1)
    _softmax_classifier(n, n.pool5, "fc1000")
    return n.to_proto()


def squeezenet11(batch=10):
    """SqueezeNet v1.1."""
    n = NetSpec()
    x = _input(n, batch, 227)
    x = _conv_relu(n, x, "conv1", "relu_conv1", 64, 3, stride=2)
    n.pool1 = L.Pooling(x, pool=MAX, kernel_size=3, stride=2)
    x = n.pool1
    for fire, (s, e) in enumerate(((16, 64), (16, 64), (32, 128), (32, 128), (48, 192),
                                   (48, 192), (64, 256), (64, 256)), start=2):
        name = f"fire{fire}"
        sq = _conv_relu(n, x, f"{name}/squeeze1x1", f"{name}/relu_squeeze1x1", s, 1)
        a = _conv_relu(n, sq, f"{name}/expand1x1", f"{name}/relu_expand1x1", e, 1)
        b = _conv_relu(n, sq, f"{name}/expand3x3", f"{name}/relu_expand3x3", e, 3, pad=1)
        n[f"{name}/concat"] = L.Concat(a, b)
        x = n[f"{name}/concat"]
        if fire in (3, 5):
            n[f"pool{fire}"] = L.Pooling(x, pool=MAX, kernel_size=3, stride=2)
            x = n[f"pool{fire}"]
    n.drop9 = L.Dropout(x, dropout_ratio=0.5, in_place=True)
    x = _conv_relu(n, x, "conv10", "relu_conv10", 1000, 1)
    n.pool10 = L.Pooling(x, pool=AVE, global_pooling=True)
    n.prob = L.Softmax(n.pool10)
    return n.to_proto()


#: file name -> (builder, the net's name)
NETS = {"alexnet": (alexnet, "AlexNet"), "caffenet": (caffenet, "CaffeNet"),
        "googlenet": (googlenet, "GoogleNet"), "vgg16": (vgg16, "VGG_ILSVRC_16_layers"),
        "resnet50": (resnet50, "ResNet-50"), "squeezenet11": (squeezenet11, "SqueezeNet_v1.1")}


def named(name: str, **kwargs):
    """The net `name` as its file holds it."""
    build, title = NETS[name]
    net = build(**kwargs)
    net.name = title
    return net


def main() -> None:
    folder = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).parent
    for name in NETS:
        (folder / f"{name}.prototxt").write_text(to_text(named(name)))


if __name__ == "__main__":
    main()
