"""Explicit vector code for the loops LLVM's vectoriser cannot shape well.

- `tile_sums`: a tile of dot products whose vector partial sums stay vectors between calls.
  LLVM vectorises a sum loop by keeping one vector of partial sums per scalar sum and reduces
  each to a scalar at the loop's end (a shuffle-and-add tree per sum); the direct weight
  gradient's loops run over one image's output plane (320 positions for cifar10_quick's
  conv2: 20 vectors of 16), so its 20 sums spent about a quarter of the time in those
  reductions. Kept across images and reduced once: conv2's weight gradient 8.4 -> 6.7 ms on a
  2-core Emerald Rapids VM.
- `broadcast_tile_add` and `window_tile`: register tiles of a matrix product whose sums stay
  in registers for the whole loop (R x V vectors, each step R scalars broadcast against V
  vectors), as BLAS micro-kernels are; LLVM keeps such sums in memory between iterations.
- `copy_padded`: a short row copied under masks, where a loop of 24 ran scalar.

All are emitted as LLVM IR through numba's `intrinsic`: compiled with the kernels that call
them (and cached with them), no C extension to build. Every sum adds its terms in a fixed
order (lane by lane, step by step): results do not depend on the thread count."""
from __future__ import annotations

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

from .launch import serial

I64, I32 = ir.IntType(64), ir.IntType(32)


def acc_lanes(dtype) -> int:
    """Lanes of one 64-byte vector of a numba float type (tile_sums's partial sums)."""
    return 64 // (dtype.bitwidth // 8)


@serial
def four_vectors(count, lanes):
    """The lanes that a run of `count` elements fills in each of four vectors of `lanes`, from
    the first (the b_lanes / out_lanes of a 4-vector tile; 0 for a vector past the run)."""
    return (min(lanes, max(0, count)), min(lanes, max(0, count - lanes)),
            min(lanes, max(0, count - 2 * lanes)), min(lanes, max(0, count - 3 * lanes)))


def _floats(*arrays) -> bool:
    return len({a.dtype for a in arrays}) == 1 and arrays[0].dtype in (types.float32,
                                                                      types.float64)


def _tuples(*values) -> bool:
    return all(isinstance(v, types.UniTuple) for v in values)


