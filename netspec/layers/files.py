"""Data layers that read (or write) plain files: HDF5Data / HDF5Output (h5py) and ImageData
(a list of "path label" lines, images read with Pillow). Positions are saved in snapshots."""
from __future__ import annotations

import os

import numpy as np
from pydantic import Field

from ..errors import DataError
from ..hdf5 import OutsideFile, open_h5
from ..images import load
from ..params import ParamView
from ..registry import register_layer
from ..snapshot import atomic_h5
from .base import Layer, LayerSetupError
from .data import shard
from .transform import make_transformer


def _numbered_lines(path: str) -> list[tuple[int, str]]:
    """(line number, text) of every non-blank line of a source list."""
    try:
        with open(path, encoding="utf-8") as f:
            return [(n, line.strip()) for n, line in enumerate(f, 1) if line.strip()]
    except FileNotFoundError:
        raise DataError(f"source list '{path}' not found") from None
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"source list '{path}' is not a readable text file "
                        f"({e.__class__.__name__})") from None


def _list_file(path: str) -> list[str]:
    return [text for _, text in _numbered_lines(path)]


def image_list(path: str) -> list[tuple[str, int]]:
    """Caffe's "IMAGE_PATH LABEL" lines (the path may hold spaces: the label is the last field).
    A bad line is named by number; its content is not echoed (the file may be anything)."""
    out = []
    for number, line in _numbered_lines(path):
        name, _, label = line.rpartition(" ")
        if not name or not label.lstrip("-").isdigit():
            raise DataError(f"{path}:{number}: expected 'IMAGE_PATH LABEL' (a path, a space, "
                            f"an integer label)")
        out.append((name, int(label)))
    return out


class HDF5DataView(ParamView):
    source: str = Field(min_length=1)
    batch_size: int = Field(gt=0)
    shuffle: bool = False


@register_layer("HDF5Data")
class HDF5Data(Layer):
    """Rows of the datasets named by the tops, from the .h5 files listed in `source` (one per
    line), file after file; shuffle mixes the file order and the rows within each file every
    pass, as Caffe does."""
    param_field = "hdf5_data_param"
    Params = HDF5DataView
    bottoms = (0, 0)
    tops = (1, None)
    is_data = True
    summary = "rows of HDF5 datasets named by the tops (source = list of .h5 files)"

    def layer_setup(self, bottom, top):
        import h5py
        folder = os.path.dirname(self.p.source)
        self.files = [f if os.path.isabs(f) or os.path.exists(f) else os.path.join(folder, f)
                      for f in _list_file(self.p.source)]
        if not self.files:
            raise DataError(f"source list '{self.p.source}' names no files")
        self.names = list(self.spec.top)
        self.shapes = {}
        for path in self.files:
            try:
                with open_h5(path) as f:
                    for name in self.names:
                        if name not in f:
                            raise DataError(f"{path} has no dataset '{name}' (it has: "
                                            f"{', '.join(f)})")
                        self.shapes.setdefault(name, f[name].shape[1:])
            except OutsideFile as e:
                raise DataError(str(e)) from None
            except (OSError, KeyError) as e:
                raise DataError(f"{path}: cannot read as HDF5 ({e})") from None
        self.order = list(range(len(self.files)))
        self.file_pos, self.row = 0, 0
        # shuffled: each rank its own order (as Caffe); else disjoint shards of the rows
        self.stride, self.offset = (1, 0) if self.p.shuffle else shard(self)
        self._load(shuffle_files=self.p.shuffle)

    def _load(self, shuffle_files: bool = False) -> None:
        import h5py
        if shuffle_files:
            self.rng.shuffle(self.order)
        path = self.files[self.order[self.file_pos]]
        try:
            with open_h5(path) as f:  # (checked again: the file may have changed)
                self.current = {n: np.asarray(f[n]) for n in self.names}
        except OutsideFile as e:
            raise DataError(str(e)) from None
        except (OSError, KeyError) as e:
            raise DataError(f"{path}: cannot read as HDF5 ({e})") from None
        rows = len(self.current[self.names[0]])
        self.rows = self.rng.permutation(rows) if self.p.shuffle else np.arange(rows)

    def reshape(self, bottom, top):
        for name, t in zip(self.names, top):
            t.reshape(self.p.batch_size, *self.shapes[name])

    def forward(self, bottom, top):
        """The next batch_size rows (of batch_size x N, every N-th, for rank r of N)."""
        filled, b = 0, self.p.batch_size * self.stride
        pieces: dict[str, list] = {name: [] for name in self.names}
        while filled < b:  # one pass per file the batch draws from
            if self.row >= len(self.rows):
                self.row = 0
                self.file_pos += 1
                wrapped = self.file_pos >= len(self.files)
                self.file_pos %= len(self.files)
                self._load(shuffle_files=self.p.shuffle and wrapped)
            take = min(b - filled, len(self.rows) - self.row)
            sel = self.rows[self.row:self.row + take]
            for name in self.names:
                pieces[name].append(self.current[name][sel])
            self.row += take
            filled += take
        for name, t in zip(self.names, top):
            if self.stride == 1:  # straight into the top, no intermediate batch
                np.concatenate(pieces[name], out=t.data, casting="unsafe")
            else:
                t.data[...] = np.concatenate(pieces[name])[self.offset::self.stride]

    def state(self) -> dict:
        return {"order": self.order, "file": self.file_pos, "row": self.row,
                "rows": self.rows.tolist() if self.p.shuffle else None}

    def set_state(self, state: dict) -> None:
        self.order, self.file_pos = list(state["order"]), int(state["file"])
        self._load()
        if state.get("rows") is not None:
            self.rows = np.asarray(state["rows"])
        self.row = int(state["row"])


