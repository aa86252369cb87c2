"""Caffe's LMDB of Datum records: read by position (so a reader's place can be saved), write
atomically (a temporary folder renamed into place)."""
from __future__ import annotations

import os
import shutil
import tempfile

import lmdb
import numpy as np
from google.protobuf.message import DecodeError

from .errors import DataError
from .locks import Lock, temp_name
from .proto import netspec_pb2 as pb


_OPEN: dict[str, tuple[lmdb.Environment, list[bytes]]] = {}


def _open(path: str) -> tuple[lmdb.Environment, list[bytes]]:
    """One environment per database per process (LMDB allows no more), with its keys."""
    real = os.path.realpath(path)
    if real not in _OPEN:
        size = os.path.getsize(os.path.join(real, "data.mdb"))
        try:
            env = lmdb.open(real, readonly=True, lock=False, readahead=False, max_readers=64)
            pages = (env.info()["last_pgno"] + 1) * env.stat()["psize"]
        except lmdb.Error as e:
            raise DataError(f"data source '{path}' is not a readable LMDB ({e})") from None
        if size < pages:  # reading a page past the end of the mapped file would kill us (SIGBUS)
            env.close()
            raise DataError(f"data source '{path}' is truncated: data.mdb has {size:,} bytes, "
                            f"its pages need {pages:,} (convert or copy it again)")
        try:
            _check_readable(path, real, size)
            with env.begin() as txn:
                keys = list(txn.cursor().iternext(keys=True, values=False))
        except lmdb.Error as e:
            raise DataError(f"data source '{path}' is corrupt ({e})") from None
        except DataError:
            env.close()
            raise
        _OPEN[real] = (env, keys)
    return _OPEN[real]


#: databases up to this size are read through once, in a separate process, before use
VERIFY_BYTES = 4 << 30
_READ_ALL = """
import sys, lmdb
env = lmdb.open(sys.argv[1], readonly=True, lock=False, readahead=False, max_readers=64)
with env.begin() as txn:
    for key, value in txn.cursor():
        pass
"""


def _check_readable(path: str, real: str, size: int) -> None:
    """A damaged page can point LMDB past the end of the file, and the read then kills the
    process with SIGBUS, which nothing in Python can catch: read every record once in a child
    process first, and refuse the database if that child dies of a signal."""
    import subprocess
    import sys
    if size > VERIFY_BYTES:
        return
    try:
        child = subprocess.run([sys.executable, "-c", _READ_ALL, real], capture_output=True,
                               timeout=600)
    except (OSError, subprocess.TimeoutExpired):
        return  # no verdict: reading it here will tell
    if child.returncode < 0:
        raise DataError(f"data source '{path}' is damaged: reading it makes LMDB crash (signal "
                        f"{-child.returncode}); convert or copy it again")


def creating_command(path: str) -> str:
    """A hint naming the command that creates a missing data source, where one does."""
    name = os.path.basename(os.path.normpath(path)).lower()
    if "mnist" in name:
        return " (create it with `netspec data get mnist`)"
    if "cifar" in name:
        return (" (create it with `netspec data get cifar10 --from DIR`, DIR holding CIFAR-10's "
                "python or binary batches)")
    return (" (create an LMDB from images with `netspec convert-imageset`, or MNIST / CIFAR-10 "
            "with `netspec data get mnist|cifar10`)")


