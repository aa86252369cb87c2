"""Protobuf's wire format written straight from arrays: a .caffemodel or .solverstate without
a Python float per parameter (protobuf's own path builds one: ~40 bytes of RAM per value,
2.4 GB for a 40M-parameter net). The bytes are the ones protobuf writes (fields in number
order, packed floats), produced as chunks that write_atomic writes one after another."""
from __future__ import annotations

import numpy as np

from .proto import netspec_pb2 as pb

LEN = 2  # wire type of length-delimited fields


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


class Chunks:
    """A message's bytes as a list of pieces (bytes or array memoryviews) and their size."""

    def __init__(self):
        self.parts, self.size = [], 0

    def add(self, part) -> None:
        self.parts.append(part)
        self.size += memoryview(part).nbytes

    def field(self, number: int, body: "Chunks") -> None:
        """A length-delimited field (a sub-message or packed values) holding `body`."""
        self.add(_varint(number << 3 | LEN) + _varint(body.size))
        for part in body.parts:
            self.add(part)


def _packed(number: int, array, dtype) -> Chunks:
    body = Chunks()
    body.add(memoryview(np.ascontiguousarray(array, dtype=dtype)).cast("B"))
    out = Chunks()
    if body.size:  # (protobuf writes no field for no values)
        out.field(number, body)
    return out


def _read_varint(data: bytes, i: int) -> tuple[int, int]:
    """(value, index after it) of the varint at data[i]."""
    value, shift = 0, 0
    while True:
        byte = data[i]
        value |= (byte & 0x7F) << shift
        i, shift = i + 1, shift + 7
        if not byte & 0x80:
            return value, i


def _split(data: bytes, number: int) -> tuple[bytes, bytes]:
    """A serialised message cut before its first top-level field numbered above `number`."""
    i = 0
    while i < len(data):
        start = i
        key, i = _read_varint(data, i)
        if key >> 3 > number:
            return data[:start], data[start:]
        kind = key & 7
        if kind == 0:
            _, i = _read_varint(data, i)
        elif kind == 1:
            i += 8
        elif kind == 5:
            i += 4
        elif kind == LEN:
            length, i = _read_varint(data, i)
            i += length
        else:
            raise ValueError(f"unexpected wire type {kind}")
    return data, b""


def _with_field(head: bytes, number: int, records: list[Chunks]) -> Chunks:
    """`head` (a message serialised without field `number`) with those records put where
    protobuf puts them: before the first field numbered above it."""
    before, after = _split(head, number)
    out = Chunks()
    out.add(before)
    for r in records:
        out.field(number, r)
    out.add(after)
    return out


def blob_chunks(blob, write_diff: bool = False) -> Chunks:
    """A BlobProto: shape (7), then float data (5) / diff (6), or double_data (8) / diff (9),
    in field-number order, from the blob's host arrays without copies."""
    shape = pb.BlobProto()
    shape.shape.dim.extend(blob.shape)
    head = shape.SerializeToString()  # field 7 only
    out = Chunks()
    if blob.dtype == np.float64:
        out.add(head)
        for part in (_packed(8, blob.data, "<f8"), *([_packed(9, blob.diff, "<f8")]
                                                     if write_diff else [])):
            for p in part.parts:
                out.add(p)
    else:
        for part in (_packed(5, blob.data, "<f4"), *([_packed(6, blob.diff, "<f4")]
                                                     if write_diff else [])):
            for p in part.parts:
                out.add(p)
        out.add(head)
    return out


def net_chunks(net_head: pb.NetParameter, layers: list[tuple[pb.LayerParameter, list]],
               write_diff: bool = False) -> Chunks:
    """A NetParameter: net_head's fields, then each layer (field 100) with its blobs (7)."""
    records = [_with_field(lp.SerializeToString(), 7,
                           [blob_chunks(b, write_diff) for b in blobs])
               for lp, blobs in layers]
    return _with_field(net_head.SerializeToString(), 100, records)


def state_chunks(state: pb.SolverState, history: list) -> Chunks:
    """A SolverState: its fields with the history blobs (field 3) in place."""
    return _with_field(state.SerializeToString(), 3, [blob_chunks(h) for h in history])
