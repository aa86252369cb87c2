"""One table of numeric gradient cases, keyed by layer type: test_registry runs every case and
fails for any registered type that has none. Several configurations for the vision layers.

Each case: (prototxt text, input arrays, options for check_layer / the layer)."""
import numpy as np

R = np.random.default_rng(42)


def normal(*shape, scale=1.0):
    return R.normal(size=shape) * scale


def distinct(*shape, scale=0.1):
    n = int(np.prod(shape))
    return (R.permutation(n).reshape(shape) - n / 2) * scale


def positive(*shape):
    return np.abs(distinct(*shape)) + 0.5


def labels(n, k, *rest):
    return R.integers(0, k, size=(n, *rest))


FILL = 'weight_filler { type: "gaussian" } bias_filler { type: "gaussian" }'
CONV = 'type: "{t}" convolution_param {{ num_output: 4 {p} ' + FILL.replace("{", "{{").replace("}", "}}") + ' }}'
POOL = 'type: "Pooling" pooling_param {{ pool: {m} {p} }}'

VISION_GEOMETRIES = [
    ("kernel_size: 3", (2, 2, 5, 5)),
    ("kernel_size: 3 stride: 2 pad: 1", (2, 2, 7, 6)),
    ("kernel_size: 2 group: 2", (1, 4, 4, 5)),
    ("kernel_size: 3 dilation: 2", (1, 2, 7, 7)),
    ("kernel_h: 2 kernel_w: 3 stride_h: 2 stride_w: 1 pad_h: 1 pad_w: 0", (2, 2, 5, 6)),
]
POOL_GEOMETRIES = [
    ("kernel_size: 2 stride: 2", (2, 2, 4, 6)),
    ("kernel_size: 2 stride: 2", (1, 2, 5, 5)),          # ceil-mode edge windows
    ("kernel_size: 3 stride: 2", (1, 2, 7, 6)),          # overlapping windows
    ("kernel_size: 3 stride: 1 pad: 1", (1, 2, 4, 4)),
    ("global_pooling: true", (2, 3, 3, 4)),
    ("kernel_size: 3 stride: 2 pad: 1", (1, 2, 6, 5)),   # padded, ceil-clipped last windows
]

