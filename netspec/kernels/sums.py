"""Fixed-order float64 sums shared by the kernels (bias gradients): the same bits whichever
kernel computes them."""
from __future__ import annotations

from numba import uint64 as u

from .launch import serial


@serial
def sum_run(src, start, length):
    """sum(src[start:start + length]) in float64: eight running sums (element i into sum
    i % 8) added pairwise at the end, a fixed order that does not wait on one add chain."""
    s0 = s1 = s2 = s3 = s4 = s5 = s6 = s7 = 0.0
    whole = u(length // 8 * 8)
    for q in range(u(0), whole, u(8)):
        o = start + q
        s0 += src[o]
        s1 += src[o + u(1)]
        s2 += src[o + u(2)]
        s3 += src[o + u(3)]
        s4 += src[o + u(4)]
        s5 += src[o + u(5)]
        s6 += src[o + u(6)]
        s7 += src[o + u(7)]
    for q in range(whole, u(length)):
        s0 += src[start + q]
    return ((s0 + s1) + (s2 + s3)) + ((s4 + s5) + (s6 + s7))
