"""pycaffe's caffe.io helpers: arrays <-> BlobProto and Datum, and mean.binaryproto files."""
from __future__ import annotations

import numpy as np

from .blob import proto_array
from .db import array_to_datum, datum_to_array
from .proto import netspec_pb2 as pb
from .spec import read_binary, write_binary

__all__ = ["blobproto_to_array", "array_to_blobproto", "datum_to_array", "array_to_datum",
           "read_mean", "write_mean", "load_image", "resize_image", "oversample", "Transformer"]


def blobproto_to_array(blob: pb.BlobProto, return_diff: bool = False) -> np.ndarray:
    """A BlobProto's data (or diff) as an array of its shape: `shape`, else the legacy 4-d
    num/channels/height/width, else none at all, which fits only one value (shape ()), as in
    pycaffe; anything else is a ValueError."""
    legacy = any(blob.HasField(f) for f in ("num", "channels", "height", "width"))
    if not blob.HasField("shape") and not legacy:
        values = (blob.double_diff or blob.diff) if return_diff else \
            (blob.double_data or blob.data)
        if len(values) != 1:
            raise ValueError(f"the BlobProto has no shape (neither shape nor num/channels/"
                             f"height/width) and holds {len(values)} values")
        blob = pb.BlobProto(shape=pb.BlobShape(), data=blob.data, diff=blob.diff,
                            double_data=blob.double_data, double_diff=blob.double_diff)
    return proto_array(blob, np.float64 if blob.double_data else np.float32, diff=return_diff)


def array_to_blobproto(arr: np.ndarray, diff: np.ndarray | None = None) -> pb.BlobProto:
    """An array (and optionally its diff) as a float BlobProto with an N-d shape."""
    arr = np.asarray(arr)
    blob = pb.BlobProto()
    blob.shape.dim.extend(arr.shape)
    blob.data.extend(arr.astype(np.float32).ravel().tolist())
    if diff is not None:
        blob.diff.extend(np.asarray(diff, dtype=np.float32).ravel().tolist())
    return blob


def read_mean(path: str) -> np.ndarray:
    """A mean.binaryproto as (C, H, W) (the leading 1 of Caffe's (1, C, H, W) dropped)."""
    arr = blobproto_to_array(read_binary(path, pb.BlobProto()))
    return arr[0] if arr.ndim == 4 else arr


def write_mean(path: str, mean: np.ndarray) -> None:
    """Write a (C, H, W) mean as Caffe's compute_image_mean does: (1, C, H, W), legacy dims."""
    mean = np.asarray(mean, dtype=np.float32)
    blob = pb.BlobProto(num=1, channels=mean.shape[0], height=mean.shape[1], width=mean.shape[2])
    blob.data.extend(mean.ravel().tolist())
    write_binary(path, blob)


def load_image(filename: str, color: bool = True) -> np.ndarray:
    """pycaffe's load_image: (H, W, 3) RGB (or (H, W, 1) gray) float32 in [0, 1]."""
    from PIL import Image
    with Image.open(filename) as img:
        arr = np.asarray(img.convert("RGB" if color else "L"), dtype=np.float32) / 255.0
    return arr if color else arr[:, :, None]


def resize_image(im: np.ndarray, new_dims) -> np.ndarray:
    """(H, W, K) float image resized to new_dims (bilinear), channel by channel."""
    from PIL import Image
    h, w = int(new_dims[0]), int(new_dims[1])
    if im.shape[:2] == (h, w):
        return im
    channels = [np.asarray(Image.fromarray(np.ascontiguousarray(im[:, :, k], dtype=np.float32))
                           .resize((w, h), Image.BILINEAR)) for k in range(im.shape[2])]
    return np.stack(channels, axis=2)


