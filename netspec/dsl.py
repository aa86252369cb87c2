"""Caffe's net_spec in Python: build a NetParameter with `L.Type(bottoms..., **params)`.

    from netspec import NetSpec, layers as L, params as P
    n = NetSpec()
    n.data, n.label = L.Data(source="...", batch_size=64, ntop=2, backend=P.Data.LMDB)
    n.conv1 = L.Convolution(n.data, kernel_size=5, num_output=20)
    n.relu1 = L.ReLU(n.conv1, in_place=True)
    print(n.to_proto())

A keyword is a LayerParameter field (name, include, param, loss_weight, transform_param, ...)
or a field of the layer's own parameter message; which message that is comes from the
registry (the layer class's param_field) or else from the schema (<Type>Parameter). Repeated
fields take lists, messages take dicts, enums take names or P.<Type>.<VALUE>."""
from __future__ import annotations

import difflib
from collections import OrderedDict

from google.protobuf.descriptor import FieldDescriptor

from .proto import netspec_pb2 as pb

_LAYER_FIELDS = pb.LayerParameter.DESCRIPTOR.fields_by_name


def _param_field(type_name: str) -> str | None:
    """The LayerParameter field holding `type_name`'s parameters."""
    from .registry import layer_types
    cls = layer_types().get(type_name)
    if cls is not None and cls.param_field:
        return cls.param_field
    for f in pb.LayerParameter.DESCRIPTOR.fields:
        if f.message_type is not None and f.message_type.name == f"{type_name}Parameter":
            return f.name
    return None


def assign(msg, name: str, value) -> None:
    """Set field `name` of `msg` from a Python value (lists, dicts and enum names allowed)."""
    field = msg.DESCRIPTOR.fields_by_name[name]
    if field.is_repeated:
        values = value if isinstance(value, (list, tuple)) else [value]
        container = getattr(msg, name)
        for v in values:
            if field.type == FieldDescriptor.TYPE_MESSAGE:
                _fill(container.add(), v)
            else:
                container.append(_scalar(field, v))
    elif field.type == FieldDescriptor.TYPE_MESSAGE:
        _fill(getattr(msg, name), value)
    else:
        setattr(msg, name, _scalar(field, value))


def _fill(msg, value) -> None:
    if isinstance(value, dict):
        for k, v in value.items():
            if k not in msg.DESCRIPTOR.fields_by_name:
                raise TypeError(_unknown(msg.DESCRIPTOR, k))
            assign(msg, k, v)
    else:
        msg.CopyFrom(value)


def _scalar(field, value):
    if field.enum_type is not None and isinstance(value, str):
        if value not in field.enum_type.values_by_name:
            raise ValueError(f"{field.name} has no value {value!r} (known: "
                             f"{', '.join(field.enum_type.values_by_name)})")
        return field.enum_type.values_by_name[value].number
    return value


def _unknown(descriptor, key: str) -> str:
    close = difflib.get_close_matches(key, list(descriptor.fields_by_name), n=1)
    return f"{descriptor.name} has no field {key!r}" + (
        f" (did you mean {close[0]!r}?)" if close else "")


class Top:
    """One output of a layer call; assign it to a NetSpec attribute to name it."""

    def __init__(self, fn: "Function", index: int):
        self.fn, self.index = fn, index

    def to_proto(self) -> pb.NetParameter:
        return _to_proto([self])