class _Vectors:
    """One 64-byte vector type of a float dtype and the LLVM intrinsics on it."""

    def __init__(self, builder, context, dtype):
        self.builder = builder
        self.lanes = acc_lanes(dtype)
        self.type = ir.VectorType(context.get_value_type(dtype), self.lanes)
        pointer = self.type.as_pointer()
        masks = ir.VectorType(ir.IntType(1), self.lanes)
        suffix = f"v{self.lanes}f{dtype.bitwidth}"
        module = builder.module
        self._fma = cgutils.get_or_insert_function(
            module, ir.FunctionType(self.type, [self.type] * 3), f"llvm.fma.{suffix}")
        self._load = cgutils.get_or_insert_function(
            module, ir.FunctionType(self.type, [pointer, I32, masks, self.type]),
            f"llvm.masked.load.{suffix}.p0")
        self._store = cgutils.get_or_insert_function(
            module, ir.FunctionType(ir.VoidType(), [self.type, pointer, I32, masks]),
            f"llvm.masked.store.{suffix}.p0")
        self.align = ir.Constant(I32, dtype.bitwidth // 8)
        self.zero = ir.Constant(self.type, [0.0] * self.lanes)
        self.lane_ids = ir.Constant(ir.VectorType(I64, self.lanes), list(range(self.lanes)))

    def at(self, base, *offsets):
        """A vector pointer to base + the offsets (scalar element pointers, i64 offsets)."""
        for offset in offsets:
            base = self.builder.gep(base, [offset])
        return self.builder.bitcast(base, self.type.as_pointer())

    def splat(self, value):
        return splat(self.builder, value, self.lanes)

    def below(self, count, first=None):
        """The mask of lanes l (first + l, with `first`) below count."""
        lanes = self.lane_ids if first is None else self.builder.add(self.lane_ids,
                                                                     self.splat(first))
        return self.builder.icmp_signed("<", lanes, self.splat(count))

    def between(self, lo, hi):
        return self.builder.and_(self.builder.icmp_signed(">=", self.lane_ids, self.splat(lo)),
                                 self.below(hi))

    def load(self, pointer, mask=None, passthru=None):
        if mask is None:
            return self.builder.load(pointer, align=1)
        return self.builder.call(self._load, [pointer, self.align, mask,
                                              self.zero if passthru is None else passthru])

    def store(self, value, pointer, mask=None):
        if mask is None:
            self.builder.store(value, pointer, align=1)
        else:
            self.builder.call(self._store, [value, pointer, self.align, mask])

    def fma(self, a, b, c):
        return self.builder.call(self._fma, [a, b, c])


def counted_loop(builder, count, initial, body, name):
    """values = body(step, values) for step in range(count) (an i64; none when <= 0), from
    `initial`; returns the values after the loop (`initial` when it ran none)."""
    entry = builder.block
    loop = builder.append_basic_block(f"{name}.loop")
    done = builder.append_basic_block(f"{name}.done")
    builder.cbranch(builder.icmp_signed(">", count, ir.Constant(I64, 0)), loop, done)
    builder.position_at_end(loop)
    step = builder.phi(I64)
    values = [builder.phi(v.type) for v in initial]
    updated = body(step, values)
    end = builder.block
    following = builder.add(step, ir.Constant(I64, 1))
    step.add_incoming(ir.Constant(I64, 0), entry)
    step.add_incoming(following, end)
    for phi, first, last in zip(values, initial, updated):
        phi.add_incoming(first, entry)
        phi.add_incoming(last, end)
    builder.cbranch(builder.icmp_signed("<", following, count), loop, done)
    builder.position_at_end(done)
    final = []
    for first, last in zip(initial, updated):
        phi = builder.phi(first.type)
        phi.add_incoming(first, entry)
        phi.add_incoming(last, end)
        final.append(phi)
    return final


def splat(builder, value, lanes):
    """A vector of `lanes` copies of a scalar IR value."""
    vector = ir.VectorType(value.type, lanes)
    first = builder.insert_element(ir.Constant(vector, None), value, ir.Constant(I32, 0))
    return builder.shuffle_vector(first, ir.Constant(vector, None),
                                  ir.Constant(ir.VectorType(I32, lanes), [0] * lanes))


def _data(context, builder, array_type, value):
    return context.make_array(array_type)(context, builder, value).data


def _fields(builder, pack, count):
    return [builder.extract_value(pack, k) for k in range(count)]


@intrinsic
def tile_sums(typingctx, rows, row_starts, cols, col_starts, length, acc):
    """acc (R * T, LANES), row r * T + t, lane l += the sum over q < length with q % LANES == l
    of rows[row_starts[r] + q] * cols[col_starts[t] + q]: R x T dot products, each one fused
    multiply-add a vector. `length` must be a multiple of LANES (the caller adds the rest);
    rows, cols and acc flat arrays of one float type, acc C-contiguous."""
    if not (_tuples(row_starts, col_starts) and _floats(rows, cols, acc)):
        return None
    count_r, count_t = row_starts.count, col_starts.count
    sig = types.void(rows, row_starts, cols, col_starts, length, acc)

    def codegen(context, builder, signature, args):
        rows_v, row_v, cols_v, col_v, length_v, acc_v = args
        vec = _Vectors(builder, context, acc.dtype)
        lanes = vec.lanes
        row_ptrs = [builder.gep(_data(context, builder, rows, rows_v), [s])
                    for s in _fields(builder, row_v, count_r)]
        col_ptrs = [builder.gep(_data(context, builder, cols, cols_v), [s])
                    for s in _fields(builder, col_v, count_t)]
        acc_data = _data(context, builder, acc, acc_v)
        sums = [vec.at(acc_data, ir.Constant(I64, k * lanes)) for k in range(count_r * count_t)]

        def step(k, partial):
            offset = builder.mul(k, ir.Constant(I64, lanes))
            col_vectors = [vec.load(vec.at(p, offset)) for p in col_ptrs]
            added = []
            for r in range(count_r):
                row_vector = vec.load(vec.at(row_ptrs[r], offset))
                added += [vec.fma(row_vector, c, partial[r * count_t + t])
                          for t, c in enumerate(col_vectors)]
            return added
        final = counted_loop(builder, builder.udiv(length_v, ir.Constant(I64, lanes)),
                             [vec.load(p) for p in sums], step, "tile")
        for value, p in zip(final, sums):
            vec.store(value, p)
        return context.get_dummy_value()

    return sig, codegen


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
    if not (_tuples(a_starts, out_starts, b_lanes) and a_starts.count == out_starts.count
            and _floats(a, b, out)):
        return None
    count_r, count_v = a_starts.count, b_lanes.count
    sig = types.void(a, a_starts, a_step, b, b_start, b_step, b_lanes, steps, out, out_starts)

    def codegen(context, builder, signature, args):
        a_v, a_start_v, a_step_v, b_v, b_start_v, b_step_v, b_lanes_v, steps_v, out_v, \
            out_start_v = args
        vec = _Vectors(builder, context, out.dtype)
        masks = [vec.below(n) for n in _fields(builder, b_lanes_v, count_v)]
        out_data = _data(context, builder, out, out_v)
        out_ptrs = [[vec.at(out_data, start, ir.Constant(I64, v * vec.lanes))
                     for v in range(count_v)] for start in _fields(builder, out_start_v, count_r)]
        a_ptrs = [builder.gep(_data(context, builder, a, a_v), [s])
                  for s in _fields(builder, a_start_v, count_r)]
        b_ptr = builder.gep(_data(context, builder, b, b_v), [b_start_v])

        def step(k, partial):
            row = builder.gep(b_ptr, [builder.mul(k, b_step_v)])
            b_vectors = [vec.load(vec.at(row, ir.Constant(I64, v * vec.lanes)), masks[v])
                         for v in range(count_v)]
            a_offset = builder.mul(k, a_step_v)
            return _products(builder, vec, a_ptrs, a_offset, b_vectors, partial)
        start = [vec.load(p, masks[v]) for ptrs in out_ptrs for v, p in enumerate(ptrs)]
        final = counted_loop(builder, steps_v, start, step, "broadcast")
        for k, value in enumerate(final):
            vec.store(value, out_ptrs[k // count_v][k % count_v], masks[k % count_v])
        return context.get_dummy_value()

    return sig, codegen


def _products(builder, vec, a_ptrs, a_offset, b_vectors, partial):
    """The tile's next sums: partial[r V + v] + a_r[a_offset] (broadcast) * b_vectors[v]."""
    added = []
    for r, pointer in enumerate(a_ptrs):
        spread = vec.splat(builder.load(builder.gep(pointer, [a_offset])))
        added += [vec.fma(spread, bv, partial[r * len(b_vectors) + v])
                  for v, bv in enumerate(b_vectors)]
    return added


def _window_tile(accumulate):
    """window_tile (out = init + sums) or window_tile_add (out += sums, init unused)."""
    def typer(typingctx, a, a_starts, b, b_start, offsets, segments, bounds, steps, init, out,
              out_starts, out_lanes):
        if not (_tuples(a_starts, out_starts, segments, bounds, init, out_lanes)
                and a_starts.count == out_starts.count == init.count
                and segments.count in (out_lanes.count, 2 * out_lanes.count)
                and bounds.count == 2 * segments.count
                and _floats(a, b, out)):
            return None
        sig = types.void(a, a_starts, b, b_start, offsets, segments, bounds, steps, init, out,
                         out_starts, out_lanes)
        return sig, _window_codegen(accumulate, a, b, offsets, init, out, a_starts.count,
                                    out_lanes.count, segments.count // out_lanes.count)
    typer.__name__ = "window_tile_add" if accumulate else "window_tile"
    typer.__doc__ = WINDOW_TILE_DOC
    return intrinsic(typer)


WINDOW_TILE_DOC = """A register tile of a direct convolution, R rows (filters) x V vectors:

        out[out_starts[r] + LANES v + l] = init[r] + sum over k < steps of
            a[a_starts[r] + k] * b[b_start + offsets[k] + segments[S v + s] + l]

    (window_tile_add: out[...] += the sum, init unused) for l < out_lanes[v], where s is the
    part (S = len(segments) / V of them: 1 or 2) whose lanes [bounds[2 (S v + s)],
    bounds[2 (S v + s) + 1]) hold l (none: the term is 0). A vector of output positions may
    span two output rows, whose inputs lie apart: each row's part is one masked load.
    offsets[k] is where step k's inputs start (a filter tap's channel, kernel row and column;
    or an output position). Each step loads S V masked vectors, broadcasts R scalars of a and
    makes R x V fused multiply-adds: each output's terms in order of k."""


def _window_codegen(accumulate, a, b, offsets, init, out, count_r, count_v, parts):
    def codegen(context, builder, signature, args):
        (a_v, a_start_v, b_v, b_start_v, offsets_v, segments_v, bounds_v, steps_v, init_v,
         out_v, out_start_v, out_lanes_v) = args
        vec = _Vectors(builder, context, out.dtype)
        edges = _fields(builder, bounds_v, 2 * parts * count_v)
        seg_masks = [vec.between(edges[2 * q], edges[2 * q + 1])
                     for q in range(parts * count_v)]
        b_base = builder.gep(_data(context, builder, b, b_v), [b_start_v])
        seg_ptrs = [builder.gep(b_base, [s])
                    for s in _fields(builder, segments_v, parts * count_v)]
        a_ptrs = [builder.gep(_data(context, builder, a, a_v), [s])
                  for s in _fields(builder, a_start_v, count_r)]
        offsets_data = _data(context, builder, offsets, offsets_v)
        out_data = _data(context, builder, out, out_v)
        stores = [vec.below(n) for n in _fields(builder, out_lanes_v, count_v)]
        out_ptrs = [vec.at(out_data, base, ir.Constant(I64, v * vec.lanes))
                    for base in _fields(builder, out_start_v, count_r) for v in range(count_v)]

        def step(k, partial):
            offset = builder.load(builder.gep(offsets_data, [k]))
            b_vectors = []
            for v in range(count_v):
                loaded = None
                for q in range(parts * v, parts * v + parts):
                    loaded = vec.load(vec.at(seg_ptrs[q], offset), seg_masks[q], loaded)
                b_vectors.append(loaded)
            return _products(builder, vec, a_ptrs, k, b_vectors, partial)
        if accumulate:
            start = [vec.load(p, stores[k % count_v]) for k, p in enumerate(out_ptrs)]
        else:
            start = [vec.splat(context.cast(builder, value, init.dtype, out.dtype))
                     for value in _fields(builder, init_v, count_r) for _ in range(count_v)]
        final = counted_loop(builder, steps_v, start, step, "window")
        for k, value in enumerate(final):
            vec.store(value, out_ptrs[k], stores[k % count_v])
        return context.get_dummy_value()
    return codegen


window_tile = _window_tile(False)
window_tile_add = _window_tile(True)


@intrinsic
def copy_padded(typingctx, src, src_start, dst, dst_start, count, width):
    """dst[dst_start:dst_start + width] = src[src_start:src_start + count] then zeros
    (count <= width): a vector at a time, each under a mask, where a loop over a short row
    (24 of LeNet's conv1 output) ran scalar."""
    if not _floats(src, dst):
        return None
    sig = types.void(src, src_start, dst, dst_start, count, width)

    def codegen(context, builder, signature, args):
        src_v, src_start_v, dst_v, dst_start_v, count_v, width_v = args
        vec = _Vectors(builder, context, dst.dtype)
        source = builder.gep(_data(context, builder, src, src_v), [src_start_v])
        target = builder.gep(_data(context, builder, dst, dst_v), [dst_start_v])
        lanes = ir.Constant(I64, vec.lanes)

        def step(k, _):
            offset = builder.mul(k, lanes)
            values = vec.load(vec.at(source, offset), vec.below(count_v, offset))
            vec.store(values, vec.at(target, offset), vec.below(width_v, offset))
            return []
        blocks = builder.udiv(builder.add(width_v, ir.Constant(I64, vec.lanes - 1)), lanes)
        counted_loop(builder, blocks, [], step, "copy")
        return context.get_dummy_value()

    return sig, codegen
