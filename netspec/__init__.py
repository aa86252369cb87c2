"""netspec: Caffe's declarative deep-learning workflow in Python, with a pycaffe-shaped API."""
from .threads import prepare_environment, set_threads

prepare_environment()  # before numpy loads OpenBLAS (see threads.py)

from . import layers, params  # noqa: E402
from .blob import Blob  # noqa: E402
from .compat import set_device, set_mode_cpu, set_mode_gpu, set_random_seed
from .dsl import NetSpec
from .errors import DataError, NetspecError, SpecError, WeightsError
from .export import export_onnx
from .layers import Layer
from .net import TEST, TRAIN, Net
from .registry import layer_types, register_layer

__version__ = "0.1.0"

_SOLVER_NAMES = ("get_solver", "Solver", "SGDSolver", "NesterovSolver", "AdaGradSolver",
                 "RMSPropSolver", "AdaDeltaSolver", "AdamSolver")

__all__ = ["Blob", "Layer", "Net", "NetSpec", "layers", "params", "TRAIN", "TEST", "register_layer", "layer_types",
           "NetspecError", "SpecError", "DataError", "WeightsError", "set_mode_cpu",
           "set_mode_gpu", "set_device", "set_random_seed", "set_threads", "export_onnx",
           *_SOLVER_NAMES]


def __getattr__(name):
    # solvers import the net; loaded lazily to keep `import netspec` light
    if name in _SOLVER_NAMES:
        from . import solvers
        return getattr(solvers, name)
    raise AttributeError(name)
