"""netspec's direct convolution kernels (kernels/direct.py) against its im2col + GEMM path, pass
by pass, on the convolutions of cifar10_quick, LeNet, CaffeNet and ResNet-50.

    python benchmarks/direct_conv.py [--threads N]

Prints milliseconds per forward and per backward (both gradients) of a training layer for
both paths (best of three) and checks they agree; "passes" names those the layer runs direct
(forward: v by the windows kernel, f by the rows kernel, p by the planes kernel; input
gradient: v windows, s windows added where they lie, x rows; weight gradient: v windows,
w tile sums; '-' for im2col + GEMM). The thresholds in
layers/vision.py (DIRECT_*) come from figures like these."""
from __future__ import annotations

import argparse
import time

import netspec  # noqa: F401  (before numpy: thread settings)
import numpy as np

from netspec.blob import Blob
from netspec.kernels.cpu import conv as cpu_conv
from netspec.layers import vision
from netspec.proto import netspec_pb2 as pb
from netspec.spec import parse_text

#: name, input shape, filters, kernel, pad, stride
LAYERS = [
    ("cifar10_quick conv1", (100, 3, 32, 32), 32, 5, 2, 1),
    ("cifar10_quick conv2", (100, 32, 16, 16), 32, 5, 2, 1),
    ("cifar10_quick conv3", (100, 32, 8, 8), 64, 5, 2, 1),
    ("LeNet conv1", (64, 1, 28, 28), 20, 5, 0, 1),
    ("LeNet conv2", (64, 20, 12, 12), 50, 5, 0, 1),
    ("ResNet-50 res2 3x3, batch 1", (1, 64, 56, 56), 64, 3, 1, 1),
    ("ResNet-50 res4 3x3, batch 1", (1, 256, 14, 14), 256, 3, 1, 1),
    ("CaffeNet conv3, batch 1", (1, 256, 13, 13), 384, 3, 1, 1),
]


def layer_for(shape, filters, kernel, pad, stride, direct):
    cpu_conv.DIRECT = direct
    spec = parse_text(f'name: "c" type: "Convolution" convolution_param {{ num_output: {filters} '
                      f'kernel_size: {kernel} pad: {pad} stride: {stride} '
                      f'weight_filler {{ type: "gaussian" std: 0.1 }} }}', pb.LayerParameter())
    layer = vision.Convolution(spec, 0, np.float32, np.random.default_rng(0))
    bottom, top = [Blob(shape, np.float32)], [Blob((), np.float32)]
    bottom[0].data[...] = np.random.default_rng(1).standard_normal(shape)
    layer.setup(bottom, top)
    cpu_conv.DIRECT = True
    return layer, bottom, top


def best_ms(fn, seconds=0.3):
    fn()
    times = []
    for _ in range(3):
        start, runs = time.perf_counter(), 0
        while runs < 2 or time.perf_counter() - start < seconds / 3:
            fn()
            runs += 1
        times.append((time.perf_counter() - start) / runs * 1e3)
    return min(times)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()
    netspec.set_threads(args.threads)
    print(f"{'layer':30s} {'passes':>6s} {'fwd direct':>10s} {'columns':>8s} "
          f"{'bwd direct':>10s} {'columns':>8s}")
    for name, shape, filters, kernel, pad, stride in LAYERS:
        results = {}
        for direct in (True, False):
            layer, bottom, top = layer_for(shape, filters, kernel, pad, stride, direct)
            top[0].diff[...] = np.random.default_rng(2).standard_normal(top[0].shape)
            def forward():
                layer.forward(bottom, top)

            def backward():
                layer.backward(top, [True], bottom)
            fwd, bwd = best_ms(forward), best_ms(backward)
            layer.blobs[0].diff[...] = 0
            forward()
            backward()
            results[direct] = (fwd, bwd, top[0].data.copy(), bottom[0].diff.copy(),
                               layer.blobs[0].diff.copy(),
                               ("v" if layer.plan.window_forward else
                                "f" if layer.plan.direct_forward else
                                "p" if layer.plan.plane_forward else "-",
                                "v" if layer.plan.window_input_grad else
                                "s" if layer.plan.scatter_input_grad else
                                "x" if layer.plan.direct_input_grad else "-",
                                "v" if layer.plan.window_weight_grad else
                                "w" if layer.plan.direct_weight_grad else "-"))
        for a, b in zip(results[True][2:5], results[False][2:5]):
            np.testing.assert_allclose(a, b, rtol=2e-3, atol=2e-3 * np.abs(b).max())
        flags = "".join(results[True][5])
        print(f"{name:30s} {flags:>6s} {results[True][0]:10.2f} {results[False][0]:8.2f} "
              f"{results[True][1]:10.2f} {results[False][1]:8.2f}")


if __name__ == "__main__":
    main()
