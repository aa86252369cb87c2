"""ONNX export: every exported graph passes onnx.checker with full shape inference, and
onnxruntime reproduces netspec's forward for every blob (max |difference| / max |value| at
most 1e-4, float32), for the model-zoo nets and one small net per layer type, with Caffe's
edge cases (ceil-rounded pooling, padded AVE divisors, in-place blobs, a dynamic batch)."""
from __future__ import annotations

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from conftest import MNIST_DIR, ROOT  # noqa: E402
from netspec import TEST, TRAIN, Net  # noqa: E402
from netspec.cli import app  # noqa: E402
from netspec.export import compare_with_onnxruntime, export_onnx, to_onnx  # noqa: E402

TOLERANCE = 1e-4


def randomize(net: Net, seed: int = 0) -> Net:
    """Weights of a realistic scale (He-normal filters, small biases, BatchNorm statistics
    stored with a scale factor of 2), so that every blob carries signal."""
    rng = np.random.default_rng(seed)
    for layer in net.layers:
        if layer.type == "BatchNorm":
            c, s = layer.blobs[0].shape[0], 2.0
            layer.blobs[0].data[...] = rng.normal(0, 0.2, c) * s
            layer.blobs[1].data[...] = rng.uniform(0.5, 1.5, c) * s
            layer.blobs[2].data[...] = s
            continue
        for i, b in enumerate(layer.blobs):
            if layer.type == "Scale" and i == 0:
                b.data[...] = 1 + rng.normal(0, 0.1, b.shape)
            elif b.data.ndim > 1 and layer.type != "Embed":
                b.data[...] = rng.normal(0, np.sqrt(2.0 / np.prod(b.shape[1:])), b.shape)
            else:
                b.data[...] = rng.normal(0, 0.3, b.shape)
    return net


def check_export(net: Net, inputs=None, *, opset: int = 17, dynamic: bool = False,
                 bigger_batch: bool = False) -> onnx.ModelProto:
    """Export, check the model strictly, compare every blob with onnxruntime."""
    model = to_onnx(net, opset=opset, dynamic_batch=dynamic)
    onnx.checker.check_model(model, full_check=True)
    inferred = onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True)
    for out in inferred.graph.output:
        dims = [d.dim_param or d.dim_value for d in out.type.tensor_type.shape.dim]
        want = list(net.blobs[out.name].shape)
        assert dims == (["N", *want[1:]] if dynamic and want else want), out.name
    if bigger_batch:  # the dynamic axis really is dynamic: one more item in every batch
        batch = len(next(iter(inputs.values())))
        inputs = {n: np.concatenate([v, v[:1] + 0.5]) if len(v) == batch else v
                  for n, v in inputs.items()}
    errors = compare_with_onnxruntime(net, model, inputs, every_blob=True)
    assert errors and max(errors.values()) <= TOLERANCE, errors
    return model


# -- model zoo ----------------------------------------------------------------------------------
ZOO = ["lenet/lenet", "cifar10_quick/cifar10_quick", "zoo/caffenet", "zoo/googlenet",
       "zoo/squeezenet11", "zoo/resnet50", pytest.param("zoo/vgg16", marks=pytest.mark.slow)]


@pytest.mark.parametrize("spec", ZOO)
def test_zoo_nets_export_and_match_onnxruntime(spec):
    net = Net(str(ROOT / "models" / f"{spec}.prototxt"), TEST)
    if spec.startswith("zoo/"):  # one image (two for the small ones) keeps the test quick
        shape = net.blobs["data"].shape
        net.blobs["data"].reshape(1 if shape[2] == 224 else 2, *shape[1:])
        net.reshape()
    check_export(randomize(net))


def test_dynamic_batch_runs_at_another_batch():
    net = randomize(Net(str(ROOT / "models/lenet/lenet.prototxt"), TEST))
    net.blobs["data"].reshape(2, 1, 28, 28)
    net.reshape()
    x = np.random.default_rng(1).standard_normal((2, 1, 28, 28))
    model = check_export(net, {"data": x}, dynamic=True, bigger_batch=True)
    assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "N"


