"""Read netspec's or Caffe's training log (glog-prefixed lines) into train and test rows, as
Caffe's tools/extra/parse_log.py does, and write its two CSV tables."""
from __future__ import annotations

import csv
import os
import re
from datetime import datetime

NUMBER = r"([-+]?(?:\d+\.?\d*(?:[eE][-+]?\d+)?|nan|inf))"
ITERATION = re.compile(r"Iteration (\d+)")
TEST_START = re.compile(r"Iteration (\d+), Testing net \(#(\d+)\)")
LR = re.compile(rf"Iteration (\d+), lr = {NUMBER}")
OUTPUT = re.compile(rf"(Train|Test) net output #(\d+): (\S+) = {NUMBER}")
STAMP = re.compile(r"^[IWEF](\d{2})(\d{2}) (\d{2}):(\d{2}):(\d{2})\.(\d+)")


def _seconds(line: str, year: int = 2000) -> datetime | None:
    m = STAMP.match(line.strip())
    if not m:
        return None
    mo, d, h, mi, s, frac = m.groups()
    return datetime(year, int(mo), int(d), int(h), int(mi), int(s), int(frac[:6].ljust(6, "0")))


def parse_log(path: str) -> tuple[list[dict], list[dict]]:
    """(train rows, test rows): NumIters, Seconds, LearningRate and one column per output."""
    train: dict[int, dict] = {}
    test: dict[int, dict] = {}
    rates: dict[int, float] = {}
    start = None
    train_iteration = test_iteration = 0
    with open(path, errors="replace") as f:
        for line in f:
            stamp = _seconds(line)
            if stamp is not None and start is None:
                start = stamp
            seconds = (stamp - start).total_seconds() if stamp and start else 0.0
            if m := TEST_START.search(line):
                test_iteration = int(m.group(1))
            elif m := LR.search(line):
                rates[int(m.group(1))] = float(m.group(2))
            elif m := OUTPUT.search(line):
                rows, it = (train, train_iteration) if m.group(1) == "Train" else \
                    (test, test_iteration)
                row = rows.setdefault(it, {"NumIters": it, "Seconds": seconds})
                row[m.group(3)] = float(m.group(4))
            elif m := ITERATION.search(line):
                train_iteration = int(m.group(1))
    for rows in (train, test):
        for it, row in rows.items():
            known = [i for i in rates if i <= it]
            row["LearningRate"] = rates[it] if it in rates else (rates[max(known)] if known else
                                                                  float("nan"))
    order = lambda rows: [rows[k] for k in sorted(rows)]  # noqa: E731
    return order(train), order(test)


def write_csv(rows: list[dict], path: str) -> None:
    """Columns NumIters, Seconds, LearningRate, then the outputs in first-seen order."""
    columns = ["NumIters", "Seconds", "LearningRate"]
    for row in rows:
        columns += [k for k in row if k not in columns]
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns, restval="")
        writer.writeheader()
        writer.writerows(rows)


def write_tables(log: str, out_dir: str) -> tuple[str, str]:
    """<out_dir>/<log name>.train and .test, as parse_log.py names them."""
    train, test = parse_log(log)
    base = os.path.join(out_dir, os.path.basename(log))
    os.makedirs(out_dir or ".", exist_ok=True)
    write_csv(train, base + ".train")
    write_csv(test, base + ".test")
    return base + ".train", base + ".test"


def plot(log: str, out: str) -> None:
    """Training loss and every test output against iteration, to a PNG/SVG/PDF (Agg)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    train, test = parse_log(log)
    fig, (ax_train, ax_test) = plt.subplots(1, 2, figsize=(11, 4))
    for key in [k for k in (train[0] if train else {}) if k not in ("NumIters", "Seconds",
                                                                   "LearningRate")]:
        ax_train.plot([r["NumIters"] for r in train], [r.get(key) for r in train], label=key)
    ax_train.set(title="train", xlabel="iteration", ylabel="value")
    ax_train.set_yscale("log")
    for key in [k for k in (test[0] if test else {}) if k not in ("NumIters", "Seconds",
                                                                 "LearningRate")]:
        ax_test.plot([r["NumIters"] for r in test], [r.get(key) for r in test], marker="o",
                     label=key)
    ax_test.set(title="test", xlabel="iteration")
    for ax in (ax_train, ax_test):
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend()
    fig.suptitle(os.path.basename(log))
    fig.tight_layout()
    os.makedirs(os.path.dirname(out) or ".", exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
