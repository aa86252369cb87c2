"""`type: "Python"`: a layer written by the user in Python, loaded as pycaffe loads it from
python_param { module layer param_str }. The class needs setup / reshape / forward /
backward(top, propagate_down, bottom); it may subclass netspec.Layer or be a plain class."""
from __future__ import annotations

import importlib
import sys

import numpy as np

from ..registry import register_layer
from .base import Layer, LayerSetupError


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
        if "" not in sys.path:
            sys.path.insert(0, "")  # the working directory, as the caffe tool runs it
        try:
            module = importlib.import_module(p.module)
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
        if not hasattr(self.impl, "blobs"):
            self.impl.blobs = []
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
