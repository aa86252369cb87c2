"""Inference fusion (netspec/fusion.py): in-place BatchNorm -> Scale -> ReLU chains and Eltwise
sums with their ReLU run as one pass, with the layers' own results to the bit; never where
backward runs or a forward range cuts a chain."""
import numpy as np
import pytest

from netspec import Net, TEST, TRAIN

BN = ('layer {{ name: "bn{i}" type: "BatchNorm" bottom: "{b}" top: "{b}" }}\n'
      'layer {{ name: "sc{i}" type: "Scale" bottom: "{b}" top: "{b}" scale_param {{ '
      'bias_term: {bias} filler {{ type: "gaussian" }} bias_filler {{ type: "gaussian" }} }} }}\n')
RELU = 'layer {{ name: "relu{i}" type: "ReLU" bottom: "{b}" top: "{b}" {slope} }}\n'


def block(slope="", bias="true", extra=""):
    """A ResNet-style block: two conv -> bn -> scale (-> relu) branches joined by a sum."""
    conv = ('layer {{ name: "conv{i}" type: "Convolution" bottom: "x" top: "c{i}" '
            'convolution_param {{ num_output: 4 kernel_size: {k} pad: {p} bias_term: false '
            'weight_filler {{ type: "gaussian" std: 0.5 }} }} }}\n')
    text = ('layer { name: "in" type: "Input" top: "x" '
            'input_param { shape { dim: 2 dim: 3 dim: 6 dim: 6 } } }\n')
    text += conv.format(i=1, k=3, p=1) + BN.format(i=1, b="c1", bias=bias)
    text += RELU.format(i=1, b="c1", slope=slope)
    text += conv.format(i=2, k=1, p=0) + BN.format(i=2, b="c2", bias=bias)
    text += ('layer { name: "sum" type: "Eltwise" bottom: "c1" bottom: "c2" top: "s" }\n'
             + RELU.format(i=3, b="s", slope=slope) + extra)
    return text


def with_statistics(net, seed=0):
    rng = np.random.default_rng(seed)
    for layer in net.layers:
        if layer.type == "BatchNorm":
            c = layer.blobs[0].shape[0]
            layer.blobs[0].data[...] = rng.normal(size=c) * 3
            layer.blobs[1].data[...] = rng.random(c) * 2 + 0.1
            layer.blobs[2].data[...] = 1.5
    net.blobs["x"].data[...] = rng.normal(size=net.blobs["x"].shape)
    return net


def run(net, fused=True, **kw):
    saved = net._fused
    if not fused:
        net._fused = {}
    try:
        net.forward(**kw)
    finally:
        net._fused = saved
    return {name: blob.data.copy() for name, blob in net.blobs.items()}


