"""Layers that bring data into the net: Input (fed by the caller), Data (an LMDB of Datum
records, read in order; its position is part of a snapshot, so resumed training is exact),
DummyData and MemoryData. File-based ones (HDF5Data, ImageData) are in files.py."""
from __future__ import annotations

import numpy as np
from pydantic import Field, model_validator

from concurrent.futures import ThreadPoolExecutor

from ..db import DatumReader
from ..errors import DataError
from ..fillers import fill
from ..params import ParamView
from ..proto import netspec_pb2 as pb
from ..registry import register_layer
from .base import Layer, LayerSetupError
from .transform import make_transformer


def shard(layer) -> tuple[int, int]:
    """(stride, offset) through a TRAIN source for this data-parallel process: as Caffe's
    DataLayer, rank r of N keeps the items whose position in the stream is r modulo N, so the
    ranks read disjoint parts of every N batches; (1, 0) alone, and in TEST."""
    from ..compat import solver_count, solver_rank
    return (solver_count(), solver_rank()) if layer.phase == 0 else (1, 0)


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
            dims = tuple(shapes[0 if len(shapes) == 1 else i].dim)
            bad = next((k for k, d in enumerate(dims) if d < 1), None)
            if bad is not None:
                raise LayerSetupError(f"top '{self.spec.top[i]}': dim {bad} is {dims[bad]} in "
                                      f"shape {dims}: every dimension must be at least 1",
                                      field="dim")
            t.reshape(dims)

    def reshape(self, bottom, top):
        pass

    def forward(self, bottom, top):
        pass


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
    """Batches of Caffe Datum records (raw, float or encoded JPEG/PNG) from an LMDB, in key
    order, wrapping at the end. A background thread reads and decodes the next batch while the
    net runs; the transformation (random crop / mirror) stays in forward, so a run's random
    stream, and exact resume, do not depend on thread timing."""
    param_field = "data_param"
    Params = DataView
    bottoms = (0, 0)
    tops = (1, 2)
    is_data = True
    summary = "batches from an LMDB of Caffe Datum records (data_param, transform_param)"

    def layer_setup(self, bottom, top):
        self.reader = DatumReader(self.p.source)
        self.stride, self.offset = shard(self)
        self.transform = make_transformer(self)
        # Caffe skips a random number (< rand_skip) of records so parallel readers differ
        skip = int(self.rng.integers(0, self.p.rand_skip)) if self.p.rand_skip else 0
        self.position = skip % len(self.reader)
        self.color = self.transform.p.color
        first, _ = self.reader.batch([0], self.color)
        self.record_shape = first.shape[1:]
        self.item_shape = self.transform.out_shape(*first.shape[1:])
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"prefetch-{self.name}")
        self.pending = None

    def reshape(self, bottom, top):
        top[0].reshape(self.p.batch_size, *self.item_shape)
        if len(top) > 1:
            top[1].reshape(self.p.batch_size)

    def _indices(self, position):
        items = position + np.arange(self.p.batch_size) * self.stride + self.offset
        return items % len(self.reader)

    def _fetch(self, position):
        return position, self.reader.batch(self._indices(position), self.color)

    def forward(self, bottom, top):
        position = self.position
        if self.pending is not None and self.pending.result()[0] == self.position:
            _, (images, labels) = self.pending.result()
        else:
            _, (images, labels) = self._fetch(self.position)
        self.position = int((self.position + self.p.batch_size * self.stride) % len(self.reader))
        self.pending = self.pool.submit(self._fetch, self.position)
        if images.shape[1:] != self.record_shape:
            raise DataError(f"{self.p.source}: records {self._indices(position)[0]}... are "
                            f"{images.shape[1:]}, the first record {self.record_shape}: every "
                            f"record must have one shape (resize them when converting)")
        top[0].data[...] = self.transform(images)
        if len(top) > 1:
            top[1].data[...] = labels

    def state(self) -> dict:
        return {"position": self.position}

    def set_state(self, state: dict) -> None:
        self.position = reader_position(state, self.position, len(self.reader))


def reader_position(state: dict, default: int, count: int | None) -> int:
    """A saved reader position, which must lie inside the data (ValueError: a damaged
    snapshot)."""
    position = int(state.get("position", default))
    if position < 0 or (count is not None and position >= count):
        raise ValueError(f"reader position {position} is outside the {count} records")
    return position


