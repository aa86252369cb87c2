"""netspec's CPU benchmark suite: training and inference against PyTorch CPU and OpenCV.

    python benchmarks/suite.py [--rounds 3] [--threads N] [--cases lenet,cifar10_quick,...]
                               [--busy] [--seconds 3]

Each measurement runs in a fresh process (a worker: `--worker CASE PEER`), peers alternating
within each round, all on the same net, the same weights and the same seeded random batches,
with the same thread count. Separate processes, because the peers' thread runtimes interfere
when loaded into one (PyTorch's OpenMP, numpy's OpenBLAS and numba's pool); alternation keeps
the VM's drift out of the ratios. Prints images/s per peer (median of the rounds), the median
of the per-round ratios, and each worker's peak RSS. --busy runs a busy-loop process beside
the workers (one core taken), to show behaviour under load.

Cases: lenet and cifar10_quick train (SGD, momentum 0.9, weight decay 5e-4, batch 64 / 100);
caffenet-1, caffenet-16, resnet50-1, resnet50-16 run the model-zoo deploy nets forward
(batch 1 / 16) from one .caffemodel, also against OpenCV's Caffe importer."""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TRAIN = {"lenet": ("models/lenet/lenet.prototxt", 64), "cifar10_quick":
         ("models/cifar10_quick/cifar10_quick.prototxt", 100)}
INFER = {"caffenet-1": ("caffenet", 1), "caffenet-16": ("caffenet", 16),
         "resnet50-1": ("resnet50", 1), "resnet50-16": ("resnet50", 16)}


# -- nets ----------------------------------------------------------------------------------------
def train_net_param(case):
    """The deploy net with a label input and a softmax loss in place of `prob`."""
    from netspec.proto import netspec_pb2 as pb
    from netspec.spec import read_text
    path, batch = TRAIN[case]
    param = read_text(ROOT / path, pb.NetParameter())
    data = param.layer[0]
    data.input_param.shape[0].dim[0] = batch
    data.top.append("label")
    data.input_param.shape.add().dim.append(batch)
    scores = param.layer[-1].bottom[0]
    del param.layer[-1]
    param.layer.add(name="loss", type="SoftmaxWithLoss", bottom=[scores, "label"], top=["loss"])
    return param


def deploy_net_param(case):
    sys.path.insert(0, str(ROOT / "models" / "zoo"))
    import make_zoo
    name, batch = INFER[case]
    return make_zoo.named(name, batch=batch)


def write_model(case, folder):
    """Deploy prototxt and a .caffemodel of seeded random weights (BatchNorm statistics set
    to mean 0, variance 1), shared by every peer."""
    from google.protobuf import text_format
    import numpy as np
    import netspec
    param = deploy_net_param(case)
    net = netspec.Net(param, netspec.TEST, seed=1)
    for layer in net.layers:
        if layer.type == "BatchNorm":
            layer.blobs[1].data[...] = 1
            layer.blobs[2].data[...] = 1
        elif layer.type == "Scale":
            layer.blobs[0].data[...] = 1 + 0.1 * np.random.default_rng(2).standard_normal(
                layer.blobs[0].shape)
    proto = Path(folder, f"{case}.prototxt")
    proto.write_text(text_format.MessageToString(param))
    weights = Path(folder, f"{case}.caffemodel")
    net.save(str(weights))
    return str(proto), str(weights)


# -- workers -------------------------------------------------------------------------------------
def batches(shape, classes, count=10):
    import numpy as np
    rng = np.random.default_rng(0)
    return ([rng.random(shape, dtype=np.float32) for _ in range(count)],
            [rng.integers(0, classes, shape[0]).astype(np.float32) for _ in range(count)])


def timed(step, batch, seconds, warmup):
    for i in range(warmup):
        step(i)
    start, i = time.perf_counter(), 0
    while i < 3 or time.perf_counter() - start < seconds:
        step(i)
        i += 1
    return batch * i / (time.perf_counter() - start)


def work_netspec(case, threads, seconds, model):
    import netspec
    netspec.set_threads(threads)
    if case in TRAIN:
        from netspec.proto import netspec_pb2 as pb
        solver = pb.SolverParameter(net_param=train_net_param(case), base_lr=0.01, momentum=0.9,
                                    weight_decay=0.0005, lr_policy="fixed", max_iter=10 ** 9,
                                    random_seed=1)
        s = netspec.get_solver(solver)
        data = s.net.blobs["data"]
        xs, ys = batches(data.shape, 10)

        def step(i):
            data.data[...] = xs[i % len(xs)]
            s.net.blobs["label"].data[...] = ys[i % len(ys)]
            s.net.clear_param_diffs()
            s.net.forward_backward()
            s.apply_update()
            s.iter += 1
        return timed(step, data.shape[0], seconds, 3)
    net = netspec.Net(model[0], netspec.TEST, weights=model[1])
    data = net.blobs["data"]
    xs, _ = batches(data.shape, 1000)

    def infer(i):
        data.data[...] = xs[i % len(xs)]
        net.forward()
    return timed(infer, data.shape[0], seconds, 2)


