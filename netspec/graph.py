"""Spec-level wiring before any layer exists: legacy inputs, NetState filtering, split insertion.

All functions take and return NetParameter messages, as Caffe's FilterNet and InsertSplits do.
"""
from __future__ import annotations

import difflib

from .proto import netspec_pb2 as pb
from .spec import Source


def upgrade_inputs(net: pb.NetParameter) -> tuple[pb.NetParameter, bool]:
    """Deploy nets' legacy `input:` + `input_dim`/`input_shape` become one Input layer
    (placed first); the flag says whether it was added."""
    if not net.input:
        return net, False
    out = pb.NetParameter()
    out.CopyFrom(net)
    out.ClearField("input")
    out.ClearField("input_dim")
    out.ClearField("input_shape")
    layer = pb.LayerParameter(name="input", type="Input")
    for i, name in enumerate(net.input):
        layer.top.append(name)
        shape = layer.input_param.shape.add()
        if net.input_shape:
            shape.CopyFrom(net.input_shape[i])
        else:
            shape.dim.extend(net.input_dim[4 * i:4 * i + 4])
    del out.layer[:]
    out.layer.append(layer)
    out.layer.extend(net.layer)
    return out, True


def state_meets_rule(state: pb.NetState, rule: pb.NetStateRule) -> bool:
    """Caffe's StateMeetsRule: phase, level range, required stages and forbidden stages."""
    if rule.HasField("phase") and rule.phase != state.phase:
        return False
    if rule.HasField("min_level") and state.level < rule.min_level:
        return False
    if rule.HasField("max_level") and state.level > rule.max_level:
        return False
    stages = set(state.stage)
    return all(s in stages for s in rule.stage) and not any(s in stages for s in rule.not_stage)


def filter_net(net: pb.NetParameter, state: pb.NetState, source: Source,
               origin: list[int | None]) -> tuple[pb.NetParameter, list[int]]:
    """Layers that the NetState includes, and their indices in `net`."""
    out = pb.NetParameter()
    out.CopyFrom(net)
    del out.layer[:]
    kept = []
    for i, layer in enumerate(net.layer):
        if layer.include and layer.exclude:
            raise source.error(f"{layer.type} '{layer.name}': give either include rules or "
                               f"exclude rules, not both",
                               origin[i], layer.name, "include")
        if layer.include:
            keep = any(state_meets_rule(state, r) for r in layer.include)
        else:
            keep = not any(state_meets_rule(state, r) for r in layer.exclude)
        if keep:
            out.layer.append(layer)
            kept.append(i)
    return out, kept


def split_blob_name(layer: str, blob: str, top_index: int, split_index: int) -> str:
    return f"{blob}_{layer}_{top_index}_split_{split_index}"


def insert_splits(net: pb.NetParameter, origin: list[int], source: Source) -> tuple[
        pb.NetParameter, list[int | None]]:
    """Give every blob version consumed more than once a Split layer (Caffe's InsertSplits).

    Also checks wiring: an unknown bottom, a bottom produced only later (a cycle), and a top
    produced twice without being in place are SpecErrors naming the layer. Returns the new net
    and, per layer, its index in the original file (None for inserted splits)."""
    last_top: dict[str, tuple[int, int]] = {}
    producers: dict[str, str] = {}
    source_of: dict[tuple[int, int], tuple[int, int]] = {}
    consumers: dict[tuple[int, int], int] = {}
    loss_weight: dict[tuple[int, int], float] = {}
    later_tops = {t: l.name for l in net.layer for t in l.top}
    for i, layer in enumerate(net.layer):
        for j, name in enumerate(layer.bottom):
            if name not in last_top:
                if name in later_tops:
                    msg = (f"bottom '{name}' is produced only later, by layer '{later_tops[name]}'"
                           f" (layers run in file order: is there a cycle?)")
                else:
                    close = difflib.get_close_matches(name, list(last_top), n=1)
                    msg = f"unknown bottom blob '{name}'" + (
                        f" (did you mean '{close[0]}'?)" if close else
                        f" (blobs so far: {', '.join(last_top) or 'none'})")
                raise source.error(f"{layer.type} '{layer.name}': {msg}", origin[i], layer.name,
                                   "bottom")
            source_of[(i, j)] = last_top[name]
            consumers[last_top[name]] = consumers.get(last_top[name], 0) + 1
        for j, name in enumerate(layer.top):
            in_place = j < len(layer.bottom) and layer.bottom[j] == name
            if name in producers and not in_place:
                raise source.error(f"{layer.type} '{layer.name}': top blob '{name}' is produced "
                                   f"by both layer "
                                   f"'{producers[name]}' and this one (only in-place layers, "
                                   f"with top == bottom, may reuse a name)",
                                   origin[i], layer.name, "top")
            producers[name] = layer.name
            last_top[name] = (i, j)
        for j in range(min(len(layer.loss_weight), len(layer.top))):
            if layer.loss_weight[j]:
                loss_weight[(i, j)] = layer.loss_weight[j]
                consumers[(i, j)] = consumers.get((i, j), 0) + 1

    out = pb.NetParameter()
    out.CopyFrom(net)
    del out.layer[:]
    new_origin: list[int | None] = []
    next_split: dict[tuple[int, int], int] = {}
    for i, layer in enumerate(net.layer):
        copy = out.layer.add()
        copy.CopyFrom(layer)
        new_origin.append(origin[i])
        for j in range(len(copy.bottom)):
            src = source_of[(i, j)]
            if consumers[src] > 1:
                k = next_split.get(src, 0)
                next_split[src] = k + 1
                copy.bottom[j] = split_blob_name(net.layer[src[0]].name, copy.bottom[j], src[1], k)
        for j, name in enumerate(layer.top):
            count = consumers.get((i, j), 0)
            if count <= 1:
                continue
            split = out.layer.add(name=f"{name}_{layer.name}_{j}_split", type="Split")
            split.bottom.append(name)
            split.top.extend(split_blob_name(layer.name, name, j, k) for k in range(count))
            if (i, j) in loss_weight:  # the extra (last) split top carries the loss
                split.loss_weight.extend([0.0] * (count - 1) + [loss_weight[(i, j)]])
                copy.loss_weight[j] = 0.0
            new_origin.append(None)
    return out, new_origin


def phase_layers(spec, phase: int | None):
    """The spec read, upgraded and filtered for `phase` (None: every layer), with no layer set
    up (no data read): (NetParameter, Source, each kept layer's index for Source.error)."""
    from .spec import read_net
    from .upgrade import upgrade_net
    param, source = read_net(spec)
    param, origin = upgrade_net(param, source)
    if phase is None:
        return param, source, origin
    param, kept = filter_net(param, pb.NetState(phase=phase), source, origin)
    return param, source, [origin[k] for k in kept]
