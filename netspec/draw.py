"""`netspec draw`: the net as Caffe's draw_net.py draws it: layers as coloured boxes with their
key parameters, blobs as octagons, in-place layers folded into the layer that made the blob.
Reads the spec only (no data needed). Writes DOT itself; Graphviz (python package + dot
binary) renders PNG / SVG / PDF."""
from __future__ import annotations


COLOURS = {"Convolution": "#FF5050", "Deconvolution": "#FF5050", "Pooling": "#FF9900",
           "InnerProduct": "#CC33FF"}
DEFAULT_COLOUR, BLOB_COLOUR = "#6495ED", "#E0E0E0"


def _details(layer) -> list[str]:
    p = layer.p
    if layer.type in ("Convolution", "Deconvolution"):
        return [f"kernel size: {'x'.join(map(str, p.kernel))}",
                f"stride: {'x'.join(map(str, p.strides))}", f"pad: {'x'.join(map(str, p.pads))}",
                f"num output: {p.num_output}"]
    if layer.type == "Pooling":
        if p.global_pooling:
            return [f"pool: {p.pool}", "global"]
        return [f"pool: {p.pool}", f"kernel size: {'x'.join(map(str, p.kernel))}",
                f"stride: {'x'.join(map(str, p.strides))}", f"pad: {'x'.join(map(str, p.pads))}"]
    if layer.type == "InnerProduct":
        return [f"num output: {p.num_output}"]
    return []


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _label(lines: list[str]) -> str:
    """A quoted DOT label with one line per entry (record-field characters escaped)."""
    special = str.maketrans({c: "\\" + c for c in '\\"{}|<>'})
    return '"' + "\\n".join(line.translate(special) for line in lines) + '"'


def configured_layers(spec, phase: int | None) -> tuple[str, list]:
    """(net name, [layer objects]) for one phase (None: all layers): validated parameters, no
    setup, no data."""
    from .graph import phase_layers
    from .layers.base import Layer
    from .registry import get_layer_class
    param, source, origins = phase_layers(spec, phase)
    layers = []
    for where, lp in zip(origins, param.layer):
        try:  # a Python layer is drawn from its spec: its module is not imported (not run)
            cls = Layer if lp.type == "Python" else get_layer_class(lp.type)
            layers.append(cls(lp, phase))
        except (KeyError, ValueError) as e:
            message = e.args[0] if isinstance(e, KeyError) else str(e)
            raise source.error(f"{lp.type} '{lp.name}': {message}", where, lp.name,
                               getattr(e, "field", None)) from None
    return param.name, layers


def to_dot(name: str, layers: list, rankdir: str = "LR") -> str:
    lines = [f"digraph {_quote(name or 'net')} {{", f"  rankdir={rankdir};",
             '  node [fontname="Helvetica", fontsize=10];', '  edge [fontname="Helvetica"];']
    labels: dict[int, list[str]] = {}
    producer: dict[str, int] = {}  # blob name -> index of the layer node that made it
    order = []
    for i, layer in enumerate(layers):
        tops, bottoms = list(layer.spec.top), list(layer.spec.bottom)
        if tops and tops == bottoms[:len(tops)] and tops[0] in producer:  # in place: fold
            labels[producer[tops[0]]].append(f"+ {layer.name} ({layer.type})")
            continue
        labels[i] = [layer.name, f"({layer.type})", *_details(layer)]
        order.append(i)
        for t in tops:
            producer[t] = i
    blobs = []
    for i in order:
        layer = layers[i]
        colour = COLOURS.get(layer.type, DEFAULT_COLOUR)
        lines.append(f"  layer{i} [shape=record, style=filled, fillcolor={_quote(colour)}, "
                     f"label={_label(labels[i])}];")
        for b in layer.spec.bottom:
            lines.append(f"  {_quote('blob_' + b)} -> layer{i};")
        for t in layer.spec.top:
            lines.append(f"  layer{i} -> {_quote('blob_' + t)};")
        blobs += [b for b in list(layer.spec.bottom) + list(layer.spec.top) if b not in blobs]
    for b in blobs:
        lines.append(f"  {_quote('blob_' + b)} [shape=octagon, style=filled, "
                     f"fillcolor={_quote(BLOB_COLOUR)}, label={_quote(b)}];")
    lines.append("}")
    return "\n".join(lines) + "\n"


def draw_net(net_param, rankdir: str = "LR", ext: str = "png", phase=None) -> bytes:
    """pycaffe's caffe.draw.draw_net: the net (a NetParameter, file or prototxt text) drawn
    in format `ext` ('dot' or 'raw' give the DOT text), as bytes; `phase` keeps only that
    phase's layers (None: all)."""
    name, layers = configured_layers(net_param, phase)
    return render_bytes(to_dot(name, layers, rankdir), ext)


def draw_net_to_file(net_param, filename: str, rankdir: str = "LR", phase=None) -> None:
    """pycaffe's caffe.draw.draw_net_to_file: the format is the file's extension."""
    from .spec import write_atomic
    write_atomic(filename, draw_net(net_param, rankdir, filename.rsplit(".", 1)[-1], phase))


def render_bytes(dot: str, fmt: str) -> bytes:
    """`dot` rendered by Graphviz to `fmt` (png, svg, pdf...); dot, gv and raw are the text."""
    fmt = fmt.lower()
    if fmt in ("dot", "gv", "raw"):
        return dot.encode()
    try:
        import graphviz
    except ImportError:
        raise RuntimeError("rendering needs the graphviz package: pip install 'netspec[tools]' "
                           "(`-o net.dot` needs nothing)") from None
    try:
        return graphviz.Source(dot).pipe(format=fmt)
    except graphviz.ExecutableNotFound:
        raise RuntimeError("Graphviz's `dot` program is not installed (Debian: apt-get install "
                           "graphviz); `-o net.dot` needs no Graphviz") from None


def render(dot: str, path: str) -> None:
    """Write `dot` as .dot text, or render it to the file's format with Graphviz."""
    from .spec import write_atomic
    write_atomic(path, render_bytes(dot, path.rsplit(".", 1)[-1]))
