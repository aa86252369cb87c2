"""Data-parallel scaling over MPI: cifar10_quick training (batch 100 per process, SGD with
momentum, an LMDB of 32x32 colour images) with 1, 2, 4 ... ranks, each rank given
cores / ranks threads.

    python benchmarks/mpi_scaling.py [--ranks 1,2] [--iters 40] [--rounds 3] [--overlap-check]

Every run is `mpiexec -n N netspec train` (N = 1: a plain `netspec train`); its speed is read
from the log: images per second between iteration 10 and the last (compiling and the first
passes excluded). Prints images/s, the speed-up over one rank on all cores, and the
efficiency, images/s / (N x images/s of one rank with cores / N threads): what data
parallelism keeps of N independent workers. --overlap-check also runs the largest N with
NETSPEC_MPI_OVERLAP=0 (gradients sent after backward instead of during it)."""
from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from datetime import datetime
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
BATCH, DISPLAY = 100, 10


def prepare(folder: Path, iters: int) -> None:
    from netspec.db import write_datum_lmdb
    from netspec.proto import netspec_pb2 as pb
    from netspec.spec import read_text, to_text
    rng = np.random.default_rng(0)
    write_datum_lmdb(str(folder / "train_lmdb"), rng.integers(0, 256, (2000, 3, 32, 32),
                                                               dtype=np.uint8),
                     rng.integers(0, 10, 2000))
    net = read_text(ROOT / "models/cifar10_quick/cifar10_quick_train_test.prototxt",
                    pb.NetParameter())
    keep = [l for l in net.layer if not any(r.phase == pb.TEST for r in l.include)]
    del net.layer[:]
    net.layer.extend(keep)
    data = net.layer[0]
    data.data_param.source = "train_lmdb"
    data.data_param.batch_size = BATCH
    data.transform_param.ClearField("mean_file")
    (folder / "net.prototxt").write_text(to_text(net))
    (folder / "solver.prototxt").write_text(
        f'net: "net.prototxt"\nbase_lr: 0.001\nmomentum: 0.9\nweight_decay: 0.004\n'
        f'lr_policy: "fixed"\ndisplay: {DISPLAY}\nmax_iter: {iters}\nsnapshot: 0\n'
        f'snapshot_prefix: "snap"\nrandom_seed: 1\n')


def run(folder: Path, ranks: int, threads: int, overlap: bool = True) -> float:
    """Images per second of all ranks together, from iteration 10 to the last display."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads),
           "NETSPEC_MPI_OVERLAP": "1" if overlap else "0"}
    netspec = [sys.executable, "-m", "netspec.cli", "train", "solver.prototxt",
               "--threads", str(threads), "--log-format", "caffe"]
    mpiexec = shutil.which("mpiexec", path=str(Path(sys.executable).parent)) or "mpiexec"
    command = netspec if ranks == 1 else [mpiexec, "-n", str(ranks), *netspec]
    out = subprocess.run(command, cwd=folder, env=env, capture_output=True, text=True,
                         check=True).stdout
    times = {}
    for line in out.splitlines():
        m = re.match(r"I\d{4} (\d+):(\d+):([\d.]+) \d+ \S+\] Iteration (\d+) \(", line)
        if m:
            h, mi, s, it = m.groups()
            times[int(it)] = int(h) * 3600 + int(mi) * 60 + float(s)
    first, last = DISPLAY, max(times)
    return (last - first) * BATCH * ranks / (times[last] - times[first])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ranks", default="1,2")
    parser.add_argument("--iters", type=int, default=40)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--cores", type=int, default=os.cpu_count())
    parser.add_argument("--overlap-check", action="store_true")
    args = parser.parse_args()
    ranks = [int(r) for r in args.ranks.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        prepare(folder, args.iters)
        cases = [("all cores", 1, args.cores, True)]
        for n in ranks:
            cases.append((f"{n} rank(s)", n, max(1, args.cores // n), True))
            if n > 1:
                cases.append((f"1 rank, {max(1, args.cores // n)} thread(s)", 1,
                              max(1, args.cores // n), True))
        if args.overlap_check:
            n = max(ranks)
            cases.append((f"{n} ranks, no overlap", n, max(1, args.cores // n), False))
        speeds: dict[str, list[float]] = {name: [] for name, *_ in cases}
        for _ in range(args.rounds):  # rounds interleave the cases: the VM's drift hits all
            for name, n, threads, overlap in cases:
                speeds[name].append(run(folder, n, threads, overlap))
    median = {k: statistics.median(v) for k, v in speeds.items()}
    print(f"# {datetime.now():%Y-%m-%d %H:%M}, {args.cores} cores, cifar10_quick batch "
          f"{BATCH}/rank, median of {args.rounds} rounds (images/s)")
    print(f"{'ranks':>5} {'threads/rank':>12} {'images/s':>9} {'speed-up':>9} {'efficiency':>10}")
    for n in ranks:
        threads = max(1, args.cores // n)
        alone = median[f"1 rank, {threads} thread(s)"] if n > 1 else median[f"{n} rank(s)"]
        ips = median[f"{n} rank(s)"]
        print(f"{n:>5} {threads:>12} {ips:>9.1f} {ips / median['all cores']:>9.2f} "
              f"{ips / (n * alone):>10.2f}")
    if args.overlap_check:
        n = max(ranks)
        print(f"overlap: {n} ranks {median[f'{n} rank(s)']:.1f} images/s with, "
              f"{median[f'{n} ranks, no overlap']:.1f} without")


if __name__ == "__main__":
    main()
