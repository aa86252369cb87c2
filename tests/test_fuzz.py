"""Fuzzing (hypothesis): mutated spec text, .caffemodel, .solverstate (binary and HDF5),
LMDB records, and LMDB files with damaged bytes. Every outcome must be success or a NetspecError (the CLI's one line): never
another exception. Bounded for CI; NETSPEC_FUZZ_EXAMPLES=2000 runs longer."""
from __future__ import annotations

import os
from collections import Counter

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from conftest import ROOT
from netspec import Net, TEST, NetspecError
from netspec.db import DatumReader, write_datum_lmdb, write_records
from netspec.snapshot import read_solverstate

EXAMPLES = int(os.environ.get("NETSPEC_FUZZ_EXAMPLES", "60"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, database=None,
                suppress_health_check=list(HealthCheck))
OUTCOMES: Counter = Counter()

SPEC = (ROOT / "models" / "lenet" / "lenet.prototxt").read_text().replace("dim: 64", "dim: 2")


def mutate(data: bytes, edits) -> bytes:
    out = bytearray(data)
    for kind, position, value in edits:
        if not out:
            break
        i = position % len(out)
        if kind == 0:
            out[i] = value
        elif kind == 1:
            del out[i]
        elif kind == 2:
            out.insert(i, value)
        else:
            del out[i:]
    return bytes(out)


EDITS = st.lists(st.tuples(st.integers(0, 3), st.integers(0, 1 << 30), st.integers(0, 255)),
                 min_size=1, max_size=6)


def outcome(kind: str, run) -> None:
    try:
        run()
        OUTCOMES[(kind, "ok")] += 1
    except NetspecError as e:
        assert str(e).count("\n") == 0 or len(str(e)) < 2000, str(e)[:300]
        OUTCOMES[(kind, type(e).__name__)] += 1


@FUZZ
@given(EDITS)
def test_mutated_spec_text(edits):
    text = mutate(SPEC.encode(), edits).decode("utf-8", "replace")
    outcome("spec", lambda: Net(text, TEST))


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("fuzz")
    net = Net(SPEC, TEST, seed=0)
    net.save(str(folder / "w.caffemodel"))
    from netspec.snapshot import write_solverstate
    for ext in ("", ".h5"):
        write_solverstate(str(folder / f"s.solverstate{ext}"), 7, str(folder / "w.caffemodel"),
                          [b for _, bs in net.params.items() for b in bs], 0,
                          {"rng": np.random.default_rng(0).bit_generator.state})
    rng = np.random.default_rng(0)
    write_datum_lmdb(str(folder / "db"), rng.integers(0, 255, (20, 1, 4, 4)).astype(np.uint8),
                     rng.integers(0, 10, 20))
    return folder, net


@FUZZ
@given(EDITS)
def test_mutated_caffemodel(files, edits):
    folder, net = files
    path = folder / "m.caffemodel"
    path.write_bytes(mutate((folder / "w.caffemodel").read_bytes(), edits))
    outcome("caffemodel", lambda: net.copy_from(str(path)))


@FUZZ
@given(EDITS, st.booleans())
def test_mutated_solverstate(files, edits, hdf5):
    folder, _ = files
    ext = ".h5" if hdf5 else ""
    path = folder / f"m.solverstate{ext}"
    path.write_bytes(mutate((folder / f"s.solverstate{ext}").read_bytes(), edits))
    outcome("solverstate" + ext, lambda: read_solverstate(str(path), np.float32))


@FUZZ
@given(st.lists(st.binary(max_size=80), min_size=1, max_size=5))
def test_lmdb_records_of_random_bytes(files, records):
    folder, _ = files
    db = folder / f"rand{abs(hash(tuple(records))) % 10 ** 9}"
    write_records(str(db), [(f"{i:08d}".encode(), r) for i, r in enumerate(records)])

    def read():
        reader = DatumReader(str(db))
        reader.batch(range(len(reader)))
    outcome("lmdb record", read)


LMDB_FILE_FUZZ = """
import os, shutil, sys, collections
import numpy as np
from netspec import NetspecError
from netspec.db import DatumReader, write_datum_lmdb
folder, examples = sys.argv[1], int(sys.argv[2])
rng = np.random.default_rng(0)
write_datum_lmdb(os.path.join(folder, "db"), rng.integers(0, 255, (20, 1, 4, 4), dtype=np.uint8),
                 rng.integers(0, 10, 20))
clean = open(os.path.join(folder, "db", "data.mdb"), "rb").read()
counts = collections.Counter()
for t in range(examples):
    damaged = bytearray(clean)
    for _ in range(int(rng.integers(1, 4))):  # one to three bytes anywhere in the pages
        damaged[int(rng.integers(0, len(damaged)))] = int(rng.integers(0, 256))
    db = os.path.join(folder, f"m{t}")
    os.makedirs(db)
    with open(os.path.join(db, "data.mdb"), "wb") as f:
        f.write(bytes(damaged))
    try:
        reader = DatumReader(db)
        reader.batch(range(len(reader)))
        counts["ok"] += 1
    except NetspecError as e:
        counts[type(e).__name__] += 1
    shutil.rmtree(db)
print(dict(counts))
"""


def test_lmdb_files_with_damaged_bytes(tmp_path):
    """Bytes changed anywhere in data.mdb (page headers, tree pointers, sizes, records): a
    NetspecError or success, never another exception or a signal (LMDB reading past the end
    of the file used to kill the process with SIGBUS). Run in a child process, so that a
    signal fails this test instead of ending the test run."""
    import subprocess
    import sys
    child = subprocess.run([sys.executable, "-c", LMDB_FILE_FUZZ, str(tmp_path),
                            str(EXAMPLES)], capture_output=True, text=True, timeout=900)
    assert child.returncode == 0, f"exit {child.returncode}: {child.stderr[-2000:]}"
    counts = eval(child.stdout.strip().splitlines()[-1])
    assert sum(counts.values()) == EXAMPLES
    for kind, n in counts.items():
        OUTCOMES[("lmdb file", kind)] += n


def test_print_fuzz_counts():
    """The outcome counts of this run (pytest -s shows them)."""
    print("\nfuzz outcomes:", dict(sorted(OUTCOMES.items())))
