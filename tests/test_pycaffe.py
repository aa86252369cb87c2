"""The rest of pycaffe's API, tested against pycaffe's documented behaviour (BVLC's python/caffe
sources): forward/backward over a range of layers, the batched *_all calls, HDF5 weights,
Python layers with parameters and changing shapes, the DSL's ntop=0 and to_proto, io, draw,
coord_map, the small process-wide helpers, Classifier, Detector and caffe_pb2."""
import shutil
import time

import numpy as np
import pytest
from PIL import Image

import netspec as caffe
from netspec import TEST, TRAIN, Net, WeightsError
from netspec import layers as L, params as P
from netspec.proto import netspec_pb2 as pb

FILLERS = 'weight_filler { type: "gaussian" std: 0.5 } bias_filler { type: "gaussian" }'


def chain(batch=3, phase=TEST, dtype=np.float64):
    """data (batch, 2, 6, 6) -> conv -> relu (in place) -> pool -> ip -> prob."""
    text = f"""
    layer {{ name: "data" type: "Input" top: "data"
            input_param {{ shape {{ dim: {batch} dim: 2 dim: 6 dim: 6 }} }} }}
    layer {{ name: "conv" type: "Convolution" bottom: "data" top: "conv"
            convolution_param {{ num_output: 3 kernel_size: 3 pad: 1 {FILLERS} }} }}
    layer {{ name: "relu" type: "ReLU" bottom: "conv" top: "conv" }}
    layer {{ name: "pool" type: "Pooling" bottom: "conv" top: "pool"
            pooling_param {{ pool: MAX kernel_size: 2 stride: 2 }} }}
    layer {{ name: "ip" type: "InnerProduct" bottom: "pool" top: "ip"
            inner_product_param {{ num_output: 4 {FILLERS} }} }}
    layer {{ name: "prob" type: "Softmax" bottom: "ip" top: "prob" }}
    """
    net = Net(text, phase, dtype=dtype, seed=0)
    net.blobs["data"].data[...] = np.random.default_rng(1).normal(size=net.blobs["data"].shape)
    return net


# -- forward / backward over a range ----------------------------------------------------------
def test_forward_to_a_layer_returns_its_tops_and_runs_nothing_after():
    net = chain()
    net.blobs["prob"].data[...] = -1
    out = net.forward(end="pool")
    assert set(out) == {"pool"}
    assert np.all(net.blobs["prob"].data == -1)  # the layers after `end` did not run
    out = net.forward(end="relu", blobs=["data"])
    assert set(out) == {"conv", "data"} and np.all(out["conv"] >= 0)


def test_forward_from_a_layer_reads_the_blobs_already_there():
    net = chain()
    full = net.forward()["prob"].copy()
    assert list(net.forward()) == ["prob"]
    net.blobs["data"].data[...] = 0  # not read again: forward starts after the convolution
    out = net.forward(start="pool", end="ip")
    assert set(out) == {"ip"}
    np.testing.assert_allclose(net.forward(start="pool")["prob"], full)


def test_backward_to_a_layer_returns_its_bottoms():
    net = chain()
    net.forward()
    dy = np.random.default_rng(2).normal(size=(3, 4))
    full = net.backward(prob=dy)
    assert set(full) == {"data"}
    full_pool = net.blobs["pool"].diff.copy()
    out = net.backward(end="ip", prob=dy)
    assert set(out) == {"pool"}
    np.testing.assert_allclose(out["pool"], full_pool)
    out = net.backward(start="ip", end="pool", diffs=["ip"])
    assert set(out) == {"conv", "ip"}


def test_forward_all_batches_pads_and_drops_the_padding():
    net = chain(batch=3)
    items = np.random.default_rng(3).normal(size=(7, 2, 6, 6))
    out = net.forward_all(data=items, blobs=["ip"])
    assert set(out) == {"prob", "ip"} and out["prob"].shape == (7, 4)
    for i in range(7):  # each item alone, in a batch of its own
        batch = np.zeros((3, 2, 6, 6))
        batch[0] = items[i]
        np.testing.assert_allclose(out["prob"][i], net.forward(data=batch)["prob"][0])


