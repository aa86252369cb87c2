"""The Layer contract, as in Caffe: setup (once) -> reshape -> forward -> backward.

A subclass fills the hooks and declares how many bottoms/tops it takes; the base class owns
the order and the checks. Backward assigns bottom diffs and ADDS into parameter diffs (that is
what makes iter_size accumulation and shared weights work).
"""
from __future__ import annotations

from typing import ClassVar

import numpy as np

from ..blob import Blob, is_shapes_only
from ..device import random_generator, running_on, seed_from
from ..fillers import fill
from ..kernels import flat, kernels_for
from ..params import ParamView, build_view
from ..proto import netspec_pb2 as pb


class LayerSetupError(ValueError):
    """Raised by a layer for a bad configuration or incompatible shapes (field may be named)."""

    def __init__(self, message: str, field: str | None = None):
        super().__init__(message)
        self.field = field


class BlobList(list):
    """A layer's parameter blobs; `add_blob(*shape)` is pycaffe's way for a Python layer to
    own learnable parameters (saved with the net, updated by the solver)."""

    def __init__(self, dtype=np.float32, blobs=()):
        super().__init__(blobs)
        self.dtype = np.dtype(dtype)

    def add_blob(self, *shape) -> Blob:
        blob = Blob(tuple(int(d) for d in shape), self.dtype)
        self.append(blob)
        return blob


class Layer:
    type: ClassVar[str] = "?"
    #: name of this layer's field in LayerParameter (e.g. "convolution_param"); None if it has none
    param_field: ClassVar[str | None] = None
    #: pydantic view of that message; the validated view is `self.p`
    Params: ClassVar[type[ParamView] | None] = None
    #: allowed numbers of bottoms and tops, as (min, max); None for max means unbounded
    bottoms: ClassVar[tuple[int, int | None]] = (1, 1)
    tops: ClassVar[tuple[int, int | None]] = (1, 1)
    #: loss layers default their first top's loss_weight to 1
    is_loss: ClassVar[bool] = False
    #: layers that produce data from outside the net (never backpropagated into)
    is_data: ClassVar[bool] = False
    #: blobs that hold running statistics, never learned (Caffe's BatchNorm): lr_mult forced to 0
    statistics_blobs: ClassVar[bool] = False
    #: one-line description for `netspec layers`
    summary: ClassVar[str] = ""
    #: False when the net will never run this layer's backward (a deploy net): forward then
    #: skips saving what only backward reads (copies of in-place inputs)
    runs_backward: bool = True
    #: True where the layer's code is device-neutral (kernels_for and array-API operations):
    #: in a net on a torch device it runs there; else it runs on the host beside it, its
    #: blobs synced to and fro (Caffe's Forward_gpu falling back to Forward_cpu)
    runs_on_device: ClassVar[bool] = False

    def keep_for_backward(self, array, in_place: bool):
        """`array` as backward will need it: a copy if an in-place forward is about to
        overwrite it and backward will run."""
        return copy_of(array) if in_place and self.runs_backward else array

    def __init__(self, spec: pb.LayerParameter, phase: int = 0, dtype=np.float32,
                 rng: np.random.Generator | None = None):
        self.spec = spec
        self.name = spec.name
        self.phase = phase
        self.dtype = np.dtype(dtype)
        self.rng = rng if rng is not None else np.random.default_rng()
        #: on a torch device, the torch.Generator random layers draw from (the net's; made from
        #: rng on first use when the layer runs alone)
        self.device_rng = None
        self.blobs: list[Blob] = BlobList(self.dtype)
        #: on a torch device, the data check not read yet: (bad, first bad value, message) over
        #: every forward since the last read (check_values; Net.check_deferred)
        self.deferred = None
        self.p = None
        if self.Params is not None:
            msg = getattr(spec, self.param_field) if self.param_field else spec
            try:
                self.p = build_view(self.Params, msg)
            except ValueError as e:
                raise LayerSetupError(str(e), field=getattr(e, "field", None)) from None

    def check_values(self, first_bad, values, message) -> None:
        """A data check (a label out of range): `first_bad` is the flat index of the first bad
        element of `values`, or values' size when none is. On the CPU it is an int and the error
        is raised now; on a device it is a 0-d tensor, kept (with the bad value) for the net to
        read when it next syncs (Net.check_deferred), so no iteration waits for the device.
        `message(value)` words the error."""
        count = values.reshape(-1).shape[0]
        if count == 0:
            return
        if isinstance(first_bad, int):
            if first_bad < count:
                raise LayerSetupError(message(float(values.reshape(-1)[first_bad])))
            return
        bad = first_bad < count
        value = values.reshape(-1)[first_bad.clamp(max=count - 1).reshape(1)]  # a copy
        if self.deferred is not None:  # the earliest bad value since the last read wins
            was_bad, was_value, _ = self.deferred
            bad, value = was_bad | bad, was_value.where(was_bad, value)
        self.deferred = (bad, value, message)

    def uniform(self, shape, like):
        """Uniform [0, 1) draws of `shape` where `like` lives: from rng on the host, from the
        device's generator on a device (Caffe's caffe_rng_uniform / curand)."""
        if isinstance(like, np.ndarray):
            return self.rng.random(shape)
        if self.device_rng is None:
            self.device_rng = random_generator(like.device, seed_from(self.rng))
        return kernels_for(like).uniform(shape, like, self.device_rng)

    def random_state(self):
        """Both streams' state, to replay a random forward (gradcheck)."""
        return (self.rng.bit_generator.state,
                None if self.device_rng is None else self.device_rng.get_state())

    def set_random_state(self, state) -> None:
        self.rng.bit_generator.state = state[0]
        if state[1] is None:
            self.device_rng = None  # remade from rng, as on the first draw
        else:
            self.device_rng.set_state(state[1])

    # -- the contract ------------------------------------------------------------------------
    def setup(self, bottom: list[Blob], top: list[Blob]) -> None:
        self._check_counts(bottom, top)
        self.layer_setup(bottom, top)
        self.reshape(bottom, top)

    def layer_setup(self, bottom: list[Blob], top: list[Blob]) -> None:
        """One-time setup: read parameters, create learnable blobs."""

    def reshape(self, bottom: list[Blob], top: list[Blob]) -> None:
        raise NotImplementedError

    def forward(self, bottom: list[Blob], top: list[Blob]) -> None:
        raise NotImplementedError

    #: layer types this layer can run in its own pass when they follow it in place
    #: (inference fusion, netspec/fusion.py), in the order they must come
    absorbs: tuple[str, ...] = ()

    def forward_fused(self, bottom: list[Blob], top: list[Blob], followers: list) -> bool:
        """forward, then the `followers` (layers of `absorbs`, in place on top 0) in one pass,
        the result theirs to the bit; False, with nothing done, where this pass cannot."""
        return False

    def backward(self, top: list[Blob], propagate_down: list[bool], bottom: list[Blob]) -> None:
        """Gradients only: bottom diffs are assigned, parameter diffs are added to."""

    # -- helpers for subclasses --------------------------------------------------------------
    def allow_force_backward(self, bottom_index: int) -> bool:
        """False for inputs that cannot take a gradient (labels)."""
        return True

    def add_param(self, shape, filler: pb.FillerParameter) -> Blob:
        blob = Blob(shape, self.dtype)
        if is_shapes_only():  # `netspec info`: the shape is all that is wanted
            self.blobs.append(blob)
            return blob
        try:
            with running_on(None):  # fillers draw on the host, from the layer's generator
                fill(blob.data, filler, self.rng)
        except ValueError as e:
            raise LayerSetupError(str(e)) from None
        self.blobs.append(blob)
        return blob

    def state(self) -> dict:
        """Position of a reader or similar, saved in snapshots (empty for most layers)."""
        return {}

    def set_state(self, state: dict) -> None:
        pass

    def _check_counts(self, bottom, top) -> None:
        for what, blobs, (lo, hi) in (("bottom", bottom, self.bottoms), ("top", top, self.tops)):
            n = len(blobs)
            if n < lo or (hi is not None and n > hi):
                want = str(lo) if lo == hi else (f"at least {lo}" if hi is None else f"{lo} to {hi}")
                raise LayerSetupError(f"{self.type} takes {want} {what} blob(s), got {n}")

    def __repr__(self) -> str:
        return f"<{self.type} layer '{self.name}'>"


