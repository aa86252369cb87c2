"""Caffe's data transformation (TransformationParameter), applied to a batch at a time."""
from __future__ import annotations

import numpy as np
from pydantic import Field, model_validator

from ..io import read_mean
from ..params import ParamView, build_view
from .base import LayerSetupError


class TransformView(ParamView):
    scale: float = 1.0
    mirror: bool = False
    crop_size: int = Field(0, ge=0)
    mean_file: str = ""
    mean_value: list[float] = []
    force_color: bool = False
    force_gray: bool = False

    @model_validator(mode="after")
    def _one_mean(self):
        if self.mean_file and self.mean_value:
            raise ValueError("give mean_file or mean_value, not both")
        if self.force_color and self.force_gray:
            raise ValueError("force_color and force_gray cannot both be set")
        return self

    @property
    def color(self) -> bool | None:
        """How to decode encoded images: 3 channels, 1 channel, or as stored (None)."""
        return True if self.force_color else (False if self.force_gray else None)


class DataTransformer:
    """Caffe's DataTransformer on a batch: crop (random at TRAIN, centre at TEST), mirror
    (random at TRAIN), then (x - mean) * scale."""

    def __init__(self, view: TransformView, phase: int, rng: np.random.Generator, dtype):
        self.p, self.phase, self.rng, self.dtype = view, phase, rng, dtype
        self.mean = None
        if view.mean_file:
            self.mean = read_mean(view.mean_file).astype(np.float64)

    def out_shape(self, c, h, w):
        s = self.p.crop_size
        if s and (s > h or s > w):
            raise LayerSetupError(f"crop_size {s} is larger than the {h}x{w} images",
                                  field="crop_size")
        return (c, s, s) if s else (c, h, w)

    def __call__(self, images: np.ndarray) -> np.ndarray:
        x = images.astype(np.float64)
        if self.mean is not None:
            if self.mean.shape != x.shape[1:]:
                raise LayerSetupError(f"mean_file shape {self.mean.shape} does not match the "
                                      f"images {x.shape[1:]}", field="mean_file")
            x -= self.mean
        elif self.p.mean_value:
            mv = np.asarray(self.p.mean_value)
            if len(mv) not in (1, x.shape[1]):
                raise LayerSetupError(f"mean_value needs 1 or {x.shape[1]} values",
                                      field="mean_value")
            x -= mv.reshape(1, -1, 1, 1) if len(mv) > 1 else mv[0]
        n, _, h, w = x.shape
        s = self.p.crop_size
        if s:
            if self.phase == 0:
                hs = self.rng.integers(0, h - s + 1, size=n)
                ws = self.rng.integers(0, w - s + 1, size=n)
            else:
                hs = np.full(n, (h - s) // 2)
                ws = np.full(n, (w - s) // 2)
            rows = (hs[:, None] + np.arange(s))[:, None, :, None]
            cols = (ws[:, None] + np.arange(s))[:, None, None, :]
            x = x[np.arange(n)[:, None, None, None], np.arange(x.shape[1])[None, :, None, None],
                  rows, cols]
        if self.p.mirror and self.phase == 0:
            flip = self.rng.random(n) < 0.5
            x[flip] = x[flip, :, :, ::-1]
        return (x * self.p.scale).astype(self.dtype)



def make_transformer(layer) -> DataTransformer:
    """The transformer a data layer's transform_param describes (errors name the field)."""
    try:
        view = build_view(TransformView, layer.spec.transform_param)
    except ValueError as e:
        raise LayerSetupError(str(e), field=getattr(e, "field", None)) from None
    return DataTransformer(view, layer.phase, layer.rng, layer.dtype)