def test_forward_backward_all_and_backward_all():
    net = chain(batch=2)
    items = np.random.default_rng(4).normal(size=(5, 2, 6, 6))
    dy = np.random.default_rng(5).normal(size=(5, 4))
    outs, diffs = net.forward_backward_all(data=items, prob=dy)
    assert outs["prob"].shape == (5, 4) and diffs["data"].shape == (5, 2, 6, 6)
    net.forward(data=items[4:5].repeat(2, axis=0))
    expected = net.backward(prob=np.stack([dy[4], dy[4]]))["data"][0]
    np.testing.assert_allclose(diffs["data"][4], expected)
    net.forward(data=items[:2])
    grads = net.backward_all(prob=dy[:2], diffs=["pool"])
    assert set(grads) == {"data", "pool"} and grads["data"].shape == (2, 2, 6, 6)
    with pytest.raises(ValueError, match="same number of items"):
        net.forward_backward_all(data=items, prob=dy[:3])


# -- HDF5 weights ---------------------------------------------------------------------------------
def test_save_hdf5_and_load_hdf5_round_trip(tmp_path):
    import h5py
    net = chain()
    net.save_hdf5(tmp_path / "w.h5")
    with h5py.File(tmp_path / "w.h5") as f:  # Caffe's layout: data/<layer>/<index>
        np.testing.assert_array_equal(f["data/conv/0"][...], net.params["conv"][0].data)
        assert set(f["data"]) == {"conv", "ip"}
    other = Net(chain().param, TEST, dtype=np.float64, seed=5)
    assert not np.allclose(other.params["ip"][0].data, net.params["ip"][0].data)
    other.load_hdf5(str(tmp_path / "w.h5"))
    for name in ("conv", "ip"):
        for a, b in zip(other.params[name], net.params[name]):
            np.testing.assert_array_equal(a.data, b.data)
    net.save(tmp_path / "w.caffemodel")
    with pytest.raises(WeightsError, match="not an HDF5 file"):
        other.load_hdf5(tmp_path / "w.caffemodel")


# -- Python layers: parameters, and shapes that change ----------------------------------------------
PYLAYER = '''
import numpy as np


class Offset:
    """y = x + b, b a learnable blob made with pycaffe's add_blob."""
    def setup(self, bottom, top):
        self.blobs.add_blob(1)
        self.blobs[0].data[0] = 0.25

    def reshape(self, bottom, top):
        top[0].reshape(*bottom[0].data.shape)

    def forward(self, bottom, top):
        top[0].data[...] = bottom[0].data + self.blobs[0].data[0]

    def backward(self, top, propagate_down, bottom):
        self.blobs[0].diff[0] += top[0].diff.sum()
        if propagate_down[0]:
            bottom[0].diff[...] = top[0].diff


class Growing:
    """No bottoms; one more row every forward (its reshape decides the top's shape)."""
    def setup(self, bottom, top):
        self.rows = 1

    def reshape(self, bottom, top):
        top[0].reshape(self.rows, 3)

    def forward(self, bottom, top):
        top[0].data[...] = np.arange(self.rows * 3).reshape(self.rows, 3)
        self.rows += 1

    def backward(self, top, propagate_down, bottom):
        pass
'''


@pytest.fixture
def pylayers(tmp_path, monkeypatch):
    (tmp_path / "pylayers_under_test.py").write_text(PYLAYER)
    monkeypatch.syspath_prepend(str(tmp_path))
    return tmp_path


def test_python_layer_parameters_are_saved_restored_and_learned(pylayers):
    text = """
    layer { name: "x" type: "Input" top: "x" input_param { shape { dim: 2 dim: 3 } } }
    layer { name: "offset" type: "Python" bottom: "x" top: "y"
            python_param { module: "pylayers_under_test" layer: "Offset" } }
    layer { name: "loss" type: "EuclideanLoss" bottom: "y" bottom: "x" top: "loss" }
    """
    net = Net(text, TRAIN, dtype=np.float64)
    assert [b.shape for b in net.params["offset"]] == [(1,)]
    net.params["offset"][0].data[0] = 1.5
    net.save(pylayers / "w.caffemodel")
    restored = Net(text, TEST, dtype=np.float64, weights=str(pylayers / "w.caffemodel"))
    assert restored.params["offset"][0].data[0] == 1.5
    (pylayers / "net.prototxt").write_text(text)
    solver = caffe.get_solver(pb.SolverParameter(net=str(pylayers / "net.prototxt"),
                                                 base_lr=0.1, lr_policy="fixed", max_iter=1))
    before = float(solver.net.params["offset"][0].data[0])
    solver.step(1)
    # loss = sum((x + b - x)^2) / 2N = 6 b^2 / 4: its gradient 3 b moves b down
    assert float(solver.net.params["offset"][0].data[0]) == pytest.approx(before * (1 - 0.3))