def test_dynamic_batch_marks_only_outputs_computed_from_the_inputs():
    net = randomize(Net(_net({"x": (2, 3)}, _layer("r", "ReLU", "x") + _layer(
        "p", "Parameter", [], params="parameter_param { shape { dim: 4 dim: 5 } }")), TEST))
    model = to_onnx(net, dynamic_batch=True)
    onnx.checker.check_model(model, full_check=True)
    dims = {o.name: [d.dim_param or d.dim_value for d in o.type.tensor_type.shape.dim]
            for o in model.graph.output}
    assert dims == {"p": [4, 5], "r": ["N", 3]}
    errors = compare_with_onnxruntime(net, model, {"x": np.ones((3, 3), np.float32)})
    assert max(errors.values()) <= TOLERANCE


# -- one small net per layer type -----------------------------------------------------------------
def _net(inputs: dict, layers: str) -> str:
    text = "".join(f'layer {{ name: "{n}" type: "Input" top: "{n}" input_param {{ shape {{ '
                   + " ".join(f"dim: {d}" for d in shape) + " } } }\n"
                   for n, shape in inputs.items())
    return 'name: "case"\n' + text + layers


def _layer(name, type_, bottoms, tops=None, params=""):
    bottoms = [bottoms] if isinstance(bottoms, str) else bottoms
    tops = [name] if tops is None else ([tops] if isinstance(tops, str) else tops)
    return (f'layer {{ name: "{name}" type: "{type_}" '
            + "".join(f'bottom: "{b}" ' for b in bottoms)
            + "".join(f'top: "{t}" ' for t in tops) + f"{params} }}\n")


