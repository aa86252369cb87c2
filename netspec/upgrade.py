"""Old Caffe formats upgraded on load, as Caffe's upgrade_proto does:

V1  `layers { type: CONVOLUTION blobs_lr: 1 weight_decay: 1 ... }` (NetParameter field 2):
    enum types become strings, blobs_lr / weight_decay become ParamSpec lr_mult / decay_mult,
    param names and blob_share_mode become ParamSpecs, the data layers' old scale / mean_file /
    crop_size / mirror move into transform_param.
V0  `layers { layer { type: "conv" num_output: 96 kernelsize: 11 ... } }`: the flat V0 fields
    go to the right parameter message; "padding" layers are merged into the conv / pool after.
Legacy `input:` + `input_dim` become an Input layer (graph.upgrade_inputs)."""
from __future__ import annotations

from .errors import SpecError
from .graph import upgrade_inputs
from .proto import netspec_pb2 as pb

V1_TYPES = {
    "ABSVAL": "AbsVal", "ACCURACY": "Accuracy", "ARGMAX": "ArgMax", "BNLL": "BNLL",
    "CONCAT": "Concat", "CONTRASTIVE_LOSS": "ContrastiveLoss", "CONVOLUTION": "Convolution",
    "DECONVOLUTION": "Deconvolution", "DATA": "Data", "DROPOUT": "Dropout",
    "DUMMY_DATA": "DummyData", "EUCLIDEAN_LOSS": "EuclideanLoss", "ELTWISE": "Eltwise",
    "EXP": "Exp", "FLATTEN": "Flatten", "HDF5_DATA": "HDF5Data", "HDF5_OUTPUT": "HDF5Output",
    "HINGE_LOSS": "HingeLoss", "IM2COL": "Im2col", "IMAGE_DATA": "ImageData",
    "INFOGAIN_LOSS": "InfogainLoss", "INNER_PRODUCT": "InnerProduct", "LRN": "LRN",
    "MEMORY_DATA": "MemoryData", "MULTINOMIAL_LOGISTIC_LOSS": "MultinomialLogisticLoss",
    "MVN": "MVN", "POOLING": "Pooling", "POWER": "Power", "RELU": "ReLU", "SIGMOID": "Sigmoid",
    "SIGMOID_CROSS_ENTROPY_LOSS": "SigmoidCrossEntropyLoss", "SILENCE": "Silence",
    "SOFTMAX": "Softmax", "SOFTMAX_LOSS": "SoftmaxWithLoss", "SPLIT": "Split", "SLICE": "Slice",
    "TANH": "TanH", "WINDOW_DATA": "WindowData", "THRESHOLD": "Threshold",
}

V0_TYPES = {
    "accuracy": "Accuracy", "bnll": "BNLL", "concat": "Concat", "conv": "Convolution",
    "data": "Data", "dropout": "Dropout", "euclidean_loss": "EuclideanLoss",
    "flatten": "Flatten", "hdf5_data": "HDF5Data", "hdf5_output": "HDF5Output",
    "im2col": "Im2col", "images": "ImageData", "infogain_loss": "InfogainLoss",
    "innerproduct": "InnerProduct", "lrn": "LRN",
    "multinomial_logistic_loss": "MultinomialLogisticLoss", "pool": "Pooling", "relu": "ReLU",
    "sigmoid": "Sigmoid", "softmax": "Softmax", "softmax_loss": "SoftmaxWithLoss",
    "split": "Split", "tanh": "TanH", "window_data": "WindowData",
}

_DATA = {"data": "data_param", "hdf5_data": "hdf5_data_param", "images": "image_data_param",
         "window_data": "window_data_param"}
