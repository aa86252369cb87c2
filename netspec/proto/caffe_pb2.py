"""pycaffe's module name for the schema: `from netspec.proto import caffe_pb2` gives the same
module as netspec_pb2 (the same classes), so ported scripts keep their imports."""
import sys

from . import netspec_pb2

sys.modules[__name__] = netspec_pb2
