"""The solver loop, in Caffe's Solver::Step order.

Per iteration: clear parameter diffs; test if due; iter_size x (forward + backward), which only
accumulates gradients; then ApplyUpdate for every parameter at once: clip, normalise by
iter_size, regularise, compute the update value (subclass), and subtract it. No parameter
changes while backward runs."""
from __future__ import annotations

import math
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from ..blob import Blob
from ..compat import default_rng
from ..device import (generator_state, placed, random_generator, resolve, restore_generator,
                      running_on, seed_from)
from ..errors import DivergedError, NetspecError, SpecError, WeightsError
from ..kernels import flat, kernels_for, scalar_like
from ..locks import Lock, stale_temps
from ..log import logger
from ..net import TEST, TRAIN, Net
from ..params import build_view
from ..proto import netspec_pb2 as pb
from ..snapshot import read_solverstate, snapshot_paths, write_solverstate
from ..spec import Source, field_line, read_spec, resolve_path
from .lr_policy import learning_rate
from .settings import SolverSettings


#: on a torch device, read the finite flags at least this often (iterations)
READ_EVERY = 1000


def default_solver(net_file: str) -> pb.SolverParameter:
    """What `netspec train NET.prototxt` uses when given a net instead of a solver."""
    stem = Path(net_file).stem
    return pb.SolverParameter(net=net_file, base_lr=0.01, momentum=0.9, lr_policy="fixed",
                              max_iter=10000, display=100, snapshot_prefix=f"snapshots/{stem}")


def first_bad_output(net: Net) -> str | None:
    """'the output of layer X (Type)' for the first layer of `net` whose output is not finite
    (the forward run again: Net.first_non_finite), else the first such blob now."""
    layer = net.first_non_finite() or next(
        (layer for layer, tops in zip(net.layers, net.top_ids)
         if not finite(t.data for t in tops)), None)
    return None if layer is None else f"the output of layer '{layer.name}' ({layer.type})"


def accuracy_scores(net: Net) -> list:
    """The blobs Accuracy layers rank: a NaN score counts as a right answer there (Caffe's
    comparison), so a test pass checks them itself."""
    return [bottoms[0] for layer, bottoms in zip(net.layers, net.bottom_ids)
            if layer.type == "Accuracy"]


def finite(arrays) -> bool:
    """No NaN or inf in any of `arrays`."""
    return all(np.isfinite(a).all() for a in arrays)


