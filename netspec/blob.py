"""Blob: an N-d array of values (`data`) and of gradients (`diff`), as in Caffe and pycaffe."""
from __future__ import annotations

import math
import os
from contextlib import contextmanager
from contextvars import ContextVar

import numpy as np

from .device import on_device, placement
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


def buffer(shape, dtype):
    """A zeroed array for a blob or a layer's own working memory: numpy, or a tensor on the
    device a layer runs on (device.running_on); in shapes_only(), a read-only view of one zero
    with that shape (no memory)."""
    shape = tuple(int(s) for s in shape)
    if _shapes_only.get():
        return np.broadcast_to(np.zeros((), dtype=dtype), shape)
    check_fits(shape, dtype)
    device = on_device.get()
    if device is not None:
        return device_zeros(shape, dtype, device)
    return np.zeros(shape, dtype=dtype)


def device_zeros(shape, dtype, device):
    import torch
    return torch.zeros(shape, dtype=torch_dtype(dtype), device=device.torch)


def torch_dtype(dtype):
    import torch
    return {np.dtype(np.float32): torch.float32, np.dtype(np.float64): torch.float64,
            np.dtype(np.int32): torch.int32, np.dtype(np.int64): torch.int64,
            np.dtype(bool): torch.bool, np.dtype(np.uint8): torch.uint8,
            np.dtype(np.float16): torch.float16}[np.dtype(dtype)]


class Blob:
    __slots__ = ("data", "diff")

    def __new__(cls, shape=(), dtype=np.float32):
        # a blob made while a torch-device net is built or run keeps a device copy too
        if cls is Blob and placement.get() is not None:
            return object.__new__(DeviceBlob)
        return object.__new__(cls)

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
        if shape != self.shape:
            self._allocate(shape)

    def _allocate(self, shape: tuple) -> None:
        self.data = buffer(shape, self.data.dtype)
        self.diff = buffer(shape, self.data.dtype)

    def pin_host(self) -> None:
        """One array: nothing to pin (DeviceBlob pins its host copy on CUDA)."""

    def push(self) -> None:
        """One array: nothing to copy (DeviceBlob starts its copy to a CUDA device)."""

    def will_overwrite(self) -> None:
        """The next write replaces all of `data` (a data layer's batch): one array, nothing to
        do (DeviceBlob skips fetching the device copy)."""

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


