"""OnnxGraph: what a layer converter writes into (nodes, initializers, unique names, shapes).

Converters see Caffe's shapes as netspec computed them. With a dynamic batch, axis 0 of
every input is symbolic, so a shape written into the graph (Reshape) says "keep axis 0"
instead of its number."""
from __future__ import annotations

import numpy as np
from onnx import TensorProto, helper, numpy_helper


class OnnxGraph:
    def __init__(self, opset: int, dynamic_batch: bool, shapes: dict[str, tuple[int, ...]]):
        self.opset = opset
        self.dynamic_batch = dynamic_batch
        self.nodes: list = []
        self.initializers: list = []
        self._weights: dict[int, str] = {}  # id(array) -> initializer name (shared blobs once)
        self._taken: set[str] = set()  # value names
        self._node_names: set[str] = set()
        self._shapes = shapes  # ONNX value name -> Caffe shape (tops and inputs)
        self.layer = ""  # the layer being converted, for node and value names
        self._nodes_in_layer = 0

    # -- names -------------------------------------------------------------------------------
    def reserve(self, name: str) -> None:
        self._taken.add(name)

    def unique(self, name: str) -> str:
        """A value name: `name`, or `name_2`, `name_3`... if it is taken; then taken."""
        return _fresh(name, self._taken)

    def start_layer(self, name: str) -> None:
        self.layer, self._nodes_in_layer = name, 0

    def shape(self, value: str) -> tuple[int, ...]:
        return self._shapes[value]

    def set_shape(self, value: str, shape) -> None:
        self._shapes[value] = tuple(int(d) for d in shape)

    # -- building ----------------------------------------------------------------------------
    def node(self, op: str, inputs: list[str], output: str | None = None, *, outputs=None,
             **attrs) -> str:
        """Append one node of this layer (named after it); returns its (first) output."""
        if outputs is None:
            outputs = [output or self.unique(f"{self.layer}/{op}")]
        self._nodes_in_layer += 1
        name = _fresh(self.layer if self._nodes_in_layer == 1 else f"{self.layer}/{op}",
                      self._node_names)
        self.nodes.append(helper.make_node(op, inputs, outputs, name=name, **attrs))
        return outputs[0]

    def const(self, value, name: str | None = None, dtype=np.float32) -> str:
        """An initializer holding `value` (float32 unless dtype says otherwise)."""
        array = np.asarray(value, dtype=dtype)
        name = self.unique(name or f"{self.layer}/const")
        self.initializers.append(numpy_helper.from_array(array, name))
        return name

    def ints(self, values) -> str:
        return self.const(list(values), dtype=np.int64)

    def weight(self, blob_data: np.ndarray, name: str, transform=None) -> str:
        """A learned blob as an initializer named after it (Caffe's `layer.index`); a blob two
        layers share is written once. `transform` maps the stored values first (same key)."""
        key = id(blob_data)
        if key not in self._weights:
            values = blob_data if transform is None else transform(blob_data)
            self._weights[key] = self.const(values, name)
        return self._weights[key]

    def param(self, layer, index: int, transform=None) -> str:
        """Learned blob `index` of `layer`, named as Caffe's ParamSpec names it (shared
        weights) or `layer.index` (pycaffe's net.params[layer][index])."""
        specs = layer.spec.param
        name = specs[index].name if index < len(specs) and specs[index].name else \
            f"{layer.name}.{index}"
        return self.weight(layer.blobs[index].data, name, transform)

    # -- shared patterns ---------------------------------------------------------------------
    def reshape(self, x: str, shape, output: str | None = None, *, keep_batch: bool = True) -> str:
        """Reshape to Caffe's concrete `shape`; with a dynamic batch and `keep_batch`, axis 0
        is copied from the input (0) rather than written as a number."""
        dims = [int(d) for d in shape]
        if self.dynamic_batch and keep_batch and dims:
            dims[0] = 0
        return self.node("Reshape", [x, self.ints(dims)], output)

    def reduce(self, op: str, x: str, axes, output: str | None = None, keepdims: int = 1) -> str:
        """ReduceSum/Mean/... over `axes`: an input from opset 18 (ReduceSum: 13), else an
        attribute."""
        axes = [int(a) for a in axes]
        if self.opset >= 18 or op == "ReduceSum":
            return self.node(op, [x, self.ints(axes)], output, keepdims=keepdims)
        return self.node(op, [x], output, axes=axes, keepdims=keepdims)

    def scaled(self, x: str, scale: float = 1.0, shift: float = 0.0,
               output: str | None = None) -> str:
        """shift + scale x, skipping the identity steps (output named only if a node is made)."""
        if scale != 1.0:
            x = self.node("Mul", [x, self.const(scale)], output if shift == 0.0 else None)
        if shift != 0.0:
            x = self.node("Add", [x, self.const(shift)], output)
        return x

    def finish(self, x: str, output: str) -> str:
        """Make sure the layer's result is named `output` (an Identity if it is not yet)."""
        return x if x == output else self.node("Identity", [x], output)


def _fresh(name: str, taken: set[str]) -> str:
    candidate, k = name, 1
    while candidate in taken:
        k += 1
        candidate = f"{name}_{k}"
    taken.add(candidate)
    return candidate


FLOAT = TensorProto.FLOAT