X = {"x": (2, 4, 6, 6)}
CASES = {
    # vision
    "conv_group_dilation": (X, _layer("c", "Convolution", "x", params="convolution_param { "
                            "num_output: 6 kernel_size: 3 stride: 2 pad: 2 dilation: 2 group: 2 "
                            "}")),
    "conv_rectangular": (X, _layer("c", "Convolution", "x", params="convolution_param { "
                         "num_output: 3 kernel_h: 3 kernel_w: 1 stride_h: 2 stride_w: 1 pad_h: 1 "
                         "pad_w: 0 bias_term: false }")),
    "deconv": (X, _layer("d", "Deconvolution", "x", params="convolution_param { num_output: 4 "
               "kernel_size: 4 stride: 2 pad: 1 group: 2 }")),
    "deconv_dilated": (X, _layer("d", "Deconvolution", "x", params="convolution_param { "
                       "num_output: 3 kernel_size: 3 stride: 3 dilation: 2 }")),
    "im2col": (X, _layer("i", "Im2col", "x", params="convolution_param { kernel_size: 3 "
               "stride: 2 pad: 1 }")),
    # 6x6, 3/2: Caffe's ceil rounding adds a third window that floor rounding would not
    "max_pool_ceil_adds_window": (X, _layer("p", "Pooling", "x", params="pooling_param { "
                                  "pool: MAX kernel_size: 3 stride: 2 }")),
    # 5x5, 2/3 pad 1: ceil gives 3 windows; Caffe drops the last, which starts in the padding
    "max_pool_drops_padding_window": ({"x": (1, 2, 5, 5)}, _layer(
        "p", "Pooling", "x", params="pooling_param { pool: MAX kernel_size: 2 stride: 3 pad: 1 }")),
    "max_pool_mask": (X, _layer("p", "Pooling", "x", ["p", "mask"], params="pooling_param { "
                      "pool: MAX kernel_size: 3 stride: 2 pad: 1 }")),
    "max_pool_floor": (X, _layer("p", "Pooling", "x", params="pooling_param { pool: MAX "
                       "kernel_size: 3 stride: 2 round_mode: FLOOR }")),
    # the divisor counts the padding but not the part of a ceil window beyond it
    "ave_pool_padded": (X, _layer("p", "Pooling", "x", params="pooling_param { pool: AVE "
                        "kernel_size: 3 stride: 2 pad: 1 }")),
    "ave_pool_ceil": ({"x": (2, 3, 7, 5)}, _layer("p", "Pooling", "x", params="pooling_param { "
                      "pool: AVE kernel_size: 3 stride: 2 }")),
    "global_max_pool": (X, _layer("p", "Pooling", "x", params="pooling_param { pool: MAX "
                        "global_pooling: true }")),
    "global_ave_pool": (X, _layer("p", "Pooling", "x", params="pooling_param { pool: AVE "
                        "global_pooling: true }")),
    "stochastic_pool_test": (X, _layer("a", "AbsVal", "x") + _layer(
        "p", "Pooling", "a", params="pooling_param { pool: STOCHASTIC kernel_size: 3 stride: 2 }")),
    "spp_max": ({"x": (2, 3, 7, 9)}, _layer("s", "SPP", "x", params="spp_param { "
                "pyramid_height: 3 pool: MAX }")),
    "spp_ave_one_level": (X, _layer("s", "SPP", "x", params="spp_param { pyramid_height: 1 "
                          "pool: AVE }")),
    # common
    "inner_product": (X, _layer("ip", "InnerProduct", "x", params="inner_product_param { "
                      "num_output: 5 }")),
    "inner_product_transpose": ({"x": (3, 7)}, _layer("ip", "InnerProduct", "x", params=(
        "inner_product_param { num_output: 4 transpose: true bias_term: false }"))),
    "inner_product_axis2": (X, _layer("ip", "InnerProduct", "x", params="inner_product_param { "
                            "num_output: 5 axis: 2 }")),
    "softmax_axis2": (X, _layer("s", "Softmax", "x", params="softmax_param { axis: 2 }")),
    "split_in_place": (X, _layer("r", "ReLU", "x", "x") + _layer("a", "TanH", "x")
                       + _layer("b", "Sigmoid", "x") + _layer("e", "Eltwise", ["a", "b"])),
    # neurons
    "relu": (X, _layer("r", "ReLU", "x")),
    "leaky_relu_in_place": (X, _layer("c", "Convolution", "x", params="convolution_param { "
                            "num_output: 2 kernel_size: 1 }") + _layer(
        "r", "ReLU", "c", "c", params="relu_param { negative_slope: 0.1 }")),
    "sigmoid": (X, _layer("s", "Sigmoid", "x")),
    "tanh": (X, _layer("t", "TanH", "x")),
    "bnll": (X, _layer("b", "BNLL", "x")),
    "softplus": (X, _layer("b", "Softplus", "x")),
    "absval": (X, _layer("a", "AbsVal", "x")),
    "elu": (X, _layer("e", "ELU", "x", params="elu_param { alpha: 0.5 }")),
    "prelu": (X, _layer("p", "PReLU", "x")),
    "prelu_shared": (X, _layer("p", "PReLU", "x", params="prelu_param { channel_shared: true }")),
    "power": (X, _layer("p", "Power", "x", params="power_param { power: 2 scale: 0.5 shift: 1 }")),
    "power_affine": (X, _layer("p", "Power", "x", params="power_param { scale: -2 shift: 1 }")),
    "exp_base2": (X, _layer("e", "Exp", "x", params="exp_param { base: 2 scale: 0.5 shift: 0.1 }")),
    "exp": (X, _layer("e", "Exp", "x")),
    "log_base10": (X, _layer("l", "Log", "x", params="log_param { base: 10 scale: 0.5 shift: 5 }")),
    "log": (X, _layer("a", "AbsVal", "x") + _layer("l", "Log", "a", params="log_param { "
            "shift: 1 }")),
    "threshold": (X, _layer("t", "Threshold", "x", params="threshold_param { threshold: 0.2 }")),
    "clip": (X, _layer("c", "Clip", "x", params="clip_param { min: -0.5 max: 0.7 }")),
    "swish": (X, _layer("s", "Swish", "x", params="swish_param { beta: 1.5 }")),
    "dropout": (X, _layer("d", "Dropout", "x", params="dropout_param { dropout_ratio: 0.3 }")),
    # normalisation
    "batch_norm_stored": (X, _layer("bn", "BatchNorm", "x")),
    "batch_norm_batch_statistics": (X, _layer("bn", "BatchNorm", "x", params="batch_norm_param { "
                                    "use_global_stats: false eps: 0.001 }")),
    "scale_bias_term": (X, _layer("s", "Scale", "x", params="scale_param { bias_term: true }")),
    "scale_two_axes": (X, _layer("s", "Scale", "x", params="scale_param { axis: 1 num_axes: 2 }")),
    "scale_second_bottom": ({"x": (2, 4, 6, 6), "s": (4, 6)}, _layer("m", "Scale", ["x", "s"])),
    "scale_second_bottom_axis0": ({"x": (2, 4, 3), "s": (2,)}, _layer(
        "m", "Scale", ["x", "s"], params="scale_param { axis: 0 bias_term: true }")),
    "bias": (X, _layer("b", "Bias", "x")),
    "bias_second_bottom": ({"x": (2, 4, 6, 6), "b": (4,)}, _layer("m", "Bias", ["x", "b"])),
    "mvn": (X, _layer("m", "MVN", "x")),
    "mvn_across_channels": (X, _layer("m", "MVN", "x", params="mvn_param { across_channels: true "
                            "eps: 0.01 }")),
    "mvn_mean_only": (X, _layer("m", "MVN", "x", params="mvn_param { normalize_variance: false }")),
    "lrn_across": (X, _layer("l", "LRN", "x", params="lrn_param { local_size: 3 alpha: 0.5 "
                   "beta: 0.75 k: 2 }")),
    "lrn_within": (X, _layer("l", "LRN", "x", params="lrn_param { local_size: 3 alpha: 0.5 "
                   "beta: 0.75 norm_region: WITHIN_CHANNEL }")),
    # plumbing
    "eltwise_sum_coeff": ({"x": (2, 3, 4), "y": (2, 3, 4)}, _layer(
        "e", "Eltwise", ["x", "y"], params="eltwise_param { coeff: 1 coeff: -0.5 }")),
    "eltwise_prod": ({"x": (2, 3), "y": (2, 3), "z": (2, 3)}, _layer(
        "e", "Eltwise", ["x", "y", "z"], params="eltwise_param { operation: PROD }")),
    "eltwise_max": ({"x": (2, 3), "y": (2, 3)}, _layer("e", "Eltwise", ["x", "y"], params=(
        "eltwise_param { operation: MAX }"))),
    "concat": ({"x": (2, 3, 4), "y": (2, 5, 4)}, _layer("c", "Concat", ["x", "y"])),
    "slice": (X, _layer("s", "Slice", "x", ["a", "b", "c"], params="slice_param { axis: 1 "
              "slice_point: 1 slice_point: 3 }")),
    "flatten": (X, _layer("f", "Flatten", "x")),
    "flatten_middle": (X, _layer("f", "Flatten", "x", params="flatten_param { axis: 1 "
                       "end_axis: 2 }")),
    "reshape": (X, _layer("r", "Reshape", "x", params="reshape_param { shape { dim: 0 dim: -1 "
                "dim: 2 } }")),
    "reshape_range": (X, _layer("r", "Reshape", "x", params="reshape_param { axis: 1 "
                      "num_axes: 2 shape { dim: 2 dim: 0 dim: -1 } }")),
    "crop": ({"x": (2, 3, 8, 8), "ref": (2, 3, 5, 4)}, _layer(
        "c", "Crop", ["x", "ref"], params="crop_param { axis: 2 offset: 1 offset: 2 }")),
    "crop_channels": ({"x": (2, 4, 8, 8), "ref": (2, 2, 5, 5)}, _layer(
        "c", "Crop", ["x", "ref"], params="crop_param { axis: 1 offset: 1 }")),
    "tile": (X, _layer("t", "Tile", "x", params="tile_param { axis: 1 tiles: 3 }")),
    "reduction_sum": (X, _layer("r", "Reduction", "x", params="reduction_param { axis: 1 }")),
    "reduction_asum": (X, _layer("r", "Reduction", "x", params="reduction_param { "
                       "operation: ASUM axis: 2 }")),
    "reduction_sumsq": (X, _layer("r", "Reduction", "x", params="reduction_param { "
                        "operation: SUMSQ axis: 1 coeff: 0.5 }")),
    "reduction_mean_all": (X, _layer("r", "Reduction", "x", params="reduction_param { "
                           "operation: MEAN }")),
    "argmax": (X, _layer("a", "ArgMax", "x", params="argmax_param { top_k: 3 }")),
    "argmax_values": (X, _layer("a", "ArgMax", "x", params="argmax_param { top_k: 2 "
                      "out_max_val: true }")),
    "argmax_axis": (X, _layer("a", "ArgMax", "x", params="argmax_param { axis: 1 top_k: 2 }")),
    "argmax_axis_values": (X, _layer("a", "ArgMax", "x", params="argmax_param { axis: 2 "
                           "out_max_val: true }")),
    "embed": ({"i": (2, 5)}, _layer("e", "Embed", "i", params="embed_param { num_output: 3 "
              "input_dim: 10 }")),
    "silence_and_parameter": ({"x": (2, 3)}, _layer("p", "Parameter", [], params=(
        "parameter_param { shape { dim: 2 dim: 3 } }")) + _layer("e", "Eltwise", ["x", "p"])
        + _layer("q", "Parameter", [], params="parameter_param { shape { dim: 4 } }")
        + _layer("s", "Silence", "q", [])),
}
#: layers that read their inputs' exact values, given here
INPUTS = {"embed": {"i": np.array([[0, 3, 9, 3, 1], [7, 7, 2, 0, 5]], dtype=np.float32)}}