def work_torch(case, threads, seconds, model):
    import torch  # before netspec: PyTorch keeps its own OpenMP settings
    import netspec
    from peers import TorchMirror, torch_training_step
    torch.set_num_threads(threads)
    if case in TRAIN:
        net = netspec.Net(train_net_param(case), netspec.TRAIN, seed=1)
        train = torch_training_step(net)
        xs, ys = batches(net.blobs["data"].shape, 10)
        xs = [torch.from_numpy(x) for x in xs]
        ys = [torch.from_numpy(y).long() for y in ys]
        return timed(lambda i: train(xs[i % len(xs)], ys[i % len(ys)]), xs[0].shape[0],
                     seconds, 3)
    net = netspec.Net(model[0], netspec.TEST, weights=model[1])
    mirror = TorchMirror(net)
    xs, _ = batches(net.blobs["data"].shape, 1000)
    xs = [torch.from_numpy(x) for x in xs]

    def infer(i):
        with torch.inference_mode():
            mirror.forward({"data": xs[i % len(xs)]})
    return timed(infer, xs[0].shape[0], seconds, 2)


def work_opencv(case, threads, seconds, model):
    from peers import opencv_forward, opencv_net
    net = opencv_net(model[0], model[1], threads)
    _, batch = INFER[case]
    size = 227 if case.startswith("caffenet") else 224
    xs, _ = batches((batch, 3, size, size), 1000)
    return timed(lambda i: opencv_forward(net, xs[i % len(xs)]), batch, seconds, 2)


def worker(case, peer, threads, seconds, model):
    import resource
    sys.path.insert(0, str(Path(__file__).parent))
    rate = {"netspec": work_netspec, "torch": work_torch, "opencv": work_opencv}[peer](
        case, threads, seconds, model)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"rate": rate, "rss_mb": rss}))


# -- driver --------------------------------------------------------------------------------------
def run_worker(case, peer, args, model):
    cmd = [sys.executable, __file__, "--worker", case, peer, "--threads", str(args.threads),
           "--seconds", str(args.seconds)]
    if model:
        cmd += ["--model", *model]
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    if out.returncode:
        raise SystemExit(f"{case}/{peer} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    ap.add_argument("--cases", default=",".join([*TRAIN, *INFER]))
    ap.add_argument("--seconds", type=float, default=3.0, help="timed seconds per measurement")
    ap.add_argument("--busy", action="store_true", help="a busy-loop process beside the runs")
    ap.add_argument("--json", help="also write the results here")
    ap.add_argument("--worker", nargs=2, metavar=("CASE", "PEER"), help=argparse.SUPPRESS)
    ap.add_argument("--model", nargs=2, help=argparse.SUPPRESS)
    ap.add_argument("--write-model", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.write_model:
        return write_model(*args.write_model)
    if args.worker:
        return worker(*args.worker, args.threads, args.seconds, args.model)
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if args.busy else None
    results = {}
    try:
        with tempfile.TemporaryDirectory() as folder:
            for case in args.cases.split(","):
                model = None
                peers = ["netspec", "torch"]
                if case in INFER:  # written by a child: the driver's peak RSS stays small
                    subprocess.run([sys.executable, __file__, "--write-model", case, folder],
                                   check=True, cwd=ROOT)
                    model = [str(Path(folder, f"{case}.{ext}")) for ext in ("prototxt",
                                                                           "caffemodel")]
                    peers.append("opencv")
                runs = {p: [] for p in peers}
                for r in range(args.rounds):
                    for peer in peers[r % len(peers):] + peers[:r % len(peers)]:
                        runs[peer].append(run_worker(case, peer, args, model))
                results[case] = runs
                report(case, runs, args)
    finally:
        if busy:
            busy.kill()
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))


def report(case, runs, args):
    rates = {p: [r["rate"] for r in rs] for p, rs in runs.items()}
    line = [f"{case:<14}"]
    for p, rs in rates.items():
        rss = statistics.median(r["rss_mb"] for r in runs[p])
        line.append(f"{p} {statistics.median(rs):8.1f} img/s ({rss:5.0f} MB)")
    for p in rates:
        if p != "netspec":
            ratios = [a / b for a, b in zip(rates["netspec"], rates[p])]
            line.append(f"netspec/{p} {statistics.median(ratios):.3f} "
                        f"[{' '.join(f'{x:.2f}' for x in ratios)}]")
    print(f"{'(busy) ' if args.busy else ''}" + "  ".join(line), flush=True)


if __name__ == "__main__":
    main()