class DeviceBlob(Blob):
    """Caffe's SyncedMemory: a host copy (numpy) and a device copy (a torch tensor), each made
    when first asked for and synced lazily. Inside a device pass (device.running_on, the net
    running a device layer) `data` / `diff` give the device copy; anywhere else (pycaffe code,
    data and Python layers, snapshots) the host copy. Either access makes that side the current
    one, as Caffe's mutable_cpu_data / mutable_gpu_data do: the other side is copied over only
    when it is next asked for, and only if it changed."""
    __slots__ = ("device", "_shape", "_dtype", "_host", "_dev", "_head", "_pinned", "_copying")

    def __init__(self, shape=(), dtype=np.float32, device=None):
        self.device = device if device is not None else placement.get()
        self._dtype = np.dtype(dtype)
        self._pinned = False
        self._allocate(tuple(int(s) for s in shape))

    def pin_host(self) -> None:
        """Keep the host copy in page-locked memory (CUDA only), for a blob a host layer fills
        every batch (a data layer's top, Caffe's pinned prefetch buffers): its copy to the
        device is then asynchronous, and the host runs on instead of waiting for the GPU."""
        if getattr(self.device.torch, "type", None) != "cuda":
            return
        self._pinned = True
        for k in (0, 1):
            if self._host[k] is not None:
                self._host[k] = self._new_host(self._host[k])

    def push(self) -> None:
        """A host layer has just written `data`: start its copy to the device now, on a side
        stream, into a new device buffer (kernels still queued may read the old one), so the
        copy overlaps the device's work; the compute stream waits for it, the host does not.
        Pinned (CUDA) blobs only; elsewhere the copy happens when a device layer asks."""
        if not self._pinned or self._head[0] != "host":
            return
        import torch
        host = self._host[0]
        if self._copying[0] is not None:  # (an earlier copy of this buffer)
            self._copying[0].synchronize()
        compute = torch.cuda.current_stream(self.device.torch)
        side = _copy_stream(self.device.torch)
        with torch.cuda.stream(side):
            fresh = torch.empty(self._shape, dtype=torch_dtype(self._dtype),
                                device=self.device.torch)
            fresh.copy_(_as_tensor(host), non_blocking=True)
            done = torch.cuda.Event()
            done.record(side)
        compute.wait_event(done)
        fresh.record_stream(compute)  # not reused by the side stream before compute is done
        self._dev[0], self._head[0], self._copying[0] = fresh, "both", done

    def _new_host(self, like=None) -> np.ndarray:
        if not self._pinned:
            return np.zeros(self._shape, self._dtype)
        import torch
        arr = torch.zeros(self._shape, dtype=torch_dtype(self._dtype), pin_memory=True).numpy()
        if like is not None:
            arr[...] = like
        return arr

    def _allocate(self, shape: tuple) -> None:
        """Both copies are made when first asked for."""
        check_fits(shape, self._dtype)
        for event in getattr(self, "_copying", ()):
            if event is not None:  # a copy still reads the buffer about to be dropped
                event.synchronize()
        self._shape = shape
        self._host, self._dev = [None, None], [None, None]
        #: "host" or "device" (the current copy), "both" (equal: a pushed batch), or None (both
        #: zero, not yet made)
        self._head = [None, None]
        self._copying = [None, None]  # CUDA events: an asynchronous copy still reads _host[k]

    def _side(self, k: int):
        device = on_device.get()
        if device is None:
            return self._host_side(k)
        arr = self._dev[k]
        if arr is None:
            arr = self._dev[k] = device_zeros(self._shape, self._dtype, self.device)
        if self._head[k] == "host":
            arr.copy_(_as_tensor(self._host[k]), non_blocking=True)
            if self._pinned:  # the host must not rewrite the buffer before the copy has read it
                import torch
                self._copying[k] = torch.cuda.Event()
                self._copying[k].record(torch.cuda.current_stream(arr.device))
        self._head[k] = "device"
        return arr

    def _host_side(self, k: int):
        arr = self._host[k]
        if _shapes_only.get() and arr is None:
            return buffer(self._shape, self._dtype)
        if arr is None:
            arr = self._host[k] = self._new_host()
        if self._copying[k] is not None:  # (waits only for that copy, not for the GPU's work)
            self._copying[k].synchronize()
            self._copying[k] = None
        if self._head[k] == "device":
            _as_tensor(arr).copy_(self._dev[k])
        self._head[k] = "host"
        return arr

    def _assign(self, k: int, value) -> None:
        """`blob.data = array` (Split sharing, user code): the given side becomes current."""
        if tuple(value.shape) != self._shape:
            self._allocate(tuple(value.shape))
        if isinstance(value, np.ndarray):
            self._host[k], self._head[k] = value, "host"
        else:
            self._dev[k], self._head[k] = value, "device"

    data = property(lambda self: self._side(0), lambda self, v: self._assign(0, v))
    diff = property(lambda self: self._side(1), lambda self, v: self._assign(1, v))

    @property
    def shape(self) -> tuple[int, ...]:
        return self._shape

    @property
    def count(self) -> int:
        return math.prod(self._shape)

    @property
    def dtype(self):
        return self._dtype

    def will_overwrite(self) -> None:
        """The next host write replaces all of `data` (a data layer's batch): the device copy
        is not fetched first."""
        if self._head[0] == "device":
            if self._host[0] is None:
                self._host[0] = self._new_host()
            self._head[0] = "host"

    def __repr__(self) -> str:
        return f"Blob(shape={self.shape}, dtype={self.dtype}, device={self.device})"


_COPY_STREAMS: dict = {}


def _copy_stream(device):
    """One side stream per CUDA device for host-to-device copies (DeviceBlob.push)."""
    if device not in _COPY_STREAMS:
        import torch
        _COPY_STREAMS[device] = torch.cuda.Stream(device=device)
    return _COPY_STREAMS[device]


def _as_tensor(array: np.ndarray):
    import torch
    return torch.from_numpy(array)


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
