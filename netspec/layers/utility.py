"""Shape and plumbing layers: Flatten, Reshape, Concat, Slice, Eltwise, Tile, Crop, Reduction,
ArgMax, Embed, Silence, Parameter. None loops over items: only over a few inputs or outputs."""
from __future__ import annotations

import numpy as np
from pydantic import Field, model_validator

from ..kernels import flat, kernels_for
from ..params import ParamView
from ..proto import netspec_pb2 as pb
from ..registry import register_layer
from .base import Layer, LayerSetupError, canonical_axis, xp_of


def along(axis: int, lo: int, hi: int) -> tuple:
    """The index of [lo, hi) along `axis`."""
    return (slice(None),) * axis + (slice(lo, hi),)


class FlattenView(ParamView):
    axis: int = 1
    end_axis: int = -1


@register_layer("Flatten")
class Flatten(Layer):
    """Merge axes axis..end_axis into one."""
    param_field = "flatten_param"
    Params = FlattenView
    runs_on_device = True
    summary = "merge axes axis..end_axis into one"

    def reshape(self, bottom, top):
        shape = bottom[0].shape
        a = canonical_axis(self.p.axis, len(shape))
        e = canonical_axis(self.p.end_axis, len(shape), "end_axis")
        top[0].reshape(*shape[:a], int(np.prod(shape[a:e + 1])), *shape[e + 1:])

    def forward(self, bottom, top):
        top[0].data[...] = bottom[0].data.reshape(top[0].shape)

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            bottom[0].diff[...] = top[0].diff.reshape(bottom[0].shape)


class ReshapeView(ParamView):
    shape: pb.BlobShape
    axis: int = 0
    num_axes: int = Field(-1, ge=-1)


@register_layer("Reshape")
class Reshape(Flatten):
    """Caffe's Reshape: replace axes [axis, axis + num_axes) by `shape`, where 0 copies the
    bottom's dimension and one -1 is inferred."""
    param_field = "reshape_param"
    Params = ReshapeView
    summary = "new shape (0 = keep, -1 = infer) over axes [axis, axis + num_axes)"

    def reshape(self, bottom, top):
        shape, dims = bottom[0].shape, list(self.p.shape.dim)
        start = self.p.axis if self.p.axis >= 0 else len(shape) + 1 + self.p.axis
        if not 0 <= start <= len(shape):
            raise LayerSetupError(f"axis {self.p.axis} out of range for {shape}", field="axis")
        end = len(shape) if self.p.num_axes == -1 else start + self.p.num_axes
        if end > len(shape):
            raise LayerSetupError(f"axis + num_axes ({end}) exceeds the {len(shape)} axes of "
                                  f"{shape}", field="num_axes")
        new = [shape[start + i] if d == 0 else d for i, d in enumerate(dims)]
        if new.count(-1) > 1:
            raise LayerSetupError("shape may infer (-1) only one dimension", field="shape")
        full = [*shape[:start], *new, *shape[end:]]
        if -1 in full:
            known = int(np.prod([d for d in full if d != -1]))
            if known == 0 or bottom[0].count % known:
                raise LayerSetupError(f"cannot infer -1 in {dims} for {shape}", field="shape")
            full[full.index(-1)] = bottom[0].count // known
        if int(np.prod(full)) != bottom[0].count:
            raise LayerSetupError(f"shape {full} holds {int(np.prod(full))} values, the bottom "
                                  f"{shape} has {bottom[0].count}", field="shape")
        top[0].reshape(full)


class ConcatView(ParamView):
    axis: int = 1
    concat_dim: int = 1


def concat_axis(p, ndim):
    """`axis`, or the legacy `concat_dim` / `slice_dim` when only that is given."""
    legacy = "concat_dim" if hasattr(p, "concat_dim") else "slice_dim"
    if legacy in p.set_fields and "axis" not in p.set_fields:
        return canonical_axis(getattr(p, legacy), ndim, legacy)
    return canonical_axis(p.axis, ndim)


