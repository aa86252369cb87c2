"""The registry: lookups, did-you-mean, plugins by entry point, and the rule that every
registered layer type has a numeric gradient case in the tests."""
from importlib.metadata import EntryPoint

import numpy as np
import pytest

import netspec
from netspec import registry
from netspec.layers import Layer

from conftest import assert_gradients
from layer_cases import CASES, NO_GRADIENT


def test_every_registered_type_has_a_gradient_case():
    types = set(netspec.layer_types())
    missing = types - set(CASES) - set(NO_GRADIENT)
    assert not missing, f"layer types with no numeric gradient case: {sorted(missing)}"
    assert not (set(CASES) | set(NO_GRADIENT)) - types, "cases for unregistered types"


ALL_CASES = [(t, i, case) for t, cases in sorted(CASES.items()) for i, case in enumerate(cases)]


@pytest.mark.parametrize("type_,index,case", ALL_CASES,
                         ids=[f"{t}-{i}" for t, i, _ in ALL_CASES])
def test_registry_wide_gradient_check_float64(type_, index, case):
    text, arrays, options = case
    options = dict(options)
    assert_gradients(text, *arrays, ntop=options.pop("ntop", 1), phase=options.pop("phase", 0),
                     **options)


def test_lookup_suggests_the_closest_type():
    with pytest.raises(KeyError, match="did you mean 'Convolution'"):
        registry.get_layer_class("Convolutoin")
    with pytest.raises(KeyError, match="did you mean 'TanH'"):
        registry.get_layer_class("tanh")


def test_every_layer_has_a_summary():
    for name, cls in netspec.layer_types().items():
        assert cls.summary, name
        assert cls.type == name


def test_python_layer_loads_a_user_class_and_learns():
    from conftest import run
    layer, bottom, top = run('type: "Python" python_param { module: "pylayer_square" '
                             'layer: "Square" param_str: "3" }', np.array([1.0, -2.0]))
    np.testing.assert_allclose(top[0].data, [3.5, 12.5])
    assert len(layer.blobs) == 1
    from netspec.layers import LayerSetupError
    with pytest.raises(LayerSetupError, match="cannot import module 'no_such_module'"):
        run('type: "Python" python_param { module: "no_such_module" layer: "X" }', np.zeros(2))


class Doubler(Layer):
    """A third-party layer: y = 2x."""
    summary = "test plugin"

    def reshape(self, bottom, top):
        top[0].reshape(bottom[0].shape)

    def forward(self, bottom, top):
        top[0].data[...] = 2 * bottom[0].data

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            bottom[0].diff[...] = 2 * top[0].diff


def test_plugins_register_through_entry_points(monkeypatch):
    ep = EntryPoint(name="Doubler", value=f"{__name__}:Doubler", group="netspec.layers")
    monkeypatch.setattr(registry, "entry_points",
                        lambda group: [ep] if group == "netspec.layers" else [])
    monkeypatch.setattr(registry, "_plugins_loaded", False)
    try:
        net = netspec.Net('layer { name: "in" type: "Input" top: "x" input_param { shape { '
                          'dim: 2 } } } layer { name: "d" type: "Doubler" bottom: "x" top: "y" }',
                          netspec.TEST)
        out = net.forward(x=np.array([1.0, 2.0]))
        np.testing.assert_array_equal(out["y"], [2.0, 4.0])
    finally:
        registry._LAYERS.pop("Doubler", None)
        registry._plugins_loaded = True
