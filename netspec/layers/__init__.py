"""Built-in layer families; importing this package registers them all."""
from . import common, data, loss, neuron, normalization, python, utility, vision  # noqa: F401
from .base import Layer, LayerSetupError  # noqa: F401
