"""Where a net runs: device names, the process-wide default (pycaffe's set_mode_gpu /
set_device), and the two contexts the net runs its layers in.

Names, the same everywhere (`--device`, `Net(device=)`, `set_device`): "cpu" (the numba
kernels, numpy arrays), torch's own names ("cuda", "cuda:1", "mps"), and "torch-cpu", the torch
kernels on torch's CPU tensors (what CI runs; the very code a GPU runs). `set_device` and
`--gpu` also take Caffe's integer. torch is imported only when a torch device is asked for."""
from __future__ import annotations

import os
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass

from .errors import NetspecError

GPU_HINT = "pip install 'netspec[gpu]'"


class DeviceError(NetspecError):
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

    def synchronize(self) -> None:
        """Wait for the device's queued work (timing); the CPU devices have none."""
        kind = getattr(self.torch, "type", "cpu")
        if kind == "cuda":
            import torch
            torch.cuda.synchronize(self.torch)
        elif kind == "mps":
            import torch
            torch.mps.synchronize()


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
            raise DeviceError(f"no CUDA GPU is available for {name!r}: {_why_no_gpu()}")
        index = 0 if dev.index is None else dev.index
        count = torch.cuda.device_count()
        if index >= count:
            raise DeviceError(f"GPU {index} does not exist: this machine has {count} "
                              f"GPU(s) (0 to {count - 1})")
        _full_float32(torch)
        return Device(f"cuda:{index}", torch.device("cuda", index))
    if dev.type == "mps":
        if not torch.backends.mps.is_available():
            raise DeviceError("Apple's MPS device is not available on this machine")
        return Device("mps", dev)
    if dev.type == "cpu":
        return Device("torch-cpu", dev)
    raise DeviceError(f"device {name!r} is not supported: use cpu, torch-cpu, cuda[:N] or mps")


def _full_float32(torch) -> None:
    """float32 nets compute in float32 on the GPU, as Caffe's do: cuDNN's convolutions would
    otherwise use TF32 (10-bit mantissas, errors near 1e-3). NETSPEC_TF32=1 allows TF32, for
    speed, in the whole process (a process-wide torch setting, as torch's own)."""
    tf32 = os.environ.get("NETSPEC_TF32") == "1"
    torch.backends.cudnn.allow_tf32 = tf32  # (torch's newer fp32_precision API reads these)
    torch.backends.cuda.matmul.allow_tf32 = tf32


def gpu_available() -> bool:
    """True when torch is installed and sees a CUDA (or ROCm) GPU; never imports torch for
    nothing: False when it is not installed."""
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


def from_flags(gpu: str | None = None, device: str | None = None, *, local_rank=None,
               solver_gpu: int | None = None, solver_file: str = "") -> Device:
    """The device the command-line tool runs on: `--gpu` (Caffe's flag: N, "0,1" or "all";
    under mpiexec rank r takes the r-th of them, by its rank on the node), `--device NAME`,
    else the solver file's `solver_mode: GPU` (`solver_gpu` = its device_id), which falls back
    to the CPU with one warning line where no GPU is available, else the CPU."""
    from .log import logger
    if gpu is not None and device is not None:
        raise DeviceError("give --gpu or --device, not both")
    if device is not None:
        return resolve(device)
    if gpu is not None:
        text = gpu.strip().lower()
        if text == "all":
            if not gpu_available():
                resolve("cuda")  # raises, naming what is missing
            import torch
            ids = list(range(torch.cuda.device_count()))
        elif all(part.strip().isdigit() for part in text.split(",")):
            ids = [int(part) for part in text.split(",")]
        else:
            raise DeviceError(f"--gpu takes GPU numbers (0, or 0,1) or all, got {gpu!r}")
        if local_rank is not None:
            return resolve(ids[local_rank % len(ids)])
        if len(ids) > 1:
            logger.warning("one process trains on one GPU: using GPU %d of %s (mpiexec -n %d "
                           "netspec train ... --gpu %s trains on all of them)", ids[0], gpu,
                           len(ids), gpu)
        return resolve(ids[0])
    if solver_gpu is not None:
        if gpu_available():
            return resolve(solver_gpu if local_rank is None else local_rank)
        logger.warning("%s says solver_mode: GPU, but %s: training on the CPU",
                       solver_file or "the solver", _why_no_gpu())
        return CPU
    return CPU


def _why_no_gpu() -> str:
    try:
        import torch
    except ImportError:
        return f"PyTorch is not installed ({GPU_HINT})"
    if torch.version.cuda is None and getattr(torch.version, "hip", None) is None:
        return (f"torch {torch.__version__} is a CPU-only build (install a CUDA or ROCm build "
                f"of torch)")
    return f"torch {torch.__version__} sees no CUDA GPU"


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
def _holding(var: ContextVar, device: Device | None):
    token = var.set(device if device is not None and device.is_torch else None)
    try:
        yield
    finally:
        var.reset(token)


def placed(device: Device | None):
    """Blobs and buffers created inside belong to `device` (None or CPU: plain numpy)."""
    return _holding(placement, device)


def running_on(device: Device | None):
    """Blob accessors inside give `device`'s arrays (None: the host's)."""
    return _holding(on_device, device)


# -- random draws on a device ------------------------------------------------------------------
def seed_from(rng) -> int:
    """A seed for a device generator taken from a numpy Generator without advancing it, so a
    net's host stream (fillers, crops, shuffles) is the same on every device."""
    import copy
    return int(copy.deepcopy(rng).integers(0, 2 ** 63))


def random_generator(where, seed: int):
    """The torch.Generator on `where` (a Device or a torch.device) that Dropout and STOCHASTIC
    pooling draw from (no host draw, no copy per iteration); None for the numba CPU module,
    which draws from numpy."""
    where = where.torch if isinstance(where, Device) else where
    if where is None:
        return None
    g = _torch().Generator(device=where)
    g.manual_seed(seed)
    return g


def generator_state(g) -> dict:
    """A generator's state for a snapshot (JSON: the device type and the state's bytes)."""
    import base64
    return {"device": g.device.type,
            "state": base64.b64encode(g.get_state().numpy().tobytes()).decode()}


def restore_generator(g, saved: dict) -> bool:
    """Continue `g` from a snapshot's state; False (g untouched) when it was saved on another
    kind of device, whose generator is another algorithm."""
    import base64
    if g is None or saved.get("device") != g.device.type:
        return False
    torch = _torch()
    g.set_state(torch.frombuffer(bytearray(base64.b64decode(saved["state"])), dtype=torch.uint8))
    return True