def _case(name):
    shapes, layers = CASES[name]
    net = randomize(Net(_net(shapes, layers), TEST), seed=len(name))
    rng = np.random.default_rng(7)
    inputs = INPUTS.get(name) or {n: rng.standard_normal(s).astype(np.float32)
                                  for n, s in shapes.items()}
    return net, inputs


def test_end_padding_gives_caffes_window_count_for_every_small_geometry():
    from netspec.export.vision import caffe_end_pad
    from netspec.layers.vision import pooled_size
    for size in range(1, 20):
        for kernel in range(1, 8):
            for stride in range(1, 6):
                for pad in range(kernel):
                    for ceil in (True, False):
                        if kernel > size + 2 * pad:
                            continue
                        out = pooled_size(size, kernel, stride, pad, ceil)
                        end = caffe_end_pad(size, kernel, stride, pad, out)
                        assert (size + pad + end - kernel) // stride + 1 == out


@pytest.mark.parametrize("opset", [13, 18])
@pytest.mark.parametrize("name", sorted(CASES))
def test_layer_exports_and_matches_onnxruntime(name, opset):
    net, inputs = _case(name)
    check_export(net, inputs, opset=opset)


#: no batch axis to vary: the batch is an axis the layer reads as data
FIXED_BATCH = {"scale_second_bottom_axis0", "reduction_mean_all", "silence_and_parameter",
               "inner_product_transpose"}


