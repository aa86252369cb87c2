"""LeNet training throughput (images/s, batch 64): netspec vs PyTorch CPU, same process.

Both train the same net (Caffe's LeNet: conv 20x5x5, max pool 2/2, conv 50x5x5, max pool 2/2,
ip 500, ReLU, ip 10, softmax loss) with SGD (momentum 0.9, weight decay 5e-4) on the same
random batches, float32, on the same threads. Prints both rates and netspec / PyTorch.

    python benchmarks/lenet.py [--iterations 100] [--threads N]
"""
from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def netspec_rate(batches, labels, iterations):
    import netspec
    from netspec.proto import netspec_pb2 as pb
    from netspec.spec import read_text
    net_param = read_text(ROOT / "models" / "lenet" / "lenet.prototxt", pb.NetParameter())
    # deploy net + a label input and a loss, so it trains without a database
    net_param.layer[0].top.append("label")
    net_param.layer[0].input_param.shape.add().dim.append(64)
    del net_param.layer[-1]  # prob
    net_param.layer.add(name="loss", type="SoftmaxWithLoss", bottom=["ip2", "label"], top=["loss"])
    solver = pb.SolverParameter(net_param=net_param, base_lr=0.01, momentum=0.9,
                                weight_decay=0.0005, lr_policy="fixed", max_iter=iterations,
                                random_seed=1)
    s = netspec.get_solver(solver)

    def step(i):
        s.net.blobs["data"].data[...] = batches[i % len(batches)]
        s.net.blobs["label"].data[...] = labels[i % len(labels)]
        s.net.clear_param_diffs()
        s.net.forward_backward()
        s.apply_update()
        s.iter += 1
    return timed(step, iterations)


def torch_rate(batches, labels, iterations):
    import torch
    from torch import nn
    torch.manual_seed(1)
    model = nn.Sequential(nn.Conv2d(1, 20, 5), nn.MaxPool2d(2, 2), nn.Conv2d(20, 50, 5),
                          nn.MaxPool2d(2, 2), nn.Flatten(), nn.Linear(800, 500), nn.ReLU(),
                          nn.Linear(500, 10))
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=0.0005)
    loss_fn = nn.CrossEntropyLoss()
    xs = [torch.from_numpy(b) for b in batches]
    ys = [torch.from_numpy(l).long() for l in labels]

    def step(i):
        opt.zero_grad()
        loss_fn(model(xs[i % len(xs)]), ys[i % len(ys)]).backward()
        opt.step()
    return timed(step, iterations)


def timed(step, iterations, warmup=5):
    for i in range(warmup):
        step(i)
    start = time.perf_counter()
    for i in range(iterations):
        step(i)
    return 64 * iterations / (time.perf_counter() - start)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--iterations", type=int, default=100)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    args = ap.parse_args()
    import numpy as np
    import torch
    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    batches = [rng.random((64, 1, 28, 28), dtype=np.float32) for _ in range(10)]
    labels = [rng.integers(0, 10, 64).astype(np.float32) for _ in range(10)]
    ours = netspec_rate(batches, labels, args.iterations)
    theirs = torch_rate(batches, labels, args.iterations)
    print(f"LeNet training, batch 64, {args.iterations} iterations, {args.threads} threads")
    print(f"  netspec      {ours:10.1f} images/s")
    print(f"  PyTorch CPU  {theirs:10.1f} images/s  (torch {torch.__version__})")
    print(f"  ratio netspec / PyTorch = {ours / theirs:.3f}")


if __name__ == "__main__":
    main()