def test_new_shapes_flow_through_forward_without_reshape(pylayers):
    net = chain(batch=3)
    net.blobs["data"].reshape(5, 2, 8, 8)  # as pycaffe: reshape the input, then forward
    assert net.forward(end="pool")["pool"].shape == (5, 3, 4, 4)
    net.blobs["data"].reshape(5, 2, 6, 6)
    net.blobs["data"].data[...] = np.random.default_rng(6).normal(size=(5, 2, 6, 6))
    out = net.forward()["prob"]
    assert out.shape == (5, 4)
    fresh = chain(batch=5)
    np.testing.assert_allclose(fresh.forward(data=net.blobs["data"].data)["prob"], out)

    grows = Net("""
    layer { name: "g" type: "Python" top: "g"
            python_param { module: "pylayers_under_test" layer: "Growing" } }
    layer { name: "double" type: "Power" bottom: "g" top: "out" power_param { scale: 2 } }
    """, TEST)
    for rows in (1, 2, 3):
        assert grows.forward()["out"].shape == (rows, 3)
    np.testing.assert_array_equal(grows.blobs["out"].data, 2 * np.arange(9).reshape(3, 3))


# -- the DSL --------------------------------------------------------------------------------------------
def test_netspec_layers_without_tops_and_to_proto():
    n = caffe.NetSpec()
    n.data, n.data2 = L.DummyData(shape=dict(dim=[3]), ntop=2)
    n.silence_data = L.Silence(n.data, ntop=0)
    n.silence_data2 = L.Silence(n.data2, ntop=0)
    proto = n.to_proto()
    assert [l.name for l in proto.layer] == ["data", "silence_data", "silence_data2"]
    assert list(proto.layer[1].bottom) == ["data"] and not proto.layer[1].top
    Net(proto, TEST)  # a valid net
    top = L.ReLU(L.Input(shape=dict(dim=[1, 2])))
    standalone = caffe.to_proto(top)
    assert [l.type for l in standalone.layer] == ["Input", "ReLU"]


def test_a_bottom_that_is_not_a_top_is_pycaffes_type_error():
    data = L.DummyData(ntop=2)  # a tuple of two Tops
    with pytest.raises(TypeError, match=r"^Silence input 0 is not a Top \(type is <class "
                                        r"'tuple'>\)$"):
        L.Silence(data, ntop=0)
    L.Silence(*data, ntop=0)


# -- io ------------------------------------------------------------------------------------------------
def test_blobproto_to_array_shapes():
    from netspec.io import array_to_datum, blobproto_to_array
    legacy = pb.BlobProto(num=1, channels=2, height=1, width=3, data=range(6))
    assert blobproto_to_array(legacy).shape == (1, 2, 1, 3)
    assert blobproto_to_array(pb.BlobProto(data=[7.0])).shape == ()
    assert blobproto_to_array(pb.BlobProto(data=[7.0])) == 7.0
    with pytest.raises(ValueError, match="no shape"):
        blobproto_to_array(pb.BlobProto(data=[1.0, 2.0]))
    shaped = pb.BlobProto(shape=pb.BlobShape(dim=[2]), data=[1.0, 2.0], diff=[3.0, 4.0])
    np.testing.assert_array_equal(blobproto_to_array(shaped, return_diff=True), [3.0, 4.0])
    datum = array_to_datum(np.zeros((1, 2, 2), np.uint8))
    assert not datum.HasField("label")
    assert array_to_datum(np.zeros((1, 2, 2), np.uint8), label=4).label == 4


def test_oversample_takes_corners_centre_and_mirrors():
    from netspec.io import oversample
    image = np.arange(5 * 6 * 1, dtype=np.float32).reshape(5, 6, 1)
    crops = oversample([image, image + 100], (3, 4))
    assert crops.shape == (20, 3, 4, 1)
    np.testing.assert_array_equal(crops[0], image[0:3, 0:4])
    np.testing.assert_array_equal(crops[3], image[2:5, 2:6])
    np.testing.assert_array_equal(crops[4], image[1:4, 1:5])  # centre: 2.5 - 1.5, 3 - 2
    for i in range(5):
        np.testing.assert_array_equal(crops[5 + i], crops[i][:, ::-1])
    np.testing.assert_array_equal(crops[10], image[0:3, 0:4] + 100)


