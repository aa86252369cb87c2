"""The well-known model-zoo architectures written with netspec's DSL (deploy form, Caffe's
layer choices), for tests that they set up with the right shapes and parameter counts."""
from netspec import NetSpec, layers as L, params as P

MAX, AVE = P.Pooling.MAX, P.Pooling.AVE


def _input(n, batch, size):
    n.data = L.Input(shape=dict(dim=[batch, 3, size, size]))
    return n.data


def _conv_relu(bottom, num, k, stride=1, pad=0, group=1):
    conv = L.Convolution(bottom, num_output=num, kernel_size=k, stride=stride, pad=pad,
                         group=group)
    return conv, L.ReLU(conv, in_place=True)


def _fc_relu_drop(bottom, num, ratio=0.5):
    fc = L.InnerProduct(bottom, num_output=num)
    relu = L.ReLU(fc, in_place=True)
    return L.Dropout(relu, dropout_ratio=ratio, in_place=True)


def _alexnet(batch, pool_then_norm):
    n = NetSpec()
    x = _input(n, batch, 227)

    def reduce(x):
        def pool(x):
            return L.Pooling(x, pool=MAX, kernel_size=3, stride=2)

        def norm(x):
            return L.LRN(x, local_size=5, alpha=1e-4, beta=0.75)
        return norm(pool(x)) if pool_then_norm else pool(norm(x))
    _, x = _conv_relu(x, 96, 11, stride=4)
    x = reduce(x)
    _, x = _conv_relu(x, 256, 5, pad=2, group=2)
    x = reduce(x)
    _, x = _conv_relu(x, 384, 3, pad=1)
    _, x = _conv_relu(x, 384, 3, pad=1, group=2)
    _, x = _conv_relu(x, 256, 3, pad=1, group=2)
    x = L.Pooling(x, pool=MAX, kernel_size=3, stride=2)
    x = _fc_relu_drop(_fc_relu_drop(x, 4096), 4096)
    n.prob = L.Softmax(L.InnerProduct(x, num_output=1000))
    return n.to_proto()


def alexnet(batch=10):
    return _alexnet(batch, pool_then_norm=False)


def caffenet(batch=10):
    """BVLC's reference CaffeNet: AlexNet with pooling before normalisation."""
    return _alexnet(batch, pool_then_norm=True)


def vgg16(batch=1):
    n = NetSpec()
    x = _input(n, batch, 224)
    for width, repeat in ((64, 2), (128, 2), (256, 3), (512, 3), (512, 3)):
        for _ in range(repeat):
            _, x = _conv_relu(x, width, 3, pad=1)
        x = L.Pooling(x, pool=MAX, kernel_size=2, stride=2)
    x = _fc_relu_drop(_fc_relu_drop(x, 4096), 4096)
    n.prob = L.Softmax(L.InnerProduct(x, num_output=1000))
    return n.to_proto()


def _inception(x, c1, c3r, c3, c5r, c5, proj):
    _, a = _conv_relu(x, c1, 1)
    _, b = _conv_relu(_conv_relu(x, c3r, 1)[1], c3, 3, pad=1)
    _, c = _conv_relu(_conv_relu(x, c5r, 1)[1], c5, 5, pad=2)
    _, d = _conv_relu(L.Pooling(x, pool=MAX, kernel_size=3, stride=1, pad=1), proj, 1)
    return L.Concat(a, b, c, d)


