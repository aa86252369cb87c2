"""Read and write specs: prototxt text via protobuf's text_format, binary protos atomically.

Parse errors become SpecError with file, line, column, the enclosing layer and a did-you-mean.
"""
from __future__ import annotations

import difflib
import os
import re
import tempfile
from dataclasses import dataclass

from google.protobuf import message as pb_message
from google.protobuf import text_format

from .errors import SpecError, WeightsError
from .locks import temp_name
from .proto import netspec_pb2 as pb

_LINE_COL = re.compile(r"^(\d+):(\d+) : (.*)$", re.S)
_NO_FIELD = re.compile(r'Message type "caffe\.(\w+)" has no field named "(\w+)"')


def read_text(path: str | os.PathLike, message: pb_message.Message) -> pb_message.Message:
    """Parse a prototxt file into `message`; a syntax error names file, line, column, token."""
    return read_spec(path, message)[0]


#: the most a prototxt may hold (Caffe's largest are tens of KiB), and a binary proto
#: (protobuf's own 2 GiB limit); a device or pipe (/dev/zero) is read up to the first
TEXT_LIMIT, BINARY_LIMIT = 64 << 20, 2 << 30


class TooLarge(ValueError):
    pass


def read_limited(path: str, limit: int) -> bytes:
    """A file's bytes, refused (TooLarge) past `limit` without reading further; a file that
    is not a regular one (a device, a pipe) is read at most to TEXT_LIMIT."""
    with open(path, "rb") as f:
        regular = os.path.isfile(path)
        cap = limit if regular else min(limit, TEXT_LIMIT)
        if regular and os.fstat(f.fileno()).st_size > cap:
            raise TooLarge(cap)
        data = f.read(cap + 1)
    if len(data) > cap:
        raise TooLarge(cap)
    return data


def _size_words(n: int) -> str:
    return f"{n >> 30} GiB" if n >= 1 << 30 else f"{n >> 20} MiB"


def read_spec(path: str | os.PathLike, message: pb_message.Message):
    """(message, Source): the file parsed, and its text kept for later errors' line numbers."""
    path = str(path)
    if not path.strip():
        raise SpecError("no file name given (an empty path)")
    try:
        raw = read_limited(path, TEXT_LIMIT)
    except TooLarge as e:
        raise SpecError(f"holds more than {_size_words(e.args[0])}: not a prototxt",
                        file=path) from None
    except FileNotFoundError:
        raise SpecError("file not found", file=path) from None
    except IsADirectoryError:
        raise SpecError("is a folder, not a text spec", file=path) from None
    except ValueError:  # a NUL byte: neither a file name nor prototxt text
        raise SpecError("not a file name or a net's text (it holds a NUL byte)",
                        file=repr(path)[:80]) from None
    except OSError as e:  # a name too long, no permission, ...
        raise SpecError(f"cannot read it: {e.strerror or e}", file=path[:200]) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw.count(b"\n", 0, e.start) + 1
        raise SpecError(f"not UTF-8 text (byte 0x{raw[e.start]:02x}): a prototxt is text",
                        file=path, line=line) from None
    return parse_text(text, message, file=path), Source(path, text)


def parse_text(text: str, message: pb_message.Message, file: str = "<string>") -> pb_message.Message:
    try:
        text_format.Parse(text, message)
    except text_format.ParseError as e:
        raise _friendly_parse_error(e, text, file) from None
    return message


def _friendly_parse_error(e: text_format.ParseError, text: str, file: str) -> SpecError:
    msg = str(e)
    line = col = None
    m = _LINE_COL.match(msg)
    if m:
        line, col, msg = int(m.group(1)), int(m.group(2)), m.group(3)
    field = None
    m = _NO_FIELD.search(msg)
    if m:
        owner, field = m.group(1), m.group(2)
        names = [f.name for f in getattr(pb, owner).DESCRIPTOR.fields]
        close = difflib.get_close_matches(field, names, n=1)
        msg = f'{owner} has no field named "{field}"'
        if close:
            msg += f' (did you mean "{close[0]}"?)'
    layer = None
    if line:
        layer = layer_name_at(text, line)
        if layer:
            msg = f"layer '{layer}': {msg}"
    return SpecError(msg, file=file, line=line, column=col, layer=layer, field=field)


def layer_lines(text: str) -> list[int]:
    """1-based line of each top-level `layer {` / `layers {` block, in file order."""
    lines, depth, line, word_line = [], 0, 1, 0
    token = re.compile(r'#[^\n]*|"(?:[^"\\\n]|\\.)*"|\'(?:[^\'\\\n]|\\.)*\'|\n|[{}<>]|\w+')
    last_word = None
    for m in token.finditer(text):
        t = m.group(0)
        if t == "\n":
            line += 1
        elif t in "{<":
            if depth == 0 and last_word in ("layer", "layers"):
                lines.append(word_line)
            depth += 1
        elif t in "}>":
            depth -= 1
        elif t[0] not in "#\"'":
            last_word, word_line = t, line
    return lines


def layer_name_at(text: str, line: int) -> str | None:
    """Name of the top-level layer block that contains `line` (None outside layers)."""
    starts = layer_lines(text)
    before = [s for s in starts if s <= line]
    if not before:
        return None
    start = before[-1]
    nxt = [s for s in starts if s > start]
    block = "\n".join(text.splitlines()[start - 1:(nxt[0] - 1 if nxt else None)])
    m = re.search(r'\bname\s*:\s*"([^"]*)"', block)
    return m.group(1) if m else None


