"""Fillers: Caffe's formulas, checked by their statistics on large blobs."""
import numpy as np
import pytest

from netspec.fillers import fill
from netspec.proto import netspec_pb2 as pb

SHAPE = (200, 50, 3, 3)  # fan_in = 450, fan_out = 1800


def filled(**kw):
    a = np.zeros(SHAPE)
    fill(a, pb.FillerParameter(**kw), np.random.default_rng(0))
    return a


def test_constant_and_uniform():
    assert (filled(type="constant", value=0.25) == 0.25).all()
    a = filled(type="uniform", min=-2, max=3)
    assert a.min() >= -2 and a.max() <= 3 and abs(a.mean() - 0.5) < 0.02


def test_gaussian_and_sparse():
    a = filled(type="gaussian", mean=1.0, std=0.5)
    assert abs(a.mean() - 1.0) < 0.01 and abs(a.std() - 0.5) < 0.01
    a = filled(type="gaussian", std=1.0, sparse=50)  # keep probability 50 / 200 outputs
    assert abs((a != 0).mean() - 0.25) < 0.01


@pytest.mark.parametrize("norm,n", [("FAN_IN", 450), ("FAN_OUT", 1800), ("AVERAGE", 1125)])
def test_xavier_bounds_by_fan(norm, n):
    a = filled(type="xavier", variance_norm=getattr(pb.FillerParameter, norm))
    bound = np.sqrt(3.0 / n)
    assert a.max() <= bound and a.min() >= -bound and a.max() > 0.99 * bound


@pytest.mark.parametrize("norm,n", [("FAN_IN", 450), ("FAN_OUT", 1800), ("AVERAGE", 1125)])
def test_msra_std_by_fan(norm, n):
    a = filled(type="msra", variance_norm=getattr(pb.FillerParameter, norm))
    assert abs(a.std() / np.sqrt(2.0 / n) - 1) < 0.01 and abs(a.mean()) < 0.002


def test_unknown_filler_is_named():
    with pytest.raises(ValueError, match="unknown filler type 'gausian'"):
        filled(type="gausian")
