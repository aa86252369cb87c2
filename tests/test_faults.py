"""Faults (issue #34): diverging runs never leave or name a bad snapshot and never exit 0."""
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
