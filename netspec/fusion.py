"""Inference fusion: a layer and the layers that work in place on its output, run as one pass.

ResNet's conv -> BatchNorm -> Scale -> ReLU walks each activation through memory three times
after the convolution, and each shortcut join (Eltwise sum -> ReLU) twice; at inference those
passes were a sixth of ResNet-50's forward. A head layer (`Layer.absorbs` names what it can
take) runs its followers in its own pass, where:
- they come right after it, each with its top 0 as their one bottom and top (in place: no
  other layer can see the blob between them);
- none of them runs backward (backward needs what each pass saw) and none is a loss.
Each element goes through the same float operations in the same order as in the layers'
own passes, so the outputs are the same to the bit. A forward over a range that cuts a chain
runs its layers one by one."""
from __future__ import annotations


def plan(net) -> dict[int, tuple[int, ...]]:
    """{head index: indices of the followers it runs} for `net`'s layers."""
    chains = {}
    for i, head in enumerate(net.layers):
        if not head.absorbs or head.runs_backward or any(net.loss_weights[i]) \
                or len(net.top_ids[i]) != 1:
            continue
        blob, j, chain = net.top_ids[i][0], i + 1, []
        for kind in head.absorbs:
            if j < len(net.layers) and net.layers[j].type == kind and \
                    _in_place_on(net, j, blob):
                chain.append(j)
                j += 1
        if chain:
            chains[i] = tuple(chain)
    return chains


def _in_place_on(net, j: int, blob) -> bool:
    layer = net.layers[j]
    bottoms, tops = net.bottom_ids[j], net.top_ids[j]
    return (len(bottoms) == len(tops) == 1 and bottoms[0] is blob and tops[0] is blob
            and not layer.runs_backward and not any(net.loss_weights[j]))