@pytest.mark.parametrize("name", sorted(set(CASES) - FIXED_BATCH))
def test_layer_exports_with_a_dynamic_batch(name):
    net, inputs = _case(name)
    check_export(net, inputs, dynamic=True, bigger_batch=True)


def test_every_registered_layer_with_an_onnx_form_is_tested():
    from netspec.export import CONVERTERS, NO_FORM
    from netspec.registry import layer_types
    tested = set()
    for shapes, layers in CASES.values():
        tested.update(t.split('"')[1] for t in layers.split('type: ')[1:])
    tested.update({"Split"})  # inserted by the net ("split_in_place")
    types = set(layer_types())
    assert set(CONVERTERS) <= types
    losses = {t for t, cls in layer_types().items() if cls.is_loss} | {"Accuracy"}
    assert types - set(CONVERTERS) - {"Input"} == set(NO_FORM) | losses
    assert set(CONVERTERS) - tested == set()


# -- names ------------------------------------------------------------------------------------------
def test_names_are_caffes():
    text = _net({"data": (1, 2, 5, 5)}, _layer("conv1", "Convolution", "data", params=(
        'param { name: "shared_w" } convolution_param { num_output: 2 kernel_size: 3 }'))
        + _layer("relu1", "ReLU", "conv1", "conv1")
        + _layer("conv2", "Convolution", "conv1", params='param { name: "shared_w" } '
                 'convolution_param { num_output: 2 kernel_size: 1 bias_term: false }'))
    # conv2's 1x1 filters cannot share conv1's 3x3 blob: use a shape that fits
    text = text.replace("kernel_size: 1 bias_term", "kernel_size: 3 pad: 1 bias_term")
    text = text.replace('top: "conv2"', 'top: "out"')
    net = randomize(Net(text, TEST))
    model = check_export(net, {"data": np.ones((1, 2, 5, 5), np.float32)})
    assert [i.name for i in model.graph.initializer] == ["shared_w", "conv1.1"]
    assert [i.name for i in model.graph.input] == ["data"]
    assert [o.name for o in model.graph.output] == ["out"]
    written = [o for node in model.graph.node for o in node.output]
    assert written == ["conv1@conv1", "conv1", "out"]  # the in-place blob's versions
    assert [node.name for node in model.graph.node] == ["conv1", "relu1", "conv2"]


