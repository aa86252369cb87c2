"""pycaffe's caffe.io helpers: arrays <-> BlobProto and Datum, and mean.binaryproto files."""
from __future__ import annotations

import numpy as np

from .blob import proto_array
from .db import array_to_datum, datum_to_array
from .proto import netspec_pb2 as pb
from .spec import read_binary, write_binary

__all__ = ["blobproto_to_array", "array_to_blobproto", "datum_to_array", "array_to_datum",
           "read_mean", "write_mean"]


def blobproto_to_array(blob: pb.BlobProto, return_diff: bool = False) -> np.ndarray:
    """A BlobProto's data (or diff) as an array of its shape (legacy 4-d shapes included)."""
    return proto_array(blob, np.float64 if blob.double_data else np.float32, diff=return_diff)


def array_to_blobproto(arr: np.ndarray, diff: np.ndarray | None = None) -> pb.BlobProto:
    """An array (and optionally its diff) as a float BlobProto with an N-d shape."""
    arr = np.asarray(arr)
    blob = pb.BlobProto()
    blob.shape.dim.extend(arr.shape)
    blob.data.extend(arr.astype(np.float32).ravel().tolist())
    if diff is not None:
        blob.diff.extend(np.asarray(diff, dtype=np.float32).ravel().tolist())
    return blob


def read_mean(path: str) -> np.ndarray:
    """A mean.binaryproto as (C, H, W) (the leading 1 of Caffe's (1, C, H, W) dropped)."""
    arr = blobproto_to_array(read_binary(path, pb.BlobProto()))
    return arr[0] if arr.ndim == 4 else arr


def write_mean(path: str, mean: np.ndarray) -> None:
    """Write a (C, H, W) mean as Caffe's compute_image_mean does: (1, C, H, W), legacy dims."""
    mean = np.asarray(mean, dtype=np.float32)
    blob = pb.BlobProto(num=1, channels=mean.shape[0], height=mean.shape[1], width=mean.shape[2])
    blob.data.extend(mean.ravel().tolist())
    write_binary(path, blob)
