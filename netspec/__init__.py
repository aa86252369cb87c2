"""netspec: Caffe's declarative deep-learning workflow in Python, with a pycaffe-shaped API."""
from .blob import Blob
from .errors import DataError, NetspecError, SpecError, WeightsError
from .layers import Layer
from .net import TEST, TRAIN, Net
from .registry import layer_types, register_layer

__version__ = "0.1.0"

__all__ = ["Blob", "Layer", "Net", "TRAIN", "TEST", "register_layer", "layer_types",
           "get_solver", "SGDSolver", "NetspecError", "SpecError", "DataError",
           "WeightsError"]


def __getattr__(name):
    # solvers import the net; loaded lazily to keep `import netspec` light
    if name in ("get_solver", "SGDSolver", "Solver"):
        from . import solvers
        return getattr(solvers, name)
    raise AttributeError(name)