# V0 field -> {V0 type (or "*" for any): (parameter message field, its field name)}
V0_FIELDS = {
    "num_output": {"conv": ("convolution_param", "num_output"),
                   "innerproduct": ("inner_product_param", "num_output")},
    "biasterm": {"conv": ("convolution_param", "bias_term"),
                 "innerproduct": ("inner_product_param", "bias_term")},
    "weight_filler": {"conv": ("convolution_param", "weight_filler"),
                      "innerproduct": ("inner_product_param", "weight_filler")},
    "bias_filler": {"conv": ("convolution_param", "bias_filler"),
                    "innerproduct": ("inner_product_param", "bias_filler")},
    "pad": {"conv": ("convolution_param", "pad"), "pool": ("pooling_param", "pad")},
    "kernelsize": {"conv": ("convolution_param", "kernel_size"),
                   "pool": ("pooling_param", "kernel_size")},
    "group": {"conv": ("convolution_param", "group")},
    "stride": {"conv": ("convolution_param", "stride"), "pool": ("pooling_param", "stride")},
    "pool": {"pool": ("pooling_param", "pool")},
    "dropout_ratio": {"dropout": ("dropout_param", "dropout_ratio")},
    "local_size": {"lrn": ("lrn_param", "local_size")},
    "alpha": {"lrn": ("lrn_param", "alpha")},
    "beta": {"lrn": ("lrn_param", "beta")},
    "k": {"lrn": ("lrn_param", "k")},
    "source": {**{t: (f, "source") for t, f in _DATA.items()},
               "infogain_loss": ("infogain_loss_param", "source")},
    "scale": {"*": ("transform_param", "scale")},
    "meanfile": {"*": ("transform_param", "mean_file")},
    "cropsize": {"*": ("transform_param", "crop_size")},
    "mirror": {"*": ("transform_param", "mirror")},
    "batchsize": {t: (f, "batch_size") for t, f in _DATA.items()},
    "rand_skip": {"data": ("data_param", "rand_skip"), "images": ("image_data_param", "rand_skip")},
    "shuffle_images": {"images": ("image_data_param", "shuffle")},
    "new_height": {"images": ("image_data_param", "new_height")},
    "new_width": {"images": ("image_data_param", "new_width")},
    "concat_dim": {"concat": ("concat_param", "concat_dim")},
    "det_fg_threshold": {"window_data": ("window_data_param", "fg_threshold")},
    "det_bg_threshold": {"window_data": ("window_data_param", "bg_threshold")},
    "det_fg_fraction": {"window_data": ("window_data_param", "fg_fraction")},
    "det_context_pad": {"window_data": ("window_data_param", "context_pad")},
    "det_crop_mode": {"window_data": ("window_data_param", "crop_mode")},
    "hdf5_output_param": {"hdf5_output": ("hdf5_output_param", None)},
}
_V0_HANDLED_ELSEWHERE = {"name", "type", "blobs", "blobs_lr", "weight_decay"}


def _set(msg, field: str, value) -> None:
    target = msg.DESCRIPTOR.fields_by_name[field]
    if target.is_repeated:
        getattr(msg, field).append(value)
    elif target.message_type is not None:
        getattr(msg, field).CopyFrom(value)
    else:
        setattr(msg, field, value)


def _v0_to_v1(old: pb.V1LayerParameter, where):
    """A V0 `layers { layer { ... } }` entry as (V1 layer, V2 type name, the parameter
    messages its flat V0 fields fill), ready for _v1_to_v2."""
    v0 = old.layer
    if v0.type not in V0_TYPES:
        raise where(f"V0 layer type '{v0.type}' has no upgrade (known: {', '.join(V0_TYPES)})",
                    "type")
    new = pb.V1LayerParameter()
    new.bottom.extend(old.bottom)
    new.top.extend(old.top)
    new.name = v0.name
    new.blobs.extend(v0.blobs)
    new.blobs_lr.extend(v0.blobs_lr)
    new.weight_decay.extend(v0.weight_decay)
    params = pb.LayerParameter()
    for field, value in v0.ListFields():
        name = field.name
        if name in _V0_HANDLED_ELSEWHERE:
            continue
        rule = V0_FIELDS.get(name, {})
        target = rule.get(v0.type) or rule.get("*")
        if target is None:
            raise where(f"V0 field '{name}' does not apply to a '{v0.type}' layer", name)
        message, sub = target
        if sub is None:
            getattr(params, message).CopyFrom(value)
        else:
            _set(getattr(params, message), sub, value)
    return new, V0_TYPES[v0.type], params


