"""`type: "Python"`: a layer written by the user in Python, loaded as pycaffe loads it from
python_param { module layer param_str }. The class needs setup / reshape / forward /
backward(top, propagate_down, bottom); it may subclass netspec.Layer or be a plain class."""
from __future__ import annotations

import importlib
import sys
from contextvars import ContextVar

import numpy as np

from ..registry import register_layer
from .base import BlobList, Layer, LayerSetupError


#: the folder of the net file being built (Net sets it while it builds its layers)
spec_folder: ContextVar[str | None] = ContextVar("spec_folder", default=None)


def import_user_module(name: str):
    """The module a spec names: from sys.path (PYTHONPATH, installed packages), else from the
    spec file's own folder. Never from the working directory unless it is on sys.path: a spec
    runs the code it names, and only code the user placed there on purpose."""
    folder = spec_folder.get()
    added = folder is not None and folder not in sys.path
    if added:
        sys.path.append(folder)
    try:
        return importlib.import_module(name)
    finally:
        if added:
            sys.path.remove(folder)


@register_layer("Python")
class Python(Layer):
    """Runs a user's layer class; its `blobs` are learnable parameters like any other."""
    bottoms = (0, None)
    tops = (0, None)
    summary = "user layer in Python (python_param { module layer param_str })"

    def __init__(self, spec, phase=0, dtype=np.float32, rng=None):
        super().__init__(spec, phase, dtype, rng)
        p = spec.python_param
        if not p.module or not p.layer:
            raise LayerSetupError("python_param needs module and layer", field="module")
        try:
            module = import_user_module(p.module)
        except ImportError as e:
            raise LayerSetupError(f"cannot import module '{p.module}': {e}",
                                  field="module") from None
        cls = getattr(module, p.layer, None)
        if cls is None:
            raise LayerSetupError(f"module '{p.module}' has no class '{p.layer}'", field="layer")
        self.impl = cls(spec, phase, self.dtype, self.rng) if issubclass(cls, Layer) else cls()
        self.impl.param_str = p.param_str
        self.impl.phase = phase
        self.impl.layer_param = spec
        if not isinstance(getattr(self.impl, "blobs", None), BlobList):
            self.impl.blobs = BlobList(self.dtype, getattr(self.impl, "blobs", ()))
        self.blobs = self.impl.blobs

    def layer_setup(self, bottom, top):
        self.impl.setup(bottom, top)
        self.blobs = self.impl.blobs

    def reshape(self, bottom, top):
        self.impl.reshape(bottom, top)

    def forward(self, bottom, top):
        self.impl.forward(bottom, top)

    def backward(self, top, propagate_down, bottom):
        self.impl.backward(top, propagate_down, bottom)
