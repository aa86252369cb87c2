"""Explicit vector code for the one loop LLVM's vectoriser cannot shape well: a tile of dot
products whose vector partial sums must stay vectors between calls.

Why: LLVM vectorises a sum loop by keeping one vector of partial sums per scalar sum, and at
the loop's end reduces each vector to a scalar (a shuffle-and-add tree per sum). The direct
weight gradient's loops run over one image's output plane (320 positions for cifar10_quick's
conv2: 20 vectors of 16), so its 20 sums spent about a quarter of the time in those
reductions. `tile_sums` adds into vectors that the caller keeps across images and reduces
once at the end (conv2's weight gradient 8.4 -> 6.7 ms on a 2-core Emerald Rapids VM).

It is emitted as LLVM IR through numba's `intrinsic`: compiled with the kernels that call it
(and cached with them), no C extension to build. Lane q % LANES of a partial sum holds the
terms of positions q, in order of q: the sums do not depend on the thread count."""
from __future__ import annotations

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic


@intrinsic
def tile_sums(typingctx, rows, row_starts, cols, col_starts, length, acc):
    """acc (R * T, LANES), row r * T + t, lane l += the sum over q < length with q % LANES == l
    of rows[row_starts[r] + q] * cols[col_starts[t] + q]: R x T dot products, each one fused
    multiply-add a vector. `length` must be a multiple of LANES (the caller adds the rest);
    rows, cols and acc flat arrays of one float type, acc C-contiguous."""
    if not (isinstance(row_starts, types.UniTuple) and isinstance(col_starts, types.UniTuple)
            and rows.dtype == cols.dtype == acc.dtype and acc.dtype in (types.float32,
                                                                         types.float64)):
        return None
    count_r, count_t = row_starts.count, col_starts.count
    lanes = acc_lanes(acc.dtype)
    sig = types.void(rows, row_starts, cols, col_starts, length, acc)

    def codegen(context, builder, signature, args):
        rows_v, row_v, cols_v, col_v, length_v, acc_v = args
        i64 = ir.IntType(64)
        vector = ir.VectorType(context.get_value_type(acc.dtype), lanes)
        pointer = vector.as_pointer()
        fma = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(vector, [vector] * 3),
            f"llvm.fma.v{lanes}f{acc.dtype.bitwidth}")
        data = [context.make_array(t)(context, builder, v).data
                for t, v in ((rows, rows_v), (cols, cols_v), (acc, acc_v))]
        row_ptrs = [builder.gep(data[0], [builder.extract_value(row_v, r)]) for r in range(count_r)]
        col_ptrs = [builder.gep(data[1], [builder.extract_value(col_v, t)]) for t in range(count_t)]
        sums = [builder.bitcast(builder.gep(data[2], [ir.Constant(i64, k * lanes)]), pointer)
                for k in range(count_r * count_t)]
        start = [builder.load(p, align=1) for p in sums]
        steps = builder.udiv(length_v, ir.Constant(i64, lanes))
        entry = builder.block
        loop = builder.append_basic_block("tile.loop")
        done = builder.append_basic_block("tile.done")
        builder.cbranch(builder.icmp_unsigned(">", steps, ir.Constant(i64, 0)), loop, done)

        builder.position_at_end(loop)
        step = builder.phi(i64)
        partial = [builder.phi(vector) for _ in sums]
        offset = builder.mul(step, ir.Constant(i64, lanes))

        def load(base):
            return builder.load(builder.bitcast(builder.gep(base, [offset]), pointer), align=1)
        col_vectors = [load(p) for p in col_ptrs]
        added = []
        for r in range(count_r):
            row_vector = load(row_ptrs[r])
            added += [builder.call(fma, [row_vector, c, partial[r * count_t + t]])
                      for t, c in enumerate(col_vectors)]
        following = builder.add(step, ir.Constant(i64, 1))
        step.add_incoming(ir.Constant(i64, 0), entry)
        step.add_incoming(following, loop)
        for phi, first, last in zip(partial, start, added):
            phi.add_incoming(first, entry)
            phi.add_incoming(last, loop)
        builder.cbranch(builder.icmp_unsigned("<", following, steps), loop, done)

        builder.position_at_end(done)
        final = []
        for first, last in zip(start, added):
            phi = builder.phi(vector)
            phi.add_incoming(first, entry)
            phi.add_incoming(last, loop)
            final.append(phi)
        for value, p in zip(final, sums):
            builder.store(value, p, align=1)
        return context.get_dummy_value()

    return sig, codegen


def acc_lanes(dtype) -> int:
    """Lanes of tile_sums's partial sums for a numba float type: one 64-byte vector."""
    return 64 // (dtype.bitwidth // 8)