@dataclass(frozen=True)
class Source:
    """Where a spec came from, so that later errors can name the file and line."""
    file: str | None = None
    text: str | None = None

    def layer_line(self, index: int) -> int | None:
        """Line of the index-th layer block of the file (None when unknown)."""
        if not self.text:
            return None
        lines = layer_lines(self.text)
        return lines[index] if index < len(lines) else None

    def error(self, message: str, layer_index: int | None = None, layer: str | None = None,
              field: str | None = None, cls=SpecError) -> SpecError:
        line = self.layer_line(layer_index) if layer_index is not None else None
        if field:
            line = field_line(self.text, line, field)
        return cls(message, file=self.file, line=line, layer=layer, field=field)


def field_line(text: str | None, layer_line: int | None, field: str) -> int | None:
    """Line of `field:` inside the layer starting at layer_line (best effort, for messages)."""
    if not text or not layer_line:
        return layer_line
    starts = layer_lines(text)
    nxt = [s for s in starts if s > layer_line]
    lines = text.splitlines()
    end = nxt[0] - 1 if nxt else len(lines)
    pat = re.compile(rf"\b{re.escape(field)}\s*[:{{]")
    for n in range(layer_line, end + 1):
        if pat.search(lines[n - 1].split("#", 1)[0]):
            return n
    return layer_line


def read_net(path_or_text, file: str | None = None) -> tuple[pb.NetParameter, Source]:
    """A NetParameter and its Source from a file path, prototxt text, or a NetParameter."""
    if isinstance(path_or_text, pb.NetParameter):
        net = pb.NetParameter()
        net.CopyFrom(path_or_text)
        return net, Source(file=file)
    s = os.fspath(path_or_text)
    if ("\n" in s or "{" in s) and not os.path.exists(s):
        return parse_text(s, pb.NetParameter(), file=file or "<string>"), Source(file, s)
    return read_spec(s, pb.NetParameter())


def read_solver(path: str | os.PathLike) -> pb.SolverParameter:
    return read_text(path, pb.SolverParameter())


def resolve_path(path: str, relative_to: str | os.PathLike | None) -> str:
    """A spec's relative path: the working directory first, then the folder of the spec file."""
    if os.path.isabs(path) or os.path.exists(path) or relative_to is None:
        return path
    candidate = os.path.join(os.path.dirname(os.fspath(relative_to)), path)
    return candidate if os.path.exists(candidate) else path


def read_binary(path: str | os.PathLike, message: pb_message.Message) -> pb_message.Message:
    """Parse a binary proto (.caffemodel, .solverstate, .binaryproto) with a clear error."""
    path = str(path)
    try:
        data = read_limited(path, BINARY_LIMIT)
    except TooLarge as e:
        raise WeightsError(f"{path}: holds more than {_size_words(e.args[0])}: not a binary "
                           f"proto netspec reads (protobuf's limit is 2 GiB; a device or pipe "
                           f"is read to 64 MiB)") from None
    except FileNotFoundError:
        raise WeightsError(f"{path}: file not found") from None
    except IsADirectoryError:
        raise WeightsError(f"{path}: is a directory, expected a binary proto file") from None
    except ValueError:
        raise WeightsError(f"{repr(path)[:80]}: not a file name (it holds a NUL byte)") from None
    except OSError as e:
        raise WeightsError(f"{path}: cannot read it: {e.strerror or e}") from None
    try:
        message.ParseFromString(data)
    except pb_message.DecodeError as e:
        kind = type(message).__name__
        raise WeightsError(f"{path}: not a valid {kind} (truncated or corrupt: {e})") from None
    return message


def default_mode(path: str) -> int:
    """Permissions for a file about to replace `path`: its current ones, else 0666 & ~umask
    (mkstemp's own 0600 would make snapshots private)."""
    try:
        if not os.path.islink(path):  # (a link's target is not what is being replaced)
            return os.stat(path).st_mode & 0o777
        raise FileNotFoundError
    except FileNotFoundError:
        mask = os.umask(0)
        os.umask(mask)
        return 0o666 & ~mask


def temp_beside(path: str) -> tuple[int, str]:
    """A new temporary file (fd, path) in path's folder, marked as netspec's (locks.temp_name);
    the folder is made if missing."""
    folder = os.path.dirname(path) or "."
    os.makedirs(folder, exist_ok=True)
    prefix, suffix = temp_name(path)
    return tempfile.mkstemp(dir=folder, prefix=prefix, suffix=suffix)


def write_atomic(path: str | os.PathLike, data: bytes | str) -> None:
    """Write to a temporary file beside `path`, fsync, then rename: never a half-written file."""
    path = os.fspath(path)
    fd, tmp = temp_beside(path)
    try:
        with os.fdopen(fd, "wb") as f:
            for part in getattr(data, "parts", None) or [data]:  # (wire.Chunks: its pieces)
                f.write(part.encode() if isinstance(part, str) else part)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, default_mode(path))
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_binary(path: str | os.PathLike, message: pb_message.Message) -> None:
    write_atomic(path, message.SerializeToString())


def to_text(message: pb_message.Message) -> str:
    return text_format.MessageToString(message)