# -- what cannot be exported, and the command --------------------------------------------------------
def run_cli(*args):
    from typer.testing import CliRunner
    return CliRunner().invoke(app, list(args))


@pytest.mark.parametrize("layer,why", [
    (_layer("py", "Python", "x", params='python_param { module: "m" layer: "L" }'),
     "Python 'py': cannot be exported to ONNX: its forward is arbitrary Python code"),
    (_layer("loss", "SoftmaxWithLoss", ["x", "label"]),
     "SoftmaxWithLoss 'loss': cannot be exported to ONNX: losses and accuracy"),
    (_layer("d", "DummyData", [], params="dummy_data_param { shape { dim: 1 } }"),
     "DummyData 'd': cannot be exported to ONNX: it generates data"),
])
def test_layers_without_an_onnx_form_are_named_and_nothing_is_written(tmp_path, layer, why):
    spec = tmp_path / "net.prototxt"
    spec.write_text(_net({"x": (2, 3), "label": (2,)}, layer))
    out = tmp_path / "net.onnx"
    result = run_cli("export", str(spec), "-o", str(out))
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert lines[-1].startswith(f"error: {spec}:") and why in lines[-1], result.output
    assert not out.exists() and list(tmp_path.iterdir()) == [spec]


def test_train_test_net_names_its_data_layer(tmp_path):
    out = tmp_path / "lenet.onnx"
    result = run_cli("export", str(ROOT / "models/lenet/lenet_train_test.prototxt"), "-o",
                     str(out))
    assert result.exit_code == 1
    assert "lenet_train_test.prototxt:" in result.output
    assert "Data 'mnist': cannot be exported to ONNX: it reads a database" in result.output
    assert not out.exists()


def test_stochastic_pooling_at_train_is_refused():
    net = Net(_net(X, _layer("p", "Pooling", "x", params="pooling_param { pool: STOCHASTIC "
                             "kernel_size: 2 }")), TRAIN)
    with pytest.raises(Exception, match="STOCHASTIC pooling in phase TRAIN"):
        to_onnx(net)


def test_command_writes_a_file_with_a_fixed_batch_and_checks_it(tmp_path):
    out = tmp_path / "cifar.onnx"
    result = run_cli("export", str(ROOT / "models/cifar10_quick/cifar10_quick.prototxt"),
                     "-o", str(out), "--batch", "3", "--opset", "13", "--check")
    assert result.exit_code == 0, result.output
    assert "inputs data 3x3x32x32; outputs prob 3x10" in result.output
    assert "onnxruntime vs netspec on random inputs, 9 blobs" in result.output
    model = onnx.load(str(out))
    assert model.opset_import[0].version == 13
    assert [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim] == [3, 3, 32, 32]


@pytest.mark.parametrize("args,message", [
    (["--batch", "0"], "--batch must be a positive number or 'dynamic'"),
    (["--batch", "many"], "--batch must be a positive number or 'dynamic'"),
    (["--opset", "9"], "--opset must be 13 to"),
    (["--phase", "DEPLOY"], "--phase must be TRAIN or TEST"),
])
def test_bad_options_are_one_line(tmp_path, args, message):
    out = tmp_path / "lenet.onnx"
    result = run_cli("export", str(ROOT / "models/lenet/lenet.prototxt"), "-o", str(out), *args)
    assert result.exit_code == 1
    assert message in result.output.strip().splitlines()[-1]
    assert not out.exists()


