"""Snapshots as Caffe writes them: <prefix>_iter_<N>.caffemodel (NetParameter with blobs) and
<prefix>_iter_<N>.solverstate (SolverState), each written atomically (temp file + rename)."""
from __future__ import annotations

import json
import os

import numpy as np

from .blob import Blob, proto_array
from .errors import WeightsError
from .proto import netspec_pb2 as pb
from .spec import read_binary, resolve_path, write_binary


def snapshot_paths(prefix: str, iteration: int) -> tuple[str, str]:
    base = f"{prefix}_iter_{iteration}"
    return base + ".caffemodel", base + ".solverstate"


def write_solverstate(path: str, iteration: int, learned_net: str, history: list[Blob],
                      current_step: int, extra: dict) -> None:
    state = pb.SolverState(iter=iteration, learned_net=learned_net, current_step=current_step)
    for h in history:
        state.history.append(h.to_proto())
    state.netspec_state = json.dumps(extra).encode()
    write_binary(path, state)


def read_solverstate(path: str, dtype) -> tuple[pb.SolverState, list[np.ndarray], dict, str]:
    """(state, history arrays, netspec extra state, path of the learned weights or "")."""
    state = read_binary(path, pb.SolverState())
    history = [proto_array(h, dtype) for h in state.history]
    extra = json.loads(state.netspec_state.decode()) if state.netspec_state else {}
    learned = ""
    if state.learned_net:
        learned = resolve_path(state.learned_net, path)
        if not os.path.exists(learned):
            raise WeightsError(f"{path}: its weights file '{state.learned_net}' is missing")
    return state, history, extra, learned