def _v1_to_v2(v1: pb.V1LayerParameter, type_name: str | None = None,
              extra: pb.LayerParameter | None = None) -> pb.LayerParameter:
    layer = pb.LayerParameter(name=v1.name, bottom=v1.bottom, top=v1.top)
    layer.type = type_name or V1_TYPES.get(pb.V1LayerParameter.LayerType.Name(v1.type), "")
    layer.blobs.extend(v1.blobs)
    layer.include.extend(v1.include)
    layer.exclude.extend(v1.exclude)
    layer.loss_weight.extend(v1.loss_weight)
    specs = max(len(v1.param), len(v1.blob_share_mode), len(v1.blobs_lr), len(v1.weight_decay))
    for i in range(specs):
        spec = layer.param.add()
        if i < len(v1.param):
            spec.name = v1.param[i]
        if i < len(v1.blob_share_mode):
            spec.share_mode = v1.blob_share_mode[i]
        if i < len(v1.blobs_lr):
            spec.lr_mult = v1.blobs_lr[i]
        if i < len(v1.weight_decay):
            spec.decay_mult = v1.weight_decay[i]
    for field, value in v1.ListFields():
        if field.name.endswith("_param") and field.name in layer.DESCRIPTOR.fields_by_name:
            getattr(layer, field.name).CopyFrom(value)
    if extra is not None:
        layer.MergeFrom(extra)
    _move_old_transform_fields(layer)
    return layer


def _move_old_transform_fields(layer: pb.LayerParameter) -> None:
    """Caffe's UpgradeNetDataTransformation: data layers' scale / mean_file / crop_size /
    mirror belong in transform_param."""
    for field in ("data_param", "image_data_param", "window_data_param"):
        if not layer.HasField(field):
            continue
        old = getattr(layer, field)
        for name in ("scale", "mean_file", "crop_size", "mirror"):
            if old.HasField(name):
                setattr(layer.transform_param, name, getattr(old, name))
                old.ClearField(name)


def upgrade_net(net: pb.NetParameter, source=None) -> tuple[pb.NetParameter, list[int | None]]:
    """The net in today's format, and for each of its layers the index of the block it came
    from in the file (None for an added Input layer). Nets already current pass through."""
    origin: list[int | None] = list(range(len(net.layer)))
    if net.layers:
        net, origin = _upgrade_layers(net, source)
    net, added = upgrade_inputs(net)
    return net, [None] * added + origin


def _upgrade_layers(net: pb.NetParameter, source) -> tuple[pb.NetParameter, list[int]]:
    if net.layer:
        raise _error(source, "the net mixes `layer` (current) and `layers` (V1) blocks", None)
    out = pb.NetParameter()
    out.CopyFrom(net)
    del out.layers[:]
    origin = []
    entries = list(enumerate(net.layers))
    if any(l.HasField("layer") for _, l in entries):
        entries = _merge_v0_padding(entries, list(net.input), source)
    for index, v1 in entries:
        def where(msg, field, index=index, name=v1.layer.name or v1.name):
            return _error(source, msg, index, name, field)
        if v1.HasField("layer"):
            v1, type_name, extra = _v0_to_v1(v1, where)
            out.layer.append(_v1_to_v2(v1, type_name, extra))
        else:
            if v1.type == pb.V1LayerParameter.NONE:
                raise where("V1 layer has no type", "type")
            out.layer.append(_v1_to_v2(v1))
        origin.append(index)
    return out, origin


def _merge_v0_padding(entries, inputs, source):
    """Drop V0 "padding" layers, giving their pad to the conv / pool that reads them."""
    produced_by = {name: None for name in inputs}
    kept = []
    by_index = dict(entries)
    for index, v1 in entries:
        if v1.layer.type == "padding":
            for t in v1.top:
                produced_by[t] = index
            continue
        copy = pb.V1LayerParameter()
        copy.CopyFrom(v1)
        for j, b in enumerate(copy.bottom):
            src = produced_by.get(b)
            if src is not None and by_index[src].layer.type == "padding":
                if copy.layer.type not in ("conv", "pool"):
                    raise _error(source, f"a padding layer feeds '{copy.layer.type}'; only conv "
                                         f"and pool can take its padding", index, copy.layer.name)
                copy.layer.pad = by_index[src].layer.pad
                copy.bottom[j] = by_index[src].bottom[0]
        for t in copy.top:
            produced_by[t] = index
        kept.append((index, copy))
    return kept


def _error(source, message, index, layer=None, field=None):
    if source is None:
        return SpecError(message, layer=layer, field=field)
    prefix = f"layer '{layer}': " if layer else ""
    return source.error(prefix + message, index, layer, field)
