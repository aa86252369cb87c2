"""Layers that bring data into the net: Input (fed by the caller) and Data (an LMDB of Datum
records, read in order; its position is part of a snapshot, so resumed training is exact)."""
from __future__ import annotations

import numpy as np
from pydantic import Field, model_validator

from ..blob import proto_array
from ..db import DatumReader
from ..params import ParamView, build_view
from ..proto import netspec_pb2 as pb
from ..registry import register_layer
from ..spec import read_binary
from .base import Layer, LayerSetupError


class InputView(ParamView):
    shape: list[pb.BlobShape] = []


@register_layer("Input")
class Input(Layer):
    """Tops filled by the caller (net.blobs[name].data[...] = ...; net.forward(name=array))."""
    param_field = "input_param"
    Params = InputView
    bottoms = (0, 0)
    tops = (1, None)
    is_data = True
    summary = "blobs the caller fills; input_param { shape { dim: ... } }"

    def layer_setup(self, bottom, top):
        shapes = self.p.shape
        if len(shapes) not in (1, len(top)):
            raise LayerSetupError(f"input_param needs 1 shape or one per top ({len(top)}), "
                                  f"got {len(shapes)}", field="shape")
        for i, t in enumerate(top):
            t.reshape(tuple(shapes[0 if len(shapes) == 1 else i].dim))

    def reshape(self, bottom, top):
        pass

    def forward(self, bottom, top):
        pass


class TransformView(ParamView):
    scale: float = 1.0
    mirror: bool = False
    crop_size: int = Field(0, ge=0)
    mean_file: str = ""
    mean_value: list[float] = []
    force_color: bool = False
    force_gray: bool = False

    @model_validator(mode="after")
    def _one_mean(self):
        if self.mean_file and self.mean_value:
            raise ValueError("give mean_file or mean_value, not both")
        if self.force_color or self.force_gray:
            raise ValueError("force_color / force_gray apply to encoded images, not supported yet")
        return self


class DataTransformer:
    """Caffe's DataTransformer on a batch: crop (random at TRAIN, centre at TEST), mirror
    (random at TRAIN), then (x - mean) * scale."""

    def __init__(self, view: TransformView, phase: int, rng: np.random.Generator, dtype):
        self.p, self.phase, self.rng, self.dtype = view, phase, rng, dtype
        self.mean = None
        if view.mean_file:
            self.mean = proto_array(read_binary(view.mean_file, pb.BlobProto), np.float64)[0]

    def out_shape(self, c, h, w):
        s = self.p.crop_size
        if s and (s > h or s > w):
            raise LayerSetupError(f"crop_size {s} is larger than the {h}x{w} images",
                                  field="crop_size")
        return (c, s, s) if s else (c, h, w)

    def __call__(self, images: np.ndarray) -> np.ndarray:
        x = images.astype(np.float64)
        if self.mean is not None:
            if self.mean.shape != x.shape[1:]:
                raise LayerSetupError(f"mean_file shape {self.mean.shape} does not match the "
                                      f"images {x.shape[1:]}", field="mean_file")
            x -= self.mean
        elif self.p.mean_value:
            mv = np.asarray(self.p.mean_value)
            if len(mv) not in (1, x.shape[1]):
                raise LayerSetupError(f"mean_value needs 1 or {x.shape[1]} values",
                                      field="mean_value")
            x -= mv.reshape(1, -1, 1, 1) if len(mv) > 1 else mv[0]
        n, _, h, w = x.shape
        s = self.p.crop_size
        if s:
            if self.phase == 0:
                hs = self.rng.integers(0, h - s + 1, size=n)
                ws = self.rng.integers(0, w - s + 1, size=n)
            else:
                hs = np.full(n, (h - s) // 2)
                ws = np.full(n, (w - s) // 2)
            rows = (hs[:, None] + np.arange(s))[:, None, :, None]
            cols = (ws[:, None] + np.arange(s))[:, None, None, :]
            x = x[np.arange(n)[:, None, None, None], np.arange(x.shape[1])[None, :, None, None],
                  rows, cols]
        if self.p.mirror and self.phase == 0:
            flip = self.rng.random(n) < 0.5
            x[flip] = x[flip, :, :, ::-1]
        return (x * self.p.scale).astype(self.dtype)


class DataView(ParamView):
    source: str = Field(min_length=1)
    batch_size: int = Field(gt=0)
    backend: str = "LEVELDB"
    rand_skip: int = Field(0, ge=0)

    @model_validator(mode="after")
    def _backend(self):
        if self.backend != "LMDB":
            raise ValueError(f"backend {self.backend} is not supported: netspec reads LMDB "
                             f"(set backend: LMDB)")
        return self


@register_layer("Data")
class Data(Layer):
    """Batches of Caffe Datum records from an LMDB, in key order, wrapping at the end."""
    param_field = "data_param"
    Params = DataView
    bottoms = (0, 0)
    tops = (1, 2)
    is_data = True
    summary = "batches from an LMDB of Caffe Datum records (data_param, transform_param)"

    def layer_setup(self, bottom, top):
        self.reader = DatumReader(self.p.source)
        try:
            view = build_view(TransformView, self.spec.transform_param)
        except ValueError as e:
            raise LayerSetupError(str(e), field=getattr(e, "field", None)) from None
        self.transform = DataTransformer(view, self.phase, self.rng, self.dtype)
        # Caffe skips a random number (< rand_skip) of records so parallel readers differ
        skip = int(self.rng.integers(0, self.p.rand_skip)) if self.p.rand_skip else 0
        self.position = skip % len(self.reader)
        first = self.reader.datum(0)
        self.item_shape = self.transform.out_shape(first.channels, first.height, first.width)

    def reshape(self, bottom, top):
        top[0].reshape(self.p.batch_size, *self.item_shape)
        if len(top) > 1:
            top[1].reshape(self.p.batch_size)

    def forward(self, bottom, top):
        n = self.p.batch_size
        indices = (self.position + np.arange(n)) % len(self.reader)
        self.position = int((self.position + n) % len(self.reader))
        images, labels = self.reader.batch(indices)
        top[0].data[...] = self.transform(images)
        if len(top) > 1:
            top[1].data[...] = labels

    def state(self) -> dict:
        return {"position": self.position}

    def set_state(self, state: dict) -> None:
        self.position = int(state.get("position", self.position))
