"""The schema: generated code in sync with protos/, Caffe's field numbers, real Caffe files parse,
binary round trips."""
import subprocess
import sys

import numpy as np
import pytest

from conftest import CAFFE_MODELS, ROOT, needs_caffe_models
from netspec.proto import netspec_pb2 as pb
from netspec.spec import read_text


def test_generated_module_matches_the_proto(tmp_path):
    pytest.importorskip("grpc_tools")
    subprocess.run([sys.executable, "-m", "grpc_tools.protoc", f"-I{ROOT / 'protos'}",
                    f"--python_out={tmp_path}", str(ROOT / "protos" / "netspec.proto")],
                   check=True)
    fresh = (tmp_path / "netspec_pb2.py").read_text()
    committed = (ROOT / "netspec" / "proto" / "netspec_pb2.py").read_text()
    assert fresh == committed, "netspec_pb2.py is out of date: run `make proto`"


# (message, field, number) from Caffe's caffe.proto
CAFFE_NUMBERS = [
    ("NetParameter", "layer", 100), ("NetParameter", "layers", 2), ("NetParameter", "input", 3),
    ("NetParameter", "state", 6), ("LayerParameter", "name", 1), ("LayerParameter", "type", 2),
    ("LayerParameter", "bottom", 3), ("LayerParameter", "top", 4), ("LayerParameter", "phase", 10),
    ("LayerParameter", "loss_weight", 5), ("LayerParameter", "param", 6),
    ("LayerParameter", "blobs", 7), ("LayerParameter", "propagate_down", 11),
    ("LayerParameter", "include", 8), ("LayerParameter", "exclude", 9),
    ("LayerParameter", "transform_param", 100), ("LayerParameter", "loss_param", 101),
    ("LayerParameter", "accuracy_param", 102), ("LayerParameter", "convolution_param", 106),
    ("LayerParameter", "data_param", 107), ("LayerParameter", "dropout_param", 108),
    ("LayerParameter", "inner_product_param", 117), ("LayerParameter", "pooling_param", 121),
    ("LayerParameter", "relu_param", 123), ("LayerParameter", "softmax_param", 125),
    ("LayerParameter", "input_param", 143), ("ParamSpec", "lr_mult", 3),
    ("ParamSpec", "decay_mult", 4), ("BlobProto", "shape", 7), ("BlobProto", "data", 5),
    ("BlobProto", "double_data", 8), ("SolverParameter", "base_lr", 5),
    ("SolverParameter", "net", 24), ("SolverParameter", "test_iter", 3),
    ("SolverParameter", "momentum", 11), ("SolverParameter", "weight_decay", 12),
    ("SolverParameter", "lr_policy", 8), ("SolverParameter", "snapshot_prefix", 15),
    ("SolverParameter", "random_seed", 20), ("SolverParameter", "iter_size", 36),
    ("SolverParameter", "type", 40), ("SolverState", "iter", 1), ("SolverState", "history", 3),
    ("SolverState", "current_step", 4), ("Datum", "data", 4), ("Datum", "label", 5),
    ("ConvolutionParameter", "num_output", 1), ("ConvolutionParameter", "kernel_size", 4),
    ("ConvolutionParameter", "dilation", 18), ("PoolingParameter", "pool", 1),
    ("PoolingParameter", "global_pooling", 12), ("LossParameter", "normalization", 3),
    ("FillerParameter", "variance_norm", 8), ("TransformationParameter", "scale", 1),
]


@pytest.mark.parametrize("message,field,number", CAFFE_NUMBERS)
def test_field_numbers_are_caffes(message, field, number):
    assert getattr(pb, message).DESCRIPTOR.fields_by_name[field].number == number


def caffe_files():
    return sorted(CAFFE_MODELS.rglob("*.prototxt"))


@needs_caffe_models
@pytest.mark.parametrize("path", caffe_files(), ids=lambda p: p.name)
def test_every_caffe_reference_file_parses_unchanged(path):
    message = pb.SolverParameter() if "solver" in path.name else pb.NetParameter()
    read_text(path, message)
    assert message.ByteSize() > 0


def test_binary_round_trip_is_byte_exact():
    net = read_text(ROOT / "models" / "cifar10_quick" / "cifar10_quick_train_test.prototxt",
                    pb.NetParameter())
    blob = net.layer[2].blobs.add()
    blob.shape.dim.extend([2, 3])
    blob.data.extend(np.arange(6, dtype=np.float32).tolist())
    data = net.SerializeToString()
    again = pb.NetParameter()
    again.ParseFromString(data)
    assert again == net and again.SerializeToString() == data


def test_known_caffe_wire_bytes():
    # BlobShape{dim: [2, 3]} is field 1, packed: tag 0x0a, length 2, varints 2 and 3
    assert pb.BlobShape(dim=[2, 3]).SerializeToString() == bytes([0x0A, 0x02, 0x02, 0x03])
    # Datum{label: 7} is field 5 varint: tag 0x28
    assert pb.Datum(label=7).SerializeToString() == bytes([0x28, 0x07])