# -- draw -----------------------------------------------------------------------------------------------
def test_draw_net_returns_bytes_and_draw_net_to_file_keeps_a_phase(tmp_path):
    from netspec.draw import draw_net, draw_net_to_file
    from netspec.spec import parse_text
    param = parse_text("""
    layer { name: "x" type: "Input" top: "x" input_param { shape { dim: 1 dim: 2 } } }
    layer { name: "train_only" type: "ReLU" bottom: "x" top: "y" include { phase: TRAIN } }
    layer { name: "test_only" type: "TanH" bottom: "x" top: "z" include { phase: TEST } }
    """, pb.NetParameter())
    dot = draw_net(param, "TB", "dot")
    assert isinstance(dot, bytes) and b"rankdir=TB" in dot
    assert b"train_only" in dot and b"test_only" in dot  # no phase: every layer
    draw_net_to_file(param, str(tmp_path / "net.dot"), "LR", TRAIN)
    text = (tmp_path / "net.dot").read_text()
    assert "train_only" in text and "test_only" not in text
    if shutil.which("dot"):
        assert draw_net(param, "LR", "png").startswith(b"\x89PNG")


# -- coord_map -----------------------------------------------------------------------------------------
def conv_pool_deconv(ks=3, stride=1, pad=0, pool=2, dstride=2, dpad=0):
    n = caffe.NetSpec()
    n.data = L.Input(shape=dict(dim=[2, 1, 100, 100]))
    n.conv = L.Convolution(n.data, num_output=10, kernel_size=ks, stride=stride, pad=pad)
    n.pool = L.Pooling(n.conv, pool=P.Pooling.MAX, kernel_size=pool, stride=pool)
    dks = [2 * s for s in dstride] if isinstance(dstride, list) else 2 * dstride
    n.deconv = L.Deconvolution(n.pool, num_output=10, kernel_size=dks, stride=dstride,
                               pad=dpad)
    return n


def test_coord_map_through_conv_pool_deconv():
    from netspec.coord_map import coord_map_from_to
    n = conv_pool_deconv()
    ax, a, b = coord_map_from_to(n.deconv, n.data)
    assert (ax, a, b) == (1, 1, 0)  # 2x down then 2x up, 3x3 unpadded: the identity
    n = conv_pool_deconv(pool=4, dstride=4)
    assert coord_map_from_to(n.deconv, n.data) == (1, 1, -1)
    for pad in (0, 3):
        n = conv_pool_deconv(pad=pad)
        assert coord_map_from_to(n.deconv, n.data)[2] == -pad  # conv padding shifts back
        n = conv_pool_deconv(dpad=pad)
        assert coord_map_from_to(n.deconv, n.data)[2] == pad
        n = conv_pool_deconv(pad=pad, dpad=pad)
        assert coord_map_from_to(n.deconv, n.data)[2] == 0
    n.relu = L.ReLU(n.deconv)
    n.one = L.Convolution(n.relu, num_output=10, kernel_size=1)
    assert coord_map_from_to(n.one, n.data) == coord_map_from_to(n.deconv, n.data)


def test_coord_map_of_a_rectangular_kernel_is_its_two_square_parts():
    from netspec.coord_map import coord_map_from_to
    square3 = conv_pool_deconv(ks=3, stride=1, pad=0)
    square5 = conv_pool_deconv(ks=5, stride=2, pad=10)
    n = caffe.NetSpec()
    n.data = L.Input(shape=dict(dim=[2, 1, 100, 100]))
    n.conv = L.Convolution(n.data, num_output=10, kernel_h=3, kernel_w=5, stride_h=1,
                           stride_w=2, pad_h=0, pad_w=10)
    n.pool = L.Pooling(n.conv, pool=P.Pooling.MAX, kernel_size=2, stride=2)
    n.deconv = L.Deconvolution(n.pool, num_output=10, kernel_size=4, stride=2)
    _, a, b = coord_map_from_to(n.deconv, n.data)
    _, a3, b3 = coord_map_from_to(square3.deconv, square3.data)
    _, a5, b5 = coord_map_from_to(square5.deconv, square5.data)
    assert (a[0], b[0], a[1], b[1]) == (a3[0], b3[0], a5[0], b5[0])