def test_unwritable_output_is_one_line(tmp_path):
    (tmp_path / "a_file").write_text("not a folder")
    result = run_cli("export", str(ROOT / "models/lenet/lenet.prototxt"), "-o",
                     str(tmp_path / "a_file" / "lenet.onnx"))
    assert result.exit_code == 1
    assert "cannot write" in result.output.strip().splitlines()[-1]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file"]
    made = run_cli("export", str(ROOT / "models/lenet/lenet.prototxt"), "-o",
                   str(tmp_path / "new" / "lenet.onnx"))  # a missing folder is made
    assert made.exit_code == 0 and (tmp_path / "new" / "lenet.onnx").is_file()


def test_weights_past_protobufs_limit_go_to_an_external_data_file(tmp_path, monkeypatch):
    import netspec.export
    monkeypatch.setattr(netspec.export, "PROTOBUF_LIMIT", 1000)  # as if LeNet were 2 GiB
    net = randomize(Net(str(ROOT / "models/lenet/lenet.prototxt"), TEST))
    export_onnx(net, tmp_path / "lenet.onnx")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lenet.onnx", "lenet.onnx.data"]
    assert (tmp_path / "lenet.onnx").stat().st_size < 100_000  # the weights are beside it
    onnx.checker.check_model(str(tmp_path / "lenet.onnx"), full_check=True)
    errors = compare_with_onnxruntime(net, tmp_path / "lenet.onnx", every_blob=True)
    assert max(errors.values()) <= TOLERANCE
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lenet.onnx", "lenet.onnx.data"]


def test_a_fixed_batch_leaves_the_nets_own_batch(tmp_path):
    net = Net(str(ROOT / "models/lenet/lenet.prototxt"), TEST)
    model = export_onnx(net, tmp_path / "lenet.onnx", batch=5)
    assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_value == 5
    assert net.blobs["data"].shape == (64, 1, 28, 28) and net.blobs["prob"].shape == (64, 10)


# -- trained LeNet: the same accuracy on MNIST's 10,000 test images ---------------------------------
def _mnist_accuracies(weights, onnx_path):
    """netspec's accuracy (the train_test net in TEST, as `netspec test`) and onnxruntime's
    on the same 10,000 images and labels."""
    net = Net(str(ROOT / "models/lenet/lenet_train_test.prototxt"), TEST, weights=weights)
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    netspec_sum, onnx_right, images = 0.0, 0, 0
    for _ in range(100):  # test_iter 100 x batch 100
        net.forward()
        netspec_sum += float(net.blobs["accuracy"].data)
        (prob,) = session.run(["prob"], {"data": net.blobs["data"].data})
        onnx_right += int((prob.argmax(axis=1) == net.blobs["label"].data).sum())
        images += len(prob)
    return netspec_sum / 100, onnx_right / images, images


def test_trained_lenet_scores_the_same_in_onnxruntime(mnist_dir, monkeypatch, tmp_path):
    from test_lenet_mnist import lenet_solver
    solver = lenet_solver(monkeypatch, 150)
    solver.solve()
    weights = tmp_path / "lenet.caffemodel"
    solver.net.save(str(weights))
    deploy = Net(str(ROOT / "models/lenet/lenet.prototxt"), TEST, weights=str(weights))
    export_onnx(deploy, tmp_path / "lenet.onnx", batch="dynamic")
    ours, theirs, images = _mnist_accuracies(str(weights), tmp_path / "lenet.onnx")
    assert images == 10_000 and ours > 0.9
    assert theirs == pytest.approx(ours, abs=1e-6)  # float32 sums of 100 batch means


DEMO = ROOT / "snapshots" / "lenet_iter_10000.caffemodel"


@pytest.mark.skipif(not DEMO.is_file() or not MNIST_DIR.is_dir(),
                    reason="run `make demo` first (snapshots/lenet_iter_10000.caffemodel)")
def test_make_demo_lenet_scores_the_same_in_onnxruntime(tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    result = run_cli("export", "models/lenet/lenet.prototxt", "--weights", str(DEMO),
                     "--batch", "dynamic", "-o", str(tmp_path / "lenet.onnx"))
    assert result.exit_code == 0, result.output
    ours, theirs, images = _mnist_accuracies(str(DEMO), tmp_path / "lenet.onnx")
    assert images == 10_000 and ours >= 0.99
    assert theirs == pytest.approx(ours, abs=1e-6)  # float32 sums of 100 batch means
