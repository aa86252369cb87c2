"""Blob: an N-d array of values (`data`) and of gradients (`diff`), as in Caffe and pycaffe."""
from __future__ import annotations

import math
import os
from contextlib import contextmanager
from contextvars import ContextVar

import numpy as np

from .proto import netspec_pb2 as pb


#: set while a net is built for its shapes alone (`netspec info`): blobs and buffers are
#: read-only views of a single zero, whatever their size, and fillers do not run
_shapes_only: ContextVar[bool] = ContextVar("shapes_only", default=False)


@contextmanager
def shapes_only():
    """Build nets inside this block for their shapes only: nothing is allocated (a net too
    big for this machine can still be described)."""
    token = _shapes_only.set(True)
    try:
        yield
    finally:
        _shapes_only.reset(token)


def is_shapes_only() -> bool:
    return _shapes_only.get()


def buffer(shape, dtype) -> np.ndarray:
    """A zeroed array for a blob or a layer's own working memory; in shapes_only(), a
    read-only view of one zero with that shape (no memory)."""
    shape = tuple(int(s) for s in shape)
    if _shapes_only.get():
        return np.broadcast_to(np.zeros((), dtype=dtype), shape)
    check_fits(shape, dtype)
    return np.zeros(shape, dtype=dtype)


class Blob:
    __slots__ = ("data", "diff")

    def __init__(self, shape=(), dtype=np.float32):
        self.data = buffer(shape, dtype)
        self.diff = buffer(shape, dtype)

    @property
    def shape(self) -> tuple[int, ...]:
        return self.data.shape

    @property
    def count(self) -> int:
        return self.data.size

    @property
    def dtype(self):
        return self.data.dtype

    # pycaffe's legacy 4-d accessors
    num = property(lambda self: self.shape[0] if len(self.shape) > 0 else 1)
    channels = property(lambda self: self.shape[1] if len(self.shape) > 1 else 1)
    height = property(lambda self: self.shape[2] if len(self.shape) > 2 else 1)
    width = property(lambda self: self.shape[3] if len(self.shape) > 3 else 1)

    def reshape(self, *shape) -> None:
        """New shape; memory is only replaced when the shape changes (like Caffe's Reshape)."""
        if len(shape) == 1 and not isinstance(shape[0], (int, np.integer)):
            shape = shape[0]
        shape = tuple(int(s) for s in shape)
        if any(s < 0 for s in shape):
            raise ValueError(f"negative dimension in blob shape {shape}")
        if shape != self.data.shape:
            self.data = buffer(shape, self.data.dtype)
            self.diff = buffer(shape, self.data.dtype)

    def to_proto(self, write_diff: bool = False) -> pb.BlobProto:
        """Caffe's BlobProto: shape plus float `data` (float32) or `double_data` (float64)."""
        proto = pb.BlobProto()
        proto.shape.dim.extend(self.shape)
        if self.dtype == np.float64:
            proto.double_data.extend(self.data.ravel().tolist())
            if write_diff:
                proto.double_diff.extend(self.diff.ravel().tolist())
        else:
            proto.data.extend(self.data.ravel().tolist())
            if write_diff:
                proto.diff.extend(self.diff.ravel().tolist())
        return proto

    def __repr__(self) -> str:
        return f"Blob(shape={self.shape}, dtype={self.dtype})"


def check_fits(shape: tuple, dtype) -> None:
    """Refuse, before allocating, a blob whose values alone exceed this machine's memory (a
    typo like num_output: 1000000000 would otherwise die in the allocator). The diff is not
    counted: its pages are only taken when a backward pass writes them."""
    needed = math.prod(int(s) for s in shape) * np.dtype(dtype).itemsize
    if needed > _MEMORY:
        raise MemoryError(f"a blob of shape {tuple(shape)} needs {_size(needed)}, more than "
                          f"this machine's {_size(_MEMORY)} of memory")


def _size(n: float) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if n < 1024 or unit == "PiB":
            return f"{n:.3g} {unit}" if unit != "bytes" else f"{int(n)} bytes"
        n /= 1024
    return ""


def _physical_memory() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 1 << 62


_MEMORY = _physical_memory()


def proto_shape(proto: pb.BlobProto) -> tuple[int, ...]:
    """Shape of a BlobProto, from `shape` or from Caffe's legacy num/channels/height/width."""
    if proto.HasField("shape"):
        return tuple(int(d) for d in proto.shape.dim)
    if any(proto.HasField(f) for f in ("num", "channels", "height", "width")):
        return (proto.num, proto.channels, proto.height, proto.width)
    return (len(proto.data) or len(proto.double_data),)


def proto_array(proto: pb.BlobProto, dtype=np.float32, diff: bool = False) -> np.ndarray:
    """The values of a BlobProto as an array of its shape (float or double storage)."""
    shape = proto_shape(proto)
    values = (proto.double_diff or proto.diff) if diff else (proto.double_data or proto.data)
    arr = np.asarray(values, dtype=np.float64 if (proto.double_diff if diff else proto.double_data)
                     else np.float32)
    if arr.size != int(np.prod(shape, dtype=np.int64)):
        raise ValueError(f"BlobProto holds {arr.size} values for shape {shape}")
    return arr.reshape(shape).astype(dtype, copy=False)
