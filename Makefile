# The two commands of the README. Both are safe to re-run; each needs only python3.11 with pip.
PYTHON ?= python3
VENV   ?= .venv
PY      = $(VENV)/bin/python
NETSPEC = $(VENV)/bin/netspec

.PHONY: demo test install install-test proto bench clean

demo: install data/mnist/.ready  ## install, fetch MNIST, train LeNet (10,000 iterations)
	$(NETSPEC) train models/lenet/lenet_solver.prototxt

test: install-test data/mnist/.ready  ## install test extras, run the whole suite
	@echo "device conformance (every layer case on cpu, torch-cpu, and cuda / mps where present):"
	$(PY) -m pytest -q tests/test_devices.py
	$(PY) -m pytest -q --ignore=tests/test_devices.py

# setuptools prints a boxed notice on every editable install ("Editable installation.");
# it is not a problem here, and it hid real messages
PIP_QUIET = PYTHONWARNINGS="ignore:Editable installation:Warning"

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PIP_QUIET) $(PY) -m pip install -q -e '.[tools]'
	@command -v dot >/dev/null || { command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ] && \
	  { apt-get install -y -q graphviz >/dev/null 2>&1 || \
	    { apt-get update -q >/dev/null && apt-get install -y -q graphviz >/dev/null; }; }; } || \
	  echo "note: Graphviz's dot is not installed: netspec draw can still write .dot files"
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed
	$(PIP_QUIET) $(PY) -m pip install -q -e '.[test,bench,gpu,onnx,mpi]'
	touch $@

install: $(VENV)/.installed
install-test: $(VENV)/.installed-test

data/mnist/.ready: $(VENV)/.installed
	$(NETSPEC) data get mnist --dir data/mnist
	touch $@

proto: install-test  ## regenerate netspec/proto/netspec_pb2.py from protos/netspec.proto
	$(PY) -m grpc_tools.protoc -Iprotos --python_out=netspec/proto protos/netspec.proto

bench: install-test  ## training and inference vs PyTorch CPU and OpenCV (about 4 minutes)
	$(PY) benchmarks/suite.py

clean:
	rm -rf $(VENV) build *.egg-info
