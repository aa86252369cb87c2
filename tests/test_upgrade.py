"""Old formats: V1 and V0 nets upgrade as Caffe's upgrade_proto does; V1 binary weights load."""
import numpy as np
import pytest

from conftest import ROOT
from netspec import Net, SpecError, TEST
from netspec.proto import netspec_pb2 as pb
from netspec.spec import parse_text, read_text
from netspec.upgrade import upgrade_net

V1_LENET = """name: "LeNet"
layers {
  name: "mnist"
  type: DATA
  top: "data"
  top: "label"
  data_param { source: "data/mnist/mnist_train_lmdb" backend: LMDB batch_size: 64
               scale: 0.00390625 }
  include: { phase: TRAIN }
}
layers {
  name: "mnist"
  type: DATA
  top: "data"
  top: "label"
  data_param { source: "data/mnist/mnist_test_lmdb" backend: LMDB batch_size: 100
               scale: 0.00390625 }
  include: { phase: TEST }
}
layers {
  name: "conv1"
  type: CONVOLUTION
  bottom: "data"
  top: "conv1"
  blobs_lr: 1
  blobs_lr: 2
  convolution_param { num_output: 20 kernel_size: 5 stride: 1
    weight_filler { type: "xavier" } bias_filler { type: "constant" } }
}
layers { name: "pool1" type: POOLING bottom: "conv1" top: "pool1"
  pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layers { name: "conv2" type: CONVOLUTION bottom: "pool1" top: "conv2" blobs_lr: 1 blobs_lr: 2
  convolution_param { num_output: 50 kernel_size: 5 stride: 1
    weight_filler { type: "xavier" } bias_filler { type: "constant" } } }
layers { name: "pool2" type: POOLING bottom: "conv2" top: "pool2"
  pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layers { name: "ip1" type: INNER_PRODUCT bottom: "pool2" top: "ip1" blobs_lr: 1 blobs_lr: 2
  inner_product_param { num_output: 500
    weight_filler { type: "xavier" } bias_filler { type: "constant" } } }
layers { name: "relu1" type: RELU bottom: "ip1" top: "ip1" }
layers { name: "ip2" type: INNER_PRODUCT bottom: "ip1" top: "ip2" blobs_lr: 1 blobs_lr: 2
  inner_product_param { num_output: 10
    weight_filler { type: "xavier" } bias_filler { type: "constant" } } }
layers { name: "accuracy" type: ACCURACY bottom: "ip2" bottom: "label" top: "accuracy"
  include: { phase: TEST } }
layers { name: "loss" type: SOFTMAX_LOSS bottom: "ip2" bottom: "label" top: "loss" }
"""


def test_v1_lenet_upgrades_to_the_current_lenet():
    new, origin = upgrade_net(parse_text(V1_LENET, pb.NetParameter()))
    current = read_text(ROOT / "models" / "lenet" / "lenet_train_test.prototxt", pb.NetParameter())
    for layer in new.layer:  # V1 put no decay_mult; current LeNet gives only lr_mult too
        assert not layer.HasField("data_param") or not layer.data_param.HasField("scale")
    assert new == current
    assert origin == list(range(11))


V1_DEPLOY = """name: "old"
input: "data"
input_dim: 2 input_dim: 3 input_dim: 8 input_dim: 8
layers { name: "conv" type: CONVOLUTION bottom: "data" top: "conv"
  param: "shared_w" blob_share_mode: PERMISSIVE blobs_lr: 1 blobs_lr: 2
  weight_decay: 1 weight_decay: 0
  convolution_param { num_output: 4 kernel_size: 3 } }
layers { name: "relu" type: RELU bottom: "conv" top: "conv" }
layers { name: "norm" type: LRN bottom: "conv" top: "norm" lrn_param { local_size: 3 } }
layers { name: "prob" type: SOFTMAX bottom: "norm" top: "prob" }
"""


def test_v1_params_inputs_and_setup():
    new, _ = upgrade_net(parse_text(V1_DEPLOY, pb.NetParameter()))
    assert [l.type for l in new.layer] == ["Input", "Convolution", "ReLU", "LRN", "Softmax"]
    spec = new.layer[1].param
    assert (spec[0].name, spec[0].share_mode, spec[0].lr_mult, spec[0].decay_mult) == (
        "shared_w", pb.ParamSpec.PERMISSIVE, 1, 1)
    assert (spec[1].lr_mult, spec[1].decay_mult) == (2, 0)
    net = Net(V1_DEPLOY, TEST)
    assert net.blobs["prob"].shape == (2, 4, 6, 6)


