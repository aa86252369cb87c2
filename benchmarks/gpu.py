"""netspec on a GPU against PyTorch on the same GPU, in one process (issue #30):

    python benchmarks/gpu.py [--device cuda] [--seconds 2] [--cases lenet-64,...]
                             [--compile lenet-256,...] [--json out.json]

Training (SGD, momentum 0.9, weight decay 5e-4): LeNet at batch 64 / 256 / 1024 and
cifar10_quick at 100 / 256. Inference: the model-zoo CaffeNet and ResNet-50 deploy nets at
batch 16 / 64, reading the output back (pycaffe's net.forward() does). Peers: PyTorch eager
(benchmarks/peers.py's mirror of the same net, the same weights) and, for the --compile cases,
torch.compile of the same mirror. Every peer gets the same seeded batches from host memory each
step, as a data layer would hand them over. Rates are images/s, the median of 3 timed windows,
each ended by a device synchronisation; the ratio is netspec / eager. `--device torch-cpu`
runs the same script on the CPU (a check that it works, not a figure)."""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from suite import batches, train_net_param  # noqa: E402

TRAIN_CASES = {"lenet-64": ("lenet", 64), "lenet-256": ("lenet", 256),
               "lenet-1024": ("lenet", 1024), "cifar10_quick-100": ("cifar10_quick", 100),
               "cifar10_quick-256": ("cifar10_quick", 256)}
INFER_CASES = {"caffenet-16": ("caffenet", 16), "caffenet-64": ("caffenet", 64),
               "resnet50-16": ("resnet50", 16), "resnet50-64": ("resnet50", 64)}
COMPILE = "lenet-256,cifar10_quick-256,caffenet-64,resnet50-64"


def rate(step, batch, seconds, sync, warmup=5):
    """images/s: the median of 3 windows of `seconds`, each closed by a synchronisation."""
    for i in range(warmup):
        step(i)
    sync()
    rates = []
    i = 0
    for _ in range(3):
        start, n = time.perf_counter(), 0
        while n < 3 or time.perf_counter() - start < seconds:
            step(i)
            i, n = i + 1, n + 1
        sync()
        rates.append(batch * n / (time.perf_counter() - start))
    return statistics.median(rates)


def train_param(case):
    name, batch = TRAIN_CASES[case]
    param = train_net_param(name)
    param.layer[0].input_param.shape[0].dim[0] = batch
    param.layer[0].input_param.shape[1].dim[0] = batch
    return param


def netspec_train(case, device, seconds):
    import netspec
    from netspec.device import running_on
    from netspec.proto import netspec_pb2 as pb
    solver = pb.SolverParameter(net_param=train_param(case), base_lr=0.01, momentum=0.9,
                                weight_decay=0.0005, lr_policy="fixed", max_iter=10 ** 9,
                                random_seed=1)
    s = netspec.get_solver(solver, device=device)
    data, label = s.net.blobs["data"], s.net.blobs["label"]
    xs, ys = batches(data.shape, 10)

    def step(i):
        data.data[...] = xs[i % len(xs)]  # host writes, copied over by the net (SyncedMemory)
        label.data[...] = ys[i % len(ys)]
        with running_on(s.device):
            s.net.clear_param_diffs()
            s.net.forward_backward()
            s.apply_update()
        s.iter += 1
    return rate(step, data.shape[0], seconds, s.device.synchronize)


def torch_train(case, device, seconds, compiled=False):
    import torch
    import netspec
    from peers import torch_training_step
    dev = netspec.device.resolve(device)
    net = netspec.Net(train_param(case), netspec.TRAIN, seed=1)
    train = torch_training_step(net, dev.torch, compiled)
    xs, ys = batches(net.blobs["data"].shape, 10)
    xs = [torch.from_numpy(x) for x in xs]
    ys = [torch.from_numpy(y).long() for y in ys]
    return rate(lambda i: train(xs[i % len(xs)], ys[i % len(ys)]), xs[0].shape[0], seconds,
                dev.synchronize)


def infer_model(case, folder):
    """Deploy prototxt + seeded .caffemodel, as the CPU suite writes them."""
    from suite import INFER, write_model
    name, batch = INFER_CASES[case]
    INFER[case] = (name, batch)
    return write_model(case, folder)


def netspec_infer(case, device, seconds, model):
    import netspec
    net = netspec.Net(model[0], netspec.TEST, weights=model[1], device=device)
    data = net.blobs["data"]
    xs, _ = batches(data.shape, 1000, count=4)

    def step(i):
        data.data[...] = xs[i % len(xs)]
        net.forward()  # the outputs, read back to the host
    return rate(step, data.shape[0], seconds, net.device.synchronize, warmup=3)


def torch_infer(case, device, seconds, model, compiled=False):
    import torch
    import netspec
    from peers import TorchMirror
    dev = netspec.device.resolve(device)
    net = netspec.Net(model[0], netspec.TEST, weights=model[1])
    mirror = TorchMirror(net, device=dev.torch)
    last = net.outputs[0]
    xs, _ = batches(net.blobs["data"].shape, 1000, count=4)
    xs = [torch.from_numpy(x) for x in xs]

    def run(x):
        return mirror.forward({"data": x})[last]
    fn = torch.compile(run) if compiled else run

    def step(i):
        with torch.inference_mode():
            fn(xs[i % len(xs)].to(dev.torch)).cpu()
    return rate(step, xs[0].shape[0], seconds, dev.synchronize, warmup=3)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--seconds", type=float, default=2.0)
    ap.add_argument("--cases", default=",".join([*TRAIN_CASES, *INFER_CASES]))
    ap.add_argument("--compile", default=COMPILE, help="cases that also run torch.compile")
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args()
    import tempfile
    import netspec
    device = netspec.device.resolve(args.device)
    print(f"device {device}", end="")
    if device.torch is not None and device.torch.type == "cuda":
        import torch
        print(f" ({torch.cuda.get_device_name(device.torch)}, torch {torch.__version__})",
              end="")
    print(flush=True)
    compiled = set(args.compile.split(",")) if args.compile else set()
    results = {}
    with tempfile.TemporaryDirectory() as folder:
        for case in args.cases.split(","):
            row = {}
            try:
                if case in TRAIN_CASES:
                    row["netspec"] = netspec_train(case, device, args.seconds)
                    row["eager"] = torch_train(case, device, args.seconds)
                    if case in compiled:
                        row["compile"] = torch_train(case, device, args.seconds, compiled=True)
                else:
                    model = infer_model(case, folder)
                    row["netspec"] = netspec_infer(case, device, args.seconds, model)
                    row["eager"] = torch_infer(case, device, args.seconds, model)
                    if case in compiled:
                        row["compile"] = torch_infer(case, device, args.seconds, model,
                                                     compiled=True)
            except Exception as e:  # one case failing must not lose the others' figures
                row["error"] = f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"
            results[case] = row
            figures = "  ".join(f"{k} {v:9.1f}" for k, v in row.items() if k != "error")
            ratio = (f"  netspec/eager {row['netspec'] / row['eager']:.2f}"
                     if "netspec" in row and "eager" in row else "")
            print(f"{case:<18} img/s  {figures}{ratio}  {row.get('error', '')}", flush=True)
            if args.json:
                Path(args.json).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