def oversample(images, crop_dims) -> np.ndarray:
    """pycaffe's 10 crops per (H, W, K) image: the four corners and the centre, then the same
    five mirrored left-right; (10 N, h, w, K) float32."""
    images = [np.asarray(im) for im in images]
    h, w = int(crop_dims[0]), int(crop_dims[1])
    height, width = images[0].shape[:2]
    corners = [(y, x) for y in (0, height - h) for x in (0, width - w)]
    # pycaffe's centre box: image centre -/+ half the crop, truncated to integers
    centre = (int(height / 2.0 - h / 2.0), int(width / 2.0 - w / 2.0))
    crops = []
    for im in images:
        five = [im[y:y + h, x:x + w] for y, x in corners + [centre]]
        crops += five + [c[:, ::-1] for c in five]
    return np.asarray(crops, dtype=np.float32)


class Transformer:
    """pycaffe's caffe.io.Transformer: turn (H, W, K) images into a net input and back.

    preprocess: resize to the input's H x W, transpose, swap channels, * raw_scale, - mean,
    * input_scale (in that order, as pycaffe)."""

    def __init__(self, inputs: dict):
        self.inputs = {k: tuple(v) for k, v in inputs.items()}
        self.transpose, self.channel_swap, self.raw_scale = {}, {}, {}
        self.mean, self.input_scale = {}, {}

    def _check(self, name):
        if name not in self.inputs:
            raise KeyError(f"{name!r} is not one of the inputs {list(self.inputs)}")

    def set_transpose(self, name, order):
        self._check(name)
        if len(order) != len(self.inputs[name]) - 1:
            raise ValueError("transpose order needs as many axes as the input has, minus N")
        self.transpose[name] = order

    def set_channel_swap(self, name, order):
        self._check(name)
        if len(order) != self.inputs[name][1]:
            raise ValueError("channel swap needs one entry per input channel")
        self.channel_swap[name] = order

    def set_raw_scale(self, name, scale):
        self._check(name)
        self.raw_scale[name] = scale

    def set_input_scale(self, name, scale):
        self._check(name)
        self.input_scale[name] = scale

    def set_mean(self, name, mean):
        """Mean per channel (C,), or an image (C, H, W) or (H, W), resized to the input's
        H x W when its size differs (pycaffe: a 256 x 256 mean file for 227 x 227 crops)."""
        self._check(name)
        mean = np.asarray(mean, dtype=np.float32)
        if mean.ndim == 1:
            if len(mean) != self.inputs[name][1]:
                raise ValueError("mean needs one value per input channel")
            mean = mean[:, None, None]
        else:
            if mean.ndim == 2:
                mean = mean[None]
            if mean.ndim != 3 or mean.shape[0] not in (1, self.inputs[name][1]):
                raise ValueError(f"mean shape {mean.shape} does not fit the input "
                                 f"{self.inputs[name][1:]}")
            if mean.shape[1:] != self.inputs[name][2:]:
                mean = resize_image(mean.transpose(1, 2, 0), self.inputs[name][2:])
                mean = mean.transpose(2, 0, 1)
        self.mean[name] = mean

    def preprocess(self, name, data: np.ndarray) -> np.ndarray:
        self._check(name)
        x = resize_image(np.asarray(data, dtype=np.float32), self.inputs[name][2:])
        if name in self.transpose:
            x = x.transpose(self.transpose[name])
        if name in self.channel_swap:
            x = x[list(self.channel_swap[name])]
        x = x.astype(np.float32, copy=True)
        if name in self.raw_scale:
            x *= self.raw_scale[name]
        if name in self.mean:
            x -= self.mean[name]
        if name in self.input_scale:
            x *= self.input_scale[name]
        return x

    def deprocess(self, name, data: np.ndarray) -> np.ndarray:
        """The inverse of preprocess (without the resize), for looking at inputs."""
        self._check(name)
        x = np.asarray(data, dtype=np.float32).squeeze().copy()
        if name in self.input_scale:
            x /= self.input_scale[name]
        if name in self.mean:
            x += self.mean[name]
        if name in self.raw_scale:
            x /= self.raw_scale[name]
        if name in self.channel_swap:
            x = x[np.argsort(self.channel_swap[name])]
        if name in self.transpose:
            x = x.transpose(np.argsort(self.transpose[name]))
        return x
