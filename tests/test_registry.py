"""The registry: lookups, did-you-mean, plugins by entry point, and the rule that every
registered layer type has a numeric gradient case in the tests."""
from importlib.metadata import EntryPoint

import numpy as np
import pytest

import netspec
from netspec import registry
from netspec.layers import Layer

# type -> the test that checks its gradient numerically (or why it has none)
GRADIENT_CASES = {
    "Convolution": "test_layers_vision.py::test_convolution_gradients",
    "Pooling": "test_layers_vision.py::test_pooling_gradients",
    "InnerProduct": "test_layers_common.py::test_inner_product_gradients",
    "Softmax": "test_layers_common.py::test_softmax",
    "Split": "test_layers_common.py::test_split_copies_and_sums_gradients",
    "ReLU": "test_layers_neuron.py::test_values_gradients_and_in_place",
    "Sigmoid": "test_layers_neuron.py::test_values_gradients_and_in_place",
    "TanH": "test_layers_neuron.py::test_values_gradients_and_in_place",
    "Softplus": "test_layers_neuron.py::test_values_gradients_and_in_place",
    "Dropout": "test_layers_neuron.py::test_dropout_gradients",
    "SoftmaxWithLoss": "test_layers_loss.py::test_softmax_loss_normalisation_with_ignore_label",
}
NO_GRADIENT = {
    "Input": "data enters here; nothing below it",
    "Data": "data enters here; nothing below it",
    "Accuracy": "a metric: not differentiable, never backpropagated",
}


def test_every_registered_type_has_a_gradient_case():
    types = set(netspec.layer_types())
    missing = types - set(GRADIENT_CASES) - set(NO_GRADIENT)
    assert not missing, f"layer types with no numeric gradient test: {sorted(missing)}"
    assert not (set(GRADIENT_CASES) | set(NO_GRADIENT)) - types


def test_lookup_suggests_the_closest_type():
    with pytest.raises(KeyError, match="did you mean 'Convolution'"):
        registry.get_layer_class("Convolutoin")
    with pytest.raises(KeyError, match="did you mean 'TanH'"):
        registry.get_layer_class("tanh")


def test_every_layer_has_a_summary():
    for name, cls in netspec.layer_types().items():
        assert cls.summary, name
        assert cls.type == name


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
