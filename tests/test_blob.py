"""Blob: shapes, reshape, and BlobProto in both storage forms and Caffe's legacy 4-d fields."""
import numpy as np

from netspec.blob import Blob, proto_array, proto_shape
from netspec.proto import netspec_pb2 as pb


def test_reshape_keeps_memory_when_shape_is_unchanged():
    b = Blob((2, 3))
    data = b.data
    b.reshape(2, 3)
    assert b.data is data
    b.reshape((4,))
    assert b.shape == (4,) and b.diff.shape == (4,) and b.count == 4
    assert (b.num, b.channels, b.height, b.width) == (4, 1, 1, 1)


def test_float_and_double_round_trip():
    for dtype, field in ((np.float32, "data"), (np.float64, "double_data")):
        b = Blob((2, 3), dtype)
        b.data[...] = np.arange(6).reshape(2, 3) / 7
        proto = b.to_proto()
        assert len(getattr(proto, field)) == 6
        np.testing.assert_array_equal(proto_array(proto, dtype), b.data)


def test_legacy_num_channels_height_width():
    proto = pb.BlobProto(num=1, channels=2, height=1, width=3, data=list(range(6)))
    assert proto_shape(proto) == (1, 2, 1, 3)
    assert proto_array(proto).shape == (1, 2, 1, 3)
