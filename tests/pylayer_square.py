"""A user's Python layer as pycaffe users write them (plain class): y = k x^2, k from param_str;
it also owns a learnable offset blob, to show that Python layers can learn."""
import numpy as np

from netspec.blob import Blob


class Square:
    def setup(self, bottom, top):
        self.k = float(self.param_str)
        self.blobs.append(Blob((), np.float64))
        self.blobs[0].data[...] = 0.5

    def reshape(self, bottom, top):
        top[0].reshape(bottom[0].shape)

    def forward(self, bottom, top):
        top[0].data[...] = self.k * bottom[0].data ** 2 + self.blobs[0].data

    def backward(self, top, propagate_down, bottom):
        self.blobs[0].diff += top[0].diff.sum()
        if propagate_down[0]:
            bottom[0].diff[...] = top[0].diff * 2 * self.k * bottom[0].data