CASES = {
    "Convolution": [(CONV.format(t="Convolution", p=g), [normal(*s)], {}) for g, s in
                    VISION_GEOMETRIES],
    "Deconvolution": [(CONV.format(t="Deconvolution", p=g), [normal(*s)], {}) for g, s in
                      VISION_GEOMETRIES],
    "Im2col": [('type: "Im2col" convolution_param { %s }' % g, [normal(*s)], {}) for g, s in
               VISION_GEOMETRIES if "group" not in g],
    "Pooling": [(POOL.format(m=m, p=g), [distinct(*s)], {}) for m in ("MAX", "AVE")
                for g, s in POOL_GEOMETRIES] + [
        (POOL.format(m="STOCHASTIC", p=g), [positive(*s)], dict(phase=phase))
        for g, s in POOL_GEOMETRIES[:3] for phase in (0, 1)],
    "SPP": [('type: "SPP" spp_param { pyramid_height: 3 pool: %s }' % m, [distinct(2, 2, 9, 7)], {})
            for m in ("MAX", "AVE")],
    "LRN": [('type: "LRN" lrn_param { local_size: 3 alpha: 0.5 beta: 0.75 k: 2 }',
             [normal(2, 5, 3, 3)], {}),
            ('type: "LRN" lrn_param { norm_region: WITHIN_CHANNEL local_size: 3 alpha: 0.5 }',
             [normal(2, 2, 4, 3)], {})],
    "InnerProduct": [('type: "InnerProduct" inner_product_param { num_output: 3 %s %s }' % (p, FILL),
                      [normal(3, 2, 2)], {}) for p in ("", "axis: 2", "transpose: true")],
    "ReLU": [('type: "ReLU" relu_param { negative_slope: 0.1 }', [normal(2, 3, 4)],
              dict(kink=0.0, kink_range=1e-4))],
    "PReLU": [('type: "PReLU" prelu_param { filler { type: "uniform" } }', [normal(2, 3, 4)],
               dict(kink=0.0, kink_range=1e-4)),
              ('type: "PReLU" prelu_param { channel_shared: true }', [normal(2, 3)],
               dict(kink=0.0, kink_range=1e-4))],
    "ELU": [('type: "ELU" elu_param { alpha: 0.7 }', [normal(2, 3, 4)],
             dict(kink=0.0, kink_range=1e-4))],
    "Sigmoid": [('type: "Sigmoid"', [normal(2, 3, 4)], {})],
    "TanH": [('type: "TanH"', [normal(2, 3, 4)], {})],
    "Softplus": [('type: "Softplus"', [normal(2, 3, 4)], {})],
    "BNLL": [('type: "BNLL"', [normal(2, 3, 4)], {})],
    "AbsVal": [('type: "AbsVal"', [normal(2, 3, 4)], dict(kink=0.0, kink_range=1e-4))],
    "Power": [('type: "Power" power_param { power: 3 scale: 0.5 shift: 2 }', [normal(2, 3)], {})],
    "Exp": [('type: "Exp" exp_param { base: 3 scale: 0.5 shift: -1 }', [normal(2, 3)], {})],
    "Log": [('type: "Log" log_param { base: 2 scale: 1 shift: 5 }', [normal(2, 3)], {})],
    "Threshold": [('type: "Threshold" threshold_param { threshold: 0.2 }', [normal(2, 3)],
                   dict(kink=0.2, kink_range=1e-4))],
    "Clip": [('type: "Clip" clip_param { min: -0.5 max: 0.5 }', [distinct(3, 4, scale=0.13)], {})],
    "Swish": [('type: "Swish" swish_param { beta: 2 }', [normal(2, 3, 4)], {})],
    "Dropout": [('type: "Dropout" dropout_param { dropout_ratio: 0.4 }', [normal(3, 4)],
                 dict(phase=p)) for p in (0, 1)],
    "Softmax": [('type: "Softmax" softmax_param { axis: %d }' % a, [normal(2, 3, 4)], {})
                for a in (1, 2)],
    "Split": [('type: "Split"', [normal(2, 3)], dict(ntop=3))],
    "Flatten": [('type: "Flatten" flatten_param { axis: 1 end_axis: 2 }', [normal(2, 3, 2, 2)], {})],
    "Reshape": [('type: "Reshape" reshape_param { shape { dim: 0 dim: -1 } }', [normal(2, 3, 2)], {})],
    "Concat": [('type: "Concat" concat_param { axis: 1 }', [normal(2, 2, 3), normal(2, 1, 3)], {})],
    "Slice": [('type: "Slice" slice_param { axis: 2 slice_point: 1 }', [normal(2, 2, 3)],
               dict(ntop=2))],
    "Eltwise": [('type: "Eltwise" eltwise_param { operation: %s }' % op,
                 list(distinct(3, 2, 3)), {}) for op in ("PROD", "SUM coeff: 2 coeff: -1 coeff: 3",
                                                         "MAX")],
    "Tile": [('type: "Tile" tile_param { axis: 1 tiles: 3 }', [normal(2, 2, 2)], {})],
    "Crop": [('type: "Crop" crop_param { axis: 2 offset: 1 }', [normal(2, 2, 4, 4),
                                                                  normal(2, 2, 2, 3)],
              dict(check_bottom=[0]))],
    "Reduction": [('type: "Reduction" reduction_param { operation: %s axis: 1 }' % op,
                   [normal(2, 3, 4)], dict(kink=0.0, kink_range=1e-4))
                  for op in ("SUM", "ASUM", "SUMSQ", "MEAN")],
    "Embed": [('type: "Embed" embed_param { num_output: 3 input_dim: 4 %s }' % FILL,
               [labels(5, 4)], dict(check_bottom=[]))],
    "Silence": [('type: "Silence"', [normal(2, 3), normal(3)], dict(ntop=0))],
    "Parameter": [('type: "Parameter" parameter_param { shape { dim: 2 dim: 3 } }', [], {})],
    "BatchNorm": [('type: "BatchNorm"', [normal(4, 3, 2, 2)], dict(phase=p)) for p in (0, 1)],
    "Scale": [('type: "Scale" scale_param { bias_term: true filler { type: "gaussian" } '
               'bias_filler { type: "gaussian" } }', [normal(2, 3, 2)], {}),
              ('type: "Scale" scale_param { axis: 1 }', [normal(2, 3, 2), normal(3, 2)], {})],
    "Bias": [('type: "Bias" bias_param { filler { type: "gaussian" } }', [normal(2, 3, 2)], {}),
             ('type: "Bias"', [normal(2, 3, 2), normal(3)], {})],
    "MVN": [('type: "MVN" mvn_param { across_channels: %s }' % a, [normal(2, 3, 2, 2)], {})
            for a in ("false", "true")],
    "SoftmaxWithLoss": [('type: "SoftmaxWithLoss" loss_param { ignore_label: 1 }',
                         [normal(4, 3, 2), labels(4, 3, 2)], dict(check_bottom=[0]))],
    "EuclideanLoss": [('type: "EuclideanLoss"', [normal(3, 4), normal(3, 4)], {})],
    "SigmoidCrossEntropyLoss": [('type: "SigmoidCrossEntropyLoss"',
                                 [normal(3, 4), R.random((3, 4))], dict(check_bottom=[0]))],
    "HingeLoss": [('type: "HingeLoss" hinge_loss_param { norm: %s }' % n,
                   [normal(4, 3, scale=3), labels(4, 3)], dict(check_bottom=[0]))
                  for n in ("L1", "L2")],
    "MultinomialLogisticLoss": [('type: "MultinomialLogisticLoss"',
                                 [R.random((4, 3)) + 0.2, labels(4, 3)], dict(check_bottom=[0]))],
    "InfogainLoss": [('type: "InfogainLoss"', [normal(4, 3), labels(4, 3), R.random((3, 3))],
                      dict(check_bottom=[0]))],
    "ContrastiveLoss": [('type: "ContrastiveLoss" contrastive_loss_param { margin: 2 }',
                         [normal(4, 3), normal(4, 3), labels(4, 2)],
                         dict(check_bottom=[0, 1], threshold=1e-3))],
    "Python": [('type: "Python" python_param { module: "pylayer_square" layer: "Square" '
                'param_str: "2.5" }', [normal(2, 3)], {})],
}

# layers that take no gradient at all, and why
NO_GRADIENT = {
    "Input": "data enters here; nothing below it",
    "Data": "data enters here; nothing below it",
    "DummyData": "data enters here; nothing below it",
    "MemoryData": "data enters here; nothing below it",
    "HDF5Data": "data enters here; nothing below it",
    "ImageData": "data enters here; nothing below it",
    "HDF5Output": "writes its bottoms to a file; no loss flows through it",
    "Accuracy": "a metric of integer decisions: never backpropagated",
    "ArgMax": "integer indices: never backpropagated",
}
