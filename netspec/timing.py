"""Caffe's `caffe time`: average forward and backward time of every layer and of the net."""
from __future__ import annotations

import time
from dataclasses import dataclass

from .device import running_on
from .net import Net


@dataclass
class LayerTime:
    name: str
    type: str
    forward_ms: float
    backward_ms: float


def time_net(net: Net, iterations: int = 50) -> tuple[list[LayerTime], float]:
    """Per-layer average times over `iterations` forward+backward passes (after one warm-up
    pass, as Caffe), and the average time of a whole forward+backward. On a GPU each layer is
    waited for before its clock stops (as `caffe time -gpu`), so the times add up."""
    net.forward_backward()
    n = len(net.layers)
    fwd, bwd = [0.0] * n, [0.0] * n
    sync = net.device.synchronize
    sync()
    start = time.perf_counter()
    for _ in range(iterations):
        for i, layer in enumerate(net.layers):
            with running_on(net.where(i)):
                t = time.perf_counter()
                layer.forward(net.bottom_ids[i], net.top_ids[i])
                sync()
                fwd[i] += time.perf_counter() - t
        for i in reversed(range(n)):
            with running_on(net.where(i)):
                for w, top in zip(net.loss_weights[i], net.top_ids[i]):
                    if w:
                        top.diff[...] = w
                t = time.perf_counter()
                net.layers[i].backward(net.top_ids[i], net._bottom_need_backward[i],
                                       net.bottom_ids[i])
                sync()
                bwd[i] += time.perf_counter() - t
    total = (time.perf_counter() - start) / iterations * 1000
    rows = [LayerTime(l.name, l.type, fwd[i] / iterations * 1000, bwd[i] / iterations * 1000)
            for i, l in enumerate(net.layers)]
    return rows, total


class Timer:
    """pycaffe's caffe.Timer: start(), stop(), and `ms`, the milliseconds between them (a
    running timer is stopped first; one never started reads 0)."""

    def __init__(self):
        self._start = self._stop = None

    def start(self) -> None:
        if not self.running:
            self._start, self._stop = time.perf_counter(), None

    def stop(self) -> None:
        if self.running:
            self._stop = time.perf_counter()

    @property
    def running(self) -> bool:
        return self._start is not None and self._stop is None

    @property
    def ms(self) -> float:
        if self._start is None:
            return 0.0
        self.stop()
        return (self._stop - self._start) * 1000.0