class Solver:
    """Holds the train net, the test nets (sharing its weights) and the update history.

    Subclasses implement compute_update_value; `history_sets` says how many history blobs each
    parameter keeps (Caffe's layout: all first sets, then all second sets)."""
    history_sets = 1
    #: compute_update_value also subtracts the update from the weights
    applies_updates = False

    def __init__(self, solver, dtype=np.float32, *, weights=None, max_iter: int | None = None,
                 world=None, device=None):
        if isinstance(solver, pb.SolverParameter):
            self.param, self.file, self.source = solver, None, Source()
        else:
            self.file = os.fspath(solver)
            self.param, self.source = read_spec(self.file, pb.SolverParameter())
        text = self.source.text
        if max_iter is not None:
            self.param.max_iter = max_iter
        try:
            self.settings = build_view(SolverSettings, self.param)
        except ValueError as e:
            field = getattr(e, "field", None)
            line = field_line(text, 1, field) if field else None
            raise SpecError(f"solver: {e}", file=self.file, line=line, field=field) from None
        self.dtype = np.dtype(dtype)
        seed = self.param.random_seed if self.param.random_seed >= 0 else None
        self.rng = default_rng(seed)
        #: the MPI world when this is one of several data-parallel processes (parallel.py)
        self.world = world
        self._parallel_started = False  # weights broadcast and buckets planned (once)
        self._own_stream()
        #: where the nets train (device.Device): `device` as Net takes it; None is the
        #: process's mode (set_mode_gpu / set_device). The file's solver_mode is the tool's
        #: business (cli.py), as in Caffe.
        self.device = resolve(device)
        #: the device's generator, shared by the nets as rng is (per rank: seeded from the
        #: rank's own stream); its state rides in the snapshot
        self.device_rng = random_generator(self.device, seed_from(self.rng))
        self.net = self._train_net()
        self.test_nets = self._test_nets()
        self.iter = 0
        self.current_step = 0
        with placed(self.device):
            self.history = [Blob(p.blob.shape, self.dtype)
                            for _ in range(self.history_sets) for p in self.net.learnable_params]
        #: on a torch device, per iteration since the last read: (loss, all-finite flag), read
        #: at display, test and snapshot time (no host sync per iteration)
        self._unread: list = []
        self.losses: list[float] = []
        self.smoothed_loss = 0.0
        self.requested_stop = False
        #: called after every iteration; returns "stop", "snapshot" or "none" (signals.py)
        self.action_request = lambda: "none"
        #: objects told of progress: on_iteration(solver), on_test(solver, index, means),
        #: on_snapshot(solver, model_path, state_path)
        self.observers: list = []
        self.last_rate = 0.0
        #: stop with DivergedError on a NaN/infinite loss or gradient (False: go on, as Caffe)
        self.check_finite = True
        #: the newest snapshot whose weights gave a finite loss (the one a divergence names)
        self.last_snapshot: str | None = None
        #: snapshots written since the last finite loss: (model, state) paths; a divergence
        #: before the next finite loss removes them (their weights are what diverged)
        self._unverified: list[tuple[str, str]] = []
        self._prefix_lock = None  # held while solve() runs (locks.Lock)
        if weights:
            for w in str(weights).split(","):
                ignored = self.net.copy_from(w)
                logger.info("Finetuning from %s%s", w,
                            f" (ignoring source layers: {', '.join(ignored)})" if ignored else "")
                if self.net.weights_missing:
                    logger.info("Layers initialised by their fillers (not in %s): %s", w,
                                ", ".join(self.net.weights_missing))

    @property
    def is_root(self) -> bool:
        """The process that logs, tests and snapshots (the only one without MPI)."""
        return self.world is None or self.world.rank == 0

    def _own_stream(self) -> None:
        """Each data-parallel rank draws its own random numbers (dropout masks, random crops):
        rank r jumps the shared seed's stream r * 2^127 steps ahead."""
        if self.world is not None and self.world.rank:
            self.rng.bit_generator.state = self.rng.bit_generator.jumped(self.world.rank).state

    # -- nets ------------------------------------------------------------------------------------
    def _path(self, path: str) -> str:
        return resolve_path(path, self.file)

    def _train_net(self) -> Net:
        p = self.param
        sources = [f for f in ("net", "net_param", "train_net", "train_net_param") if p.HasField(f)]
        if len(sources) != 1:
            raise SpecError("solver must name exactly one train net (net, net_param, train_net "
                            f"or train_net_param); found {', '.join(sources) or 'none'}",
                            file=self.file)
        field = sources[0]
        model = getattr(p, field)
        if isinstance(model, str):
            if not model.strip():
                raise SpecError(f"{field} is empty: give the net's prototxt file", file=self.file,
                                line=field_line(self.source.text, 1, field), field=field)
            model = self._path(model)
        return Net(model, TRAIN, stages=list(p.train_state.stage), level=p.train_state.level,
                   dtype=self.dtype, rng=self.rng, device=self.device,
                   device_rng=self.device_rng)

    def _test_nets(self) -> list[Net]:
        p = self.param
        models = list(p.test_net_param) + [self._path(f) for f in p.test_net]
        generic = p.net_param if p.HasField("net_param") else (
            self._path(p.net) if p.HasField("net") else None)
        if generic is not None:
            models += [generic] * (len(p.test_iter) - len(models))
        if len(models) != len(p.test_iter):
            raise SpecError(f"solver: test_iter has {len(p.test_iter)} values for {len(models)} "
                            f"test nets", file=self.file,
                            line=field_line(self.source.text, 1, "test_iter"), field="test_iter")
        nets = []
        for i, model in enumerate(models):
            state = p.test_state[i] if i < len(p.test_state) else pb.NetState()
            net = Net(model, TEST, stages=list(state.stage), level=state.level,
                      dtype=self.dtype, rng=self.rng, device=self.device,
                      device_rng=self.device_rng)
            net.share_with(self.net)
            nets.append(net)
        return nets

    # -- the loop --------------------------------------------------------------------------------
    def solve(self, resume_file: str | None = None) -> None:
        p = self.param
        logger.info("Solving %s", self.net.name)
        logger.info("Learning Rate Policy: %s", p.lr_policy)
        if resume_file:
            self.restore(resume_file)
        if (p.snapshot or p.snapshot_after_train) and self.is_root:
            self.check_snapshot_folder()
        try:
            self._solve(p)
        finally:
            if self._prefix_lock is not None:
                self._prefix_lock.release()
                self._prefix_lock = None

    def _solve(self, p) -> None:
        self.step(p.max_iter - self.iter)
        if p.snapshot_after_train and (not p.snapshot or self.iter % p.snapshot != 0) and \
                self.is_root:
            self.snapshot()
        if self.requested_stop:
            logger.info("Optimization stopped early.")
            return
        if p.display and self.iter % p.display == 0 and self.is_root:
            with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
                loss = float(self.net.forward_layers())
            self.net.check_deferred()
            logger.info("Iteration %d, loss = %s", self.iter, fmt(loss))
            if self.check_finite and not math.isfinite(loss):
                self._diverged(self.iter, loss, None)
        self._verified()  # (without a display: the weights were checked after each update)
        if p.test_interval and self.iter % p.test_interval == 0 and self.is_root:
            self.test_all()
        logger.info("Optimization Done.")

    def step(self, iters: int) -> None:
        """Run `iters` iterations. numpy's overflow warnings are silenced: a NaN or infinite
        loss or gradient is reported once, by _watch_finite (or ignored with check_finite off,
        as Caffe does)."""
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            try:
                self._step(iters)
            finally:
                self._read_finite()

    def _step(self, iters: int) -> None:
        p = self.param
        start_iter, stop_iter = self.iter, self.iter + iters
        self.losses, self.smoothed_loss = [], 0.0
        last_iter, timer = self.iter, time.perf_counter()
        if self.world is not None and not self._parallel_started:
            self._start_parallel()
        while self.iter < stop_iter:
            self.net.clear_param_diffs()
            if p.test_interval and self.iter % p.test_interval == 0 and (
                    self.iter > 0 or p.test_initialization) and self.is_root:
                self._read_finite()
                self.test_all()
            display = p.display and self.iter % p.display == 0
            with running_on(self.device):
                loss = self._forward_backward() / p.iter_size
                if self.check_finite:
                    self._watch_finite(loss)
                self._update_smoothed_loss(loss, start_iter)
            if display or len(self._unread) >= READ_EVERY:
                self._read_finite()
            if display:
                lapse = time.perf_counter() - timer
                per_s = (self.iter - last_iter) / (lapse or 1)
                logger.info("Iteration %d (%s iter/s, %ss/%d iters), loss = %s", self.iter,
                            fmt(per_s), fmt(lapse), p.display, fmt(self.smoothed_loss))
                last_iter, timer = self.iter, time.perf_counter()
                self._log_outputs(self.net, "Train", lambda name: self.net.blobs[name].data)
            with running_on(self.device):
                self.apply_update(display)
                if self.check_finite:
                    self._watch_weights()
            self.iter += 1
            for o in self.observers:
                o.on_iteration(self)
            request = self.action_request()
            if self.world is not None:  # every rank acts on a signal any of them received
                request = self.world.agree(request)
            if ((p.snapshot and self.iter % p.snapshot == 0) or request == "snapshot") and \
                    self.is_root:
                self._read_finite()
                self.snapshot()
            if request == "stop":
                self.requested_stop = True
                break

    def _forward_backward(self) -> float:
        """iter_size forward + backward passes, accumulating gradients; with MPI the last
        backward sends each finished bucket of gradients on its way, and all are averaged
        over the processes before returning. The summed loss of this process."""
        net, world, n = self.net, self.world, self.param.iter_size
        loss = 0.0
        for k in range(n):
            if world is not None and world.overlap and k == n - 1:
                net.after_backward = world.layer_done
            try:
                loss = loss + net.forward_backward()
            finally:
                net.after_backward = None
        if world is not None:
            with running_on(None):  # MPI sends host arrays: staged through the host
                world.finish_gradients()
        return loss

    def _start_parallel(self) -> None:
        """Every rank starts from rank 0's weights and history, once, at the first step
        (after a resume: every rank read the same snapshot)."""
        self._parallel_started = True
        world = self.world
        world.check_same(self._must_agree())
        world.plan(self.net)
        world.broadcast([p.blob.data for p in self.net.learnable_params] +
                        [h.data for h in self.history])
        batch = next((t.shape[0] for layer, tops in zip(self.net.layers, self.net.top_ids)
                      if layer.is_data for t in tops[:1] if t.shape), None)
        if batch is not None:
            size = self.param.iter_size
            logger.info("Training on %d processes (MPI): batch_size %d per process%s, "
                        "effective batch %d", world.size, batch,
                        f" x iter_size {size}" if size > 1 else "", world.size * batch * size)

    #: solver fields that may differ between MPI ranks (files and devices, not the schedule)
    MAY_DIFFER = {"net", "net_param", "train_net", "test_net", "train_net_param",
                  "test_net_param", "device_id", "solver_mode", "snapshot_prefix",
                  "random_seed", "debug_info"}

    def _must_agree(self) -> list[tuple[str, str]]:
        """What every MPI rank must share: the solver's settings and the learnable
        parameters' names and shapes (World.check_same)."""
        facts = [(f.name, str(v).strip()) for f, v in self.param.ListFields()
                 if f.name not in self.MAY_DIFFER]
        facts += [(f"the shape of learnable parameter {k} ({info.owner})",
                   str(tuple(info.blob.shape)))
                  for k, info in enumerate(self.net.learnable_params)]
        facts.append(("the number of learnable parameters", str(len(self.net.learnable_params))))
        return facts

    def _watch_finite(self, loss) -> None:
        """Stop when the loss or a gradient is NaN or infinite. On the CPU: now, before the
        update reaches the weights. On a torch device the check is a device flag kept per
        iteration and read by _read_finite at display, test and snapshot time (and at the end),
        so the stop names the exact iteration and no snapshot holds the NaN."""
        if not self.device.is_torch:
            bad_grad = self._first_bad_gradient()
            if math.isfinite(loss) and bad_grad is None:
                self._verified()
                return
            self._diverged(self.iter, loss, bad_grad)
        import torch
        diffs = [info.blob.diff for info in self.net.learnable_params]
        flag = torch.isfinite(torch.as_tensor(loss, device=self.device.torch))
        if diffs:
            flag = flag & kernels_for(diffs[0]).all_finite(diffs)
        self._unread.append((self.iter, loss, flag, False))

    def _watch_weights(self) -> None:
        """After the update, before any snapshot: the weights must still be finite (a huge
        rate, lr_mult or inv power overflows them while the loss and gradients were fine).
        On the CPU now; on a device a flag read with the others."""
        weights = [info.blob.data for info in self.net.learnable_params]
        if not weights:
            return
        ok = kernels_for(weights[0]).all_finite(weights)
        if self.device.is_torch:
            self._unread.append((self.iter, None, ok, True))
        elif not ok:
            self._weights_diverged(self.iter)

    def _weights_diverged(self, iteration: int, seen: str = "") -> None:
        bad = next(info for info in self.net.learnable_params
                   if not np.isfinite(info.blob.data).all())
        raise DivergedError(
            f"iteration {iteration}: the update (learning rate {fmt(self.last_rate)}) made the "
            f"weights of layer '{bad.owner}' NaN or infinite{seen}; {self._kept()}. Lower "
            f"base_lr (or lr_mult, or clip_gradients), or pass --allow-nan to go on as Caffe "
            f"does")

    def _verified(self) -> None:
        """A finite loss from the newest weights: the snapshots written before it are good."""
        if self._unverified:
            self.last_snapshot = self._unverified[-1][1]
            self._unverified = []

    def _kept(self, remove: bool = True) -> str:
        """Which snapshot a divergence leaves the user. With `remove`, the snapshots written
        since the last finite loss are deleted: their weights are the ones that diverged."""
        removed = ""
        if self._unverified and remove:
            for paths in self._unverified:
                for path in paths:
                    try:
                        os.remove(path)
                    except OSError:
                        pass
            removed = (f" ({', '.join(state for _, state in self._unverified)} removed: "
                       f"written before the loss showed it)")
            self._unverified = []
        last = self._unverified[-1][1] if self._unverified else self.last_snapshot
        return (f"the last snapshot ({last}) is kept" if last
                else "no snapshot was written") + removed

    def _read_finite(self) -> None:
        """Read the device's finite flags kept since the last read (one host sync), after the
        layers' deferred data checks (a bad label explains a NaN)."""
        self.net.check_deferred()
        if not self._unread:
            return
        import torch
        unread, self._unread = self._unread, []
        ok = torch.stack([flag for _, _, flag, _ in unread]).cpu().numpy()
        if ok.all():
            self._verified()
            return
        iteration, loss, _, weights = unread[int(np.argmin(ok))]
        seen = f" (seen at iteration {self.iter}, the first read of the device since)" \
            if iteration != self.iter else ""
        if weights:
            self._weights_diverged(iteration, seen)
        self._diverged(iteration, float(loss), self._first_bad_gradient(), seen)

    def _first_bad_gradient(self):
        """The first learnable parameter whose gradient is NaN or infinite (host copies), or
        None."""
        return next((info for info in self.net.learnable_params
                     if not np.isfinite(info.blob.diff).all()), None)

    def _diverged(self, iteration: int, loss: float, bad_grad, seen: str = "") -> None:
        """The DivergedError: name the first layer whose output (or, failing that, whose
        parameter gradient) is not finite."""
        where = first_bad_output(self.net)
        if where is None:
            where = f"the gradient of layer '{bad_grad.owner}'" if bad_grad else "the loss"
        raise DivergedError(
            f"iteration {iteration}: the loss is {fmt(loss)}; {where} first became NaN or "
            f"infinite{seen}; {self._kept()}. Lower base_lr (or clip_gradients), or pass --allow-nan "
            f"to go on as Caffe does")

    def _update_smoothed_loss(self, loss: float, start_iter: int) -> None:
        n = self.param.average_loss
        if len(self.losses) < n:
            self.losses.append(loss)
            size = len(self.losses)
            self.smoothed_loss = (self.smoothed_loss * (size - 1) + loss) / size
        else:
            idx = (self.iter - start_iter) % n
            self.smoothed_loss += (loss - self.losses[idx]) / n
            self.losses[idx] = loss

    def _log_outputs(self, net: Net, kind: str, values) -> None:
        k = 0
        for name in net.outputs:
            weight = net.blob_loss_weight(name)
            for v in np.ravel(values(name)):
                logger.info("    %s net output #%d: %s = %s%s", kind, k, name, fmt(v),
                            loss_suffix(weight, v))
                k += 1

    def test_all(self) -> None:
        for i in range(len(self.test_nets)):
            self.test(i)

    def test(self, i: int = 0) -> dict[str, np.ndarray]:
        """Run test net i for test_iter[i] batches; log and return the mean of each output."""
        logger.info("Iteration %d, Testing net (#%d)", self.iter, i)
        net = self.test_nets[i]
        n = self.param.test_iter[i]
        sums = {name: 0.0 for name in net.outputs}
        scores = accuracy_scores(net)
        bad = None
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            for _ in range(n):
                net.forward_layers()
                net.check_deferred()
                for name in net.outputs:
                    sums[name] = sums[name] + net.blobs[name].data.astype(np.float64)
                if bad is None and self.check_finite and not finite(b.data for b in scores):
                    bad = first_bad_output(net) or "the scores of an Accuracy layer"
        means = {name: np.asarray(s) / n for name, s in sums.items()}
        self._log_outputs(net, "Test", lambda name: means[name])
        if self.check_finite and bad is None and not finite(means.values()):
            bad = first_bad_output(net) or "an output"
        if bad is not None:
            raise DivergedError(
                f"iteration {self.iter}: testing net #{i}: {bad} is NaN or infinite, so its "
                f"outputs (accuracy included) mean nothing; {self._kept(remove=False)}. Lower base_lr (or "
                f"clip_gradients), or pass --allow-nan to go on as Caffe does")
        for o in self.observers:
            o.on_test(self, i, means)
        return means

    # -- the update ------------------------------------------------------------------------------
    def rate(self) -> float:
        rate, self.current_step = learning_rate(self.param, self.iter, self.current_step)
        return rate

    def apply_update(self, display: bool = False) -> None:
        rate = self.last_rate = self.rate()
        if display:
            logger.info("Iteration %d, lr = %s", self.iter, fmt(rate))
        self.clip_gradients()
        for i, info in enumerate(self.net.learnable_params):
            self.normalize(info.blob)
            self.regularize(info)
            self.compute_update_value(i, info, rate)
        if not self.applies_updates:
            for info in self.net.learnable_params:
                info.blob.data -= info.blob.diff

    def clip_gradients(self) -> None:
        clip = self.param.clip_gradients
        if clip < 0:
            return
        norm = math.sqrt(float(sum(kernels_for(p.blob.diff).sum_squares(flat(p.blob.diff))
                                   for p in self.net.learnable_params)))
        if norm > clip:
            logger.info("Gradient clipping: scaling down gradients (L2 norm %s > %s) by scale "
                        "factor %s", fmt(norm), fmt(clip), fmt(clip / norm))
            for p in self.net.learnable_params:
                p.blob.diff *= clip / norm

    def normalize(self, blob: Blob) -> None:
        if self.param.iter_size > 1:
            blob.diff *= 1.0 / self.param.iter_size

    def regularize(self, info) -> None:
        decay = self.param.weight_decay * info.decay_mult
        if not decay:
            return
        w = info.blob.data
        kernels_for(w).add_decay(flat(w), scalar_like(w, decay),
                                 self.param.regularization_type == "L1", flat(info.blob.diff))

    def compute_update_value(self, i: int, info, rate: float) -> None:
        raise NotImplementedError

    # -- snapshots -------------------------------------------------------------------------------
    def snapshot_prefix(self) -> str:
        if self.param.snapshot_prefix:
            return self.param.snapshot_prefix
        return str(Path(self.file).with_suffix("")) if self.file else "netspec"

    def check_snapshot_folder(self) -> None:
        """Caffe checks the snapshot prefix is writable before training; so do we, by creating
        (and removing) a file where the snapshots will go."""
        prefix = self.snapshot_prefix()
        if "\0" in prefix:
            raise SpecError(f"snapshot_prefix {prefix!r} holds a NUL byte: no file can be named "
                            f"so", file=self.file, field="snapshot_prefix",
                            line=field_line(self.source.text, 1, "snapshot_prefix"))
        folder = os.path.dirname(prefix) or "."
        try:
            os.makedirs(folder, exist_ok=True)
            fd, probe = tempfile.mkstemp(dir=folder, suffix=".tmp")
            os.close(fd)
            os.remove(probe)
        except OSError as e:
            raise NetspecError(f"cannot write snapshots to {folder}/ (snapshot_prefix "
                               f"{prefix!r}): {e.strerror or e}") from None
        lock = Lock(os.path.join(folder, f".{os.path.basename(prefix)}.netspec-lock"))
        try:
            held = lock.acquire(wait=False)
        except OSError as e:
            raise NetspecError(f"cannot lock the snapshot prefix {prefix!r}: "
                               f"{e.strerror or e}") from None
        if not held:
            raise NetspecError(f"snapshot_prefix {prefix!r} is in use by another netspec run "
                               f"(pid {lock.owner()}): its snapshots would be overwritten; "
                               f"give this run another snapshot_prefix")
        self._prefix_lock = lock
        # unfinished writes of a run that was killed: netspec's own, their process gone
        stale = stale_temps(folder, os.path.basename(prefix) + "_iter_")
        for path in stale:
            os.remove(path)
        if stale:
            logger.info("Removed %d unfinished snapshot file(s) left by an interrupted run",
                        len(stale))

    def snapshot(self) -> tuple[str, str]:
        """Write the weights and the solver state; returns their paths. A failed write (a full
        disk) is one error; the files written before it are left as they were."""
        hdf5 = self.param.snapshot_format == pb.SolverParameter.HDF5
        kind = "HDF5" if hdf5 else "binary proto"
        model_path, state_path = snapshot_paths(self.snapshot_prefix(), self.iter, hdf5)
        try:
            logger.info("Snapshotting to %s file %s", kind, model_path)
            self.net.save(model_path)
            logger.info("Snapshotting solver state to %s file %s", kind, state_path)
            write_solverstate(state_path, self.iter, model_path, self.history,
                              self.current_step, self._extra_state())
        except OSError as e:
            kept = f"; the last complete snapshot is {self.last_snapshot}" \
                if self.last_snapshot else ""
            raise NetspecError(f"iteration {self.iter}: could not write the snapshot "
                               f"{model_path}: {e.strerror or e}{kept}") from None
        for o in self.observers:
            o.on_snapshot(self, model_path, state_path)
        self._unverified.append((model_path, state_path))
        return model_path, state_path

    def _extra_state(self) -> dict:
        extra = {"rng": self.rng.bit_generator.state,
                 "train": self.net.layer_states(),
                 "test": [n.layer_states() for n in self.test_nets]}
        if self.device_rng is not None:
            extra["device_rng"] = generator_state(self.device_rng)
        return extra

    def restore(self, state_file: str) -> None:
        """Continue from a .solverstate: iteration, history, weights, schedule, data readers."""
        logger.info("Restoring previous solver status from %s", state_file)
        self.last_snapshot = state_file
        iteration, current_step, history, extra, learned = read_solverstate(state_file,
                                                                             self.dtype)
        if not learned:
            raise WeightsError(f"{state_file}: names no learned net (learned_net is empty): "
                               f"the weights to resume are unknown")
        if len(history) != len(self.history):
            raise WeightsError(f"{state_file}: holds {len(history)} history blobs, this solver "
                               f"needs {len(self.history)} (a different net or solver type?)")
        for j, (mine, saved) in enumerate(zip(self.history, history)):
            if mine.shape != saved.shape:
                raise WeightsError(f"{state_file}: history blob {j} has shape {saved.shape}, "
                                   f"the net's parameter has {mine.shape}")
            mine.data[...] = saved
        self.net.copy_from(learned)
        if self.net.weights_missing:
            logger.warning("%d layer(s) received no weights from %s and keep their random "
                           "initialisation: %s", len(self.net.weights_missing), learned,
                           ", ".join(self.net.weights_missing))
        self.iter = iteration
        self.current_step = current_step
        try:
            if "rng" in extra:
                self.rng.bit_generator.state = extra["rng"]
            self._own_stream()  # the snapshot holds rank 0's stream
            if self.device_rng is not None:
                if self.world is not None and self.world.rank:
                    self.device_rng.manual_seed(seed_from(self.rng))  # the rank's own
                elif not restore_generator(self.device_rng, extra.get("device_rng", {})):
                    logger.info("%s holds no random stream for %s: Dropout's draws there "
                                "start a new one", state_file, self.device)
            self.net.set_layer_states(extra.get("train", {}))
            for net, states in zip(self.test_nets, extra.get("test", [])):
                net.set_layer_states(states)
        except (KeyError, IndexError, TypeError, ValueError, AttributeError, RuntimeError) as e:
            raise WeightsError(f"{state_file}: its netspec state (random state, data reader "
                               f"positions) is damaged ({e.__class__.__name__})") from None


def fmt(x) -> str:
    """Numbers as Caffe's C++ streams print them (6 significant digits)."""
    return f"{float(x):.6g}"


def loss_suffix(weight: float, value: float) -> str:
    """Caffe's " (* w = w*v loss)" after an output that counts towards the loss."""
    return f" (* {fmt(weight)} = {fmt(weight * value)} loss)" if weight else ""
