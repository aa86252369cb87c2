"""Spec loading: friendly parse errors with file, line, column, layer and did-you-mean."""
import os

import pytest

from netspec import Net, SpecError, TEST, TRAIN
from netspec.proto import netspec_pb2 as pb
from netspec.spec import layer_lines, read_text, resolve_path, write_atomic

NET = """name: "t"
layer {
  name: "in"
  type: "Input"
  top: "x"
  input_param { shape { dim: 1 dim: 1 dim: 4 dim: 4 } }
}
layer {
  name: "conv1"
  type: "Convolution"
  bottom: "x"
  top: "y"
  convolution_param {
    num_output: 2
    kernal_size: 3
  }
}
"""


def test_unknown_field_names_file_line_column_layer_and_suggests(tmp_path):
    path = tmp_path / "net.prototxt"
    path.write_text(NET)
    with pytest.raises(SpecError) as e:
        read_text(path, pb.NetParameter())
    err = e.value
    assert (err.line, err.column, err.layer, err.field) == (15, 5, "conv1", "kernal_size")
    assert str(err) == (f'{path}:15:5: layer \'conv1\': ConvolutionParameter has no field named '
                        f'"kernal_size" (did you mean "kernel_size"?)')


def test_syntax_error_names_the_token(tmp_path):
    path = tmp_path / "net.prototxt"
    path.write_text(NET.replace("num_output: 2", "num_output: two"))
    with pytest.raises(SpecError, match=r"net.prototxt:14:\d+: layer 'conv1': .*two"):
        read_text(path, pb.NetParameter())


def test_missing_file():
    with pytest.raises(SpecError, match="nope.prototxt: file not found"):
        read_text("nope.prototxt", pb.NetParameter())


def test_names_no_file_can_have():
    """A NUL byte (what the fuzzer made of a net's text) or a name longer than the system
    allows: one SpecError line, not Python's ValueError or OSError."""
    with pytest.raises(SpecError, match="holds a NUL byte"):
        Net("\x00", TEST)
    with pytest.raises(SpecError, match="cannot read it"):
        read_text("n" * 5000 + ".prototxt", pb.NetParameter())


def test_semantic_errors_point_at_the_field_line(tmp_path):
    path = tmp_path / "net.prototxt"
    path.write_text(NET.replace("    kernal_size: 3\n", "    num_output: 0\n").replace(
        "    num_output: 2\n", "    kernel_size: 3\n"))
    with pytest.raises(SpecError) as e:
        Net(str(path), TRAIN)
    assert e.value.line == 15 and e.value.layer == "conv1"
    assert "Convolution 'conv1': num_output must be greater than 0" in str(e.value)


def test_layer_lines_ignore_comments_and_strings():
    text = '# layer {\nname: "layer {"\nlayer {\n  name: "a"\n}\n\nlayer{ name: "b" }\n'
    assert layer_lines(text) == [3, 7]


def test_relative_paths_resolve_cwd_first_then_spec_folder(tmp_path, monkeypatch):
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "net.prototxt").write_text("")
    monkeypatch.chdir(tmp_path)
    solver = str(tmp_path / "models" / "solver.prototxt")
    assert resolve_path("net.prototxt", solver) == os.path.join(str(tmp_path / "models"),
                                                                "net.prototxt")
    (tmp_path / "net.prototxt").write_text("")
    assert resolve_path("net.prototxt", solver) == "net.prototxt"


def test_atomic_write_keeps_the_old_file_on_failure(tmp_path):
    path = tmp_path / "x.bin"
    write_atomic(path, b"old")

    real = os.fsync

    def failing(fd):
        raise OSError("disk full")

    try:
        os.fsync = failing
        with pytest.raises(OSError):
            write_atomic(path, b"new")
    finally:
        os.fsync = real
    assert path.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["x.bin"]


def test_atomic_write_gives_normal_permissions(tmp_path):
    path = tmp_path / "new.bin"
    write_atomic(path, b"x")
    mask = os.umask(0)
    os.umask(mask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~mask
    os.chmod(path, 0o640)
    write_atomic(path, b"y")
    assert path.stat().st_mode & 0o777 == 0o640