@register_layer("Concat")
class Concat(Layer):
    """Join bottoms along `axis`; backward hands each bottom its slice."""
    param_field = "concat_param"
    Params = ConcatView
    bottoms = (1, None)
    runs_on_device = True
    summary = "join bottoms along axis"

    def reshape(self, bottom, top):
        first = bottom[0].shape
        self.axis = concat_axis(self.p, len(first))
        for b in bottom[1:]:
            if len(b.shape) != len(first) or any(
                    d != e for i, (d, e) in enumerate(zip(b.shape, first)) if i != self.axis):
                raise LayerSetupError(f"bottoms {first} and {b.shape} differ off axis "
                                      f"{self.axis}")
        self.bounds = np.cumsum([0] + [b.shape[self.axis] for b in bottom])
        shape = list(first)
        shape[self.axis] = int(self.bounds[-1])
        top[0].reshape(shape)

    def forward(self, bottom, top):
        y = top[0].data
        for b, lo, hi in zip(bottom, self.bounds[:-1], self.bounds[1:]):
            y[along(self.axis, int(lo), int(hi))] = b.data

    def backward(self, top, propagate_down, bottom):
        dy = top[0].diff
        for b, lo, hi, down in zip(bottom, self.bounds[:-1], self.bounds[1:], propagate_down):
            if down:
                b.diff[...] = dy[along(self.axis, int(lo), int(hi))]


class SliceView(ParamView):
    axis: int = 1
    slice_dim: int = 1
    slice_point: list[int] = []


