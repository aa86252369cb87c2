"""Typed, validated views of parameter messages (pydantic), built once at layer construction.

A view lists only the fields its layer uses; values come from the proto with Caffe's defaults.
Validation failures read: `Convolution 'conv1': num_output must be > 0. Received: num_output=0`.
"""
from __future__ import annotations

from typing import Any

from google.protobuf import message as pb_message
from pydantic import BaseModel, ConfigDict, ValidationError



class ParamView(BaseModel):
    """Base of every parameter view: immutable, proto messages allowed as field values.
    Numbers must be finite: nan or inf where Caffe's meaning needs a number is an error."""
    model_config = ConfigDict(arbitrary_types_allowed=True, extra="ignore", allow_inf_nan=False)
    #: names of the fields the spec actually set (Caffe's has_xxx())
    set_fields: frozenset[str] = frozenset()


def message_values(msg: pb_message.Message) -> dict[str, Any]:
    """Every field of `msg` with its value or default: repeated -> list, enum -> its name."""
    out: dict[str, Any] = {}
    for f in msg.DESCRIPTOR.fields:
        value = getattr(msg, f.name)
        if f.is_repeated:
            value = list(value)
            if f.enum_type is not None:
                value = [f.enum_type.values_by_number[v].name for v in value]
        elif f.enum_type is not None:
            value = f.enum_type.values_by_number[value].name
        out[f.name] = value
    out["set_fields"] = frozenset(f.name for f, _ in msg.ListFields())
    return out


def describe_error(err: ValidationError, values: dict[str, Any]) -> tuple[str, str | None]:
    """One sentence for the first problem pydantic found, and the field it concerns."""
    e = err.errors()[0]
    reason = e["msg"].removeprefix("Value error, ")
    field = str(e["loc"][0]) if e["loc"] else None
    if field is None and reason.split(" ", 1)[0] in values:
        return reason, reason.split(" ", 1)[0]
    reason = reason.replace("Input should be", "must be")
    if field:
        got = values.get(field)
        return f"{field} {reason}. Received: {field}={got!r}", field
    return reason, None


def build_view(view: type[ParamView], msg: pb_message.Message) -> ParamView:
    """Validate `msg` into `view`; raises ValueError(sentence) with `.field` set."""
    values = message_values(msg)
    try:
        return view.model_validate(values)
    except ValidationError as err:
        text, field = describe_error(err, values)
        exc = ValueError(text)
        exc.field = field
        raise exc from None


def spatial_pair(name: str, values: list[int], h: int, w: int, has_hw: bool,
                 default: int | None) -> tuple[int, int]:
    """Caffe's 2-D reading of a repeated field (`kernel_size: 5` or `kernel_size: [3, 5]`)
    with its `_h`/`_w` override."""
    if has_hw:
        if values:
            raise ValueError(f"give either {name} or {name}_h/{name}_w, not both")
        return h, w
    if not values:
        if default is None:
            raise ValueError(f"{name} must be given (or {name}_h and {name}_w)")
        return default, default
    if len(values) == 1:
        return values[0], values[0]
    if len(values) == 2:
        return values[0], values[1]
    raise ValueError(f"{name} takes 1 or 2 values for 2-D data, got {len(values)}")




def __getattr__(name: str):
    """`from netspec import params as P; P.Pooling.MAX`: enum values, as pycaffe's params."""
    if name[:1].isupper():
        from .dsl import EnumNamespace
        return EnumNamespace(name)
    raise AttributeError(name)