class DatumReader:
    """Random access to the records of an LMDB in key order."""

    def __init__(self, path: str):
        if not os.path.isdir(path) or not os.path.exists(os.path.join(path, "data.mdb")):
            raise DataError(f"data source '{path}' not found{creating_command(path)}")
        self.env, self.keys = _open(path)
        if not self.keys:
            raise DataError(f"data source '{path}' holds no records")
        self.path = path

    def __len__(self) -> int:
        return len(self.keys)

    def datum(self, index: int) -> pb.Datum:
        with self.env.begin(buffers=False) as txn:
            return self._parse(txn, index)

    def _parse(self, txn, index: int) -> pb.Datum:
        d = pb.Datum()
        key = self.keys[index]
        try:
            value = txn.get(key)
        except lmdb.Error as e:
            raise DataError(f"{self.path}: record {index} (key {key!r}) cannot be read: the "
                            f"database is damaged ({e})") from None
        if value is None:
            raise DataError(f"{self.path}: record {index} (key {key!r}) is listed but cannot be "
                            f"found: the database is damaged") from None
        try:
            d.ParseFromString(value)
        except DecodeError:
            raise DataError(f"{self.path}: record {index} (key {key!r}) is not a Datum") from None
        return d

    def batch(self, indices, color: bool | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(images (N, C, H, W) uint8 or float32, labels (N,)) for the given positions;
        `color` forces encoded images to 3 (True) or 1 (False) channels."""
        images, labels = [], []
        with self.env.begin(buffers=False) as txn:
            for i in indices:
                d = self._parse(txn, i)
                images.append(datum_to_array(d, f"{self.path}: record {i}", color))
                labels.append(d.label)
        shapes = {im.shape for im in images}
        if len(shapes) > 1:
            raise DataError(f"{self.path}: records of different shapes {sorted(shapes)} in one "
                            f"batch (resize them when converting, or crop)")
        return np.stack(images), np.asarray(labels)


def datum_to_array(d: pb.Datum, where: str = "datum", color: bool | None = None) -> np.ndarray:
    """A Datum's image as (C, H, W): raw bytes, float_data, or an encoded JPEG/PNG (BGR)."""
    if d.encoded:
        from .images import decode
        return decode(d.data, color, where)
    shape = (d.channels, d.height, d.width)
    values = np.frombuffer(d.data, dtype=np.uint8) if d.data else \
        np.asarray(d.float_data, dtype=np.float32)
    if values.size != d.channels * d.height * d.width or values.size == 0:
        raise DataError(f"{where}: holds {values.size} values for its shape {shape}")
    return values.reshape(shape)


def array_to_datum(image: np.ndarray, label: int | None = None) -> pb.Datum:
    """(C, H, W) uint8 -> raw bytes, anything else -> float_data (as pycaffe's array_to_datum);
    the label is left unset when None."""
    if image.ndim != 3:
        raise ValueError(f"a Datum holds a (C, H, W) image, got shape {image.shape}")
    d = pb.Datum(channels=image.shape[0], height=image.shape[1], width=image.shape[2])
    if label is not None:
        d.label = int(label)
    if image.dtype == np.uint8:
        d.data = image.tobytes()
    else:
        d.float_data.extend(image.astype(np.float64).ravel().tolist())
    return d


def write_records(path: str, records) -> int:
    """Write (key, value bytes) pairs to a new LMDB at `path`, committing every 1000 as Caffe's
    tools do; built in a temporary folder and renamed, so a failure leaves no half database."""
    parent = os.path.dirname(os.path.abspath(path))
    os.makedirs(parent, exist_ok=True)
    prefix, suffix = temp_name(path)
    tmp = tempfile.mkdtemp(dir=parent, prefix=prefix, suffix=suffix)  # this writer's own
    env = lmdb.open(tmp, map_size=1 << 40, subdir=True)
    count = 0
    try:
        txn = env.begin(write=True)
        for key, value in records:
            txn.put(key, value)
            count += 1
            if count % 1000 == 0:
                txn.commit()
                txn = env.begin(write=True)
        txn.commit()
    except BaseException:
        env.close()
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    env.close()
    stale = _OPEN.pop(os.path.realpath(path), None)
    if stale:
        stale[0].close()
    old = None
    with Lock(os.path.join(parent, f".{os.path.basename(path)}.netspec-lock")):  # one swap
        if os.path.lexists(path):  # moved aside first: a directory cannot be renamed onto
            old = tempfile.mkdtemp(dir=parent, prefix=prefix, suffix=suffix)
            os.replace(path, os.path.join(old, "db"))
        os.replace(tmp, path)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return count


def write_datum_lmdb(path: str, images: np.ndarray, labels: np.ndarray,
                     key_format: bytes = b"%08d") -> None:
    """Images (N, C, H, W) as Datums keyed key_format % index (MNIST's "%08d", CIFAR's "%05d")."""
    write_records(path, ((key_format % i, array_to_datum(images[i], int(labels[i]))
                          .SerializeToString()) for i in range(len(images))))
