"""Net: layers in order with their blobs; forward, backward, weights in and out (pycaffe API)."""
from __future__ import annotations

import os
from collections import OrderedDict

import numpy as np

from .blob import Blob, proto_array
from .compat import default_rng
from .device import placed, random_generator, resolve, running_on, seed_from
from . import fusion
from .errors import DataError, SpecError, WeightsError
from .graph import filter_net, insert_splits
from .log import logger
from .layers.base import Layer, LayerSetupError
from .layers.python import spec_folder
from .proto import netspec_pb2 as pb
from .registry import get_layer_class
from .snapshot import is_hdf5, read_weights_h5, write_weights_h5
from .spec import read_binary, read_net, write_atomic
from .wire import net_chunks
from .upgrade import upgrade_net

TRAIN, TEST = pb.TRAIN, pb.TEST


class ParamInfo:
    """A learnable blob with its ParamSpec multipliers (shared blobs appear once)."""
    __slots__ = ("blob", "lr_mult", "decay_mult", "owner")

    def __init__(self, blob: Blob, lr_mult: float, decay_mult: float, owner: str):
        self.blob, self.lr_mult, self.decay_mult, self.owner = blob, lr_mult, decay_mult, owner


class Net:
    """A network built from a spec, as pycaffe's caffe.Net.

    Net(model, phase, weights=None, *, stages=(), level=0, dtype=np.float32, rng=None,
    device=None, device_rng=None) also accepts pycaffe's older Net(model, weights, phase). `model` is a file,
    prototxt text or a NetParameter; `device` a name ("cpu", "cuda:0", "mps", "torch-cpu"),
    Caffe's GPU number, or None for the process's mode (set_mode_gpu / set_device)."""

    def __init__(self, model, phase=None, weights=None, *, stages=(), level: int = 0,
                 dtype=np.float32, rng: np.random.Generator | None = None, seed: int | None = None,
                 device=None, device_rng=None):
        if isinstance(phase, (str, os.PathLike)):  # pycaffe's Net(model, weights, phase)
            phase, weights = weights, phase
        self.phase = TEST if phase is None else int(phase)
        if self.phase not in (TRAIN, TEST):
            raise ValueError(f"phase must be netspec.TRAIN or netspec.TEST, got {phase!r}")
        self.dtype = np.dtype(dtype)
        self.rng = rng if rng is not None else default_rng(seed)
        #: where the net runs (device.Device); layers without a device implementation run on
        #: the host beside it, as Caffe's Forward_gpu falls back to Forward_cpu
        self.device = resolve(device)
        #: the device's torch.Generator (Dropout, STOCHASTIC pooling draw there): a solver
        #: shares its own between its nets, as it shares rng
        self.device_rng = device_rng if device_rng is not None else \
            random_generator(self.device, seed_from(self.rng))
        param, self.source = read_net(model)
        if param.layers:
            logger.warning("%s uses Caffe's deprecated V1/V0 layer format: upgraded on load "
                           "(`netspec upgrade` writes the current format)",
                           self.source.file or "the net")
        self.name = param.name
        state = pb.NetState()
        state.CopyFrom(param.state)
        state.phase = self.phase
        state.level = level or state.level
        state.stage.extend(s for s in stages if s not in state.stage)
        param, origin = upgrade_net(param, self.source)
        if not param.layer:
            raise SpecError("the net has no layers (an empty file?)", file=self.source.file)
        param, kept = filter_net(param, state, self.source, origin)
        param, self._origin = insert_splits(param, [origin[k] for k in kept], self.source)
        self.param = param
        #: called with each layer's index after its backward (parallel.py sends gradients)
        self.after_backward = None
        with placed(self.device):
            self._build(param)
        if weights is not None:
            self.copy_from(weights)
            if self.weights_missing:
                logger.warning("%d layer(s) received no weights from %s and keep their random "
                               "initialisation: %s", len(self.weights_missing), weights,
                               ", ".join(self.weights_missing))

    # -- construction --------------------------------------------------------------------------
    def _error(self, index: int, message: str, field: str | None = None, cls=SpecError):
        layer = self.param.layer[index]
        where = self._origin[index]
        return self.source.error(f"{layer.type} '{layer.name}': {message}",
                                 where, layer.name, field, cls=cls)

    def _build(self, param: pb.NetParameter) -> None:
        self.blobs: OrderedDict[str, Blob] = OrderedDict()
        self.layers: list[Layer] = []
        self.bottom_ids: list[list[Blob]] = []
        self.top_ids: list[list[Blob]] = []
        self.layer_bottoms: list[list[str]] = []
        self.layer_tops: list[list[str]] = []
        self.loss_weights: list[list[float]] = []
        self.inputs: list[str] = []
        self._reshaped_for: list[tuple] = []  # per layer: its bottoms' shapes at its last reshape
        self._where: list = []  # per layer: the device it runs on, None for the host
        consumed: set[str] = set()
        blob_needs_backward: dict[str, bool] = {}
        self._bottom_need_backward: list[list[bool]] = []
        self._layer_need_backward: list[bool] = []
        self.learnable_params: list[ParamInfo] = []
        self.params: OrderedDict[str, list[Blob]] = OrderedDict()
        shared: dict[str, tuple[Blob, str]] = {}
        # where each blob is rewritten in place: a Split may hand its bottom's memory to its
        # tops only when no later layer rewrites one of them (a consumer would change what the
        # others read)
        rewritten: dict[str, int] = {}  # name -> the last layer that rewrites it in place
        for k, lp in enumerate(param.layer):
            for j, name in enumerate(lp.top):
                if j < len(lp.bottom) and lp.bottom[j] == name:
                    rewritten[name] = k

        with_weights: dict[str, int] = {}  # layer name -> index, for layers with blobs
        for i, lp in enumerate(param.layer):
            try:
                cls = get_layer_class(lp.type)
            except KeyError as e:
                raise self._error(i, e.args[0], "type") from None
            folder = spec_folder.set(os.path.dirname(os.path.abspath(self.source.file))
                                     if self.source.file else None)
            try:
                layer = cls(lp, self.phase, self.dtype, self.rng)
                layer.device_rng = self.device_rng
            except LayerSetupError as e:
                raise self._error(i, str(e), e.field) from None
            finally:
                spec_folder.reset(folder)
            bottoms = [self.blobs[n] for n in lp.bottom]
            consumed.update(lp.bottom)
            tops = []
            for j, name in enumerate(lp.top):
                if j < len(lp.bottom) and lp.bottom[j] == name:
                    tops.append(self.blobs[name])  # in place
                else:
                    blob = Blob((), self.dtype)
                    self.blobs[name] = blob
                    tops.append(blob)
            if lp.propagate_down and len(lp.propagate_down) != len(lp.bottom):
                raise self._error(i, f"propagate_down has {len(lp.propagate_down)} values for "
                                     f"{len(lp.bottom)} bottoms", "propagate_down")
            if lp.type == "Split":  # on a device, each top keeps its own copies
                layer.share = not self.device.is_torch and all(
                    rewritten.get(name, -1) < i for name in (*lp.bottom, *lp.top))
            self._where.append(self.device if self.device.is_torch and layer.runs_on_device
                               else None)
            if self.device.is_torch and self._where[-1] is None:
                for t in tops:  # filled on the host every batch: copied without a wait
                    t.pin_host()
            try:
                with running_on(self._where[-1]):
                    layer.setup(bottoms, tops)
            except LayerSetupError as e:
                raise self._error(i, str(e), e.field) from None
            except DataError as e:
                raise self._error(i, e.message, "source", cls=DataError) from None
            except (ValueError, OSError, MemoryError) as e:
                raise self._error(i, str(e)) from None
            if cls.is_data and lp.type == "Input":
                self.inputs.extend(lp.top)
            if layer.blobs:  # Caffe allows repeated names; weights, matched by name, cannot
                if lp.name in with_weights:
                    first = with_weights[lp.name]
                    line = self.source.layer_line(self._origin[first]) \
                        if self._origin[first] is not None else None
                    raise self._error(i, f"the name is also that of {param.layer[first].type} "
                                         f"'{lp.name}'{f' at line {line}' if line else ''}, "
                                         f"and both have weights: weights are saved and loaded "
                                         f"by layer name, so give them different names", "name")
                with_weights[lp.name] = i

            # loss weights: loss layers default to 1 on their first top
            if lp.loss_weight and len(lp.loss_weight) != len(lp.top):
                raise self._error(i, f"loss_weight has {len(lp.loss_weight)} values for "
                                     f"{len(lp.top)} tops", "loss_weight")
            weights = list(lp.loss_weight) or [
                1.0 if (cls.is_loss and j == 0) else 0.0 for j in range(len(lp.top))]

            # parameters: ParamSpec multipliers and sharing by name
            need_backward = False
            bottom_nb = []
            for j, name in enumerate(lp.bottom):
                nb = blob_needs_backward.get(name, False)
                if lp.propagate_down:
                    nb = bool(lp.propagate_down[j])
                nb = nb and layer.allow_force_backward(j)
                bottom_nb.append(nb)
                need_backward |= nb
            if len(lp.param) > len(layer.blobs):
                raise self._error(i, f"has {len(lp.param)} param specs but only "
                                     f"{len(layer.blobs)} parameter blobs", "param")
            for j, blob in enumerate(layer.blobs):
                spec = lp.param[j] if j < len(lp.param) else pb.ParamSpec()
                if cls.statistics_blobs:
                    if spec.lr_mult != 0 and j < len(lp.param) and spec.HasField("lr_mult"):
                        raise self._error(i, "its statistics blobs cannot be learned: give "
                                             "lr_mult: 0 or no param specs", "param")
                    spec = pb.ParamSpec(name=spec.name, lr_mult=0, decay_mult=0)
                if spec.name and spec.name in shared:
                    owner, owner_layer = shared[spec.name]
                    if owner.shape != blob.shape:
                        raise self._error(i, f"shared parameter '{spec.name}' has shape "
                                             f"{blob.shape} here but {owner.shape} in layer "
                                             f"'{owner_layer}'", "param", cls=WeightsError)
                    layer.blobs[j] = owner
                else:
                    if spec.name:
                        shared[spec.name] = (blob, lp.name)
                    self.learnable_params.append(
                        ParamInfo(blob, spec.lr_mult, spec.decay_mult, lp.name))
                need_backward |= spec.lr_mult != 0
            if layer.blobs:
                self.params[lp.name] = layer.blobs
            for name in lp.top:
                blob_needs_backward[name] = need_backward and not cls.is_data

            self.layers.append(layer)
            self._reshaped_for.append(tuple(b.shape for b in bottoms))
            self.bottom_ids.append(bottoms)
            self.top_ids.append(tops)
            self.layer_bottoms.append(list(lp.bottom))
            self.layer_tops.append(list(lp.top))
            self.loss_weights.append(weights)
            self._bottom_need_backward.append(bottom_nb)
            self._layer_need_backward.append(need_backward and not cls.is_data)

        self._prune_backward()
        if param.force_backward:
            for i, layer in enumerate(self.layers):
                self._layer_need_backward[i] = True
                self._bottom_need_backward[i] = [
                    nb or layer.allow_force_backward(j)
                    for j, nb in enumerate(self._bottom_need_backward[i])]
        for layer, needed in zip(self.layers, self._layer_need_backward):
            layer.runs_backward = needed
        self._fused = {i: chain for i, chain in fusion.plan(self).items()
                       if all(self._where[j] == self._where[i] for j in chain)}
        self.outputs = sorted(n for n in self.blobs if n not in consumed)  # Caffe: alphabetical
        self.layer_dict = OrderedDict((l.name, l) for l in self.layers)

    def blob_loss_weight(self, name: str) -> float:
        """Loss weight of the layer output `name` (0 when it is not a loss)."""
        weight = 0.0
        for names, weights in zip(self.layer_tops, self.loss_weights):
            for top, w in zip(names, weights):
                if top == name:
                    weight = w  # the last producer (in-place layers rewrite a blob)
        return weight

    def _prune_backward(self) -> None:
        """Caffe's analysis: only layers whose tops reach a loss run backward."""
        under_loss: set[str] = set()
        skip: set[str] = set()
        for i in reversed(range(len(self.layers))):
            contributes = False
            skip_down = True
            for j, name in enumerate(self.layer_tops[i]):
                if self.loss_weights[i][j] or name in under_loss:
                    contributes = True
                if name not in skip:
                    skip_down = False
            if self._layer_need_backward[i] and skip_down:
                self._layer_need_backward[i] = False
                self._bottom_need_backward[i] = [False] * len(self.layer_bottoms[i])
            if not contributes:
                self._layer_need_backward[i] = False
            for j, name in enumerate(self.layer_bottoms[i]):
                if contributes:
                    under_loss.add(name)
                else:
                    self._bottom_need_backward[i][j] = False
                if not self._bottom_need_backward[i][j]:
                    skip.add(name)

    # -- running -------------------------------------------------------------------------------
    def _range(self, start, end):
        names = [l.name for l in self.layers]
        lo = names.index(start) if start is not None else 0
        hi = names.index(end) if end is not None else len(names) - 1
        return lo, hi

    def check_deferred(self) -> None:
        """Raise the data errors (a label out of range) that layers on a torch device found
        since the last call, naming the layer as the CPU does at once; one host read per such
        layer. The solver calls it at display, test and snapshot time; pycaffe's forward()
        reads its outputs anyway and calls it too."""
        for i, layer in enumerate(self.layers):
            if layer.deferred is not None:
                bad, value, message = layer.deferred
                layer.deferred = None
                if bool(bad):
                    raise self._error(i, message(float(value)))

    def first_non_finite(self) -> Layer | None:
        """The first layer whose output holds NaN or inf, found by running the forward again
        a layer at a time: an in-place layer shares its input's blob, so the blobs alone
        cannot say which layer of the chain made it. The data layers keep their batch unless
        a later layer rewrites one of their tops in place."""
        data_tops = {id(t) for layer, tops in zip(self.layers, self.top_ids) if layer.is_data
                     for t in tops}
        rewritten = any(id(t) in data_tops for layer, tops in zip(self.layers, self.top_ids)
                        if not layer.is_data for t in tops)
        try:
            with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
                for i, (layer, tops) in enumerate(zip(self.layers, self.top_ids)):
                    if layer.is_data and not rewritten:
                        continue
                    self.forward_layers(i, i)
                    if any(not np.isfinite(t.data).all() for t in tops):
                        return layer
        except (SpecError, LayerSetupError, ValueError):
            pass
        return None

    def where(self, i: int):
        """Where layer i runs: the net's torch device, or None for the host (the CPU device,
        and host-only layers such as data and Python layers on a torch device)."""
        return self._where[i]

    def forward_layers(self, start: int = 0, end: int | None = None) -> float:
        """Run layers start..end (inclusive) and return the weighted loss they produced.

        As Caffe's Layer::Forward, a layer is reshaped first when its bottoms changed shape
        (an input blob reshaped, or a layer upstream that made a new shape); Python layers
        are reshaped before every forward, as Caffe does for every layer. On a torch device
        each layer runs in its place (the device, or the host for data, Python and the other
        host-only layers), the blobs synced between them as they are asked for, and the loss
        stays on the device (a 0-d tensor): nothing waits for the device until the log or a
        test needs a number."""
        end = len(self.layers) - 1 if end is None else end
        loss = 0.0
        ran_to = -1  # the last follower a fused head ran (netspec/fusion.py)
        for i in range(start, end + 1):
            layer, bottoms, tops = self.layers[i], self.bottom_ids[i], self.top_ids[i]
            if layer.is_data:
                for top in tops:  # a new batch replaces the old: nothing to fetch first
                    top.will_overwrite()
            try:
                with running_on(self._where[i]):
                    self._reshape_if_needed(i)
                    if i <= ran_to:
                        continue
                    chain = self._fused.get(i, ())
                    if chain and chain[-1] <= end and layer.forward_fused(
                            bottoms, tops, [self.layers[j] for j in chain]):
                        ran_to = chain[-1]  # followers reshape in their turn: in place
                        continue
                    layer.forward(bottoms, tops)
            except LayerSetupError as e:  # bad data met at run time, e.g. a label too large
                raise self._error(i, str(e), e.field) from None
            except DataError as e:  # a database whose records change shape, ...
                raise self._error(i, e.message, "source", cls=DataError) from None
            if self._where[i] is None and self.device.is_torch:
                for top in tops:  # on CUDA: on its way while the device computes
                    top.push()
            for w, top in zip(self.loss_weights[i], tops):
                if w:
                    with running_on(self.device):
                        total = top.data.sum()
                    loss = loss + w * (total if self.device.is_torch else float(total))
        return loss

    def _reshape_if_needed(self, i: int) -> None:
        layer, bottoms = self.layers[i], self.bottom_ids[i]
        shapes = tuple(b.shape for b in bottoms)
        if shapes != self._reshaped_for[i] or layer.type == "Python":
            layer.reshape(bottoms, self.top_ids[i])
            self._reshaped_for[i] = shapes

    def backward_layers(self, start: int | None = None, end: int = 0,
                        top_diffs: dict | None = None) -> None:
        """Run backward from layer `start` down to `end` (inclusive). Loss tops get their loss
        weight as diff first; `top_diffs` (blob name -> array) are set after that."""
        start = len(self.layers) - 1 if start is None else start
        with running_on(self.device):
            for i in range(start, end - 1, -1):
                for w, top in zip(self.loss_weights[i], self.top_ids[i]):
                    if w:
                        top.diff[...] = w
        for name, value in (top_diffs or {}).items():
            self.blobs[name].diff[...] = value
        for i in range(start, end - 1, -1):
            if self._layer_need_backward[i]:
                with running_on(self._where[i]):
                    self.layers[i].backward(self.top_ids[i], self._bottom_need_backward[i],
                                            self.bottom_ids[i])
            if self.after_backward is not None:  # (MPI: host arrays, staged through the host)
                with running_on(None):
                    self.after_backward(i)

    def forward(self, blobs=None, start=None, end=None, **inputs) -> dict[str, np.ndarray]:
        """pycaffe: set input blobs from keyword arrays, run layers `start`..`end` (names,
        inclusive; default all), return {name: data} of the net's outputs, or of the `end`
        layer's tops when `end` is given, plus the blobs named in `blobs`."""
        for name, value in inputs.items():
            if name not in self.blobs:
                raise KeyError(f"'{name}' is not a blob of this net (inputs: {self.inputs})")
            value = np.asarray(value)
            if value.shape != self.blobs[name].shape:
                raise ValueError(f"input '{name}' has shape {value.shape}, the blob has "
                                 f"{self.blobs[name].shape} (reshape the blob first)")
            self.blobs[name].data[...] = value
        lo, hi = self._range(start, end)
        self.forward_layers(lo, hi)
        self.check_deferred()
        names = self.layer_tops[hi] if end is not None else self.outputs
        return {n: self.blobs[n].data for n in _unique(names + list(blobs or []))}

    def backward(self, diffs=None, start=None, end=None, **top_diffs) -> dict[str, np.ndarray]:
        """pycaffe: set output diffs from keyword arrays, run backward from layer `start` down
        to `end` (names, inclusive; default all), return {name: diff} of the net's inputs, or
        of the `end` layer's bottoms when `end` is given, plus the blobs named in `diffs`."""
        lo, hi = self._range(end, start)
        for name in top_diffs:
            if name not in self.outputs:
                raise KeyError(f"'{name}' is not an output of this net ({self.outputs})")
        self.backward_layers(hi, lo, top_diffs)
        names = self.layer_bottoms[lo] if end is not None else self.inputs
        return {n: self.blobs[n].diff for n in _unique(names + list(diffs or []))}

    def forward_all(self, blobs=None, **inputs) -> dict[str, np.ndarray]:
        """pycaffe: forward any number of items in batches of the net's batch size (the last
        one padded with zeros, the padding dropped); {name: stacked data} as forward."""
        outs, _ = self._run_batches(inputs, {}, blobs, None, backward=False)
        return outs

    def backward_all(self, diffs=None, **top_diffs) -> dict[str, np.ndarray]:
        """backward over any number of items in batches, as forward_all (for nets whose
        forward state the batches do not depend on)."""
        _, grads = self._run_batches({}, top_diffs, None, diffs, forward=False)
        return grads

    def forward_backward_all(self, blobs=None, diffs=None, **arrays):
        """pycaffe: forward and backward in batches; keywords name inputs (forward) and
        outputs (their diffs, for backward). Returns ({name: data}, {name: diff})."""
        inputs = {k: v for k, v in arrays.items() if k in self.inputs}
        top_diffs = {k: v for k, v in arrays.items() if k in self.outputs}
        return self._run_batches(inputs, top_diffs, blobs, diffs)

    def _run_batches(self, inputs, top_diffs, blobs, diffs, forward=True, backward=True):
        sources = {**inputs, **top_diffs}
        if not sources:
            raise ValueError("give the arrays to run as keywords (input or output names)")
        total = len(next(iter(sources.values())))
        if any(len(v) != total for v in sources.values()):
            raise ValueError("the arrays must hold the same number of items: " + ", ".join(
                f"{k} {len(v)}" for k, v in sources.items()))
        batch = self.blobs[next(iter(sources))].shape[0]
        outs: dict[str, list] = {}
        grads: dict[str, list] = {}
        for start in range(0, total, batch):
            if forward:
                for name, data in self.forward(blobs, **_padded(inputs, start, batch)).items():
                    outs.setdefault(name, []).append(data.copy())
            if backward:
                for name, diff in self.backward(diffs, **_padded(top_diffs, start, batch)).items():
                    grads.setdefault(name, []).append(diff.copy())
        return ({k: np.concatenate(v)[:total] for k, v in outs.items()},
                {k: np.concatenate(v)[:total] for k, v in grads.items()})

    def forward_backward(self) -> float:
        loss = self.forward_layers()
        self.backward_layers()
        return loss

    def reshape(self) -> None:
        """Propagate new input shapes through every layer (after changing an Input blob)."""
        for i, layer in enumerate(self.layers):
            with running_on(self._where[i]):
                layer.reshape(self.bottom_ids[i], self.top_ids[i])

    @property
    def top_names(self) -> OrderedDict[str, list[str]]:
        """pycaffe: layer name -> the names of its tops."""
        return OrderedDict((l.name, list(t)) for l, t in zip(self.layers, self.layer_tops))

    @property
    def bottom_names(self) -> OrderedDict[str, list[str]]:
        """pycaffe: layer name -> the names of its bottoms."""
        return OrderedDict((l.name, list(b)) for l, b in zip(self.layers, self.layer_bottoms))

    @property
    def _layer_names(self) -> list[str]:
        """pycaffe's list of layer names, in order."""
        return [l.name for l in self.layers]

    def set_input_arrays(self, data, labels, layer: str | None = None) -> None:
        """pycaffe: hand arrays to a MemoryData layer (the first one, or the named one)."""
        targets = [l for l in self.layers if l.type == "MemoryData" and layer in (None, l.name)]
        if not targets:
            raise ValueError("this net has no MemoryData layer" + (f" named {layer!r}" if layer
                                                                   else ""))
        targets[0].reset(data, labels)

    def clear_param_diffs(self) -> None:
        with running_on(self.device):
            for p in self.learnable_params:
                p.blob.diff[...] = 0

    # -- weights -------------------------------------------------------------------------------
    def share_with(self, other: "Net") -> None:
        """Use `other`'s parameter blobs for layers of the same name (train -> test nets)."""
        for layer in self.layers:
            src = other.layer_dict.get(layer.name)
            if src is None or not layer.blobs:
                continue
            if len(src.blobs) != len(layer.blobs):
                raise WeightsError(f"layer '{layer.name}' has {len(layer.blobs)} blobs here and "
                                   f"{len(src.blobs)} in the net it shares with")
            for j, (mine, theirs) in enumerate(zip(layer.blobs, src.blobs)):
                if mine.shape != theirs.shape:
                    raise WeightsError(f"layer '{layer.name}' blob {j}: shape {mine.shape} here, "
                                       f"{theirs.shape} in the net it shares with")
                layer.blobs[j] = theirs
            self.params[layer.name] = layer.blobs

    def copy_from(self, weights) -> list[str]:
        """Load weights by layer name from a .caffemodel (or NetParameter); returns the names of
        source layers that matched nothing here."""
        path = "<NetParameter>" if isinstance(weights, pb.NetParameter) else os.fspath(weights)
        ignored, loaded = [], set()
        source = self._weights_in(weights, path)
        if not any(arrays for _, arrays in source):
            raise WeightsError(f"{path}: holds no weights (no layer with blobs)")
        for name, arrays in source:
            target = self.layer_dict.get(name)
            if target is None:
                if arrays:
                    ignored.append(name)
                continue
            if len(arrays) != len(target.blobs):
                raise WeightsError(f"{path}: layer '{name}' has {len(arrays)} blobs in the "
                                   f"file but {len(target.blobs)} in the net")
            for j, (values, blob) in enumerate(zip(arrays, target.blobs)):
                if values.shape != blob.shape:
                    raise WeightsError(f"{path}: layer '{name}' blob {j} has shape "
                                       f"{values.shape} in the file but {blob.shape} in the net")
                blob.data[...] = values
            loaded.add(name)
        #: layers with parameters that the last copy_from left untouched
        self.weights_missing = [l.name for l in self.layers if l.blobs and l.name not in loaded]
        if not loaded:
            raise WeightsError(f"{path}: none of its layers ({', '.join(ignored[:5])}"
                               f"{', ...' if len(ignored) > 5 else ''}) is in this net: no "
                               f"weights were loaded")
        return ignored

    def _weights_in(self, weights, path):
        """(layer name, [arrays]) from a NetParameter, .caffemodel (V1 or V2) or .caffemodel.h5."""
        if not isinstance(weights, pb.NetParameter) and is_hdf5(path):
            return read_weights_h5(path)
        source = weights if isinstance(weights, pb.NetParameter) else \
            read_binary(weights, pb.NetParameter())
        out = []
        for src in list(source.layer) + list(source.layers):
            if isinstance(src.name, bytes):  # (protobuf hands back what is not UTF-8 as bytes)
                raise WeightsError(f"{path}: a layer's name is not UTF-8 text ({src.name[:40]!r}):"
                                   f" the file is damaged")
            arrays = []
            for j, proto in enumerate(src.blobs):
                try:
                    values = proto_array(proto, self.dtype)
                except ValueError as e:
                    raise WeightsError(f"{path}: layer '{src.name}' blob {j}: {e}") from None
                target = self.layer_dict.get(src.name)
                if target and j < len(target.blobs) and not proto.HasField("shape") and \
                        values.size == target.blobs[j].count and \
                        _legacy_fits(values.shape, target.blobs[j].shape):
                    values = values.reshape(target.blobs[j].shape)  # legacy 4-d num/c/h/w
                arrays.append(values)
            out.append((src.name, arrays))
        return out

    def to_proto(self, write_diff: bool = False) -> pb.NetParameter:
        """The net with its learned blobs, as Caffe writes a .caffemodel (splits left out)."""
        out = pb.NetParameter(name=self.name)
        for spec, blobs in self._saved_layers():
            lp = out.layer.add()
            lp.CopyFrom(spec)
            for blob in blobs:
                lp.blobs.append(blob.to_proto(write_diff))
        return out

    def _saved_layers(self) -> list[tuple[pb.LayerParameter, list]]:
        """(spec without blobs, learned blobs) of each layer a .caffemodel holds."""
        out = []
        for i, layer in enumerate(self.layers):
            if self._origin[i] is None and layer.type == "Split":
                continue
            lp = pb.LayerParameter()
            lp.CopyFrom(layer.spec)
            del lp.blobs[:]
            out.append((lp, list(layer.blobs)))
        return out

    def save_hdf5(self, path) -> None:
        """pycaffe: the learned blobs in Caffe's HDF5 layout (data/<layer>/<index>)."""
        write_weights_h5(os.fspath(path), [(l.name, l.blobs) for l in self.layers if l.blobs])

    def load_hdf5(self, path) -> None:
        """pycaffe: load learned blobs written by save_hdf5 (or a .caffemodel.h5)."""
        path = os.fspath(path)
        if not is_hdf5(path):
            raise WeightsError(f"{path}: not an HDF5 file (load_hdf5 reads what save_hdf5 "
                               f"writes; copy_from reads .caffemodel files)")
        self.copy_from(path)

    def save(self, path) -> None:
        """Write the learned blobs: HDF5 when the name ends in .h5, else a binary .caffemodel."""
        path = os.fspath(path)
        if path.endswith(".h5"):
            self.save_hdf5(path)
        else:  # protobuf's bytes, written from the arrays (wire.py: no float objects)
            write_atomic(path, net_chunks(pb.NetParameter(name=self.name), self._saved_layers()))

    # -- state for exact resume ------------------------------------------------------------------
    def layer_states(self) -> dict:
        return {l.name: s for l in self.layers if (s := l.state())}

    def set_layer_states(self, states: dict) -> None:
        for name, state in states.items():
            if name in self.layer_dict:
                self.layer_dict[name].set_state(state)

    def __repr__(self) -> str:
        return f"<Net '{self.name}' phase={'TRAIN' if self.phase == TRAIN else 'TEST'} " \
               f"{len(self.layers)} layers on {self.device}>"


def _unique(names: list[str]) -> list[str]:
    return list(dict.fromkeys(names))


def _padded(arrays: dict, start: int, batch: int) -> dict:
    """Items start..start+batch of each array, zero-padded to a whole batch (pycaffe)."""
    out = {}
    for name, values in arrays.items():
        part = np.asarray(values[start:start + batch])
        if len(part) < batch:
            part = np.concatenate([part, np.zeros((batch - len(part), *part.shape[1:]),
                                                  dtype=part.dtype)])
        out[name] = part
    return out


def _legacy_fits(legacy: tuple, shape: tuple) -> bool:
    """Caffe's Blob::ShapeEquals for a legacy num/channels/height/width blob: its dims are the
    shape padded with leading 1s to four axes (a blob of the right count but other dims is
    refused). A blob with only values and no dims fits any shape of its count."""
    if len(legacy) != 4:
        return True
    return len(shape) <= 4 and tuple(legacy) == (1,) * (4 - len(shape)) + tuple(shape)
