"""The Python DSL (Caffe's net_spec API): LeNet round trip, every layer family, errors."""
import subprocess
import sys

import numpy as np
import pytest

import netspec
from conftest import ROOT
from netspec import Net, NetSpec, layers as L, params as P
from netspec.proto import netspec_pb2 as pb
from netspec.spec import parse_text, read_text


def test_make_lenet_writes_the_shipped_spec():
    out = subprocess.run([sys.executable, str(ROOT / "models" / "lenet" / "make_lenet.py")],
                         capture_output=True, text=True, check=True).stdout
    assert parse_text(out, pb.NetParameter()) == read_text(
        ROOT / "models" / "lenet" / "lenet_train_test.prototxt", pb.NetParameter())


def test_keywords_go_to_the_right_messages():
    n = NetSpec()
    n.data = L.Input(shape=[dict(dim=[2, 3, 8, 8])])
    n.conv = L.Convolution(n.data, num_output=4, kernel_size=[3], pad=1,
                           weight_filler=dict(type="msra", variance_norm="FAN_OUT"),
                           param=[dict(lr_mult=1, decay_mult=1), dict(lr_mult=2)],
                           name="conv_layer")
    n.pool = L.Pooling(n.conv, pool="AVE", global_pooling=True)
    n.up = L.Deconvolution(n.pool, num_output=2, kernel_size=2, stride=2)
    net = n.to_proto()
    conv = net.layer[1]
    assert conv.name == "conv_layer" and list(conv.top) == ["conv"]
    assert list(conv.convolution_param.kernel_size) == [3] and conv.param[1].lr_mult == 2
    assert conv.convolution_param.weight_filler.variance_norm == pb.FillerParameter.FAN_OUT
    assert net.layer[2].pooling_param.pool == pb.PoolingParameter.AVE
    assert net.layer[3].convolution_param.num_output == 2  # Deconvolution's message
    assert P.Pooling.MAX == pb.PoolingParameter.MAX and P.Data.LMDB == pb.DataParameter.LMDB


def test_in_place_unnamed_and_multiple_tops():
    n = NetSpec()
    n.x = L.Input(shape=dict(dim=[2, 6]))
    n.a, n.b = L.Slice(n.x, ntop=2, axis=1)
    relu = L.ReLU(n.a, in_place=True)
    n.out = L.Eltwise(relu, L.TanH(n.b), operation="PROD")
    net = n.to_proto()
    by_type = {l.type: l for l in net.layer}
    assert list(by_type["ReLU"].top) == ["a"] and list(by_type["ReLU"].bottom) == ["a"]
    assert by_type["TanH"].name == "TanH1" and list(by_type["Eltwise"].bottom) == ["a", "TanH1"]


def test_errors_are_clear():
    with pytest.raises(TypeError, match="unknown keyword 'kernal_size'.*did you mean "
                                        "'kernel_size'"):
        L.Convolution(L.Input(shape=dict(dim=[1])), kernal_size=3).to_proto()
    with pytest.raises(ValueError, match="pool has no value 'MEAN'"):
        L.Pooling(L.Input(shape=dict(dim=[1])), pool="MEAN").to_proto()
    with pytest.raises(TypeError, match="must be a layer output"):
        NetSpec().x = 3


def test_a_net_with_every_layer_family_builds_and_trains():
    n = NetSpec()
    n.data, n.label = L.Input(shape=[dict(dim=[4, 3, 8, 8]), dict(dim=[4])], ntop=2)
    # vision
    n.conv = L.Convolution(n.data, num_output=6, kernel_size=3, pad=1,
                           weight_filler=dict(type="xavier"))
    n.pool = L.Pooling(n.conv, pool=P.Pooling.MAX, kernel_size=2, stride=2)
    n.lrn = L.LRN(n.pool, local_size=3)
    # normalisation + neuron
    n.bn = L.BatchNorm(n.lrn)
    n.scale = L.Scale(n.bn, bias_term=True, in_place=True)
    n.act = L.PReLU(n.scale, in_place=True)
    n.drop = L.Dropout(n.act, dropout_ratio=0.2, in_place=True)
    # utility
    n.left, n.right = L.Slice(n.drop, ntop=2, axis=1)
    n.both = L.Eltwise(n.left, n.right, operation=P.Eltwise.SUM)
    n.flat = L.Flatten(n.both)
    n.ip = L.InnerProduct(n.flat, num_output=5, weight_filler=dict(type="gaussian", std=0.1))
    # loss + metric
    n.loss = L.SoftmaxWithLoss(n.ip, n.label, loss_param=dict(normalization="VALID"))
    n.aux = L.EuclideanLoss(n.left, n.right, loss_weight=0.1)
    n.acc = L.Accuracy(n.ip, n.label, include=dict(phase=netspec.TEST))
    proto = n.to_proto()
    for source in (proto, str(proto)):  # Net takes the message or its text
        net = Net(source, netspec.TRAIN, dtype=np.float64, seed=0)
        assert net.outputs == ["aux", "loss"]
    net.blobs["data"].data[...] = np.random.default_rng(0).normal(size=(4, 3, 8, 8))
    net.blobs["label"].data[...] = [0, 1, 2, 3]
    solver = netspec.SGDSolver(pb.SolverParameter(net_param=proto, base_lr=0.1, momentum=0.9,
                                                  lr_policy="fixed", max_iter=30), np.float64)
    solver.net.blobs["data"].data[...] = net.blobs["data"].data
    solver.net.blobs["label"].data[...] = [0, 1, 2, 3]
    first = solver.net.forward_layers()
    solver.step(30)
    assert solver.net.forward_layers() < first
