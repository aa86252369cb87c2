"""Did the export keep the net's meaning? Run the ONNX model in onnxruntime beside netspec's
own forward and compare, output by output or blob by blob (`netspec export --check`, tests)."""
from __future__ import annotations

import os

from ..errors import NetspecError
from . import _onnx


def compare_with_onnxruntime(net, model, inputs: dict | None = None, *, seed: int = 0,
                             every_blob: bool = False) -> dict:
    """Run `model` (an onnx.ModelProto or a file) in onnxruntime and the net's own forward on
    the same inputs (`inputs`, else standard normal values of the net's input shapes). Per
    output (with every_blob: per blob, in the net's order, each blob's final value), the
    largest difference relative to the largest magnitude: max|onnx - netspec| / max|netspec|
    (inf if the shapes differ)."""
    try:
        import onnxruntime
    except ImportError:
        raise NetspecError("checking the export needs onnxruntime: pip install "
                           "'netspec[onnx]'") from None
    import tempfile

    import numpy as np
    onnx = _onnx()
    folder = None  # a file's folder: its external weights are found from there
    if not isinstance(model, onnx.ModelProto):
        folder = os.path.dirname(os.path.abspath(model))
        model = onnx.load(os.fspath(model), load_external_data=False)
    rng = np.random.default_rng(seed)
    if inputs is None:
        inputs = {n: rng.standard_normal(net.blobs[n].shape) for n in net.inputs}
    inputs = {n: np.asarray(v, dtype=np.float32) for n, v in inputs.items()}
    for name, value in inputs.items():
        net.blobs[name].reshape(*value.shape)
    net.reshape()
    net.forward(**inputs)
    names = [o.name for o in model.graph.output]
    if every_blob:
        model = _with_outputs(onnx, model, [n for n in net.blobs if n not in names])
        names = [o.name for o in model.graph.output]
    if folder is None:
        session = onnxruntime.InferenceSession(model.SerializeToString(),
                                               providers=["CPUExecutionProvider"])
    else:
        with tempfile.NamedTemporaryFile(dir=folder, suffix=".onnx") as f:
            f.write(model.SerializeToString())
            f.flush()
            session = onnxruntime.InferenceSession(f.name, providers=["CPUExecutionProvider"])
    got = dict(zip(names, session.run(names, inputs)))
    errors = {}
    for name in net.blobs:
        if name not in got:
            continue
        want = net.blobs[name].data
        if got[name].shape != want.shape:
            errors[name] = float("inf")
            continue
        scale = float(np.max(np.abs(want))) if want.size else 0.0
        diff = float(np.max(np.abs(got[name] - want))) if want.size else 0.0
        errors[name] = diff / scale if scale else diff
    return errors


def _with_outputs(onnx, model, names):
    """A copy of `model` that also outputs those of `names` that some node writes."""
    written = {o for node in model.graph.node for o in node.output}
    extra = onnx.ModelProto()
    extra.CopyFrom(model)
    for name in names:
        if name in written:
            extra.graph.output.append(onnx.helper.make_empty_tensor_value_info(name))
    return extra
