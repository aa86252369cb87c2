"""netspec: Caffe's declarative deep-learning workflow in Python, with a pycaffe-shaped API."""
from .threads import prepare_environment, set_threads

prepare_environment()  # before numpy loads OpenBLAS (see threads.py)

from . import io, layers, params  # noqa: E402
from .blob import Blob  # noqa: E402
from .classifier import Classifier
from .compat import (has_nccl, set_multiprocess, set_random_seed, set_solver_count,
                     set_solver_rank, solver_count, solver_rank)
from .device import DeviceError, set_device, set_mode_cpu, set_mode_gpu
from .detector import Detector
from .dsl import NetSpec, to_proto
from .errors import DataError, NetspecError, SpecError, WeightsError
from .export import export_onnx
from .layers import Layer
from .log import init_log, log
from .net import TEST, TRAIN, Net
from .registry import layer_type_list, layer_types, register_layer
from .timing import Timer

__version__ = "0.1.0"

_SOLVER_NAMES = ("get_solver", "Solver", "SGDSolver", "NesterovSolver", "AdaGradSolver",
                 "RMSPropSolver", "AdaDeltaSolver", "AdamSolver")

__all__ = ["Blob", "Layer", "Net", "NetSpec", "to_proto", "layers", "params", "io", "TRAIN",
           "TEST", "register_layer", "layer_types", "layer_type_list", "NetspecError",
           "SpecError", "DataError", "WeightsError", "set_mode_cpu", "set_mode_gpu",
           "set_device", "set_random_seed", "set_threads", "export_onnx", "Classifier",
           "Detector", "Timer", "init_log", "log", "has_nccl", "solver_count", "solver_rank",
           "set_solver_count", "set_solver_rank", "set_multiprocess", "DeviceError",
           *_SOLVER_NAMES]


def __getattr__(name):
    # solvers import the net; loaded lazily to keep `import netspec` light
    if name in _SOLVER_NAMES:
        from . import solvers
        return getattr(solvers, name)
    raise AttributeError(name)
