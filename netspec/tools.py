"""Caffe's data tools: convert_imageset (image list -> LMDB of Datums) and compute_image_mean."""
from __future__ import annotations

import os

import numpy as np

from .db import DatumReader, write_records
from .errors import DataError
from .images import encode, load
from .io import write_mean
from .layers.files import image_list
from .proto import netspec_pb2 as pb


def convert_imageset(root: str, list_file: str, db: str, *, resize_height: int = 0,
                     resize_width: int = 0, shuffle: bool = False, gray: bool = False,
                     encoded: bool = False, encode_type: str = "", seed: int = 0,
                     log=print) -> int:
    """Write Datums keyed "%08d_<path>" as Caffe's convert_imageset: raw BGR bytes, or the
    file's own bytes with --encoded (re-encoded when resized or given encode_type)."""
    items = image_list(list_file)
    if shuffle:
        np.random.default_rng(seed).shuffle(items)

    def records():
        for i, (name, label) in enumerate(items):
            path = os.path.join(root, name)
            resize = (resize_height, resize_width) if resize_height and resize_width else (0, 0)
            if encoded and not resize[0] and not encode_type and not gray:
                try:
                    data = open(path, "rb").read()
                except FileNotFoundError:
                    raise DataError(f"image not found: {path}") from None
                datum = pb.Datum(data=data, label=label, encoded=True)
            else:
                image = load(path, not gray, *resize)
                if encoded:
                    fmt = encode_type or os.path.splitext(name)[1].lstrip(".") or "png"
                    datum = pb.Datum(data=encode(image, fmt), label=label, encoded=True)
                else:
                    datum = pb.Datum(channels=image.shape[0], height=image.shape[1],
                                     width=image.shape[2], data=image.tobytes(), label=label)
            if i % 1000 == 999:
                log(f"Processed {i + 1} files.")
            yield b"%08d_%s" % (i, name.encode()), datum.SerializeToString()

    count = write_records(db, records())
    log(f"Processed {count} files.")
    return count


def compute_image_mean(db: str, out: str | None = None, log=print) -> np.ndarray:
    """Mean image over every record of an LMDB, optionally written as mean.binaryproto."""
    reader = DatumReader(db)
    total, n = None, 0
    for start in range(0, len(reader), 1000):
        images, _ = reader.batch(range(start, min(start + 1000, len(reader))))
        s = images.astype(np.float64).sum(axis=0)
        total = s if total is None else total + s
        n += len(images)
    mean = total / n
    if out:
        write_mean(out, mean)
    log(f"Mean of {n} images; per channel: {', '.join(f'{v:.4f}' for v in mean.mean(axis=(1, 2)))}")
    return mean
