"""Convolution on the CPU: which strategy runs each pass (direct, windows, rows, Winograd,
im2col + GEMM), its tuning constants, pieces and workspaces. The layers (layers/vision.py) say
WHAT a convolution is; a plan made here at reshape says HOW this machine runs it, and
`forward` / `backward` run it (DESIGN.md "Devices and kernels")."""
from __future__ import annotations

import math

import numpy as np

from ...blob import buffer
from .. import absent, planes, workspace
from .gemm import matmul_add

#: the largest im2col buffer a convolution keeps (elements); bigger batches run in chunks
COL_ELEMENTS = 1 << 25

#: the direct kernels (kernels/direct.py) run a pass when its shape suits them: a run of at
#: least DIRECT_MIN_RUN inputs per filter row (fewer: im2col + GEMM is faster), and for the
#: input gradient at most DIRECT_MAX_WASTE times the useful work (zeros it multiplies), for
#: the weight gradient at least DIRECT_MIN_PLANE output positions per image (its dot products);
#: and at most DIRECT_MAX_FILTERS filters per group (with more, BLAS's GEMM amortises im2col and
#: wins: ResNet-50's 14x14 and 7x7 stages, CaffeNet's conv3-5). A forward pass with runs too
#: short (few channels) takes the planes kernel when its rows are at most DIRECT_MAX_WASTE
#: times the output's width. A stride-1 forward pass alone (inference) runs direct with up to
#: DIRECT_MAX_FILTERS_STRIDE1 filters a group: CaffeNet's conv2 (2 x 128 filters, 5x5 over 48
#: channels) at batch 16, 29.8 -> 25.6 ms; its conv1 (96, 11x11 at stride 4) ran 1.2x slower.
DIRECT = True
DIRECT_MIN_RUN = 32
DIRECT_MAX_FILTERS = 64
DIRECT_MAX_FILTERS_STRIDE1 = 128
DIRECT_MAX_WASTE = 1.3
DIRECT_MIN_PLANE = 128
#: stride-1 passes that a direct kernel takes run the windows kernel where it fits (below);
#: its weight gradient wants windows (KW x C/G) of WINDOW_MIN_RUN inputs and WINDOW_MIN_PLANE
#: output positions an image (its steps)
DIRECT_WINDOWS = True
WINDOW_MIN_RUN = 64
WINDOW_MIN_PLANE = 16

#: Training convolutions with at most ROWS_MAX_FILTERS filters a group (not 1x1 pointwise ones)
#: keep their columns as im2row's rows, (positions, C kh kw), so the three GEMMs are
#: (NP, K) @ (K, M), (M, NP) @ (NP, K) and (NP, M) @ (M, K): OpenBLAS runs these shapes faster
#: than im2col's (M, K) @ (K, NP) family when M is small. LeNet's conv2 (M 50, K 500, NP 1024 a
#: piece, two threads): the three GEMMs 4.3 ms against 5.8.
ROWS = True
ROWS_MAX_FILTERS = 64

#: Winograd (kernels/winograd.py) runs the forward pass of a 3x3 stride-1 convolution that
#: nothing runs backward through (inference: the weight gradient wants the im2col columns),
#: with at least WINOGRAD_MIN_CHANNELS input channels per group (shallower, its GEMMs run too
#: far below BLAS's speed to gain). F(4x4, 3x3) (4x fewer multiplies) from WINOGRAD_4X4_MIN
#: output positions a pass; below, F(2x2, 3x3) (2.25x) down to WINOGRAD_MIN_TILES of its 2x2
#: tiles: with fewer positions, transforming the filters on every pass (36/9 or 16/9 times the
#: weights) costs more than the GEMMs save. Measured on one 3x3 layer at batch 1 (2 cores, ms,
#: im2col / F(2x2) / F(4x4)): 64 channels at 56x56 4.8 / 4.6 / 2.9, 128 at 28x28 3.9 / 3.1 /
#: 2.3, 256 at 14x14 3.9 / 2.7 / 4.1, 512 at 7x7 4.4 / 5.7 / 11.7; at batch 16, 256 at 14x14
#: F(2x2) 35.7, F(4x4) 30.5.
WINOGRAD = True
WINOGRAD_MIN_CHANNELS = 64
WINOGRAD_MIN_TILES = 32
WINOGRAD_4X4_MIN = 512
#: a one-piece batch's Winograd products are cut into about this many pieces of GEMMs
WINOGRAD_GEMM_PIECES = 8
#: batches with at most this many Winograd tiles run as one piece (see forward_winograd)
WINOGRAD_ONE_PIECE_TILES = 1024


