"""Write LeNet's train/test spec with the Python DSL (Caffe's net_spec API):

    python models/lenet/make_lenet.py > models/lenet/lenet_train_test.prototxt

tests/test_dsl.py checks that the output parses to the same net as that file."""
import netspec
from netspec.proto import netspec_pb2 as pb
from netspec import NetSpec, layers as L, params as P

LEARN = [dict(lr_mult=1), dict(lr_mult=2)]  # weights, biases
FILL = dict(weight_filler=dict(type="xavier"), bias_filler=dict(type="constant"))


def mnist_data(phase, source, batch_size):
    return L.Data(name="mnist", include=dict(phase=phase), ntop=2,
                  transform_param=dict(scale=0.00390625), source=source,
                  batch_size=batch_size, backend=P.Data.LMDB)


def lenet() -> pb.NetParameter:
    n = NetSpec()
    n.data, n.label = mnist_data(netspec.TRAIN, "data/mnist/mnist_train_lmdb", 64)
    n.conv1 = L.Convolution(n.data, param=LEARN, num_output=20, kernel_size=5, stride=1, **FILL)
    n.pool1 = L.Pooling(n.conv1, pool=P.Pooling.MAX, kernel_size=2, stride=2)
    n.conv2 = L.Convolution(n.pool1, param=LEARN, num_output=50, kernel_size=5, stride=1, **FILL)
    n.pool2 = L.Pooling(n.conv2, pool=P.Pooling.MAX, kernel_size=2, stride=2)
    n.ip1 = L.InnerProduct(n.pool2, param=LEARN, num_output=500, **FILL)
    n.relu1 = L.ReLU(n.ip1, in_place=True)
    n.ip2 = L.InnerProduct(n.ip1, param=LEARN, num_output=10, **FILL)
    n.accuracy = L.Accuracy(n.ip2, n.label, include=dict(phase=netspec.TEST))
    n.loss = L.SoftmaxWithLoss(n.ip2, n.label)
    net = n.to_proto()
    net.name = "LeNet"
    # the TEST phase reads its own database into the same two tops, right after TRAIN's
    test = NetSpec()
    test.data, test.label = mnist_data(netspec.TEST, "data/mnist/mnist_test_lmdb", 100)
    layers = list(net.layer)
    layers.insert(1, test.to_proto().layer[0])
    del net.layer[:]
    net.layer.extend(layers)
    return net


if __name__ == "__main__":
    print(lenet(), end="")
