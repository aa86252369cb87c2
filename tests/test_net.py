"""Net wiring: phase/stage/level rules, in-place, splits, loss weights, need-backward, errors,
the pycaffe-shaped API, and whole-net gradient checks."""
import numpy as np
import pytest

from conftest import CAFFE_MODELS, ROOT, needs_caffe_models
import netspec
from netspec import Net, SpecError, TEST, TRAIN, WeightsError

FILLERS = 'weight_filler { type: "gaussian" std: 0.5 } bias_filler { type: "gaussian" }'

SMALL = f"""
name: "small"
layer {{ name: "in" type: "Input" top: "x" top: "label"
        input_param {{ shape {{ dim: 4 dim: 2 dim: 5 dim: 5 }} shape {{ dim: 4 }} }} }}
layer {{ name: "conv" type: "Convolution" bottom: "x" top: "conv"
        convolution_param {{ num_output: 3 kernel_size: 3 pad: 1 {FILLERS} }} }}
layer {{ name: "relu" type: "ReLU" bottom: "conv" top: "conv" }}
layer {{ name: "pool" type: "Pooling" bottom: "conv" top: "pool"
        pooling_param {{ pool: MAX kernel_size: 2 stride: 2 }} }}
layer {{ name: "ip_a" type: "InnerProduct" bottom: "pool" top: "a"
        inner_product_param {{ num_output: 3 {FILLERS} }} }}
layer {{ name: "ip_b" type: "InnerProduct" bottom: "pool" top: "b"
        inner_product_param {{ num_output: 3 {FILLERS} }} }}
layer {{ name: "sum_in" type: "Concat" bottom: "a" bottom: "b" top: "ab" include {{ stage: "never" }} }}
layer {{ name: "loss_a" type: "SoftmaxWithLoss" bottom: "a" bottom: "label" top: "loss_a" }}
layer {{ name: "loss_b" type: "SoftmaxWithLoss" bottom: "b" bottom: "label" top: "loss_b"
        loss_weight: 0.5 }}
layer {{ name: "acc" type: "Accuracy" bottom: "a" bottom: "label" top: "acc"
        include {{ phase: TEST }} }}
"""


def small_net(phase=TRAIN, **kw):
    net = Net(SMALL, phase, dtype=np.float64, seed=0, **kw)
    rng = np.random.default_rng(1)
    net.blobs["x"].data[...] = rng.normal(size=net.blobs["x"].shape)
    net.blobs["label"].data[...] = [0, 1, 2, 1]
    return net


def test_phase_filtering_and_outputs():
    train, test = small_net(TRAIN), small_net(TEST)
    assert "acc" not in train.layer_dict and "acc" in test.layer_dict
    assert "sum_in" not in train.layer_dict  # excluded by its stage rule
    assert train.outputs == ["loss_a", "loss_b"]
    assert test.outputs == ["acc", "loss_a", "loss_b"]  # alphabetical, as Caffe
    assert train.inputs == ["x", "label"]


def test_splits_inserted_for_shared_blobs():
    net = small_net()
    types = [l.type for l in net.layers]
    assert types.count("Split") == 2  # pool -> 2 IPs, label -> 2 losses
    assert "pool_pool_0_split_0" in net.blobs and "pool_pool_0_split_1" in net.blobs
    test = small_net(TEST)
    assert "a_ip_a_0_split_1" in test.blobs