def test_crop_aligns_upsampled_scores_with_the_data():
    from netspec.coord_map import crop
    for ks, pad, offset in ((3, 0, 0), (7, 3, 1)):  # 100 -> 98 / 100 -> 49 / 50 -> 100 / 102
        n = conv_pool_deconv(ks=ks, pad=pad)
        n.crop = crop(n.deconv, n.data)
        proto = n.to_proto()
        layer = proto.layer[-1]
        assert layer.type == "Crop" and layer.crop_param.axis == 2
        assert list(layer.crop_param.offset) == [offset]
        net = Net(proto, TEST)
        assert net.blobs["crop"].shape[2:] == net.blobs["data"].shape[2:]
    n = conv_pool_deconv(pool=4, dstride=4)
    n.crop = crop(n.deconv, n.data)
    assert list(n.to_proto().layer[-1].crop_param.offset) == [1]
    n = conv_pool_deconv(dpad=2)
    with pytest.raises(ValueError, match="negative offset"):
        crop(n.deconv, n.data)


# -- small helpers ------------------------------------------------------------------------------------
def test_layer_type_list_timer_logs_and_solver_queries(capsys):
    names = caffe.layer_type_list()
    assert isinstance(names, list) and names == sorted(names) and "Convolution" in names
    timer = caffe.Timer()
    assert timer.ms == 0.0
    timer.start()
    time.sleep(0.02)
    timer.stop()
    assert 15 <= timer.ms < 2000
    caffe.init_log(0)
    caffe.log("hello from a script")
    err = capsys.readouterr().err
    assert err.startswith("I") and "] hello from a script" in err
    caffe.init_log(1)
    caffe.log("not shown")
    assert "not shown" not in capsys.readouterr().err
    assert caffe.has_nccl() is False
    assert (caffe.solver_count(), caffe.solver_rank()) == (1, 0)
    with pytest.raises(ValueError):
        caffe.set_solver_rank(1)


def test_caffe_pb2_is_the_schema_module():
    from netspec.proto import caffe_pb2
    assert caffe_pb2.NetParameter is pb.NetParameter and caffe_pb2.TEST == TEST
    assert isinstance(chain().to_proto(), caffe_pb2.NetParameter)


# -- Classifier and Detector ----------------------------------------------------------------------------
SMALL_FILLERS = 'weight_filler { type: "gaussian" std: 0.1 } bias_filler { type: "gaussian" }'
DEPLOY = f"""
name: "tiny"
layer {{ name: "data" type: "Input" top: "data"
        input_param {{ shape {{ dim: 4 dim: 3 dim: 8 dim: 8 }} }} }}
layer {{ name: "conv" type: "Convolution" bottom: "data" top: "conv"
        convolution_param {{ num_output: 4 kernel_size: 3 {SMALL_FILLERS} }} }}
layer {{ name: "relu" type: "ReLU" bottom: "conv" top: "conv" }}
layer {{ name: "fc" type: "InnerProduct" bottom: "conv" top: "fc"
        inner_product_param {{ num_output: 5 {SMALL_FILLERS} }} }}
layer {{ name: "prob" type: "Softmax" bottom: "fc" top: "prob" }}
"""


@pytest.fixture
def deploy(tmp_path):
    """A deploy net, its weights and a 3 x 10 x 10 mean file, as a user has them."""
    (tmp_path / "deploy.prototxt").write_text(DEPLOY)
    Net(DEPLOY, TEST, seed=3).save(tmp_path / "tiny.caffemodel")
    caffe.io.write_mean(str(tmp_path / "mean.binaryproto"),
                        np.random.default_rng(7).uniform(0, 1, (3, 10, 10)))
    return tmp_path


def _images(n, h=12, w=14, seed=8):
    return [np.random.default_rng(seed + i).uniform(0, 1, (h, w, 3)).astype(np.float32)
            for i in range(n)]


