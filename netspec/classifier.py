"""pycaffe's caffe.Classifier: a deploy net that takes (H, W, K) images, resizes, crops (or
takes 10 crops) and preprocesses them, and returns class probabilities."""
from __future__ import annotations

import numpy as np

from . import io
from .net import TEST, Net


def configured_transformer(net: Net, mean, input_scale, raw_scale, channel_swap):
    """A Transformer for the net's first input, set up as pycaffe's Classifier and Detector
    do: images come as (H, W, K), the net takes (K, H, W)."""
    name = net.inputs[0]
    transformer = io.Transformer({name: net.blobs[name].data.shape})
    transformer.set_transpose(name, (2, 0, 1))
    if mean is not None:
        transformer.set_mean(name, mean)
    if input_scale is not None:
        transformer.set_input_scale(name, input_scale)
    if raw_scale is not None:
        transformer.set_raw_scale(name, raw_scale)
    if channel_swap is not None:
        transformer.set_channel_swap(name, channel_swap)
    return transformer


class Classifier(Net):
    """Classifier(model_file, pretrained_file, image_dims=None, mean=None, input_scale=None,
    raw_scale=None, channel_swap=None): images are resized to image_dims (default: the net's
    input size) and cropped to the net's input size."""

    def __init__(self, model_file, pretrained_file, image_dims=None, mean=None,
                 input_scale=None, raw_scale=None, channel_swap=None):
        super().__init__(model_file, TEST, weights=pretrained_file)
        self.transformer = configured_transformer(self, mean, input_scale, raw_scale,
                                                  channel_swap)
        self.crop_dims = np.array(self.blobs[self.inputs[0]].data.shape[2:])
        self.image_dims = np.array(image_dims if image_dims is not None else self.crop_dims)

    def predict(self, inputs, oversample: bool = True) -> np.ndarray:
        """(N, classes) probabilities for N (H, W, K) images: averaged over the 10 crops
        (corners, centre, and their mirrors) with oversample, else from the centre crop."""
        h, w = (int(d) for d in self.image_dims)
        images = np.zeros((len(inputs), h, w, inputs[0].shape[2]), dtype=np.float32)
        for i, image in enumerate(inputs):
            images[i] = io.resize_image(image, (h, w))
        if oversample:
            images = io.oversample(images, self.crop_dims)
        else:
            top, left = (int(d) for d in (self.image_dims / 2.0 - self.crop_dims / 2.0))
            ch, cw = (int(d) for d in self.crop_dims)
            images = images[:, top:top + ch, left:left + cw, :]
        name = self.inputs[0]
        batch = np.stack([self.transformer.preprocess(name, image) for image in images])
        predictions = self.forward_all(**{name: batch})[self.outputs[0]]
        if oversample:
            predictions = predictions.reshape(len(predictions) // 10, 10, -1).mean(axis=1)
        return predictions
