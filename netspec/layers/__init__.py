"""Built-in layer families; importing this package registers them all."""
from . import common, data, files, loss, neuron, normalization, python, utility, vision  # noqa: F401
from .base import Layer, LayerSetupError  # noqa: F401


def __getattr__(name: str):
    """`from netspec import layers as L; L.Convolution(...)`: pycaffe's net_spec layer calls."""
    if name[:1].isupper():
        from ..dsl import layer
        return layer(name)
    raise AttributeError(name)