def test_classifier_predict_averages_ten_crops(deploy):
    mean = caffe.io.read_mean(str(deploy / "mean.binaryproto"))
    clf = caffe.Classifier(str(deploy / "deploy.prototxt"), str(deploy / "tiny.caffemodel"),
                           image_dims=(10, 10), mean=mean, raw_scale=2.0,
                           channel_swap=(2, 1, 0))
    images = _images(3)
    probs = clf.predict(images)
    assert probs.shape == (3, 5) and np.allclose(probs.sum(axis=1), 1, atol=1e-5)
    assert probs.max() < 0.99  # not saturated: the comparison below means something
    # the same by hand: resize to 10 x 10, 10 crops of 8 x 8, preprocess, forward, average
    net = Net(str(deploy / "deploy.prototxt"), TEST, weights=str(deploy / "tiny.caffemodel"))
    resized = [caffe.io.resize_image(im, (10, 10)) for im in images]
    crops = caffe.io.oversample(resized, (8, 8))
    mean8 = caffe.io.resize_image(mean.transpose(1, 2, 0), (8, 8)).transpose(2, 0, 1)
    x = np.stack([c.transpose(2, 0, 1)[[2, 1, 0]] * 2.0 - mean8 for c in crops])
    x = np.concatenate([x, np.zeros((2, 3, 8, 8))])  # 30 crops: 8 batches of 4
    by_hand = np.concatenate([net.forward(data=x[i:i + 4])["prob"].copy()
                              for i in range(0, 32, 4)])[:30]
    np.testing.assert_allclose(probs, by_hand.reshape(3, 10, 5).mean(axis=1), rtol=1e-4)
    centre = clf.predict(images, oversample=False)
    x = np.stack([im[1:9, 1:9].transpose(2, 0, 1)[[2, 1, 0]] * 2.0 - mean8 for im in resized])
    expected = net.forward(data=np.concatenate([x, np.zeros((1, 3, 8, 8))]))["prob"][:3]
    np.testing.assert_allclose(centre, expected, rtol=1e-4)


def test_detector_classifies_windows_with_and_without_context(deploy):
    Image.fromarray((np.random.default_rng(9).uniform(0, 255, (20, 24, 3))).astype(np.uint8)) \
        .save(deploy / "scene.png")
    windows = [np.array([0, 0, 8, 8]), np.array([5, 6, 17, 20]), np.array([10, 12, 20, 24])]
    det = caffe.Detector(str(deploy / "deploy.prototxt"), str(deploy / "tiny.caffemodel"),
                         raw_scale=255)
    found = det.detect_windows([(str(deploy / "scene.png"), windows)])
    assert [d["filename"] for d in found] == [str(deploy / "scene.png")] * 3
    image = caffe.io.load_image(str(deploy / "scene.png"))
    net = Net(str(deploy / "deploy.prototxt"), TEST, weights=str(deploy / "tiny.caffemodel"))
    x = np.stack([caffe.io.resize_image(image[w[0]:w[2], w[1]:w[3]], (8, 8)).transpose(2, 0, 1)
                  * 255 for w in windows] + [np.zeros((3, 8, 8))])
    expected = net.forward(data=x)["prob"][:3]
    for d, e, w in zip(found, expected, windows):
        np.testing.assert_allclose(d["prediction"], e, rtol=1e-4)
        assert d["window"] is w
    context = caffe.Detector(str(deploy / "deploy.prototxt"), str(deploy / "tiny.caffemodel"),
                             mean=np.array([10.0, 20.0, 30.0]), raw_scale=255, context_pad=1)
    crop = context.crop(image, np.array([0, 0, 8, 8]))  # at the corner: context off the image
    assert crop.shape == (8, 8, 3)
    np.testing.assert_allclose(crop[0, 0], np.array([10.0, 20.0, 30.0]) / 255)  # mean filled
    assert len(context.detect_windows([(str(deploy / "scene.png"), windows)])) == 3


def test_the_readmes_porting_example_runs(deploy, monkeypatch, capsys):
    """README's "Porting a pycaffe script" snippet, run as written on files of the same kinds
    (this tiny net stands in for CaffeNet)."""
    from conftest import ROOT
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Porting a pycaffe script", 1)[1]
    code = section.split("```python\n", 1)[1].split("```", 1)[0]
    Image.fromarray(np.random.default_rng(10).integers(0, 255, (30, 40, 3), dtype=np.uint8)) \
        .save(deploy / "cat.jpg")
    (deploy / "imagenet_mean.binaryproto").write_bytes(
        (deploy / "mean.binaryproto").read_bytes())
    (deploy / "bvlc_reference_caffenet.caffemodel").write_bytes(
        (deploy / "tiny.caffemodel").read_bytes())
    monkeypatch.chdir(deploy)
    scope = {}
    exec(compile(code, "README.md", "exec"), scope)
    assert scope["probs"].shape == (1, 5)
    assert capsys.readouterr().out.strip() == str(scope["probs"][0].argmax())