def googlenet(batch=10):
    """bvlc_googlenet's deploy net (no auxiliary classifiers)."""
    n = NetSpec()
    x = _input(n, batch, 224)
    _, x = _conv_relu(x, 64, 7, stride=2, pad=3)
    x = L.LRN(L.Pooling(x, pool=MAX, kernel_size=3, stride=2), local_size=5, alpha=1e-4, beta=0.75)
    _, x = _conv_relu(_conv_relu(x, 64, 1)[1], 192, 3, pad=1)
    x = L.Pooling(L.LRN(x, local_size=5, alpha=1e-4, beta=0.75), pool=MAX, kernel_size=3, stride=2)
    for cfg in ((64, 96, 128, 16, 32, 32), (128, 128, 192, 32, 96, 64)):
        x = _inception(x, *cfg)
    x = L.Pooling(x, pool=MAX, kernel_size=3, stride=2)
    for cfg in ((192, 96, 208, 16, 48, 64), (160, 112, 224, 24, 64, 64),
                (128, 128, 256, 24, 64, 64), (112, 144, 288, 32, 64, 64),
                (256, 160, 320, 32, 128, 128)):
        x = _inception(x, *cfg)
    x = L.Pooling(x, pool=MAX, kernel_size=3, stride=2)
    for cfg in ((256, 160, 320, 32, 128, 128), (384, 192, 384, 48, 128, 128)):
        x = _inception(x, *cfg)
    x = L.Dropout(L.Pooling(x, pool=AVE, kernel_size=7, stride=1), dropout_ratio=0.4,
                  in_place=True)
    n.prob = L.Softmax(L.InnerProduct(x, num_output=1000))
    return n.to_proto()


def _conv_bn(x, num, k, stride=1, pad=0, relu=True):
    conv = L.Convolution(x, num_output=num, kernel_size=k, stride=stride, pad=pad,
                         bias_term=False)
    y = L.Scale(L.BatchNorm(conv, use_global_stats=True, in_place=True), bias_term=True,
                in_place=True)
    return L.ReLU(y, in_place=True) if relu else y


def resnet50(batch=1):
    """Kaiming He's Caffe ResNet-50: conv + BatchNorm + Scale, bottlenecks, stride in the
    first 1x1 of each stage, projection shortcuts."""
    n = NetSpec()
    x = _input(n, batch, 224)
    x = L.Convolution(x, num_output=64, kernel_size=7, stride=2, pad=3)
    x = L.ReLU(L.Scale(L.BatchNorm(x, use_global_stats=True, in_place=True), bias_term=True,
                       in_place=True), in_place=True)
    x = L.Pooling(x, pool=MAX, kernel_size=3, stride=2)
    for stage, (width, blocks, stride) in enumerate(((64, 3, 1), (128, 4, 2), (256, 6, 2),
                                                    (512, 3, 2))):
        for b in range(blocks):
            s = stride if b == 0 else 1
            shortcut = _conv_bn(x, 4 * width, 1, stride=s, relu=False) if b == 0 else x
            y = _conv_bn(x, width, 1, stride=s)
            y = _conv_bn(y, width, 3, pad=1)
            y = _conv_bn(y, 4 * width, 1, relu=False)
            x = L.ReLU(L.Eltwise(shortcut, y), in_place=True)
    x = L.Pooling(x, pool=AVE, kernel_size=7, stride=1)
    n.prob = L.Softmax(L.InnerProduct(x, num_output=1000))
    return n.to_proto()


def squeezenet11(batch=10):
    n = NetSpec()
    x = _input(n, batch, 227)
    _, x = _conv_relu(x, 64, 3, stride=2)
    x = L.Pooling(x, pool=MAX, kernel_size=3, stride=2)
    for i, (s, e) in enumerate(((16, 64), (16, 64), (32, 128), (32, 128), (48, 192), (48, 192),
                                (64, 256), (64, 256))):
        _, sq = _conv_relu(x, s, 1)
        x = L.Concat(_conv_relu(sq, e, 1)[1], _conv_relu(sq, e, 3, pad=1)[1])
        if i in (1, 3):
            x = L.Pooling(x, pool=MAX, kernel_size=3, stride=2)
    x = L.Dropout(x, dropout_ratio=0.5, in_place=True)
    _, x = _conv_relu(x, 1000, 1)
    n.prob = L.Softmax(L.Pooling(x, pool=AVE, global_pooling=True))
    return n.to_proto()