V0_NET = """name: "v0"
input: "data"
input_dim: 1 input_dim: 3 input_dim: 9 input_dim: 9
layers { layer { name: "pad1" type: "padding" pad: 2 } bottom: "data" top: "pad1" }
layers { layer { name: "conv1" type: "conv" num_output: 5 kernelsize: 5 stride: 2
                 biasterm: true weight_filler { type: "gaussian" std: 0.01 }
                 blobs_lr: 1 blobs_lr: 2 weight_decay: 1 weight_decay: 0 }
         bottom: "pad1" top: "conv1" }
layers { layer { name: "relu1" type: "relu" } bottom: "conv1" top: "conv1" }
layers { layer { name: "pool1" type: "pool" pool: MAX kernelsize: 3 stride: 2 }
         bottom: "conv1" top: "pool1" }
layers { layer { name: "norm1" type: "lrn" local_size: 5 alpha: 0.0001 beta: 0.75 }
         bottom: "pool1" top: "norm1" }
layers { layer { name: "fc" type: "innerproduct" num_output: 3 } bottom: "norm1" top: "fc" }
layers { layer { name: "drop" type: "dropout" dropout_ratio: 0.4 } bottom: "fc" top: "fc" }
layers { layer { name: "prob" type: "softmax" } bottom: "fc" top: "prob" }
"""


def test_v0_upgrade_merges_padding_and_maps_fields():
    new, origin = upgrade_net(parse_text(V0_NET, pb.NetParameter()))
    names = [l.name for l in new.layer]
    assert names == ["input", "conv1", "relu1", "pool1", "norm1", "fc", "drop", "prob"]
    conv = new.layer[1]
    assert list(conv.bottom) == ["data"] and list(conv.convolution_param.pad) == [2]
    assert list(conv.convolution_param.kernel_size) == [5] and conv.param[1].lr_mult == 2
    assert new.layer[3].pooling_param.kernel_size == 3
    assert new.layer[4].lrn_param.local_size == 5
    assert new.layer[6].dropout_param.dropout_ratio == pytest.approx(0.4)
    assert origin[1] == 1  # the conv block is the file's second `layers` block
    net = Net(V0_NET, TEST)
    assert net.blobs["conv1"].shape == (1, 5, 5, 5)  # (9 + 2*2 - 5) / 2 + 1


def test_v0_errors_name_the_layer():
    bad = V0_NET.replace('type: "lrn" local_size: 5', 'type: "lrn" local_size: 5 kernelsize: 3')
    with pytest.raises(SpecError, match="norm1.*V0 field 'kernelsize' does not apply to a 'lrn'"):
        Net(bad, TEST)


def test_v1_binary_caffemodel_loads(tmp_path):
    net = Net(V1_DEPLOY, TEST, seed=0)
    old = pb.NetParameter(name="old")
    for name, blobs in net.params.items():
        v1 = old.layers.add(name=name, type=pb.V1LayerParameter.CONVOLUTION)
        for b in blobs:
            n, c, h, w = (1,) * (4 - b.data.ndim) + b.data.shape  # legacy 4-d, as Caffe
            proto = v1.blobs.add(num=n, channels=c, height=h, width=w)
            proto.data.extend((b.data.ravel() + 1).tolist())
    path = tmp_path / "old.caffemodel"
    path.write_bytes(old.SerializeToString())
    fresh = Net(V1_DEPLOY, TEST, seed=1)
    fresh.copy_from(str(path))
    np.testing.assert_allclose(fresh.params["conv"][0].data, net.params["conv"][0].data + 1,
                               rtol=1e-6)


def test_upgrade_command_writes_current_text(tmp_path):
    from typer.testing import CliRunner
    from netspec.cli import app
    old = tmp_path / "old.prototxt"
    old.write_text(V1_DEPLOY)
    r = CliRunner().invoke(app, ["upgrade", str(old), "-o", str(tmp_path / "new.prototxt")])
    assert r.exit_code == 0, r.output
    text = (tmp_path / "new.prototxt").read_text()
    assert 'type: "Convolution"' in text and "layers {" not in text and "blobs_lr" not in text
    assert Net(str(tmp_path / "new.prototxt"), TEST).blobs["prob"].shape == (2, 4, 6, 6)


def test_upgrade_command_errors(tmp_path):
    from typer.testing import CliRunner
    from netspec.cli import app
    runner = CliRunner()
    r = runner.invoke(app, ["upgrade", str(tmp_path / "none.prototxt")])
    assert r.exit_code == 1 and "file not found" in r.output
    bad = tmp_path / "bad.prototxt"
    bad.write_text(V0_NET.replace('type: "relu"', 'type: "maxout"'))
    r = runner.invoke(app, ["upgrade", str(bad)])
    assert r.exit_code == 1 and "V0 layer type 'maxout' has no upgrade" in r.output
    assert "Traceback" not in r.output
