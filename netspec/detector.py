"""pycaffe's caffe.Detector: classify windows of images (R-CNN style), each window warped
to the net's input, optionally with a border of surrounding context (`context_pad`)."""
from __future__ import annotations

import numpy as np

from . import io
from .classifier import configured_transformer
from .net import TEST, Net


class Detector(Net):
    """Detector(model_file, pretrained_file, mean=None, input_scale=None, raw_scale=None,
    channel_swap=None, context_pad=None)."""

    def __init__(self, model_file, pretrained_file, mean=None, input_scale=None,
                 raw_scale=None, channel_swap=None, context_pad=None):
        super().__init__(model_file, TEST, weights=pretrained_file)
        self.transformer = configured_transformer(self, mean, input_scale, raw_scale,
                                                  channel_swap)
        self.configure_crop(context_pad)

    def detect_windows(self, images_windows) -> list[dict]:
        """For (image file, [windows as (ymin, xmin, ymax, xmax)]) pairs: one
        {'window', 'prediction', 'filename'} per window, in order."""
        images_windows = [(name, list(windows)) for name, windows in images_windows]
        crops = []
        for filename, windows in images_windows:
            image = io.load_image(filename).astype(np.float32)
            crops += [self.crop(image, np.asarray(window)) for window in windows]
        name = self.inputs[0]
        batch = np.stack([self.transformer.preprocess(name, c) for c in crops])
        predictions = self.forward_all(**{name: batch})[self.outputs[0]]
        detections = []
        for filename, windows in images_windows:
            for window in windows:
                detections.append({"window": window, "prediction": predictions[len(detections)],
                                   "filename": filename})
        return detections

    def detect_selective_search(self, image_fnames) -> list[dict]:
        """detect_windows over Selective Search proposals (needs the
        selective_search_ijcv_with_python package and MATLAB, as pycaffe)."""
        import os

        try:
            import selective_search_ijcv_with_python as selective_search
        except ImportError:
            raise ImportError("detect_selective_search needs the "
                              "selective_search_ijcv_with_python package (and MATLAB); "
                              "detect_windows takes windows from anywhere") from None
        image_fnames = [os.path.abspath(f) for f in image_fnames]
        windows = selective_search.get_windows(image_fnames, cmd="selective_search_rcnn")
        return self.detect_windows(zip(image_fnames, windows))

    def crop(self, im: np.ndarray, window) -> np.ndarray:
        """The window (ymin, xmin, ymax, xmax) of an (H, W, K) image; with context_pad, the
        box grown so that context_pad pixels of the net's input are surrounding context, the
        part outside the image filled with the mean (in image space)."""
        window = np.asarray(window, dtype=int)
        crop = im[window[0]:window[2], window[1]:window[3]]
        if not self.context_pad:
            return crop
        size = self.blobs[self.inputs[0]].width  # a square input, as pycaffe assumes
        scale = size / (1.0 * size - self.context_pad * 2)
        half_h = (window[2] - window[0] + 1) / 2.0
        half_w = (window[3] - window[1] + 1) / 2.0
        centre = (window[0] + half_h, window[1] + half_w)
        box = np.round(np.tile(centre, 2) + scale * np.array((-half_h, -half_w, half_h, half_w)))
        scale_h = size / (box[2] - box[0] + 1)
        scale_w = size / (box[3] - box[1] + 1)
        pad_y = int(round(max(0, -box[0]) * scale_h))  # how far the box leaves the image
        pad_x = int(round(max(0, -box[1]) * scale_w))
        im_h, im_w = im.shape[:2]
        box = np.clip(box, 0.0, [im_h, im_w, im_h, im_w]).astype(int)
        crop_h = min(int(round((box[2] - box[0] + 1) * scale_h)), size - pad_y)
        crop_w = min(int(round((box[3] - box[1] + 1) * scale_w)), size - pad_x)
        context = io.resize_image(im[box[0]:box[2], box[1]:box[3]], (crop_h, crop_w))
        out = np.ones(self.crop_dims, dtype=np.float32) * self.crop_mean
        out[pad_y:pad_y + crop_h, pad_x:pad_x + crop_w] = context
        return out

    def configure_crop(self, context_pad) -> None:
        """The crop size (the net's input as (H, W, K)) and, with context padding, the mean
        in image space that fills context outside the image."""
        name = self.inputs[0]
        transpose = self.transformer.transpose[name]
        inverse = [transpose[t] for t in transpose]
        self.crop_dims = np.array(self.blobs[name].data.shape[1:])[inverse]
        self.context_pad = context_pad
        if not context_pad:
            return
        mean = self.transformer.mean.get(name)
        if mean is None:
            self.crop_mean = np.zeros(self.crop_dims, dtype=np.float32)
            return
        mean = np.broadcast_to(mean, self.blobs[name].data.shape[1:]).transpose(inverse).copy()
        swap = self.transformer.channel_swap.get(name)
        if swap is not None:
            mean = mean[:, :, [list(swap).index(i) for i in range(mean.shape[2])]]
        raw_scale = self.transformer.raw_scale.get(name)
        if raw_scale is not None:
            mean /= raw_scale
        self.crop_mean = mean
