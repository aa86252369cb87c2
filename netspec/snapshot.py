"""Snapshots as Caffe writes them, in either snapshot_format, each file written atomically
(temporary file + rename) so that a crash never leaves a half-written snapshot:

BINARYPROTO  <prefix>_iter_<N>.caffemodel     NetParameter with the layers' blobs
             <prefix>_iter_<N>.solverstate    SolverState: iter, learned_net, history, current_step
HDF5         <prefix>_iter_<N>.caffemodel.h5  data/<layer>/<i>
             <prefix>_iter_<N>.solverstate.h5 iter, learned_net, current_step, history/<i>

netspec adds what bit-exact resume needs beyond Caffe's fields (random state, data readers'
positions) as JSON: SolverState field 1000 / dataset `netspec_state`; Caffe ignores both."""
from __future__ import annotations

import json
import os
from contextlib import contextmanager

import numpy as np

from .blob import Blob, proto_array
from .errors import WeightsError
from .hdf5 import OutsideFile, open_h5
from .proto import netspec_pb2 as pb
from .spec import default_mode, read_binary, temp_beside, write_atomic
from .wire import state_chunks


def snapshot_paths(prefix: str, iteration: int, hdf5: bool = False) -> tuple[str, str]:
    base = f"{prefix}_iter_{iteration}"
    ext = ".h5" if hdf5 else ""
    return base + ".caffemodel" + ext, base + ".solverstate" + ext


def is_hdf5(path: str) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(8) == b"\x89HDF\r\n\x1a\n"
    except OSError:
        return False


@contextmanager
def atomic_h5(path: str):
    import h5py
    fd, tmp = temp_beside(path)
    os.close(fd)
    try:
        with h5py.File(tmp, "w") as f:
            yield f
        os.chmod(tmp, default_mode(path))
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_weights_h5(path: str, layers: list[tuple[str, list[Blob]]]) -> None:
    with atomic_h5(path) as f:
        data = f.create_group("data")
        for name, blobs in layers:
            group = data.create_group(name)
            for i, blob in enumerate(blobs):
                group.create_dataset(str(i), data=blob.data)


def read_weights_h5(path: str) -> list[tuple[str, list[np.ndarray]]]:
    try:
        with open_h5(path) as f:
            return [(name, [np.asarray(group[str(i)]) for i in range(len(group))])
                    for name, group in f["data"].items()]
    except OutsideFile as e:
        raise WeightsError(str(e)) from None
    except (OSError, KeyError, ValueError, TypeError, AttributeError, RuntimeError) as e:
        raise WeightsError(f"{path}: not a valid .caffemodel.h5 ({e})") from None


def write_solverstate(path: str, iteration: int, learned_net: str, history: list[Blob],
                      current_step: int, extra: dict) -> None:
    if path.endswith(".h5"):
        with atomic_h5(path) as f:
            f.create_dataset("iter", data=np.array([iteration], dtype=np.int32))
            f.create_dataset("learned_net", data=np.bytes_(learned_net))
            f.create_dataset("current_step", data=np.array([current_step], dtype=np.int32))
            group = f.create_group("history")
            for i, h in enumerate(history):
                group.create_dataset(str(i), data=h.data)
            f.create_dataset("netspec_state", data=np.bytes_(json.dumps(extra)))
        return
    state = pb.SolverState(iter=iteration, learned_net=learned_net, current_step=current_step)
    state.netspec_state = json.dumps(extra).encode()
    write_atomic(path, state_chunks(state, history))  # (wire.py: no float objects)


def read_solverstate(path: str, dtype):
    """(iter, current_step, history arrays, netspec extra state, learned weights path or "").
    Any damage inside the file is a WeightsError naming it."""
    try:
        if is_hdf5(path):
            with open_h5(path) as f:
                iteration = int(np.asarray(f["iter"]).ravel()[0])
                current_step = int(np.asarray(f["current_step"]).ravel()[0])
                history = [np.asarray(f["history"][str(i)], dtype=dtype)
                           for i in range(len(f["history"]))]
                learned_net = f["learned_net"][()].decode() if "learned_net" in f else ""
                extra = json.loads(f["netspec_state"][()].decode()) \
                    if "netspec_state" in f else {}
        else:
            state = read_binary(path, pb.SolverState())
            iteration, current_step = state.iter, state.current_step
            learned_net = state.learned_net
            history = [proto_array(h, dtype) for h in state.history]
            extra = json.loads(state.netspec_state.decode()) if state.netspec_state else {}
    except WeightsError:
        raise
    except OutsideFile as e:
        raise WeightsError(str(e)) from None
    except (OSError, KeyError, IndexError, ValueError, TypeError, AttributeError,
            UnicodeDecodeError, RuntimeError) as e:  # json's errors are ValueErrors
        raise WeightsError(f"{path}: not a readable solver state ({e.__class__.__name__}: "
                           f"{str(e)[:200]})") from None
    if not isinstance(extra, dict):
        raise WeightsError(f"{path}: its netspec state is not a table of values")
    learned = find_learned_net(learned_net, path) if learned_net else ""
    return iteration, current_step, history, extra, learned


def find_learned_net(learned_net: str, state_path: str) -> str:
    """Where a solver state's weights are: as written (Caffe reads it from the working
    directory), else beside the state file (its snapshot pair, when the run is resumed from
    another folder), else relative to the state's folder; the error says where it looked."""
    if isinstance(learned_net, bytes):  # (protobuf hands back what is not UTF-8 as bytes)
        raise WeightsError(f"{state_path}: its learned_net is not UTF-8 text "
                           f"({learned_net[:40]!r}): the file is damaged")
    folder = os.path.dirname(os.path.abspath(state_path))
    places = [learned_net] if os.path.isabs(learned_net) else [
        learned_net, os.path.join(folder, os.path.basename(learned_net)),
        os.path.join(folder, learned_net)]
    places = list(dict.fromkeys(places))
    for place in places:
        if os.path.isfile(place):
            return place
    raise WeightsError(f"{state_path}: its weights file '{learned_net}' is missing (looked in: "
                       f"{', '.join(places)})")