@pytest.mark.parametrize("slope", ["", "relu_param { negative_slope: 0.1 }"])
@pytest.mark.parametrize("bias", ["true", "false"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_fused_chains_give_the_layers_own_bits(slope, bias, dtype):
    net = with_statistics(Net(block(slope, bias), TEST, dtype=dtype, seed=0))
    names = [l.name for l in net.layers]
    heads = {names[i]: [names[j] for j in chain] for i, chain in net._fused.items()}
    assert heads == {"bn1": ["sc1", "relu1"], "bn2": ["sc2"], "sum": ["relu3"]}
    fused, plain = run(net), run(net, fused=False)
    for name in plain:
        assert fused[name].tobytes() == plain[name].tobytes(), name
    assert (fused["s"] >= 0).all() if not slope else (fused["s"] < 0).any()


def test_fusion_keeps_batch_norm_as_separate_passes_computed():
    """The fused output against the formula, in float64."""
    net = with_statistics(Net(block(), TEST, dtype=np.float64, seed=0))
    out = run(net)
    bn, sc = net.layer_dict["bn1"], net.layer_dict["sc1"]
    net.forward(end="conv1")
    c1 = net.blobs["c1"].data.copy()
    s = bn.blobs[2].data[0]
    mean, var = bn.blobs[0].data / s, bn.blobs[1].data / s
    y = (c1 - mean[:, None, None]) / np.sqrt(var[:, None, None] + 1e-5)
    y = y * sc.blobs[0].data[:, None, None] + sc.blobs[1].data[:, None, None]
    np.testing.assert_allclose(out["c1"], np.maximum(y, 0), rtol=1e-12, atol=1e-12)


def test_a_forward_range_that_cuts_a_chain_runs_it_layer_by_layer():
    net = with_statistics(Net(block(), TEST, seed=0))
    whole = run(net)
    partial = run(net, end="sc1")  # stops before relu1: the chain cannot run fused
    assert (partial["c1"] < 0).any()
    run(net, start="relu1")  # and from the middle of a chain on, layer by layer
    for name, value in whole.items():
        assert net.blobs[name].data.tobytes() == value.tobytes(), name


def test_nothing_fuses_where_backward_runs_or_the_blob_is_read_between():
    """force_backward: each layer keeps its own pass (backward needs what each saw). At
    TRAIN, BatchNorm uses batch statistics and declines to fuse. A layer reading the blob
    between BatchNorm and Scale would see it change: no chain there."""
    forced = with_statistics(Net("force_backward: true\n" + block(), TEST, seed=0))
    assert forced._fused == {}
    deploy = with_statistics(Net(block(), TEST, seed=0))
    assert run(forced)["s"].tobytes() == run(deploy)["s"].tobytes()
    train = with_statistics(Net(block(), TRAIN, seed=0))
    assert run(train)["s"].tobytes() == run(train, fused=False)["s"].tobytes()
    peek = block().replace('layer { name: "sc2"', 'layer { name: "peek" type: "Power" '
                                                  'bottom: "c2" top: "p" }\nlayer { name: "sc2"')
    net = Net(peek, TEST, seed=0)
    assert "bn2" not in [net.layers[i].name for i in net._fused]


def test_eltwise_sums_that_do_not_fuse_still_sum():
    """Coefficients or three bottoms: the sum runs by itself, then the ReLU."""
    text = block().replace('bottom: "c2" top: "s" }',
                           'bottom: "c2" top: "s" eltwise_param { coeff: 1 coeff: -2 } }')
    net = with_statistics(Net(text, TEST, dtype=np.float64, seed=0))
    out = run(net)
    c1, c2 = out["c1"], out["c2"]
    np.testing.assert_allclose(out["s"], np.maximum(c1 - 2 * c2, 0), rtol=1e-12)


def conv_relu_net(batch, channels, size, filters, conv, slope=""):
    """Input -> Convolution -> ReLU (in place) -> InnerProduct -> ReLU (in place)."""
    return ('layer { name: "in" type: "Input" top: "x" input_param { shape { '
            f'dim: {batch} dim: {channels} dim: {size} dim: {size} }} }} }}\n'
            'layer { name: "conv" type: "Convolution" bottom: "x" top: "c" convolution_param { '
            f'num_output: {filters} {conv} weight_filler {{ type: "gaussian" }} '
            'bias_filler { type: "gaussian" } } }\n' + RELU.format(i=1, b="c", slope=slope)
            + 'layer { name: "ip" type: "InnerProduct" bottom: "c" top: "f" inner_product_param '
              '{ num_output: 7 weight_filler { type: "gaussian" } bias_filler { type: "gaussian" '
              '} } }\n' + RELU.format(i=2, b="f", slope=slope))


CONV_PATHS = {  # forward path: (batch, channels, size, filters, convolution_param fields)
    "im2col, pieces": (5, 2, 7, 4, "kernel_size: 3 pad: 1"),
    "im2col, one image": (1, 2, 7, 4, "kernel_size: 3 stride: 2"),
    "direct rows": (3, 16, 8, 8, "kernel_size: 3"),
    "planes": (2, 1, 20, 4, "kernel_size: 5 pad: 2"),
    "winograd 2x2": (3, 3, 9, 5, "kernel_size: 3 pad: 1"),
    "winograd 4x4": (1, 4, 12, 6, "kernel_size: 3 pad: 1 group: 2"),
}


def forward_path(layer, batch):
    """Which of CONV_PATHS a Convolution's forward takes (in the order forward tries them)."""
    if layer.plan.winograd_tile:
        return f"winograd {layer.plan.winograd_tile}x{layer.plan.winograd_tile}"
    if layer.plan.direct_forward or layer.plan.plane_forward:
        return "direct rows" if layer.plan.direct_forward else "planes"
    return "im2col, one image" if batch == 1 else "im2col, pieces" * (layer.plan.piece < batch)


@pytest.mark.parametrize("slope", ["", "relu_param { negative_slope: 0.1 }"])
@pytest.mark.parametrize("path", CONV_PATHS)
def test_convolution_and_inner_product_absorb_their_relu_to_the_bit(monkeypatch, path, slope):
    """Each forward path rectifies its pieces as it finishes them; the blobs hold the ReLU
    layers' own values."""
    from netspec.kernels.cpu import workers
    from netspec.kernels.cpu import conv as cpu_conv
    from netspec.layers import vision
    monkeypatch.setattr(workers, "MIN_COLUMNS", 1)
    monkeypatch.setattr(workers, "MIN_ELEMENTS", 1)
    winograd = path.startswith("winograd")
    monkeypatch.setattr(cpu_conv, "WINOGRAD_MIN_CHANNELS", 1 if winograd else 1 << 30)
    monkeypatch.setattr(cpu_conv, "WINOGRAD_MIN_TILES", 1)
    monkeypatch.setattr(cpu_conv, "WINOGRAD_4X4_MIN", 100 if path == "winograd 4x4" else 1 << 30)
    batch, channels, size, filters, conv = CONV_PATHS[path]
    net = Net(conv_relu_net(batch, channels, size, filters, conv, slope), TEST, seed=0)
    assert forward_path(net.layer_dict["conv"], batch) == path
    names = [l.name for l in net.layers]
    assert {names[i]: [names[j] for j in c] for i, c in net._fused.items()} == \
        {"conv": ["relu1"], "ip": ["relu2"]}
    net.blobs["x"].data[...] = np.random.default_rng(1).normal(size=net.blobs["x"].shape)
    fused, plain = run(net), run(net, fused=False)
    for name in plain:
        assert fused[name].tobytes() == plain[name].tobytes(), name
    assert (fused["c"] < 0).any() == bool(slope) and (fused["c"] > 0).any()


def test_deconvolution_keeps_its_relu_separate():
    text = conv_relu_net(2, 3, 5, 4, "kernel_size: 3 stride: 2").replace(
        'type: "Convolution"', 'type: "Deconvolution"')
    net = Net(text, TEST, seed=0)
    assert [net.layers[i].name for i in net._fused] == ["ip"]
    net.blobs["x"].data[...] = np.random.default_rng(1).normal(size=net.blobs["x"].shape)
    assert (run(net)["c"] >= 0).all()