class Function:
    """A layer call: its type, its input Tops and its keyword parameters."""

    def __init__(self, type_name: str, inputs, params: dict):
        self.type_name, self.inputs = type_name, list(inputs)
        params = dict(params)
        self.ntop = params.pop("ntop", 1)
        self.in_place = params.pop("in_place", False)
        self.params = params
        self.tops = tuple(Top(self, i) for i in range(self.ntop))
        for index, bottom in enumerate(self.inputs):
            if not isinstance(bottom, Top):  # pycaffe's message, word for word
                raise TypeError(f"{type_name} input {index} is not a Top (type is "
                                f"{type(bottom)})")

    def _name(self, names, counts) -> str:
        if self in names:  # a layer with no tops, assigned to a NetSpec attribute
            return names[self]
        if self.tops and self.tops[0] in names:
            return names[self.tops[0]]
        counts[self.type_name] = counts.get(self.type_name, 0) + 1
        return f"{self.type_name}{counts[self.type_name]}"

    def to_layer(self, layers: OrderedDict, names: dict, counts: dict) -> None:
        if self in layers:
            return
        bottoms = []
        for top in self.inputs:
            top.fn.to_layer(layers, names, counts)
            bottoms.append(layers[top.fn].top[top.index])
        layer = pb.LayerParameter(type=self.type_name, bottom=bottoms)
        layer.name = self._name(names, counts)
        if self.in_place:
            layer.top.extend(bottoms[:len(self.tops)])
        else:
            layer.top.extend(names.get(t) or (layer.name if len(self.tops) == 1 else
                                              f"{layer.name}_{i}") for i, t in
                             enumerate(self.tops))
        own = _param_field(self.type_name)
        for key, value in self.params.items():
            if key in _LAYER_FIELDS:
                assign(layer, key, value)
            elif own and key in getattr(layer, own).DESCRIPTOR.fields_by_name:
                assign(getattr(layer, own), key, value)
            else:
                where = getattr(layer, own).DESCRIPTOR if own else pb.LayerParameter.DESCRIPTOR
                raise TypeError(f"L.{self.type_name}: unknown keyword {key!r}: "
                                f"{_unknown(where, key)}")
        layers[self] = layer


def to_proto(*tops) -> pb.NetParameter:
    """pycaffe's caffe.to_proto: a NetParameter with every layer needed to compute `tops`
    (Tops, or layers without tops), named automatically."""
    return _to_proto(tops)


def _to_proto(tops, names: dict | None = None) -> pb.NetParameter:
    layers: OrderedDict = OrderedDict()
    counts: dict = {}
    for top in tops:
        (top if isinstance(top, Function) else top.fn).to_layer(layers, names or {}, counts)
    net = pb.NetParameter()
    net.layer.extend(layers.values())
    return net


class NetSpec:
    """Collects named tops by attribute assignment; to_proto() gives the NetParameter."""

    def __init__(self):
        super().__setattr__("tops", OrderedDict())

    def __setattr__(self, name, value):
        if not isinstance(value, (Top, Function)):
            raise TypeError(f"NetSpec.{name} must be a layer output (a Top) or a layer "
                            f"without tops (ntop=0), got {type(value).__name__}")
        self.tops[name] = value

    def __getattr__(self, name):
        try:
            return self.tops[name]
        except KeyError:
            raise AttributeError(f"NetSpec has no top {name!r}") from None

    __setitem__ = __setattr__
    __getitem__ = __getattr__

    def to_proto(self) -> pb.NetParameter:
        names = {value: name for name, value in self.tops.items()}
        return _to_proto(list(self.tops.values()), names)


class _LayerFactory:
    def __init__(self, type_name: str):
        self.type_name = type_name

    def __call__(self, *bottoms, **params):
        fn = Function(self.type_name, bottoms, params)
        return fn.tops[0] if fn.ntop == 1 else (fn.tops if fn.ntop else fn)


def layer(type_name: str) -> _LayerFactory:
    """`L.<Type>`: a callable that makes a layer of that type."""
    return _LayerFactory(type_name)


class EnumNamespace:
    """`P.<Type>`: the enum values of <Type>Parameter, e.g. P.Pooling.MAX."""

    def __init__(self, type_name: str):
        message = getattr(pb, f"{type_name}Parameter", None)
        if message is None:
            raise AttributeError(f"no {type_name}Parameter message in the schema")
        for enum in message.DESCRIPTOR.enum_types:
            for value in enum.values:
                setattr(self, value.name, value.number)