def test_loss_combines_weights_and_net_gradient_is_numeric():
    net = small_net()
    loss = net.forward_layers()
    assert loss == pytest.approx(float(net.blobs["loss_a"].data) +
                                 0.5 * float(net.blobs["loss_b"].data))
    net.clear_param_diffs()
    net.backward_layers()
    analytic = [p.blob.diff.copy() for p in net.learnable_params]
    for info, grad in zip(net.learnable_params, analytic):
        assert_numeric_gradient(net, info.blob, grad, max(1, grad.size // 7))


def assert_numeric_gradient(net, blob, analytic, step=1):
    """Central differences of the net's loss in every `step`-th element of blob's data agree
    with the analytic gradient."""
    eps = 1e-6
    flat = blob.data.reshape(-1)
    for k in range(0, flat.size, step):
        orig = flat[k]
        flat[k] = orig + eps
        plus = net.forward_layers()
        flat[k] = orig - eps
        minus = net.forward_layers()
        flat[k] = orig
        assert (plus - minus) / (2 * eps) == pytest.approx(analytic.reshape(-1)[k], abs=1e-6)


REWRITTEN_SPLIT = f"""
layer {{ name: "in" type: "Input" top: "x" input_param {{ shape {{ dim: 3 dim: 4 }} }} }}
layer {{ name: "ip" type: "InnerProduct" bottom: "x" top: "h"
        inner_product_param {{ num_output: 5 {FILLERS} }} }}
layer {{ name: "square" type: "Power" bottom: "h" top: "p" power_param {{ power: 2 }} }}
layer {{ name: "relu" type: "ReLU" bottom: "h" top: "h" }}
layer {{ name: "sum_p" type: "Reduction" bottom: "p" top: "lp" loss_weight: 1 }}
layer {{ name: "sum_h" type: "Reduction" bottom: "h" top: "lh" loss_weight: 1 }}
"""


def test_split_tops_share_the_bottoms_memory():
    """Caffe's Split hands its bottom's memory to its tops; here too. An "in-place" ReLU on a
    split blob reads its split top and writes a new blob (the net renames its bottom), so the
    Power layer beside it still reads the unrectified values in its backward pass."""
    net = small_net()
    assert np.shares_memory(net.blobs["pool_pool_0_split_0"].data, net.blobs["pool"].data)
    assert np.shares_memory(net.blobs["pool_pool_0_split_1"].data, net.blobs["pool"].data)
    net = Net(REWRITTEN_SPLIT, TRAIN, dtype=np.float64, seed=0)
    assert [l.share for l in net.layers if l.type == "Split"] == [True]
    assert not np.shares_memory(net.blobs["h"].data, net.blobs["h_ip_0_split_1"].data)
    net.blobs["x"].data[...] = np.random.default_rng(3).normal(size=(3, 4))
    net.forward_layers()
    net.clear_param_diffs()
    net.backward_layers()
    weights = net.params["ip"][0]
    assert_numeric_gradient(net, weights, weights.diff.copy())


def test_backward_only_where_needed():
    net = small_net(TEST)
    need = dict(zip([l.name for l in net.layers], net._layer_need_backward))
    assert need["conv"] and need["ip_a"] and not need["acc"] and not need["in"]
    # a layer with lr_mult 0 on every param and nothing learnable below: no backward
    frozen = SMALL.replace('name: "conv" type: "Convolution" bottom: "x" top: "conv"',
                           'name: "conv" type: "Convolution" bottom: "x" top: "conv" '
                           'param { lr_mult: 0 } param { lr_mult: 0 }')
    net = Net(frozen, TRAIN, dtype=np.float64)
    need = dict(zip([l.name for l in net.layers], net._layer_need_backward))
    assert not need["conv"] and not need["relu"] and need["ip_a"]


def test_propagate_down_false_stops_gradient():
    text = SMALL.replace('name: "ip_a" type: "InnerProduct" bottom: "pool" top: "a"',
                         'name: "ip_a" type: "InnerProduct" bottom: "pool" top: "a" '
                         'propagate_down: false')
    net = Net(text, TRAIN, dtype=np.float64, seed=0)
    i = [l.name for l in net.layers].index("ip_a")
    assert net._bottom_need_backward[i] == [False]


def test_in_place_shares_the_blob():
    net = small_net()
    relu = net.layer_dict["relu"]
    i = net.layers.index(relu)
    assert net.top_ids[i][0] is net.bottom_ids[i][0]
    net.forward()
    assert (net.blobs["conv"].data >= 0).all()


def test_pycaffe_api():
    net = small_net(TEST)
    out = net.forward(x=np.ones((4, 2, 5, 5)))
    assert set(out) == {"acc", "loss_a", "loss_b"}
    assert net.blobs["conv"].data.shape == (4, 3, 5, 5)
    assert [b.shape for b in net.params["conv"]] == [(3, 2, 3, 3), (3,)]
    diffs = net.backward()
    assert diffs["x"].shape == (4, 2, 5, 5)
    assert net.top_names["conv"] == ["conv"] and net.bottom_names["loss_a"][1].startswith("label")
    assert net._layer_names[0] == "in" and list(net.layer_dict) == net._layer_names
    with pytest.raises(ValueError, match="shape"):
        net.forward(x=np.ones((1, 2, 5, 5)))
    # pycaffe's old argument order: Net(model, weights, phase)
    assert netspec.TRAIN == 0 and netspec.TEST == 1


def test_shared_parameters_by_name_are_one_learnable_blob():
    text = SMALL.replace('name: "ip_a" type: "InnerProduct" bottom: "pool" top: "a"',
                         'name: "ip_a" type: "InnerProduct" bottom: "pool" top: "a" '
                         'param { name: "w" } param { name: "bias" }').replace(
        'name: "ip_b" type: "InnerProduct" bottom: "pool" top: "b"',
        'name: "ip_b" type: "InnerProduct" bottom: "pool" top: "b" '
        'param { name: "w" } param { name: "bias" }')
    net = Net(text, TRAIN, dtype=np.float64, seed=0)
    assert net.params["ip_a"][0] is net.params["ip_b"][0]
    assert len(net.learnable_params) == 4  # conv w, b + one shared w, b


def test_save_and_copy_from_round_trip(tmp_path):
    net = small_net()
    path = tmp_path / "w.caffemodel"
    net.save(path)
    other = Net(SMALL, TEST, dtype=np.float64, seed=5)
    assert not np.allclose(other.params["conv"][0].data, net.params["conv"][0].data)
    other.copy_from(path)
    for name in net.params:
        for a, b in zip(net.params[name], other.params[name]):
            np.testing.assert_array_equal(a.data, b.data)
    # pycaffe's Net(model, weights, phase) form
    third = Net(SMALL, str(path), TEST, dtype=np.float64)
    np.testing.assert_array_equal(third.params["ip_b"][1].data, net.params["ip_b"][1].data)


def test_copy_from_errors(tmp_path):
    net = small_net()
    path = tmp_path / "w.caffemodel"
    net.save(path)
    wrong = SMALL.replace("num_output: 3 kernel_size: 3", "num_output: 4 kernel_size: 3")
    with pytest.raises(WeightsError, match=r"layer 'conv' blob 0 has shape \(3, 2, 3, 3\) in the "
                                           r"file but \(4, 2, 3, 3\) in the net"):
        Net(wrong, TEST, weights=str(path))
    with pytest.raises(WeightsError, match="file not found"):
        net.copy_from(tmp_path / "missing.caffemodel")
    data = path.read_bytes()
    (tmp_path / "cut.caffemodel").write_bytes(data[:len(data) // 2])
    with pytest.raises(WeightsError, match="truncated or corrupt"):
        net.copy_from(tmp_path / "cut.caffemodel")


@pytest.mark.parametrize("change,match", [
    (('bottom: "pool" top: "a"', 'bottom: "pol" top: "a"'),
     r"unknown bottom blob 'pol' \(did you mean 'pool'\?\)"),
    (('top: "b"\n', 'top: "a"\n'), "top blob 'a' is produced by both layer 'ip_a'"),
    (('name: "conv" type: "Convolution" bottom: "x"', 'name: "conv" type: "Convolution" '
      'bottom: "pool"'), "produced only later, by layer 'pool'"),
    (('type: "ReLU"', 'type: "Relu"'), r"unknown layer type 'Relu' \(did you mean 'ReLU'\?\)"),
    (('kernel_size: 3 pad: 1', 'kernel_size: 9'), "larger than the padded input"),
    (('num_output: 3 kernel_size', 'num_output: 0 kernel_size'),
     "Convolution 'conv': num_output must be greater than 0. Received: num_output=0"),
    (('num_output: 3 kernel_size', 'num_output: -1 kernel_size'), "Value out of range: -1"),
    (('name: "ip_b"', 'name: "ip_a"'), "InnerProduct 'ip_a': the name is also that of "
     "InnerProduct 'ip_a' at line 10, and both have weights"),
])
def test_wiring_errors_name_file_line_and_layer(tmp_path, change, match):
    path = tmp_path / "bad.prototxt"
    path.write_text(SMALL.replace(*change, 1))
    with pytest.raises(SpecError, match=match) as e:
        Net(str(path), TRAIN)
    assert str(e.value).startswith(f"{path}:")
    assert e.value.line is not None
    line = path.read_text().splitlines()[e.value.line - 1]
    assert e.value.layer in line or e.value.layer in "\n".join(
        path.read_text().splitlines()[e.value.line - 3:e.value.line])


STAGES = """
layer { name: "in" type: "Input" top: "x" input_param { shape { dim: 1 dim: 2 } } }
layer { name: "deploy_only" type: "ReLU" bottom: "x" top: "d" include { stage: "deploy" } }
layer { name: "not_deploy" type: "TanH" bottom: "x" top: "t" exclude { stage: "deploy" } }
layer { name: "high" type: "Sigmoid" bottom: "x" top: "h" include { min_level: 2 } }
layer { name: "low" type: "Sigmoid" bottom: "x" top: "l" include { max_level: 0 } }
layer { name: "test_and_stage" type: "ReLU" bottom: "x" top: "ts"
        include { phase: TEST stage: "a" stage: "b" } }
layer { name: "not_a" type: "ReLU" bottom: "x" top: "na" include { not_stage: "a" } }
"""


@pytest.mark.parametrize("phase,stages,level,expected", [
    (TRAIN, [], 0, {"in", "not_deploy", "low", "not_a"}),
    (TEST, ["deploy"], 0, {"in", "deploy_only", "low", "not_a"}),
    (TRAIN, [], 3, {"in", "not_deploy", "high", "not_a"}),
    (TEST, ["a", "b"], 1, {"in", "not_deploy", "test_and_stage"}),
    (TRAIN, ["a", "b"], 1, {"in", "not_deploy"}),
])
def test_stage_and_level_rules(phase, stages, level, expected):
    net = Net(STAGES, phase, stages=stages, level=level)
    assert {l.name for l in net.layers if l.type != "Split"} == expected


@pytest.mark.parametrize("name,last,shape,params", [
    ("lenet.prototxt", "prob", (64, 10), 431080),
    ("lenet_train_test.prototxt", None, None, 431080),
])
@needs_caffe_models
def test_caffe_mnist_reference_nets_set_up(name, last, shape, params, monkeypatch):
    path = CAFFE_MODELS / "examples" / "mnist" / name
    if last is None:  # data layers need an LMDB: swap them for an Input of the same shapes
        text = path.read_text()
        import re
        text = re.sub(r'layer \{\s*name: "mnist".*?\n\}\n', "", text, flags=re.S)
        text = ('layer { name: "d" type: "Input" top: "data" top: "label" input_param { '
                'shape { dim: 64 dim: 1 dim: 28 dim: 28 } shape { dim: 64 } } }\n') + text
        net = Net(text, TEST)
        assert net.outputs == ["accuracy", "loss"]
    else:
        net = Net(str(path), TEST)
        assert net.blobs[last].shape == shape
    # expected by hand: conv1 20*1*5*5+20, conv2 50*20*5*5+50, ip1 500*800+500, ip2 10*500+10
    assert params == 520 + 25050 + 400500 + 5010
    assert sum(b.count for layer in net.params.values() for b in layer) == params


def test_backward_with_output_diffs_matches_softmax_jacobian():
    deploy = (ROOT / "models" / "lenet" / "lenet.prototxt").read_text()
    no_loss = Net(deploy, TEST)  # as in Caffe: no loss, so nothing runs backward ...
    assert not any(no_loss._layer_need_backward)
    net = Net("force_backward: true\n" + deploy, TEST, dtype=np.float64, seed=0)  # ... unless forced
    x = np.random.default_rng(0).random((64, 1, 28, 28))
    prob = net.forward(data=x)["prob"].copy()
    dprob = np.zeros_like(prob)
    dprob[:, 3] = 1.0
    net.backward(prob=dprob)
    # d prob_3 / d ip2 = prob_3 * (onehot_3 - prob)
    expected = prob[:, 3:4] * (np.eye(10)[3] - prob)
    np.testing.assert_allclose(net.blobs["ip2"].diff, expected, atol=1e-12)
    with pytest.raises(KeyError, match="not an output"):
        net.backward(ip1=np.zeros((64, 500)))


def test_pycaffe_process_settings():
    import netspec.compat as compat
    from netspec.device import gpu_available
    netspec.set_mode_cpu()
    if not gpu_available():  # one line saying what is missing, and the mode stays the CPU
        with pytest.raises(netspec.DeviceError, match="PyTorch is not installed|CUDA") as e:
            netspec.set_mode_gpu()
        assert "\n" not in str(e.value)
        assert Net(SMALL, TRAIN).device.name == "cpu"
    try:
        netspec.set_random_seed(7)
        a, b = Net(SMALL, TRAIN), Net(SMALL, TRAIN)
        np.testing.assert_array_equal(a.params["conv"][0].data, b.params["conv"][0].data)
    finally:
        compat._seed = None
    c, d = Net(SMALL, TRAIN), Net(SMALL, TRAIN)
    assert not np.array_equal(c.params["conv"][0].data, d.params["conv"][0].data)


def test_deploy_nets_skip_what_only_backward_needs():
    """A net that never runs backward keeps no copies of in-place inputs; force_backward
    keeps them, so in-place and out-of-place Scale give the same gradients."""
    body = ('layer { name: "in" type: "Input" top: "x" input_param { shape { dim: 2 dim: 3 '
            'dim: 4 dim: 4 } } }\n'
            'layer { name: "s" type: "Scale" bottom: "x" top: "%s" scale_param { bias_term: true '
            'filler { type: "gaussian" } } }\n'
            'layer { name: "r" type: "ReLU" bottom: "%s" top: "%s" }\n')
    deploy = Net(body % ("x", "x", "x"), TEST, seed=0)
    assert [l.runs_backward for l in deploy.layers] == [False, False, False]
    grads = []
    for tops in (("x", "x", "x"), ("y", "y", "z")):
        net = Net("force_backward: true\n" + body % tops, TEST, dtype=np.float64, seed=0)
        assert net.layers[1].runs_backward
        x = np.random.default_rng(1).standard_normal((2, 3, 4, 4))
        net.blobs["x"].data[...] = x
        net.forward()
        out = net.blobs[tops[2]].data.copy()
        net.blobs[tops[2]].diff[...] = 1
        net.backward()
        grads.append((out, net.params["s"][0].diff.copy(), net.blobs["x"].diff.copy()))
    for a, b in zip(*grads):
        np.testing.assert_allclose(a, b, rtol=1e-12)


def test_python_layers_come_from_sys_path_or_the_spec_folder_not_the_working_directory(
        tmp_path, monkeypatch):
    layer_code = ("import numpy as np\n"
                  "class Twice:\n"
                  "    def setup(self, bottom, top): pass\n"
                  "    def reshape(self, bottom, top): top[0].reshape(bottom[0].shape)\n"
                  "    def forward(self, bottom, top): top[0].data[...] = 2 * bottom[0].data\n"
                  "    def backward(self, top, propagate_down, bottom): pass\n")
    spec = ('layer { name: "in" type: "Input" top: "x" input_param { shape { dim: 2 } } }\n'
            'layer { name: "p" type: "Python" bottom: "x" top: "y" python_param { '
            'module: "%s" layer: "Twice" } }\n')
    (tmp_path / "specs").mkdir()
    (tmp_path / "specs" / "beside_spec_layer.py").write_text(layer_code)
    (tmp_path / "specs" / "net.prototxt").write_text(spec % "beside_spec_layer")
    (tmp_path / "cwd").mkdir()
    (tmp_path / "cwd" / "in_cwd_layer.py").write_text(layer_code)
    monkeypatch.chdir(tmp_path / "cwd")
    import sys
    path_before = list(sys.path)
    net = Net(str(tmp_path / "specs" / "net.prototxt"), TEST)
    assert net.forward(x=np.array([1.0, 2.0]))["y"].tolist() == [2.0, 4.0]
    assert sys.path == path_before
    with pytest.raises(SpecError, match="cannot import module 'in_cwd_layer'"):
        Net(spec % "in_cwd_layer", TEST)