class HDF5OutputView(ParamView):
    file_name: str = Field(min_length=1)


@register_layer("HDF5Output")
class HDF5Output(Layer):
    """Appends its two bottoms to datasets "data" and "label" of file_name, created anew by
    the net's first forward pass (building a net, as `netspec info` does, writes nothing)."""
    param_field = "hdf5_output_param"
    Params = HDF5OutputView
    bottoms = (2, 2)
    tops = (0, 0)
    summary = "append bottoms to datasets data and label of an HDF5 file"

    def layer_setup(self, bottom, top):
        self.created = False

    def reshape(self, bottom, top):
        pass

    def forward(self, bottom, top):
        import h5py
        if not self.created:  # a new file renamed into place: never written through a link
            with atomic_h5(self.p.file_name) as f:
                for name, b in zip(("data", "label"), bottom):
                    f.create_dataset(name, shape=(0, *b.shape[1:]),
                                     maxshape=(None, *b.shape[1:]), dtype=b.dtype)
            self.created = True
        with h5py.File(self.p.file_name, "a") as f:
            for name, b in zip(("data", "label"), bottom):
                ds = f[name]
                ds.resize(len(ds) + len(b.data), axis=0)
                ds[-len(b.data):] = b.data


class ImageDataView(ParamView):
    source: str = Field(min_length=1)
    batch_size: int = Field(1, gt=0)
    rand_skip: int = Field(0, ge=0)
    shuffle: bool = False
    new_height: int = Field(0, ge=0)
    new_width: int = Field(0, ge=0)
    is_color: bool = True
    root_folder: str = ""


@register_layer("ImageData")
class ImageData(Layer):
    """Images and labels from `source` ("path label" per line, paths under root_folder),
    read with Pillow in BGR order (as Caffe's OpenCV), resized to new_height x new_width when
    given, transformed by transform_param; shuffled every pass when asked."""
    param_field = "image_data_param"
    Params = ImageDataView
    bottoms = (0, 0)
    tops = (2, 2)
    is_data = True
    summary = "images from a list of 'path label' lines (Pillow; resize, shuffle)"

    def layer_setup(self, bottom, top):
        p = self.p
        if bool(p.new_height) != bool(p.new_width):
            raise LayerSetupError("give both new_height and new_width (or neither)",
                                  field="new_height")
        self.lines = image_list(p.source)
        # shuffled: each rank its own order of the whole list (as Caffe); else disjoint shards
        self.stride, self.offset = (1, 0) if p.shuffle else shard(self)
        self.transform = make_transformer(self)
        self.order = self.rng.permutation(len(self.lines)) if p.shuffle else \
            np.arange(len(self.lines))
        skip = int(self.rng.integers(0, p.rand_skip)) if p.rand_skip else 0
        self.position = skip % len(self.lines)
        first = self._image(0)
        self.item_shape = self.transform.out_shape(*first.shape)

    def _image(self, i):
        path, _ = self.lines[i]
        p = self.p
        return load(os.path.join(p.root_folder, path), p.is_color, p.new_height, p.new_width)

    def reshape(self, bottom, top):
        top[0].reshape(self.p.batch_size, *self.item_shape)
        top[1].reshape(self.p.batch_size)

    def forward(self, bottom, top):
        images, labels = [], []
        for k in range(self.p.batch_size * self.stride):
            i = int(self.order[self.position])
            if k % self.stride == self.offset:
                images.append(self._image(i))
                labels.append(self.lines[i][1])
            self.position += 1
            if self.position == len(self.lines):
                self.position = 0
                if self.p.shuffle:
                    self.order = self.rng.permutation(len(self.lines))
        shapes = {im.shape for im in images}
        if len(shapes) > 1:
            raise LayerSetupError(f"images of different sizes {sorted(shapes)}: set new_height "
                                  f"and new_width, or crop_size")
        top[0].data[...] = self.transform(np.stack(images))
        top[1].data[...] = labels

    def state(self) -> dict:
        return {"position": self.position, "order": self.order.tolist()}

    def set_state(self, state: dict) -> None:
        self.position = int(state["position"])
        self.order = np.asarray(state["order"])
