"""Fixed-order float64 sums shared by the kernels (bias gradients): the same bits whichever
kernel computes them.

The order: element i of a run into running sum i % 8, the rest (length % 8) into sum 0 in
turn, then ((s0 + s1) + (s2 + s3)) + ((s4 + s5) + (s6 + s7)). The eight running sums are one
vector of eight float64 lanes (emitted as LLVM IR through numba's `intrinsic`: LLVM left the
scalar form's eight add chains scalar, ~1 cycle an element: add_channel_sums over LeNet
conv1's dY, 737,280 elements, 0.13 -> 0.05 ms on 2 Emerald Rapids cores); adding lane by lane
is the scalar form's arithmetic."""
from __future__ import annotations

from llvmlite import ir
from numba import types
from numba.extending import intrinsic

from .launch import serial
from .simd import counted_loop

#: running sums (float64 lanes of one 64-byte vector)
LANES = 8


@intrinsic
def _lane_sums(typingctx, src, start, blocks):
    """The 8 running sums over src[start:start + 8 blocks] (element i into sum i % 8), as a
    UniTuple of 8 float64."""
    if not (isinstance(src, types.Array) and src.dtype in (types.float32, types.float64)):
        return None
    out = types.UniTuple(types.float64, LANES)
    sig = out(src, start, blocks)

    def codegen(context, builder, signature, args):
        src_v, start_v, blocks_v = args
        wide = ir.VectorType(ir.DoubleType(), LANES)
        narrow = ir.VectorType(context.get_value_type(src.dtype), LANES)
        base = builder.gep(context.make_array(src)(context, builder, src_v).data, [start_v])

        def step(k, acc):
            pointer = builder.bitcast(builder.gep(base, [builder.mul(k, ir.Constant(
                ir.IntType(64), LANES))]), narrow.as_pointer())
            values = builder.load(pointer, align=1)
            if src.dtype == types.float32:
                values = builder.fpext(values, wide)
            return [builder.fadd(acc[0], values)]
        final, = counted_loop(builder, blocks_v, [ir.Constant(wide, [0.0] * LANES)], step,
                              "lanes")
        lanes = [builder.extract_element(final, ir.Constant(ir.IntType(32), k))
                 for k in range(LANES)]
        return context.make_tuple(builder, out, lanes)

    return sig, codegen


@serial
def sum_run(src, start, length):
    """sum(src[start:start + length]) in float64, in the order above."""
    whole = length // LANES
    s0, s1, s2, s3, s4, s5, s6, s7 = _lane_sums(src, start, whole)
    for q in range(whole * LANES, length):
        s0 += src[start + q]
    return ((s0 + s1) + (s2 + s3)) + ((s4 + s5) + (s6 + s7))