def xp_of(*arrays):
    """The array namespace of the arrays (numpy's or torch's, array-API compatible): layer
    code written against it runs on every device."""
    from array_api_compat import array_namespace
    return array_namespace(*arrays)


def xp_device(x):
    """The device an array lives on, as its namespace's creation functions take it."""
    from array_api_compat import device
    return device(x)


def copy_of(array):
    """A copy of a numpy array or a torch tensor."""
    return array.copy() if isinstance(array, np.ndarray) else array.clone()


def canonical_axis(axis: int, num_axes: int, what: str = "axis") -> int:
    """Caffe's CanonicalAxisIndex: negative counts from the end; out of range is an error."""
    if not -num_axes <= axis < num_axes:
        raise LayerSetupError(f"{what} {axis} is out of range for a {num_axes}-d blob", field=what)
    return axis % num_axes


class RectifiesOutput:
    """For a layer whose forward writes its output piece by piece (Convolution, InnerProduct):
    a ReLU in place on that output (inference fusion) runs on each piece as soon as it is
    written, while it is still in cache, instead of as a pass of its own over the whole blob.
    The layer calls `rectify` on every piece it finishes; the values are the ReLU's own."""
    absorbs = ("ReLU",)
    relu_slope = None  # the absorbed ReLU's negative_slope while a fused pass runs

    def forward_fused(self, bottom, top, followers):
        self.relu_slope = followers[0].p.negative_slope
        try:
            self.forward(bottom, top)
        finally:
            self.relu_slope = None
        return True

    def rectify(self, kernels, y: np.ndarray) -> None:
        if self.relu_slope is not None:
            kernels.relu(flat(y), self.relu_slope, flat(y))
