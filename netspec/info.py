"""`netspec info`: the layers of a net in execution order with shapes, parameters and the
multiply-adds of one forward pass; totals and blob memory."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .net import Net


@dataclass
class LayerInfo:
    name: str
    type: str
    bottoms: list[str]
    tops: list[str]
    top_shapes: list[tuple[int, ...]]
    params: int
    macs: int


def multiply_adds(layer, bottoms, tops) -> int:
    """Multiply-adds of one forward pass for the GEMM layers (the ones that dominate)."""
    if layer.type == "Convolution":
        w = layer.blobs[0].shape  # (M, C/g, kh, kw): each output value costs C/g*kh*kw
        return int(np.prod(tops[0].shape)) * int(np.prod(w[1:]))
    if layer.type == "Deconvolution":
        w = layer.blobs[0].shape  # (C, M/g, kh, kw): each input value feeds M/g*kh*kw
        return int(np.prod(bottoms[0].shape)) * int(np.prod(w[1:]))
    if layer.type == "InnerProduct":
        return int(np.prod(tops[0].shape)) * layer.blobs[0].count // layer.p.num_output
    return 0


def describe(net: Net) -> list[LayerInfo]:
    rows = []
    for i, layer in enumerate(net.layers):
        tops = net.top_ids[i]
        rows.append(LayerInfo(layer.name, layer.type, net.layer_bottoms[i], net.layer_tops[i],
                              [t.shape for t in tops], sum(b.count for b in layer.blobs),
                              multiply_adds(layer, net.bottom_ids[i], tops)))
    return rows


def blob_bytes(net: Net) -> int:
    """Memory of data and diff of every distinct blob (in-place tops counted once)."""
    seen = {id(b): b for b in net.blobs.values()}
    return sum(2 * b.data.nbytes for b in seen.values())


def human(n: float, unit: str = "") -> str:
    for suffix in ("", "K", "M", "G", "T"):
        if abs(n) < 1000 or suffix == "T":
            return f"{n:.3g}{suffix}{unit}" if suffix else f"{int(n)}{unit}"
        n /= 1000
    return str(n)
