"""Where a net runs: device names, the process-wide default (pycaffe's set_mode_gpu /
set_device), and the two contexts the net runs its layers in.

Names, the same everywhere (`--device`, `Net(device=)`, `set_device`): "cpu" (the numba
kernels, numpy arrays), torch's own names ("cuda", "cuda:1", "mps"), and "torch-cpu", the torch
kernels on torch's CPU tensors (what CI runs; the very code a GPU runs). `set_device` and
`--gpu` also take Caffe's integer. torch is imported only when a torch device is asked for."""
from __future__ import annotations

from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass

GPU_HINT = "pip install 'netspec[gpu]'"


class DeviceError(RuntimeError):
    """An explicit device request this machine cannot serve (one line: what is missing)."""


@dataclass(frozen=True)
class Device:
    """A place to compute: `name` as the user wrote it (normalised), `torch` the torch.device
    for torch devices (None for "cpu")."""
    name: str
    torch: object = None

    @property
    def is_torch(self) -> bool:
        return self.torch is not None

    def __str__(self) -> str:
        return self.name


CPU = Device("cpu")


def _torch():
    try:
        import torch
    except ImportError:
        raise DeviceError(f"PyTorch is not installed: the GPU and torch devices need it "
                          f"({GPU_HINT})") from None
    return torch


def resolve(name) -> Device:
    """A Device from a name, a Caffe GPU number, a Device or None (the default device).
    Errors are DeviceError with one line saying what is missing."""
    if name is None:
        return default_device()
    if isinstance(name, Device):
        return name
    if isinstance(name, int) or (isinstance(name, str) and name.strip().isdigit()):
        name = f"cuda:{int(name)}"
    name = str(name).strip().lower()
    if name == "cpu":
        return CPU
    if name == "gpu":
        name = "cuda"
    torch = _torch()
    if name == "torch-cpu":
        return Device(name, torch.device("cpu"))
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise DeviceError(f"unknown device {name!r}: use cpu, torch-cpu, cuda, cuda:N or mps") \
            from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise DeviceError(f"no CUDA GPU is available for {name!r} (torch "
                              f"{torch.__version__} sees none; `--device cpu` runs on the CPU)")
        index = 0 if dev.index is None else dev.index
        count = torch.cuda.device_count()
        if index >= count:
            raise DeviceError(f"GPU {index} does not exist: this machine has {count} "
                              f"GPU(s) (0 to {count - 1})")
        return Device(f"cuda:{index}", torch.device("cuda", index))
    if dev.type == "mps":
        if not torch.backends.mps.is_available():
            raise DeviceError("Apple's MPS device is not available on this machine")
        return Device("mps", dev)
    if dev.type == "cpu":
        return Device("torch-cpu", dev)
    raise DeviceError(f"device {name!r} is not supported: use cpu, torch-cpu, cuda[:N] or mps")


def gpu_available() -> bool:
    """True when torch is installed and sees a CUDA (or ROCm) GPU; never imports torch for
    nothing: False when it is not installed."""
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


# -- pycaffe's process-wide mode ---------------------------------------------------------------
_default: Device = CPU


def default_device() -> Device:
    return _default


def set_mode_cpu() -> None:
    global _default
    _default = CPU


def set_mode_gpu() -> None:
    """Nets built from now on run on GPU 0 (or the one set_device names)."""
    global _default
    if not _default.is_torch or _default.name == "torch-cpu":
        _default = resolve("cuda:0")


def set_device(device) -> None:
    """Caffe's set_device(N) (GPU N), or any device name ("cuda:1", "mps", "torch-cpu")."""
    global _default
    _default = resolve(device)


# -- the two contexts a net runs in ------------------------------------------------------------
#: the device of the net being built or run: blobs created now keep a copy there
placement: ContextVar[Device | None] = ContextVar("placement", default=None)
#: while a layer of a device net runs on the device, its blobs hand out device arrays; else
#: (host code: data layers, Python layers, pycaffe user code) host numpy arrays
on_device: ContextVar[Device | None] = ContextVar("on_device", default=None)


@contextmanager
def placed(device: Device | None):
    """Blobs and buffers created inside belong to `device` (None or CPU: plain numpy)."""
    token = placement.set(device if device is not None and device.is_torch else None)
    try:
        yield
    finally:
        placement.reset(token)


@contextmanager
def running_on(device: Device | None):
    """Blob accessors inside give `device`'s arrays (None: the host's)."""
    token = on_device.set(device if device is not None and device.is_torch else None)
    try:
        yield
    finally:
        on_device.reset(token)
