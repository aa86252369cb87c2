"""Map from a layer's `type` string to its class; third-party layers arrive by entry point."""
from __future__ import annotations

import difflib
from importlib.metadata import entry_points

_LAYERS: dict[str, type] = {}
_plugins_loaded = False
ENTRY_POINT_GROUP = "netspec.layers"


def register_layer(type_name: str):
    """Class decorator: `@register_layer("ReLU")` makes the class the implementation of type ReLU."""
    def wrap(cls):
        if type_name in _LAYERS and _LAYERS[type_name] is not cls:
            raise ValueError(f"layer type {type_name!r} is already registered by {_LAYERS[type_name]}")
        cls.type = type_name
        _LAYERS[type_name] = cls
        return cls
    return wrap


def _load_plugins() -> None:
    """Import layers that other packages declare under the `netspec.layers` entry point group."""
    global _plugins_loaded
    if _plugins_loaded:
        return
    _plugins_loaded = True
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        cls = ep.load()
        if ep.name not in _LAYERS:
            register_layer(ep.name)(cls)


def layer_types() -> dict[str, type]:
    from . import layers  # noqa: F401  (registers the built-in families)
    _load_plugins()
    return dict(sorted(_LAYERS.items()))


def layer_type_list() -> list[str]:
    """pycaffe's caffe.layer_type_list: every registered type name, sorted."""
    return list(layer_types())


def get_layer_class(type_name: str) -> type:
    """The class for `type_name`; a KeyError whose message suggests the closest known type."""
    known = layer_types()
    if type_name in known:
        return known[type_name]
    by_lower = {k.lower(): k for k in known}
    close = [by_lower[type_name.lower()]] if type_name.lower() in by_lower else \
        difflib.get_close_matches(type_name, list(known), n=1, cutoff=0.5)
    hint = f" (did you mean '{close[0]}'?)" if close else f"; known types: {', '.join(known)}"
    raise KeyError(f"unknown layer type '{type_name}'{hint}")
