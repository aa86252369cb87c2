"""`netspec export`: a net with its weights as an ONNX model, with Caffe's names and semantics.

Every layer type with a faithful ONNX form has a converter (one module per layer family, as
in netspec/layers); a layer without one (Python, data layers other than Input, losses) stops
the export with one line naming it, before anything is written. Needs `pip install
netspec[onnx]`."""
from __future__ import annotations

import os
from typing import Callable

from ..errors import NetspecError, SpecError
from ..spec import write_atomic

#: layer type -> converter(g, layer, bottoms, tops): writes the layer's nodes into the
#: OnnxGraph g, reading ONNX value names `bottoms`; the last node of each top writes `tops[j]`
CONVERTERS: dict[str, Callable] = {}
#: why a registered type has no ONNX form (named in the error)
NO_FORM = {
    "Python": "its forward is arbitrary Python code",
    "HDF5Output": "it writes files",
    "Data": "it reads a database", "ImageData": "it reads image files",
    "HDF5Data": "it reads HDF5 files", "MemoryData": "it reads arrays handed to the net",
    "DummyData": "it generates data (use an Input layer)",
}
DEFAULT_OPSET = 17
MIN_OPSET = 13
PROTOBUF_LIMIT = 2**31 - 2**20  # one serialized message, with room for the graph itself;
#                                 bigger weights go to an external data file


class ExportError(SpecError):
    """A net that cannot be written as ONNX (names the layer, file and line)."""


def converter(*types: str):
    def register(fn):
        for t in types:
            CONVERTERS[t] = fn
        return fn
    return register


def _load_converters() -> None:
    from . import neuron, normalization, utility, vision  # noqa: F401  (they register)


def _onnx():
    try:
        import onnx
    except ImportError:
        raise NetspecError("ONNX export needs the onnx package: pip install 'netspec[onnx]'") \
            from None
    return onnx


def to_onnx(net, *, opset: int = DEFAULT_OPSET, dynamic_batch: bool = False):
    """The net (its current input shapes and weights, in its phase) as an onnx.ModelProto."""
    onnx = _onnx()
    from onnx import helper

    from .graph import FLOAT, OnnxGraph
    _load_converters()
    if not MIN_OPSET <= opset <= onnx.defs.onnx_opset_version():
        raise NetspecError(f"--opset must be {MIN_OPSET} to {onnx.defs.onnx_opset_version()} "
                           f"(the installed onnx's newest), got {opset}")
    _check_convertible(net)

    names, final = _value_names(net)
    shapes = {}
    for i, layer in enumerate(net.layers):
        for name, blob in zip(names[i][1], net.top_ids[i]):
            shapes[name] = tuple(blob.shape)
    g = OnnxGraph(opset, dynamic_batch, shapes)
    for taken in {n for _, tops in names for n in tops}:
        g.reserve(taken)
    inputs = []
    for i, layer in enumerate(net.layers):
        bottoms, tops = names[i]
        g.start_layer(layer.name)
        if layer.type == "Input":
            for top in tops:
                inputs.append(_value_info(helper, FLOAT, top, g.shape(top), dynamic_batch))
            continue
        try:
            CONVERTERS[layer.type](g, layer, bottoms, tops)
        except ExportError as e:
            raise net._error(i, e.message, cls=ExportError) from None
    batched = {i.name for i in inputs}  # values computed from an input carry its batch axis
    for node in g.nodes:
        if any(name in batched for name in node.input):
            batched.update(node.output)
    outputs = [_value_info(helper, FLOAT, final[o], g.shape(final[o]), dynamic_batch,
                           keep_batch=final[o] in batched and bool(g.shape(final[o])))
               for o in net.outputs]
    graph = helper.make_graph(g.nodes, net.name or "net", inputs, outputs, g.initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)],
                              producer_name="netspec", producer_version=_version())
    model.ir_version = min(model.ir_version, _ir_version_for(onnx, opset))
    return model


def export_onnx(net, path, *, opset: int = DEFAULT_OPSET, batch: int | str | None = None):
    """Write the net as ONNX to `path`: checked (onnx.checker with full shape inference), then
    written whole or not at all (weights past protobuf's 2 GiB in `<path>.data` beside it). `batch`: an int re-shapes the inputs to that batch first;
    "dynamic" makes axis 0 of every input and output symbolic ("N")."""
    onnx = _onnx()
    dynamic = batch == "dynamic"
    saved = None
    if isinstance(batch, int) and not isinstance(batch, bool):
        if batch < 1:
            raise NetspecError(f"--batch must be a positive number or 'dynamic', got {batch}")
        saved = set_batch(net, batch)
    elif batch not in (None, "dynamic"):
        raise NetspecError(f"--batch must be a positive number or 'dynamic', got {batch!r}")
    try:
        model = to_onnx(net, opset=opset, dynamic_batch=dynamic)
    finally:
        if saved is not None:
            _restore_shapes(net, saved)
    path = os.fspath(path)
    weight_bytes = sum(len(t.raw_data) for t in model.graph.initializer)
    try:
        if weight_bytes >= PROTOBUF_LIMIT:
            _write_with_external_weights(onnx, model, path)
        else:
            _check(onnx, model)
            write_atomic(path, model.SerializeToString())
    except OSError as e:
        raise NetspecError(f"cannot write {path}: {e.strerror or e}") from None
    return model