def winograd_tiles(height: int, width: int, size: int = 2) -> tuple[int, int]:
    """Rows and columns of the size x size Winograd tiles that cover a (height, width) output."""
    return -(-height // size), -(-width // size)



class ConvPlan:
    """The CPU strategy of one Convolution layer for one input shape: flags for the passes
    that run direct kernels, the column buffers and the chunks and pieces of the batch.
    `forward` / `backward` take the arrays (weights, bias and their diffs) at each call."""
    direct_forward = plane_forward = direct_input_grad = direct_weight_grad = False
    window_forward = window_input_grad = window_weight_grad = scatter_input_grad = False
    winograd_tile = 0  # 2 or 4: the forward pass by Winograd F(tile x tile, 3x3)
    relu_slope = None  # a ReLU absorbed into this forward pass (inference fusion)

    def __init__(self, kernels, p, x_shape, out_hw, phase: int, in_place: bool, dtype):
        self.p, self.phase, self.dtype = p, phase, np.dtype(dtype)
        n, c, h, w = x_shape
        self.out_hw, self.batch = tuple(out_hw), n
        self.plan_direct(c, h, w, in_place)
        self.plan_columns(kernels, n, c, out_hw[0] * out_hw[1], p.num_output, in_place)
        self.row_layout = (ROWS and phase == 0 and not self.pointwise
                           and p.num_output // p.group <= ROWS_MAX_FILTERS)

    def rectify(self, kernels, y: np.ndarray) -> None:
        if self.relu_slope is not None:
            kernels.relu(y.reshape(-1), self.relu_slope, y.reshape(-1))

    def bind(self, w, b, dw=None, db=None):
        """The arrays of this call: weights, bias (empty: none) and their diffs."""
        self.w, self.b, self.dw, self.db = w, b, dw, db

    def plan_direct(self, channels: int, height: int, width: int, in_place: bool) -> None:
        """Which passes run the direct kernels instead of im2col + GEMM (see DIRECT_* and
        WINDOW_*; kernels/direct.py): the windows kernels where their tiles fit, else the
        dot-product tiles of 4 filters x 4 positions (no dilation). The input gradient over dY
        padded to a "full" correlation does work in proportion to the input's area, not the
        output's; where that wastes too much, it adds window by window instead."""
        p = self.p
        kh, kw = p.kernel
        (oh, ow), (ph, pw) = self.out_hw, p.pads
        mg, cg = p.num_output // p.group, channels // p.group
        plain = DIRECT and p.dilations == (1, 1) and kh * kw > 1 and not in_place
        stride1 = p.strides == (1, 1) and ph < kh and pw < kw
        most = DIRECT_MAX_FILTERS_STRIDE1 if p.strides == (1, 1) else DIRECT_MAX_FILTERS
        self.direct_forward = (plain and 4 <= mg <= most and ow >= 4
                               and kw * cg >= DIRECT_MIN_RUN)
        self.direct_input_grad = (plain and stride1 and 4 <= cg <= DIRECT_MAX_FILTERS
                                  and width >= 4 and kw * mg >= DIRECT_MIN_RUN
                                  and height * width <= DIRECT_MAX_WASTE * oh * ow)
        self.direct_weight_grad = (plain and stride1 and 4 <= mg <= DIRECT_MAX_FILTERS
                                   and kh * kw >= 5 and oh * ow >= DIRECT_MIN_PLANE)
        # too few channels for the rows kernel's runs (LeNet's conv1, cifar10_quick's): the
        # planes kernel, vectorised along the output rows, five taps a pass
        self.plane_forward = (plain and not self.direct_forward and p.strides == (1, 1)
                              and 2 <= mg <= DIRECT_MAX_FILTERS and kw % 5 == 0
                              and width + 2 * pw <= DIRECT_MAX_WASTE * ow)
        # stride 1 with at least WINDOW_FILTERS filters (input channels for the gradient) a
        # group: the windows kernel, output positions as vectors, takes the pass instead
        # (LeNet's conv2 forward 0.98 -> 0.67 ms, conv1 0.27 -> 0.17; cifar10_quick's conv3
        # 2.6 -> 2.1, its input gradients likewise; CaffeNet's conv2 at b16 25.6 -> 23.2)
        from .direct import WINDOW_FILTERS, windows_fit
        fits = DIRECT_WINDOWS and windows_fit(ow)
        self.window_forward = (fits and (self.direct_forward or self.plane_forward)
                               and p.strides == (1, 1) and mg >= WINDOW_FILTERS)
        self.window_input_grad = (DIRECT_WINDOWS and windows_fit(width) and self.direct_input_grad
                                  and cg >= WINDOW_FILTERS)
        # and the weight gradient, a kernel row's window of KW x C/G inputs as the vectors,
        # where that run fills WINDOW_MIN_RUN lanes (LeNet's conv2 1.12 -> 0.83 ms with the
        # im2row it saves; cifar10_quick's conv2 8.3 -> 6.3, conv3 5.7 -> 2.8; its conv1,
        # 3 channels, 2.5 -> 7.7: the tile sums keep it), up to DIRECT_MAX_FILTERS filters
        # (ResNet-50's res4 3x3 at batch 1, 256 filters: backward 1.8 -> 2.8 ms, GEMM keeps it)
        self.window_weight_grad = (DIRECT_WINDOWS and plain and stride1
                                   and mg <= DIRECT_MAX_FILTERS
                                   and kw * cg >= WINDOW_MIN_RUN
                                   and oh * ow >= WINDOW_MIN_PLANE)
        self.direct_weight_grad = self.direct_weight_grad and not self.window_weight_grad
        # an input gradient no direct kernel takes (a "valid" convolution's: its dY padded to
        # a full correlation would multiply zeros; or strided) but whose window runs of
        # KW x C/G inputs fill WINDOW_MIN_RUN lanes: each output position adds its windows'
        # gradient where they lie (LeNet's conv2 1.16 -> 0.82 ms against im2row's GEMM and
        # row2im)
        self.scatter_input_grad = (DIRECT_WINDOWS and plain and not self.direct_input_grad
                                   and mg <= DIRECT_MAX_FILTERS
                                   and kw * cg >= WINDOW_MIN_RUN)
        if self.phase == 0 and not (self.direct_weight_grad or self.window_weight_grad):
            # dW by im2col + GEMM: its backward makes the columns. The rows kernel still runs
            # the forward pass (LeNet's conv2: its step 2-3% faster than the forward GEMM over
            # those columns made in forward), up to DIRECT_MAX_FILTERS filters (more: untried)
            self.direct_forward = self.direct_forward and mg <= DIRECT_MAX_FILTERS
            self.plane_forward = False
            self.window_forward = self.window_forward and mg <= DIRECT_MAX_FILTERS
        winograd = (WINOGRAD and p.kernel == (3, 3) and p.strides == (1, 1)
                    and p.dilations == (1, 1) and max(p.pads) <= 2 and not in_place
                    and cg >= WINOGRAD_MIN_CHANNELS)
        self.winograd_tile = 0
        if winograd and self.batch * oh * ow >= WINOGRAD_4X4_MIN:
            self.winograd_tile = 4
        elif winograd and math.prod(winograd_tiles(oh, ow)) * self.batch >= WINOGRAD_MIN_TILES:
            self.winograd_tile = 2

    # -- the column machinery, shared with Deconvolution (which runs it the other way) ----------
    def plan_columns(self, kernels, n: int, channels: int, plane: int, outputs: int,
                     in_place: bool = False) -> None:
        """Buffers for im2col of `channels` input channels over `plane` output positions and a
        GEMM with `outputs` rows, for `self.chunk` images at a time, cut into pieces of
        `self.piece` images that the kernels may run at once (each piece's columns one block)."""
        p = self.p
        kh, kw = p.kernel
        self.col_rows, self.col_plane = channels * kh * kw, plane
        self.piece = kernels.piece_size(n, plane, self.col_rows)
        self.chunk = max(1, min(n, COL_ELEMENTS // max(1, self.col_rows * plane)))
        if self.piece <= self.chunk < n:  # chunks of whole pieces
            self.chunk -= self.chunk % self.piece
        self.piece = min(self.piece, self.chunk)
        self.sizes = (self.col_rows * self.chunk * plane, outputs * self.chunk * plane)
        # TRAIN keeps this layer's columns from forward for backward; TEST (deploy nets, deep
        # ones included) shares one workspace between all convolutions, as does a direct forward
        self.shared = (self.phase == 1 or self.direct_forward or self.plane_forward
                       or self.window_forward)
        if not self.shared:
            self.own = [buffer((size,), self.dtype) for size in self.sizes]
        self.col_images = None  # (first, last) of the chunk whose columns col_buf holds
        # a 1x1 stride-1 unpadded kernel: one image's columns are the image itself (unless the
        # output overwrites it)
        self.pointwise = (p.kernel == (1, 1) and p.strides == (1, 1) and p.pads == (0, 0)
                          and not in_place)
        self.row_layout = False  # columns as im2row's (positions, C kh kw): see ROWS

    @property
    def col_buf(self) -> np.ndarray:
        return workspace("columns", self.sizes[0], self.dtype) if self.shared else self.own[0]

    @property
    def gemm_buf(self) -> np.ndarray:
        return workspace("gemm", self.sizes[1], self.dtype) if self.shared else self.own[1]

    def geometry(self, out_hw):
        p = self.p
        return (*p.kernel, *p.strides, *p.pads, *p.dilations, *out_hw)

    def chunks(self, n: int):
        for first in range(0, n, self.chunk):
            yield first, min(n, first + self.chunk)

    def block(self, buf: np.ndarray, rows: int, first: int, start: int, stop: int) -> np.ndarray:
        """The (rows, images * plane) matrix of images [start, stop) in a chunk buffer whose
        chunk begins at image `first`: each piece's matrix is its own contiguous block."""
        offset, size = (rows * self.col_plane * (start - first),
                        rows * self.col_plane * (stop - start))
        return buf[offset:offset + size].reshape(rows, -1)

    def columns(self, kernels, images, first, start, stop, out_hw, ready=False) -> np.ndarray:
        """im2col of images[start:stop] in their block of col_buf (skipped when `ready`: the
        block holds them already), or the image itself for one image and a pointwise kernel
        (read-only then); in the row layout, im2row's (positions, C kh kw) there instead."""
        if self.pointwise and stop - start == 1:
            return images[start].reshape(images.shape[1], -1)
        col = self.block(self.col_buf, self.col_rows, first, start, stop)
        if self.row_layout:
            col = col.reshape(-1, self.col_rows)
        if not ready:
            unfold = kernels.im2row if self.row_layout else kernels.im2col
            unfold(images[start:stop], *self.geometry(out_hw), col)
        return col

    def gathered(self, kernels, images, first, start, stop) -> np.ndarray:
        """images (N, R, P)[start:stop] as GEMM columns (R, n P): the image itself when there
        is one, else gathered into its block of gemm_buf."""
        if stop - start == 1:
            return images[start]
        cols = self.block(self.gemm_buf, images.shape[1], first, start, stop)
        kernels.images_to_cols(images[start:stop], cols)
        return cols

    @staticmethod
    def grouped_matmul(a, b, out, groups, transpose_a=False):
        """out = a @ b (or a^T @ b) group by group: a (G, i, j), b and out split by rows."""
        bg, og = b.shape[0] // groups, out.shape[0] // groups
        for g in range(groups):
            np.matmul(a[g].T if transpose_a else a[g], b[g * bg:(g + 1) * bg],
                      out=out[g * og:(g + 1) * og])

    @staticmethod
    def grouped_outer(out, a, b, groups, add=True):
        """out (G, i, j) += a_g @ b_g^T (or = without `add`), a and b split by rows into
        groups (a weight gradient)."""
        ag, bg = a.shape[0] // groups, b.shape[0] // groups
        for g in range(groups):
            if add:
                matmul_add(out[g], a[g * ag:(g + 1) * ag],
                                            b[g * bg:(g + 1) * bg].T)
            else:
                np.matmul(a[g * ag:(g + 1) * ag], b[g * bg:(g + 1) * bg].T, out=out[g])

    @staticmethod
    def rows_matmul(rows, w, out, groups):
        """out (N P, M) = rows (N P, C kh kw) @ w^T group by group: w (G, M/G, C kh kw), rows
        and out split by columns (strided views BLAS takes as they are)."""
        kg, mg = rows.shape[1] // groups, out.shape[1] // groups
        for g in range(groups):
            np.matmul(rows[:, g * kg:(g + 1) * kg], w[g].T, out=out[:, g * mg:(g + 1) * mg])

    @staticmethod
    def rows_input_grad(dy_cols, w, rows, groups):
        """rows (N P, C kh kw) = dY^T @ w group by group: the gradient of im2row's rows."""
        kg, mg = rows.shape[1] // groups, dy_cols.shape[0] // groups
        for g in range(groups):
            np.matmul(dy_cols[g * mg:(g + 1) * mg].T, w[g], out=rows[:, g * kg:(g + 1) * kg])

    def direct_rows(self, kernels, images, pads):
        """images (N, C, H, W) padded in the rows layout of the direct kernels."""
        n, c, h, w = images.shape
        g = self.p.group
        shape = (n, g, h + 2 * pads[0], (w + 2 * pads[1]) * (c // g))
        rows = workspace("direct rows", math.prod(shape), self.dtype).reshape(shape)
        kernels.to_rows(images, g, *pads, rows)
        return rows

    def direct_planes(self, kernels, images):
        """images (N, C, H, W) padded in the planes layout of the direct kernels."""
        n, c, h, w = images.shape
        ph, pw = self.p.pads
        size = (h + 2 * ph) * (w + 2 * pw) + self.p.kernel[1]
        planes = workspace("direct planes", n * c * size, self.dtype).reshape(n, c, size)
        kernels.to_planes(images, ph, pw, planes)
        return planes

    def window_planes(self, kernels, images, pads):
        """images (N, C, H, W) as the windows kernel's planes, with their rows' width: the
        images themselves when unpadded, else padded planes (to_planes)."""
        n, c, h, w = images.shape
        if pads == (0, 0):
            return images.reshape(n, c, h * w), w
        size = (h + 2 * pads[0]) * (w + 2 * pads[1]) + self.p.kernel[1]
        planes = workspace("direct planes", n * c * size, self.dtype).reshape(n, c, size)
        kernels.to_planes(images, *pads, planes)
        return planes, w + 2 * pads[1]

    def direct_filters(self, flip: bool):
        """The filters as the rows layout's (G, M/G, KW KH C/G), or for the input gradient
        flipped and transposed: (G, C/G, KW KH M/G)."""
        p = self.p
        w = self.w
        m, cg, kh, kw = w.shape
        w = w.reshape(p.group, m // p.group, cg, kh, kw)
        w = w[:, :, :, ::-1, ::-1].transpose(0, 2, 4, 3, 1) if flip else w.transpose(0, 1, 4, 3, 2)
        out = workspace("direct filters", w.size, self.dtype).reshape(w.shape)
        np.copyto(out, w)
        return out.reshape(*w.shape[:2], -1)

    def forward(self, kernels, x, y_out, inference: bool):
        """y_out = the convolution of x (with the bias, and the absorbed ReLU if any)."""
        p = self.p
        if self.winograd_tile and inference:
            return self.forward_winograd(kernels, x, y_out)
        if self.window_forward or self.direct_forward or self.plane_forward:
            bias = self.b if p.bias_term else absent(self.dtype)
            zero = self.dtype.type(0)
            if self.window_forward:
                planes, width = self.window_planes(kernels, x, p.pads)
                kernels.conv_windows(planes, self.w, bias, p.group, width, zero,
                                     y_out)
            elif self.direct_forward:
                kernels.conv_rows(self.direct_rows(kernels, x, p.pads),
                                  self.direct_filters(False), bias, x.shape[1] // p.group,
                                  p.kernel[0], *p.strides, zero, y_out)
            else:
                kernels.conv_planes(self.direct_planes(kernels, x), self.w, bias,
                                    p.group, x.shape[3] + 2 * p.pads[1], zero, y_out)
            self.rectify(kernels, y_out)
            self.col_images = None
            return
        w = self.w.reshape(p.group, p.num_output // p.group, -1)
        bias = self.b if p.bias_term else absent(self.dtype)
        y = y_out.reshape(x.shape[0], p.num_output, self.col_plane)

        def piece(_, start, stop):
            col = self.columns(kernels, x, first, start, stop, self.out_hw)
            if self.row_layout:
                out = self.block(self.gemm_buf, p.num_output, first, start, stop)
                out = out.reshape(-1, p.num_output)
                self.rows_matmul(col, w, out, p.group)
                kernels.rows_to_images(out, bias, y[start:stop])
            elif stop - start == 1:  # one image: the GEMM result is already (M, oh ow)
                self.grouped_matmul(w, col, y[start], p.group)
                if p.bias_term:
                    kernels.add_bias(y[start:stop], bias)
            else:
                out = self.block(self.gemm_buf, p.num_output, first, start, stop)
                self.grouped_matmul(w, col, out, p.group)
                kernels.cols_to_images(out, bias, y[start:stop])
            self.rectify(kernels, y[start:stop])

        self.col_images = None
        for first, last in self.chunks(x.shape[0]):
            kernels.run_pieces(piece, first, last, self.piece)
            self.col_images = (first, last)
        if self.shared:  # the next convolution writes over the workspace
            self.col_images = None

    def forward_winograd(self, kernels, x, y):
        """Transform the filters, then each piece of images: transform its tiles, a GEMM per
        tile position and group, transform back into y (with the bias)."""
        p = self.p
        g, m, c = p.group, p.num_output, x.shape[1]
        size = self.winograd_tile
        filters, inputs, outputs = kernels.winograd_kernels(size)
        points = (size + 2) ** 2  # positions in a tile's transformed patch
        th, tw = winograd_tiles(*self.out_hw, size)
        per_image = th * tw
        u = planes("winograd filters", points, m * (c // g), self.dtype)
        filters(self.w, u)
        u = u.reshape(points, g, m // g, c // g)
        bias = self.b if p.bias_term else absent(self.dtype)
        v_all = planes("winograd inputs", points, c * per_image * self.chunk, self.dtype)
        m_all = planes("winograd products", points, m * per_image * self.chunk, self.dtype)
        # a batch that is one piece (batch 1), or whose pieces' GEMMs would be thin (at most
        # WINOGRAD_ONE_PIECE_TILES tiles in all), cuts its products instead: a GEMM per tile
        # position and group, each whole on one worker (BLAS threads these small GEMMs poorly:
        # CaffeNet's conv4, 32 of 192 x 192 x 49, 1.17 ms on both cores' BLAS, 0.69 ms cut;
        # at batch 16, CaffeNet's conv3-5 10.8 -> 9.1 ms, ResNet-50's 14x14 9.3 -> 7.3)
        one_piece = (x.shape[0] <= self.piece
                     or per_image * min(x.shape[0], self.chunk) <= WINOGRAD_ONE_PIECE_TILES)
        size = self.chunk if one_piece else self.piece
        gemms = points * g

        def piece(_, start, stop):
            count, skip = per_image * (stop - start), per_image * (start - first)
            v = v_all[:, c * skip:c * (skip + count)].reshape(points, g, c // g, count)
            mm = m_all[:, m * skip:m * (skip + count)].reshape(points, g, m // g, count)
            inputs(x[start:stop], *p.pads, th, tw, v.reshape(points, -1))

            def products(_, lo, hi):
                for i in range(lo, hi):
                    pt, gr = divmod(i, g)
                    np.matmul(u[pt, gr], v[pt, gr], out=mm[pt, gr])
            if one_piece:
                kernels.run_pieces(products, 0, gemms, max(1, gemms // WINOGRAD_GEMM_PIECES))
            else:
                np.matmul(u, v, out=mm)
            outputs(mm.reshape(points, -1), bias, th, tw, y[start:stop])
            self.rectify(kernels, y[start:stop])

        for first, last in self.chunks(x.shape[0]):
            kernels.run_pieces(piece, first, last, size)
        self.col_images = None

    def backward(self, kernels, x, dy_out, dx):
        """dW += and db += the gradients from dy_out; dx = the input gradient (None: not
        wanted)."""
        p = self.p
        n = x.shape[0]
        dy = dy_out.reshape(n, p.num_output, self.col_plane)
        bias_diff = self.db if p.bias_term else absent(self.dtype)
        if self.window_weight_grad:
            self.window_weight_gradient(kernels, x, dy_out)
        if self.direct_weight_grad:  # the bias gradient from the same pass over dY
            self.direct_weight_gradient(kernels, x, dy_out, bias_diff)
        elif p.bias_term:
            kernels.add_channel_sums(dy, bias_diff)
        if dx is not None and self.window_input_grad:
            self.window_input_gradient(kernels, dy_out, dx)
        elif dx is not None and self.scatter_input_grad:
            self.scatter_input_gradient(kernels, dy_out, dx)
        elif dx is not None and self.direct_input_grad:
            rows = self.direct_rows(kernels, dy_out,
                                    (p.kernel[0] - 1 - p.pads[0], p.kernel[1] - 1 - p.pads[1]))
            kernels.conv_rows(rows, self.direct_filters(True), absent(self.dtype),
                              p.num_output // p.group, p.kernel[0], 1, 1, self.dtype.type(0),
                              dx)
        need_w = not (self.direct_weight_grad or self.window_weight_grad)
        need_x = dx is not None and not (self.direct_input_grad or self.scatter_input_grad)
        if need_w or need_x:
            self.backward_columns(kernels, x, dy, dx, need_w, need_x)

    def direct_weight_gradient(self, kernels, x, dy, bias_diff):
        """dW += dY (x) x by the direct kernel: x as padded planes, dY rows padded to their
        width (and bias_diff += dY's sums, unless empty)."""
        p = self.p
        n, c, h, w = x.shape
        kh, kw = p.kernel
        wp = w + 2 * p.pads[1]
        planes = self.direct_planes(kernels, x)
        dy_rows = workspace("direct dy", n * p.num_output * self.out_hw[0] * wp,
                            self.dtype).reshape(n, p.num_output, -1)
        kernels.to_padded_rows(dy, wp, dy_rows, bias_diff)
        kernels.add_weight_grad(planes, dy_rows, p.group, kh, kw, wp, self.dtype.type(0),
                                self.dw)

    def window_weight_gradient(self, kernels, x, dy):
        """dW += the weight gradient by the windows kernel, over x in the rows layout; its
        (G, KH, M/G, KW C/G) sums added to dW (M, C/G, KH, KW)."""
        p = self.p
        g, (m, cg, kh, kw) = p.group, self.w.shape
        sums = workspace("window weight sums", m * cg * kh * kw, self.dtype).reshape(
            g, kh, m // g, kw * cg)
        sums[...] = 0
        kernels.add_weight_grad_windows(self.direct_rows(kernels, x, p.pads), dy, kh, kw,
                                        self.dtype.type(0), sums)
        dw = self.dw.reshape(g, m // g, cg, kh, kw)
        dw += sums.reshape(g, kh, m // g, kw, cg).transpose(0, 2, 4, 1, 3)

    def window_input_gradient(self, kernels, dy, dx):
        """dx = the stride-1 correlation of dY, padded to a full one, with the filters flipped
        and transposed ((C, M/G, KH, KW) a group), by the windows kernel."""
        p = self.p
        g, (m, cg, kh, kw) = p.group, self.w.shape
        w = self.w.reshape(g, m // g, cg, kh, kw)[:, :, :, ::-1, ::-1]
        flipped = workspace("direct filters", w.size, self.dtype).reshape(g, cg, m // g, kh, kw)
        np.copyto(flipped, w.transpose(0, 2, 1, 3, 4))
        planes, width = self.window_planes(kernels, dy, (kh - 1 - p.pads[0], kw - 1 - p.pads[1]))
        kernels.conv_windows(planes, flipped.reshape(g * cg, m // g, kh, kw), absent(self.dtype),
                             g, width, self.dtype.type(0), dx)

    def scatter_input_gradient(self, kernels, dy, dx):
        """dx = the input gradient by input_grad_windows: the filters as (G, KH, M/G, KW C/G),
        the sums in a padded, channels-last scratch."""
        p = self.p
        g, (m, cg, kh, kw) = p.group, self.w.shape
        w = self.w.reshape(g, m // g, cg, kh, kw).transpose(0, 3, 1, 4, 2)
        filters = workspace("direct filters", w.size, self.dtype).reshape(w.shape)
        np.copyto(filters, w)
        n, c, h, width = dx.shape
        shape = (n, g, h + 2 * p.pads[0], (width + 2 * p.pads[1]) * cg)
        sums = workspace("direct rows", math.prod(shape), self.dtype).reshape(shape)
        kernels.input_grad_windows(dy, filters.reshape(g, kh, m // g, kw * cg), *p.strides,
                                   *p.pads, sums, dx)

    def backward_columns(self, kernels, x, dy, dx, need_w: bool, need_x: bool) -> None:
        """The gradients by im2col + GEMM, in pieces: dW += dY col^T (need_w) and
        dx = col2im(W^T dY) (need_x)."""
        p = self.p
        w = self.w.reshape(p.group, p.num_output // p.group, -1)
        dw = self.dw.reshape(w.shape)

        def piece(k, start, stop):
            dy_cols = self.gathered(kernels, dy, first, start, stop)
            col = self.columns(kernels, x, first, start, stop, self.out_hw, ready or not need_w)
            if need_w:  # several pieces: each its own dW term, summed below in piece order
                self.grouped_outer(dw if terms is None else terms[k], dy_cols,
                                   col.T if self.row_layout else col, p.group,
                                   add=terms is None)
            if need_x and self.row_layout:
                self.rows_input_grad(dy_cols, w, col, p.group)
                kernels.row2im(col, *self.geometry(self.out_hw), dx[start:stop])
            elif need_x and self.pointwise and stop - start == 1:  # dx = W^T dY
                self.grouped_matmul(w, dy_cols, dx[start].reshape(col.shape), p.group,
                                    transpose_a=True)
            elif need_x:  # dcol = W^T dY, written over the columns (no longer needed)
                self.grouped_matmul(w, dy_cols, col, p.group, transpose_a=True)
                kernels.col2im(col, *self.geometry(self.out_hw), dx[start:stop])

        for first, last in self.chunks(x.shape[0]):
            ready = self.col_images == (first, last)
            count = -(-(last - first) // self.piece)
            terms = None if count == 1 or not need_w else workspace(
                "weight terms", count * dw.size, self.dtype).reshape(count, *dw.shape)
            kernels.run_pieces(piece, first, last, self.piece)
            self.col_images = None  # columns recomputed or overwritten: the next chunk's are not
            for k in range(0 if terms is None else count):
                dw += terms[k]




class DeconvPlan(ConvPlan):
    """Deconvolution runs the column machinery the other way: forward is convolution's data
    backward (GEMM then col2im), backward a convolution (im2col then GEMM)."""

    def __init__(self, kernels, p, x_shape, out_hw, phase: int, in_place: bool, dtype):
        self.p, self.phase, self.dtype = p, phase, np.dtype(dtype)
        n, c, h, w = x_shape
        self.out_hw, self.in_hw, self.batch = tuple(out_hw), (h, w), n
        self.plan_columns(kernels, n, p.num_output, h * w, c, in_place)

    def forward(self, kernels, x, y_out, inference: bool = False):
        p = self.p
        n, c = x.shape[:2]
        plane = self.in_hw[0] * self.in_hw[1]
        w = self.w.reshape(p.group, c // p.group, -1)
        xs = x.reshape(n, c, plane)
        rows = p.num_output * p.kernel[0] * p.kernel[1]
        for start, stop in self.chunks(n):
            x_cols = self.gathered(kernels, xs, start, start, stop)
            col = self.col_buf[:rows * x_cols.shape[1]].reshape(rows, -1)
            self.grouped_matmul(w, x_cols, col, p.group, transpose_a=True)
            kernels.col2im(col, *self.geometry(self.in_hw), y_out[start:stop])
        if p.bias_term:
            kernels.add_bias(y_out.reshape(n, p.num_output, -1), self.b)

    def backward(self, kernels, x, dy, dx):
        p = self.p
        n, c = x.shape[:2]
        if p.bias_term:
            kernels.add_channel_sums(dy.reshape(n, p.num_output, -1), self.db)
        plane = self.in_hw[0] * self.in_hw[1]
        w = self.w.reshape(p.group, c // p.group, -1)
        dw = self.dw.reshape(w.shape)
        xs = x.reshape(n, c, plane)
        dxs = None if dx is None else dx.reshape(n, c, plane)
        self.col_images = None
        for start, stop in self.chunks(n):
            dcol = self.columns(kernels, dy, start, start, stop, self.in_hw)
            x_cols = self.gathered(kernels, xs, start, start, stop)
            self.grouped_outer(dw, x_cols, dcol, p.group)
            if dxs is not None:
                if stop - start == 1:
                    self.grouped_matmul(w, dcol, dxs[start], p.group)
                else:
                    self.grouped_matmul(w, dcol, x_cols, p.group)
                    kernels.cols_to_images(x_cols, absent(self.dtype), dxs[start:stop])