@register_layer("Slice")
class Slice(Layer):
    """Cut the bottom along `axis` at slice_point (or into equal parts, one per top)."""
    param_field = "slice_param"
    Params = SliceView
    tops = (1, None)
    runs_on_device = True
    summary = "cut along axis at slice_point (or equally)"

    def reshape(self, bottom, top):
        shape = bottom[0].shape
        self.axis = concat_axis(self.p, len(shape))
        size = shape[self.axis]
        points = list(self.p.slice_point)
        if points:
            if len(points) != len(top) - 1:
                raise LayerSetupError(f"{len(points)} slice points for {len(top)} tops",
                                      field="slice_point")
            if points != sorted(points) or points[0] <= 0 or points[-1] >= size:
                raise LayerSetupError(f"slice points {points} must increase within "
                                      f"(0, {size})", field="slice_point")
        else:
            if size % len(top):
                raise LayerSetupError(f"axis {self.axis} of size {size} does not split into "
                                      f"{len(top)} equal parts")
            points = [size // len(top) * i for i in range(1, len(top))]
        self.points = points
        for t, lo, hi in zip(top, [0] + points, points + [size]):
            s = list(shape)
            s[self.axis] = hi - lo
            t.reshape(s)

    def bounds(self, size: int):
        return zip([0] + self.points, self.points + [size])

    def forward(self, bottom, top):
        x = bottom[0].data
        for t, (lo, hi) in zip(top, self.bounds(x.shape[self.axis])):
            t.data[...] = x[along(self.axis, lo, hi)]

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            dx = bottom[0].diff
            for t, (lo, hi) in zip(top, self.bounds(dx.shape[self.axis])):
                dx[along(self.axis, lo, hi)] = t.diff


class EltwiseView(ParamView):
    operation: str = "SUM"
    coeff: list[float] = []
    stable_prod_grad: bool = True


@register_layer("Eltwise")
class Eltwise(Layer):
    """Element-wise PROD, SUM (with one coeff per bottom) or MAX (gradient to the first
    maximum, as Caffe) of bottoms of one shape."""
    param_field = "eltwise_param"
    Params = EltwiseView
    bottoms = (2, None)
    runs_on_device = True
    summary = "element-wise PROD, SUM (coeff) or MAX of bottoms"

    def reshape(self, bottom, top):
        for b in bottom[1:]:
            if b.shape != bottom[0].shape:
                raise LayerSetupError(f"bottoms must share a shape: {bottom[0].shape} vs "
                                      f"{b.shape}")
        if self.p.coeff and (self.p.operation != "SUM" or len(self.p.coeff) != len(bottom)):
            raise LayerSetupError("coeff needs operation SUM and one value per bottom",
                                  field="coeff")
        top[0].reshape(bottom[0].shape)

    def _plain_sum(self, first: int) -> bool:
        """SUM whose first `first` coefficients are 1."""
        return self.p.operation == "SUM" and all(c == 1.0 for c in self.p.coeff[:first])

    absorbs = ("ReLU",)

    def forward_fused(self, bottom, top, followers):
        """The sum of two bottoms and the ReLU in place on it in one pass (ResNet's shortcut
        joins)."""
        if len(bottom) != 2 or not self._plain_sum(2):
            return False
        a, b, y = (flat(blob.data) for blob in (*bottom, top[0]))
        kernels_for(y).add_relu(a, b, followers[0].p.negative_slope, y)
        return True

    def forward(self, bottom, top):
        xs = [b.data for b in bottom]
        op = self.p.operation
        xp = xp_of(*xs)
        if op == "SUM":
            y = top[0].data
            if any(top[0] is b for b in bottom[1:]) or not isinstance(y, np.ndarray):
                # written over an input still to add (or on a device: one expression)
                coeff = self.p.coeff or [1.0] * len(xs)
                y[...] = sum(c * x for c, x in zip(coeff, xs))
                return
            first = 0
            if self._plain_sum(2):  # one pass: the sum that a copy, then an add, makes
                np.add(xs[0], xs[1], out=y)
                first = 2
            for i in range(first, len(xs)):  # in place: no temporaries
                x, c = xs[i], self.p.coeff[i] if self.p.coeff else 1.0
                if i == 0 and c == 1.0:
                    np.copyto(y, x)
                elif i == 0:
                    np.multiply(x, c, out=y)
                elif c == 1.0:
                    y += x
                else:
                    y += c * x
        elif op == "PROD":
            top[0].data[...] = xp.prod(xp.stack(xs), axis=0)
        else:
            stacked = xp.stack(xs)
            self.argmax = xp.argmax(stacked, axis=0)
            top[0].data[...] = xp.max(stacked, axis=0)

    def backward(self, top, propagate_down, bottom):
        dy, op = top[0].diff, self.p.operation
        for i, (b, down) in enumerate(zip(bottom, propagate_down)):
            if not down:
                continue
            if op == "SUM":
                b.diff[...] = dy * (self.p.coeff[i] if self.p.coeff else 1.0)
            elif op == "PROD":  # product of the other inputs (no division by this one)
                others = [o.data for j, o in enumerate(bottom) if j != i]
                xp = xp_of(dy)
                b.diff[...] = dy * xp.prod(xp.stack(others), axis=0)
            else:
                b.diff[...] = dy * xp_of(dy).astype(self.argmax == i, dy.dtype)


class TileView(ParamView):
    axis: int = 1
    tiles: int = Field(gt=0)


@register_layer("Tile")
class Tile(Layer):
    """Repeat the blob `tiles` times along `axis`; backward sums the copies."""
    param_field = "tile_param"
    Params = TileView
    runs_on_device = True
    summary = "repeat tiles times along axis"

    def reshape(self, bottom, top):
        shape = list(bottom[0].shape)
        self.axis = canonical_axis(self.p.axis, len(shape))
        shape[self.axis] *= self.p.tiles
        top[0].reshape(shape)

    def forward(self, bottom, top):
        reps = [1] * bottom[0].data.ndim
        reps[self.axis] = self.p.tiles
        x = bottom[0].data
        top[0].data[...] = xp_of(x).tile(x, tuple(reps))

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            s = bottom[0].shape
            split = (*s[:self.axis], self.p.tiles, *s[self.axis:])
            bottom[0].diff[...] = top[0].diff.reshape(split).sum(axis=self.axis)


class CropView(ParamView):
    axis: int = 2
    offset: list[int] = []


@register_layer("Crop")
class Crop(Layer):
    """Crop bottom 0 to the shape of bottom 1 from `axis` on, at `offset` (one value for all
    cropped axes or one per axis)."""
    param_field = "crop_param"
    Params = CropView
    bottoms = (2, 2)
    runs_on_device = True
    summary = "crop bottom 0 to bottom 1's shape from axis on, at offset"

    def allow_force_backward(self, bottom_index):
        return bottom_index == 0

    def reshape(self, bottom, top):
        big, ref = bottom[0].shape, bottom[1].shape
        a = canonical_axis(self.p.axis, len(big))
        n = len(big) - a
        offsets = self.p.offset
        if len(offsets) not in (0, 1, n):
            raise LayerSetupError(f"offset needs 0, 1 or {n} values", field="offset")
        offsets = [0] * n if not offsets else offsets * n if len(offsets) == 1 else offsets
        self.index = [slice(None)] * a
        shape = list(big[:a])
        for i, o in enumerate(offsets):
            size = ref[a + i]
            if o + size > big[a + i]:
                raise LayerSetupError(f"crop of {size} at offset {o} exceeds axis {a + i} of "
                                      f"{big}", field="offset")
            self.index.append(slice(o, o + size))
            shape.append(size)
        self.index = tuple(self.index)
        top[0].reshape(shape)

    def forward(self, bottom, top):
        top[0].data[...] = bottom[0].data[self.index]

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            bottom[0].diff[...] = 0
            bottom[0].diff[self.index] = top[0].diff


class ReductionView(ParamView):
    operation: str = "SUM"
    axis: int = 0
    coeff: float = 1.0


@register_layer("Reduction")
class Reduction(Layer):
    """SUM, ASUM (sum of |x|), SUMSQ or MEAN over every axis from `axis` on, times coeff."""
    param_field = "reduction_param"
    Params = ReductionView
    runs_on_device = True
    summary = "SUM / ASUM / SUMSQ / MEAN over the trailing axes from axis, times coeff"

    def reshape(self, bottom, top):
        shape = bottom[0].shape
        self.axis = canonical_axis(self.p.axis, len(shape)) if shape else 0
        top[0].reshape(shape[:self.axis])

    def forward(self, bottom, top):
        x = bottom[0].data.reshape(*bottom[0].shape[:self.axis], -1)
        op = self.p.operation
        xp = xp_of(x)
        value = {"SUM": lambda: xp.sum(x, axis=-1), "ASUM": lambda: xp.sum(xp.abs(x), axis=-1),
                 "SUMSQ": lambda: xp.sum(x * x, axis=-1),
                 "MEAN": lambda: xp.mean(x, axis=-1)}[op]()
        top[0].data[...] = self.p.coeff * value

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        x = bottom[0].data.reshape(*bottom[0].shape[:self.axis], -1)
        dy = (self.p.coeff * top[0].diff)[..., None]
        op = self.p.operation
        xp = xp_of(x)
        grad = {"SUM": lambda: xp.broadcast_to(dy, x.shape), "ASUM": lambda: dy * xp.sign(x),
                "SUMSQ": lambda: dy * 2 * x,
                "MEAN": lambda: xp.broadcast_to(dy / x.shape[-1], x.shape)}[op]()
        bottom[0].diff[...] = grad.reshape(bottom[0].shape)


class ArgMaxView(ParamView):
    out_max_val: bool = False
    top_k: int = Field(1, ge=1)
    axis: int | None = None

    @model_validator(mode="after")
    def _axis(self):
        if "axis" not in self.set_fields:
            self.axis = None
        return self


@register_layer("ArgMax")
class ArgMax(Layer):
    """Indices of the top_k values along `axis` (or per item over everything else), largest
    first; out_max_val adds the values (as a second channel when no axis is given). No
    gradient."""
    param_field = "argmax_param"
    Params = ArgMaxView
    runs_on_device = True
    summary = "indices (and values) of the top_k entries"

    def allow_force_backward(self, bottom_index):
        return False

    def reshape(self, bottom, top):
        shape, k = bottom[0].shape, self.p.top_k
        if self.p.axis is None:
            if k > int(np.prod(shape[1:])):
                raise LayerSetupError("top_k exceeds the values per item", field="top_k")
            top[0].reshape(shape[0], 2 if self.p.out_max_val else 1, k)
        else:
            self.axis = canonical_axis(self.p.axis, len(shape))
            if k > shape[self.axis]:
                raise LayerSetupError("top_k exceeds the axis size", field="top_k")
            s = list(shape)
            s[self.axis] = k
            top[0].reshape(s)

    def forward(self, bottom, top):
        x, k = bottom[0].data, self.p.top_k
        xp = xp_of(x)
        if self.p.axis is None:
            flat = x.reshape(x.shape[0], -1)
            idx = xp.argsort(-flat, axis=1, stable=True)[:, :k]
            out = [xp.astype(idx, x.dtype)]
            if self.p.out_max_val:
                out.append(xp.take_along_axis(flat, idx, axis=1))
            top[0].data[...] = xp.stack(out, axis=1)
        else:
            idx = xp.argsort(-x, axis=self.axis, stable=True)[along(self.axis, 0, k)]
            top[0].data[...] = xp.take_along_axis(x, idx, axis=self.axis) \
                if self.p.out_max_val else xp.astype(idx, x.dtype)


class EmbedView(ParamView):
    num_output: int = Field(gt=0)
    input_dim: int = Field(gt=0)
    bias_term: bool = True
    weight_filler: pb.FillerParameter
    bias_filler: pb.FillerParameter


@register_layer("Embed")
class Embed(Layer):
    """Look up rows of a (input_dim, num_output) table by the integer bottom values (a
    one-hot InnerProduct). The indices get no gradient."""
    param_field = "embed_param"
    Params = EmbedView
    runs_on_device = True
    summary = "look up rows of a learned table by index"

    def allow_force_backward(self, bottom_index):
        return False

    def layer_setup(self, bottom, top):
        if not self.blobs:
            self.add_param((self.p.input_dim, self.p.num_output), self.p.weight_filler)
            if self.p.bias_term:
                self.add_param((self.p.num_output,), self.p.bias_filler)

    def reshape(self, bottom, top):
        top[0].reshape(*bottom[0].shape, self.p.num_output)

    def forward(self, bottom, top):
        x = bottom[0].data
        xp = xp_of(x)
        finite = xp.isfinite(x)
        idx = xp.astype(xp.where(finite, x, xp.full_like(x, -1)), xp.int64)
        bad = (idx < 0) | (idx >= self.p.input_dim)  # (truncated, as Caffe's static_cast)
        dim = self.p.input_dim
        self.check_values(kernels_for(bad).first_true(xp.reshape(bad, (-1,))), x,
                          lambda v: f"index {v:g} is out of range [0, {dim}) (input_dim)")
        self.idx = idx = xp.where(bad, xp.zeros_like(idx), idx)  # a device reads 0 meanwhile
        y = self.blobs[0].data[idx]
        top[0].data[...] = y + self.blobs[1].data if self.p.bias_term else y

    def backward(self, top, propagate_down, bottom):
        dy = top[0].diff.reshape(-1, self.p.num_output)
        kernels_for(dy).add_rows(self.blobs[0].diff, self.idx.reshape(-1), dy)
        if self.p.bias_term:
            self.blobs[1].diff[...] += dy.sum(axis=0)


@register_layer("Silence")
class Silence(Layer):
    """Consumes blobs so they are not net outputs; passes zero gradients back."""
    bottoms = (1, None)
    tops = (0, 0)
    runs_on_device = True
    summary = "swallow blobs (no outputs); zero gradient"

    def reshape(self, bottom, top):
        pass

    def forward(self, bottom, top):
        pass

    def backward(self, top, propagate_down, bottom):
        for b, down in zip(bottom, propagate_down):
            if down:
                b.diff[...] = 0


class ParameterView(ParamView):
    shape: pb.BlobShape


@register_layer("Parameter")
class Parameter(Layer):
    """A learnable blob of the given shape, exposed as the top."""
    param_field = "parameter_param"
    Params = ParameterView
    bottoms = (0, 0)
    runs_on_device = True
    summary = "a learnable blob as a top (parameter_param { shape })"

    def layer_setup(self, bottom, top):
        if not self.blobs:
            self.add_param(tuple(self.p.shape.dim), pb.FillerParameter(type="constant"))

    def reshape(self, bottom, top):
        top[0].reshape(self.blobs[0].shape)

    def forward(self, bottom, top):
        top[0].data[...] = self.blobs[0].data

    def backward(self, top, propagate_down, bottom):
        self.blobs[0].diff[...] += top[0].diff