class DummyDataView(ParamView):
    data_filler: list[pb.FillerParameter] = []
    shape: list[pb.BlobShape] = []
    num: list[int] = []
    channels: list[int] = []
    height: list[int] = []
    width: list[int] = []


@register_layer("DummyData")
class DummyData(Layer):
    """Tops of given shapes filled by fillers (constant 0 by default); refilled every forward
    unless every filler is constant, as Caffe."""
    param_field = "dummy_data_param"
    Params = DummyDataView
    bottoms = (0, 0)
    tops = (1, None)
    is_data = True
    summary = "tops of given shapes from fillers (constant 0 by default)"

    def layer_setup(self, bottom, top):
        p, n = self.p, len(top)
        if p.shape:
            shapes = [tuple(s.dim) for s in p.shape]
        else:
            shapes = [tuple(d) for d in zip(p.num, p.channels, p.height, p.width)]
        if len(shapes) not in (1, n):
            raise LayerSetupError(f"give 1 shape or one per top ({n}), got {len(shapes)}",
                                  field="shape")
        empty = next((s for s in shapes if not s or min(s) < 1), None)
        if empty is not None:
            raise LayerSetupError(f"every shape dimension must be at least 1, got {empty}",
                                  field="shape")
        fillers = p.data_filler or [pb.FillerParameter(type="constant")]
        if len(fillers) not in (1, n):
            raise LayerSetupError(f"give 1 data_filler or one per top ({n})", field="data_filler")
        self.shapes = shapes * n if len(shapes) == 1 else shapes
        self.fillers = fillers * n if len(fillers) == 1 else fillers
        self.refill = any(f.type != "constant" for f in self.fillers)
        self.filled = False

    def reshape(self, bottom, top):
        for t, s in zip(top, self.shapes):
            t.reshape(s)

    def forward(self, bottom, top):
        if self.filled and not self.refill:
            return
        for t, f in zip(top, self.fillers):
            fill(t.data, f, self.rng)
        self.filled = True


class MemoryDataView(ParamView):
    batch_size: int = Field(gt=0)
    channels: int = Field(gt=0)
    height: int = Field(gt=0)
    width: int = Field(gt=0)


@register_layer("MemoryData")
class MemoryData(Layer):
    """Batches from arrays the caller hands over with net.set_input_arrays(data, labels)
    (pycaffe's API), cycling through them; transform_param applies."""
    param_field = "memory_data_param"
    Params = MemoryDataView
    bottoms = (0, 0)
    tops = (2, 2)
    is_data = True
    summary = "batches from arrays given with net.set_input_arrays(data, labels)"

    def layer_setup(self, bottom, top):
        self.transform = make_transformer(self)
        self.data = self.labels = None
        self.position = 0
        self.stride, self.offset = shard(self)

    def reshape(self, bottom, top):
        p = self.p
        top[0].reshape(p.batch_size, *self.transform.out_shape(p.channels, p.height, p.width))
        top[1].reshape(p.batch_size)

    def reset(self, data, labels) -> None:
        p = self.p
        data, labels = np.asarray(data), np.asarray(labels).ravel()
        if data.ndim != 4 or data.shape[1:] != (p.channels, p.height, p.width):
            raise LayerSetupError(f"data must be (N, {p.channels}, {p.height}, {p.width}), got "
                                  f"{data.shape}")
        if len(data) != len(labels) or len(data) % p.batch_size:
            raise LayerSetupError(f"need as many labels as images ({len(data)} vs "
                                  f"{len(labels)}) and a multiple of batch_size {p.batch_size}")
        self.data, self.labels, self.position = data, labels, 0

    def forward(self, bottom, top):
        if self.data is None:
            raise LayerSetupError("no data: call net.set_input_arrays(data, labels) first")
        b = self.p.batch_size
        rows = (self.position + np.arange(b) * self.stride + self.offset) % len(self.data)
        top[0].data[...] = self.transform(self.data[rows])
        top[1].data[...] = self.labels[rows]
        self.position = (self.position + b * self.stride) % len(self.data)

    def state(self) -> dict:
        return {"position": self.position}

    def set_state(self, state: dict) -> None:
        self.position = reader_position(state, self.position,
                                        len(self.data) if self.data is not None else None)