def _check(onnx, model) -> None:
    """onnx.checker with full shape inference (a model, or the path of a big one)."""
    try:
        onnx.checker.check_model(model, full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as e:
        raise NetspecError(f"the exported model fails onnx.checker: {str(e).splitlines()[0]}") \
            from None


def _write_with_external_weights(onnx, model, path: str) -> None:
    """Past protobuf's 2 GiB the weights go to `<file>.data` beside the model (ONNX's external
    data); both are written in a temporary folder, checked there, then moved into place."""
    import shutil
    import tempfile
    folder, name = os.path.split(os.path.abspath(path))
    staging = tempfile.mkdtemp(prefix=".netspec-export-", dir=folder)
    try:
        staged = os.path.join(staging, name)
        onnx.save_model(model, staged, save_as_external_data=True,
                        all_tensors_to_one_file=True, location=f"{name}.data",
                        size_threshold=1024)
        _check(onnx, staged)
        os.replace(f"{staged}.data", os.path.join(folder, f"{name}.data"))
        os.replace(staged, path)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


# -- helpers ------------------------------------------------------------------------------------
def check_spec(spec, phase: int) -> None:
    """Stop on the first layer without an ONNX form before the net is built (a train_val
    net's data layer would otherwise fail first on its missing database)."""
    from ..graph import phase_layers
    param, source, origins = phase_layers(spec, phase)
    for where, lp in zip(origins, param.layer):
        why = _no_form(lp.type)
        if why:
            raise source.error(f"{lp.type} '{lp.name}': cannot be exported to ONNX: {why}",
                               where, lp.name, cls=ExportError)


def _check_convertible(net) -> None:
    for i, layer in enumerate(net.layers):
        why = _no_form(layer.type)
        if why:
            raise net._error(i, f"cannot be exported to ONNX: {why}", cls=ExportError)


def _no_form(layer_type: str) -> str | None:
    """Why `layer_type` cannot be exported, or None if it can."""
    _load_converters()
    if layer_type in CONVERTERS or layer_type == "Input":
        return None
    from ..registry import layer_types
    cls = layer_types().get(layer_type)
    if cls is not None and (cls.is_loss or layer_type == "Accuracy"):
        return "losses and accuracy belong to training nets (export the deploy net)"
    return NO_FORM.get(layer_type, "netspec has no ONNX form for this type")


def _value_names(net) -> tuple[list, dict]:
    """ONNX value names per layer, (bottoms, tops), and each blob's last version's name.

    ONNX values are written once, Caffe blobs can be overwritten in place: the last version of
    a blob (and every net input) keeps the blob's name, an earlier version is `blob@layer`
    after the layer that wrote it."""
    last_writer = {}
    for i, tops in enumerate(net.layer_tops):
        for t in tops:
            last_writer[t] = i
    current: dict[str, str] = {}
    per_layer = []
    for i, (bottoms, tops) in enumerate(zip(net.layer_bottoms, net.layer_tops)):
        ins = [current[b] for b in bottoms]
        outs = []
        for t in tops:
            first = t not in current
            name = t if (first and net.layers[i].type == "Input") or \
                (last_writer[t] == i and not (t in net.inputs and not first)) \
                else f"{t}@{net.layers[i].name}"
            current[t] = name
            outs.append(name)
        per_layer.append((ins, outs))
    return per_layer, current


def _value_info(helper, elem_type, name, shape, dynamic, keep_batch=True):
    dims = list(shape)
    if dynamic and keep_batch and dims:
        dims[0] = "N"
    return helper.make_tensor_value_info(name, elem_type, dims)


def set_batch(net, batch: int) -> dict:
    """Give every input of the net batch `batch` and reshape the net; returns the shapes it
    had, for _restore_shapes."""
    saved = {name: tuple(net.blobs[name].shape) for name in net.inputs}
    for name in net.inputs:
        shape = saved[name]
        if not shape:
            raise NetspecError(f"input '{name}' is a scalar: it has no batch axis to set")
        net.blobs[name].reshape(batch, *shape[1:])
    net.reshape()
    return saved


def _restore_shapes(net, saved: dict) -> None:
    for name, shape in saved.items():
        net.blobs[name].reshape(*shape)
    net.reshape()


def _ir_version_for(onnx, opset: int) -> int:
    """The oldest IR version that carries `opset`, so older runtimes load what they can run."""
    for row in onnx.helper.VERSION_TABLE:  # (release, IR version, opset, ...), oldest first
        if row[2] >= opset:
            return row[1]
    return onnx.IR_VERSION


def _version() -> str:
    from .. import __version__
    return __version__


from .check import compare_with_onnxruntime  # noqa: E402  (the package's API too)
