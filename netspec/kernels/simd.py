"""Explicit vector code for the loops LLVM's vectoriser cannot shape well: a tile of dot
products whose vector partial sums must stay vectors between calls (tile_sums), and a tile of
a matrix product whose sums stay in registers (broadcast_tile_add).

Why: LLVM vectorises a sum loop by keeping one vector of partial sums per scalar sum, and at
the loop's end reduces each vector to a scalar (a shuffle-and-add tree per sum). The direct
weight gradient's loops run over one image's output plane (320 positions for cifar10_quick's
conv2: 20 vectors of 16), so its 20 sums spent about a quarter of the time in those
reductions. `tile_sums` adds into vectors that the caller keeps across images and reduces
once at the end (conv2's weight gradient 8.4 -> 6.7 ms on a 2-core Emerald Rapids VM).

Both are emitted as LLVM IR through numba's `intrinsic`: compiled with the kernels that call
them (and cached with them), no C extension to build. Lane q % LANES of a tile_sums partial
sum holds the terms of positions q, in order of q: the sums do not depend on the thread
count."""
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


@intrinsic
def broadcast_tile_add(typingctx, a, a_starts, a_step, b, b_start, b_step, b_lanes, steps, out,
                       out_starts):
    """A register tile of a small matrix product, R rows x V vectors, for the products that
    BLAS packs for more than it gains (an InnerProduct's weight gradient at small batches):

        out[out_starts[r] + LANES v + l] += sum over k < steps of
            a[a_starts[r] + k a_step] * b[b_start + k b_step + LANES v + l]

    for l < b_lanes[v] (the other lanes of out untouched, of b unread). The sums start from
    out's values and stay in registers to the end, each step loading V vectors of b,
    broadcasting R scalars of a and making R x V fused multiply-adds: each output's terms are
    added on in order of k. R = len(a_starts) = len(out_starts), V = len(b_lanes); R x V + V
    + 1 vectors should fit the 32 registers."""
    if not (isinstance(a_starts, types.UniTuple) and isinstance(out_starts, types.UniTuple)
            and isinstance(b_lanes, types.UniTuple) and a_starts.count == out_starts.count
            and a.dtype == b.dtype == out.dtype and out.dtype in (types.float32, types.float64)):
        return None
    count_r, count_v = a_starts.count, b_lanes.count
    lanes = acc_lanes(out.dtype)
    sig = types.void(a, a_starts, a_step, b, b_start, b_step, b_lanes, steps, out, out_starts)

    def codegen(context, builder, signature, args):
        a_v, a_start_v, a_step_v, b_v, b_start_v, b_step_v, b_lanes_v, steps_v, out_v, \
            out_start_v = args
        i64, i32 = ir.IntType(64), ir.IntType(32)
        scalar = context.get_value_type(out.dtype)
        vector = ir.VectorType(scalar, lanes)
        masks_type = ir.VectorType(ir.IntType(1), lanes)
        pointer = vector.as_pointer()
        suffix = f"v{lanes}f{out.dtype.bitwidth}"
        fma = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(vector, [vector] * 3), f"llvm.fma.{suffix}")
        masked_load = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(vector, [pointer, i32, masks_type, vector]),
            f"llvm.masked.load.{suffix}.p0")
        masked_store = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(ir.VoidType(), [vector, pointer, i32, masks_type]),
            f"llvm.masked.store.{suffix}.p0")
        a_data, b_data, out_data = (context.make_array(t)(context, builder, v).data
                                    for t, v in ((a, a_v), (b, b_v), (out, out_v)))
        lane_ids = ir.Constant(ir.VectorType(i64, lanes), list(range(lanes)))
        masks = []
        for v in range(count_v):
            valid = _splat(builder, builder.extract_value(b_lanes_v, v), lanes)
            masks.append(builder.icmp_signed("<", lane_ids, valid))
        align = ir.Constant(i32, out.dtype.bitwidth // 8)
        zero = ir.Constant(vector, [0.0] * lanes)
        out_ptrs = [[builder.bitcast(builder.gep(
            builder.gep(out_data, [builder.extract_value(out_start_v, r)]),
            [ir.Constant(i64, v * lanes)]), pointer) for v in range(count_v)]
            for r in range(count_r)]
        start = [builder.call(masked_load, [out_ptrs[r][v], align, masks[v], zero])
                 for r in range(count_r) for v in range(count_v)]
        a_ptrs = [builder.gep(a_data, [builder.extract_value(a_start_v, r)])
                  for r in range(count_r)]
        b_ptr = builder.gep(b_data, [b_start_v])
        entry = builder.block
        loop = builder.append_basic_block("broadcast.loop")
        done = builder.append_basic_block("broadcast.done")
        builder.cbranch(builder.icmp_signed(">", steps_v, ir.Constant(i64, 0)), loop, done)

        builder.position_at_end(loop)
        step = builder.phi(i64)
        partial = [builder.phi(vector) for _ in range(count_r * count_v)]
        row = builder.gep(b_ptr, [builder.mul(step, b_step_v)])
        b_vectors = [builder.call(masked_load, [
            builder.bitcast(builder.gep(row, [ir.Constant(i64, v * lanes)]), pointer), align,
            masks[v], zero]) for v in range(count_v)]
        a_offset = builder.mul(step, a_step_v)
        added = []
        for r in range(count_r):
            spread = _splat(builder, builder.load(builder.gep(a_ptrs[r], [a_offset])), lanes)
            added += [builder.call(fma, [spread, bv, partial[r * count_v + v]])
                      for v, bv in enumerate(b_vectors)]
        following = builder.add(step, ir.Constant(i64, 1))
        step.add_incoming(ir.Constant(i64, 0), entry)
        step.add_incoming(following, loop)
        for phi, first, last in zip(partial, start, added):
            phi.add_incoming(first, entry)
            phi.add_incoming(last, loop)
        builder.cbranch(builder.icmp_signed("<", following, steps_v), loop, done)

        builder.position_at_end(done)
        final = []
        for first, last in zip(start, added):
            phi = builder.phi(vector)
            phi.add_incoming(first, entry)
            phi.add_incoming(last, loop)
            final.append(phi)
        for r in range(count_r):
            for v in range(count_v):
                builder.call(masked_store, [final[r * count_v + v], out_ptrs[r][v], align,
                                            masks[v]])
        return context.get_dummy_value()

    return sig, codegen



@intrinsic
def copy_padded(typingctx, src, src_start, dst, dst_start, count, width):
    """dst[dst_start:dst_start + width] = src[src_start:src_start + count] then zeros
    (count <= width): a vector at a time, each under a mask, where a loop over a short row
    (24 of LeNet's conv1 output) ran scalar."""
    if not (src.dtype == dst.dtype and dst.dtype in (types.float32, types.float64)):
        return None
    lanes = acc_lanes(dst.dtype)
    sig = types.void(src, src_start, dst, dst_start, count, width)

    def codegen(context, builder, signature, args):
        src_v, src_start_v, dst_v, dst_start_v, count_v, width_v = args
        i64, i32 = ir.IntType(64), ir.IntType(32)
        vector = ir.VectorType(context.get_value_type(dst.dtype), lanes)
        masks_type = ir.VectorType(ir.IntType(1), lanes)
        pointer = vector.as_pointer()
        suffix = f"v{lanes}f{dst.dtype.bitwidth}"
        masked_load = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(vector, [pointer, i32, masks_type, vector]),
            f"llvm.masked.load.{suffix}.p0")
        masked_store = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(ir.VoidType(), [vector, pointer, i32, masks_type]),
            f"llvm.masked.store.{suffix}.p0")
        align = ir.Constant(i32, dst.dtype.bitwidth // 8)
        source = builder.gep(context.make_array(src)(context, builder, src_v).data, [src_start_v])
        target = builder.gep(context.make_array(dst)(context, builder, dst_v).data, [dst_start_v])
        lane_ids = ir.Constant(ir.VectorType(i64, lanes), list(range(lanes)))
        entry = builder.block
        loop = builder.append_basic_block("copy.loop")
        done = builder.append_basic_block("copy.done")
        builder.cbranch(builder.icmp_signed(">", width_v, ir.Constant(i64, 0)), loop, done)

        builder.position_at_end(loop)
        offset = builder.phi(i64)
        positions = builder.add(lane_ids, _splat(builder, offset, lanes))
        read = builder.icmp_signed("<", positions, _splat(builder, count_v, lanes))
        write = builder.icmp_signed("<", positions, _splat(builder, width_v, lanes))
        values = builder.call(masked_load, [builder.bitcast(builder.gep(source, [offset]), pointer),
                                            align, read, ir.Constant(vector, [0.0] * lanes)])
        builder.call(masked_store, [values, builder.bitcast(builder.gep(target, [offset]), pointer),
                                    align, write])
        following = builder.add(offset, ir.Constant(i64, lanes))
        offset.add_incoming(ir.Constant(i64, 0), entry)
        offset.add_incoming(following, loop)
        builder.cbranch(builder.icmp_signed("<", following, width_v), loop, done)
        builder.position_at_end(done)
        return context.get_dummy_value()

    return sig, codegen


@intrinsic
def window_tile(typingctx, a, a_starts, b, b_start, offsets, segments, bounds, steps, init,
                out, out_starts, out_lanes):
    """A register tile of a direct convolution, R filters x V vectors of output positions:

        out[out_starts[r] + LANES v + l] = init[r] + sum over k < steps of
            a[a_starts[r] + k] * b[b_start + offsets[k] + segments[2 v + s] + l]

    for l < out_lanes[v], where s is the segment (0 or 1) whose lanes
    [bounds[2 (2 v + s)], bounds[2 (2 v + s) + 1]) hold l (no segment: the term is 0). A vector
    of output positions may span two output rows, whose inputs lie apart: each row's part is
    one masked load. a holds the filters (R rows of `steps` taps), offsets[k] the input offset
    of tap k (channel, kernel row and column). Each step loads 2V masked vectors, broadcasts R
    filter taps and makes R x V fused multiply-adds: each output's terms in order of k."""
    if not (isinstance(a_starts, types.UniTuple) and isinstance(out_starts, types.UniTuple)
            and isinstance(segments, types.UniTuple) and isinstance(bounds, types.UniTuple)
            and isinstance(init, types.UniTuple) and isinstance(out_lanes, types.UniTuple)
            and a_starts.count == out_starts.count == init.count
            and segments.count == 2 * out_lanes.count and bounds.count == 2 * segments.count
            and a.dtype == b.dtype == out.dtype and out.dtype in (types.float32, types.float64)):
        return None
    count_r, count_v = a_starts.count, out_lanes.count
    lanes = acc_lanes(out.dtype)
    sig = types.void(a, a_starts, b, b_start, offsets, segments, bounds, steps, init, out,
                     out_starts, out_lanes)

    def codegen(context, builder, signature, args):
        (a_v, a_start_v, b_v, b_start_v, offsets_v, segments_v, bounds_v, steps_v, init_v,
         out_v, out_start_v, out_lanes_v) = args
        i64, i32 = ir.IntType(64), ir.IntType(32)
        vector = ir.VectorType(context.get_value_type(out.dtype), lanes)
        masks_type = ir.VectorType(ir.IntType(1), lanes)
        pointer = vector.as_pointer()
        suffix = f"v{lanes}f{out.dtype.bitwidth}"
        fma = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(vector, [vector] * 3), f"llvm.fma.{suffix}")
        masked_load = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(vector, [pointer, i32, masks_type, vector]),
            f"llvm.masked.load.{suffix}.p0")
        masked_store = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(ir.VoidType(), [vector, pointer, i32, masks_type]),
            f"llvm.masked.store.{suffix}.p0")
        a_data, b_data, out_data, offsets_data = (
            context.make_array(t)(context, builder, v).data
            for t, v in ((a, a_v), (b, b_v), (out, out_v), (offsets, offsets_v)))
        lane_ids = ir.Constant(ir.VectorType(i64, lanes), list(range(lanes)))
        align = ir.Constant(i32, out.dtype.bitwidth // 8)
        zero = ir.Constant(vector, [0.0] * lanes)

        def lane_mask(lo, hi):
            return builder.and_(builder.icmp_signed(">=", lane_ids, _splat(builder, lo, lanes)),
                                builder.icmp_signed("<", lane_ids, _splat(builder, hi, lanes)))
        seg_masks = [lane_mask(builder.extract_value(bounds_v, 2 * q),
                               builder.extract_value(bounds_v, 2 * q + 1))
                     for q in range(2 * count_v)]
        b_base = builder.gep(b_data, [b_start_v])
        seg_ptrs = [builder.gep(b_base, [builder.extract_value(segments_v, q)])
                    for q in range(2 * count_v)]
        a_ptrs = [builder.gep(a_data, [builder.extract_value(a_start_v, r)])
                  for r in range(count_r)]
        start = [_splat(builder, builder.extract_value(init_v, r), lanes)
                 for r in range(count_r) for _ in range(count_v)]
        entry = builder.block
        loop = builder.append_basic_block("window.loop")
        done = builder.append_basic_block("window.done")
        builder.cbranch(builder.icmp_signed(">", steps_v, ir.Constant(i64, 0)), loop, done)

        builder.position_at_end(loop)
        step = builder.phi(i64)
        partial = [builder.phi(vector) for _ in range(count_r * count_v)]
        offset = builder.load(builder.gep(offsets_data, [step]))
        b_vectors = []
        for v in range(count_v):
            first = builder.call(masked_load, [
                builder.bitcast(builder.gep(seg_ptrs[2 * v], [offset]), pointer), align,
                seg_masks[2 * v], zero])
            b_vectors.append(builder.call(masked_load, [
                builder.bitcast(builder.gep(seg_ptrs[2 * v + 1], [offset]), pointer), align,
                seg_masks[2 * v + 1], first]))
        added = []
        for r in range(count_r):
            spread = _splat(builder, builder.load(builder.gep(a_ptrs[r], [step])), lanes)
            added += [builder.call(fma, [spread, bv, partial[r * count_v + v]])
                      for v, bv in enumerate(b_vectors)]
        following = builder.add(step, ir.Constant(i64, 1))
        step.add_incoming(ir.Constant(i64, 0), entry)
        step.add_incoming(following, loop)
        for phi, first, last in zip(partial, start, added):
            phi.add_incoming(first, entry)
            phi.add_incoming(last, loop)
        builder.cbranch(builder.icmp_signed("<", following, steps_v), loop, done)

        builder.position_at_end(done)
        final = []
        for first, last in zip(start, added):
            phi = builder.phi(vector)
            phi.add_incoming(first, entry)
            phi.add_incoming(last, loop)
            final.append(phi)
        for r in range(count_r):
            base = builder.gep(out_data, [builder.extract_value(out_start_v, r)])
            for v in range(count_v):
                mask = builder.icmp_signed("<", lane_ids, _splat(
                    builder, builder.extract_value(out_lanes_v, v), lanes))
                builder.call(masked_store, [final[r * count_v + v], builder.bitcast(
                    builder.gep(base, [ir.Constant(i64, v * lanes)]), pointer), align, mask])
        return context.get_dummy_value()

    return sig, codegen

def _splat(builder, value, lanes):
    """A vector of `lanes` copies of a scalar IR value."""
    vector = ir.VectorType(value.type, lanes)
    first = builder.insert_element(ir.Constant(vector, None), value, ir.Constant(ir.IntType(32), 0))
    return builder.shuffle_vector(first, ir.Constant(vector, None),
                                  ir.Constant(ir.VectorType(ir.IntType(32), lanes), [0] * lanes))
