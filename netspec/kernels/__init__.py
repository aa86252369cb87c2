"""Kernels: HOW the hot loops run, one place per device (DESIGN.md "Devices and kernels").

Layers state WHAT they compute and call `kernels_for(array)` for the loops numpy cannot run at
memory speed; `cpu` holds the numba versions (and every CPU strategy), `torch` the same names
run by PyTorch's operators on any torch device. numba and torch are imported on first use, so
commands that run no net never pay for them, and a CPU-only user never imports torch."""
from __future__ import annotations

import functools

import numpy as np

_cpu = _torch = None


def kernels_for(x):
    """The kernel module for the device that holds x: numpy arrays the CPU kernels, torch
    tensors (any torch device) the torch module."""
    global _cpu, _torch
    if isinstance(x, np.ndarray):
        if _cpu is None:
            from ..threads import configure_once
            from . import cpu
            configure_once()
            _cpu = cpu
        return _cpu
    if _torch is None:
        from . import torch as torch_kernels
        _torch = torch_kernels
    return _torch


_workspaces: dict = {}


def workspace(name: str, size: int, dtype) -> np.ndarray:
    """Scratch memory shared by every layer that asks under `name` (Caffe's shared column
    buffer): one array per name and dtype, grown to the largest request, so a deep net at TEST
    holds one im2col buffer, not one per convolution. Contents last until the next caller."""
    key = (name, np.dtype(dtype))
    buf = _workspaces.get(key)
    if buf is None or buf.size < size:
        buf = _workspaces[key] = np.empty(size, dtype)
    return buf[:size]


def planes(name: str, count: int, size: int, dtype) -> np.ndarray:
    """A (count, size) view of workspace `name` whose rows ("planes") each start 64 bytes
    further into a 4 KiB page than the one before. Kernels that touch all the planes at once
    (Winograd's transforms: 16 or 36) otherwise find them a multiple of 4 KiB apart, in the
    same cache sets, evicting each other: F(4x4, 3x3)'s filter transform ran 30x slower."""
    itemsize = np.dtype(dtype).itemsize
    page = 4096 // itemsize
    stride = -(-size // page) * page + 64 // itemsize
    return workspace(name, count * stride, dtype).reshape(count, stride)[:, :size]


@functools.lru_cache(maxsize=None)
def absent(dtype) -> np.ndarray | None:
    """An empty per-channel term ("no bias", "nothing to subtract") for the kernels that take
    one, in the caller's dtype (so numba compiles no mixed-type variant for it); None for a
    torch dtype (the torch module takes None as "none")."""
    try:
        return np.zeros(0, dtype=np.dtype(dtype))
    except TypeError:
        return None


def scalar_like(x, value):
    """`value` in x's precision for the CPU kernels (so numba compiles no float64 variant of a
    float32 loop); a Python float for the torch module."""
    return x.dtype.type(value) if isinstance(x, np.ndarray) else float(value)


def flat(a):
    """A 1-d view of a C-contiguous array or tensor (kernels write through it, so never a
    copy)."""
    if isinstance(a, np.ndarray):
        if not a.flags.c_contiguous:
            raise ValueError("kernel arrays must be C-contiguous")
        return a.reshape(-1)
    return a.view(-1)
