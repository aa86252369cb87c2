"""Data interop: convert-imageset / compute-image-mean, encoded Datums, the CIFAR-10
converter (on batches generated in both standard formats), HDF5Data / HDF5Output, ImageData,
MemoryData, DummyData and the netspec.io helpers."""
import pickle

import numpy as np
import pytest

from netspec import Net, SpecError, TEST, TRAIN
from netspec.datasets import get_cifar10
from netspec.db import DatumReader
from netspec.images import encode
from netspec.io import (array_to_blobproto, array_to_datum, blobproto_to_array, datum_to_array,
                        read_mean, write_mean)
from netspec.tools import compute_image_mean, convert_imageset

RNG = np.random.default_rng(0)


@pytest.fixture
def images(tmp_path):
    """Six 3-channel BGR images as PNG files under tmp_path/img, and the list file."""
    arrays = [RNG.integers(0, 256, size=(3, 5, 7), dtype=np.uint8) for _ in range(6)]
    (tmp_path / "img").mkdir()
    lines = []
    for i, a in enumerate(arrays):
        (tmp_path / "img" / f"im {i}.png").write_bytes(encode(a, "png"))  # a space in the name
        lines.append(f"im {i}.png {i % 3}")
    (tmp_path / "list.txt").write_text("\n".join(lines) + "\n")
    return tmp_path, arrays


def quiet(*_):
    pass


def test_convert_imageset_raw_reads_back_byte_identical(images):
    folder, arrays = images
    db = str(folder / "db")
    assert convert_imageset(str(folder / "img"), str(folder / "list.txt"), db, log=quiet) == 6
    reader = DatumReader(db)
    assert reader.keys[1] == b"00000001_im 1.png"
    got, labels = reader.batch(range(6))
    np.testing.assert_array_equal(got, np.stack(arrays))
    np.testing.assert_array_equal(labels, [0, 1, 2, 0, 1, 2])


def test_convert_imageset_encoded_gray_and_resized(images):
    folder, arrays = images
    convert_imageset(str(folder / "img"), str(folder / "list.txt"), str(folder / "enc"),
                     encoded=True, log=quiet)
    d = DatumReader(str(folder / "enc")).datum(2)
    assert d.encoded and d.data == (folder / "img" / "im 2.png").read_bytes()
    np.testing.assert_array_equal(datum_to_array(d), arrays[2])
    convert_imageset(str(folder / "img"), str(folder / "list.txt"), str(folder / "small"),
                     resize_height=4, resize_width=3, gray=True, shuffle=True, log=quiet)
    got, labels = DatumReader(str(folder / "small")).batch(range(6))
    assert got.shape == (6, 1, 4, 3) and sorted(labels) == [0, 0, 1, 1, 2, 2]


def test_compute_image_mean_and_data_layer_with_mean_file_crop_and_encoded(images):
    folder, arrays = images
    convert_imageset(str(folder / "img"), str(folder / "list.txt"), str(folder / "enc"),
                     encoded=True, log=quiet)
    mean = compute_image_mean(str(folder / "enc"), str(folder / "mean.binaryproto"), log=quiet)
    np.testing.assert_allclose(mean, np.mean(arrays, axis=0))
    np.testing.assert_allclose(read_mean(str(folder / "mean.binaryproto")), mean, rtol=1e-6)
    net = Net(f'''layer {{ name: "d" type: "Data" top: "data" top: "label"
        transform_param {{ mean_file: "{folder}/mean.binaryproto" crop_size: 3 }}
        data_param {{ source: "{folder}/enc" batch_size: 4 backend: LMDB }} }}''', TEST)
    net.forward()
    expected = (np.stack(arrays[:4]) - mean)[:, :, 1:4, 2:5]  # centre crop at TEST
    np.testing.assert_allclose(net.blobs["data"].data, expected, rtol=1e-5, atol=1e-4)
    net.forward()  # the prefetched next batch wraps around: items 4, 5, 0, 1
    np.testing.assert_array_equal(net.blobs["label"].data, [1, 2, 0, 1])


def test_data_layer_force_gray_and_leveldb_refused(images):
    folder, _ = images
    convert_imageset(str(folder / "img"), str(folder / "list.txt"), str(folder / "enc"),
                     encoded=True, log=quiet)
    net = Net(f'''layer {{ name: "d" type: "Data" top: "data"
        transform_param {{ force_gray: true }}
        data_param {{ source: "{folder}/enc" batch_size: 2 backend: LMDB }} }}''', TEST)
    assert net.blobs["data"].shape == (2, 1, 5, 7)
    with pytest.raises(SpecError, match="backend LEVELDB is not supported"):
        Net('layer { name: "d" type: "Data" top: "data" data_param { source: "x" '
            'batch_size: 2 backend: LEVELDB } }', TEST)


def write_cifar(folder, binary: bool):
    """Ten images per batch file in the official layouts (py: pickled dicts; bin: records of
    1 label byte + 3072 RGB bytes)."""
    batches = {}
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for name in names:
        data = RNG.integers(0, 256, size=(10, 3072), dtype=np.uint8)
        labels = RNG.integers(0, 10, size=10)
        batches[name] = (data, labels)
        if binary:
            raw = np.concatenate([labels[:, None].astype(np.uint8), data], axis=1)
            raw.tofile(folder / f"{name}.bin")
        else:
            with open(folder / name, "wb") as f:
                pickle.dump({b"data": data, b"labels": labels.tolist()}, f)
    return batches


@pytest.mark.parametrize("binary", [False, True])
def test_cifar10_converter_reads_both_formats(tmp_path, binary):
    src = tmp_path / ("cifar-10-batches-bin" if binary else "cifar-10-batches-py")
    src.mkdir()
    batches = write_cifar(src, binary)
    out = tmp_path / "cifar10"
    get_cifar10(str(out), source=str(tmp_path), log=quiet)
    train = DatumReader(str(out / "cifar10_train_lmdb"))
    assert len(train) == 50 and train.keys[12] == b"00012"
    images, labels = train.batch(range(50))
    expected = np.concatenate([batches[f"data_batch_{i}"][0] for i in range(1, 6)])
    np.testing.assert_array_equal(images.reshape(50, -1), expected)
    np.testing.assert_array_equal(labels, np.concatenate(
        [batches[f"data_batch_{i}"][1] for i in range(1, 6)]))
    assert len(DatumReader(str(out / "cifar10_test_lmdb"))) == 10
    np.testing.assert_allclose(read_mean(str(out / "mean.binaryproto")),
                               expected.reshape(50, 3, 32, 32).mean(axis=0), rtol=1e-6)


def test_cifar10_without_a_folder_says_why():
    with pytest.raises(SpecError, match="no installable package carries CIFAR-10"):
        get_cifar10("/nonexistent/out", log=quiet)


def write_h5(path, n, offset):
    import h5py
    with h5py.File(path, "w") as f:
        f["data"] = np.arange(offset, offset + n, dtype=np.float32)[:, None] * np.ones((1, 3))
        f["label"] = np.arange(offset, offset + n, dtype=np.float32)


def test_hdf5_data_reads_files_in_order_and_output_writes(tmp_path):
    write_h5(tmp_path / "a.h5", 3, 0)
    write_h5(tmp_path / "b.h5", 4, 100)
    (tmp_path / "list.txt").write_text("a.h5\nb.h5\n")
    spec = (f'layer {{ name: "h" type: "HDF5Data" top: "data" top: "label" hdf5_data_param {{ '
            f'source: "{tmp_path}/list.txt" batch_size: 5 }} }}\n'
            f'layer {{ name: "o" type: "HDF5Output" bottom: "data" bottom: "label" '
            f'hdf5_output_param {{ file_name: "{tmp_path}/out.h5" }} }}')
    (tmp_path / "out.h5").write_text("kept until the net runs")
    net = Net(spec, TEST)  # building the net (netspec info, draw) writes nothing
    assert (tmp_path / "out.h5").read_text() == "kept until the net runs"
    net.forward()
    np.testing.assert_array_equal(net.blobs["label"].data, [0, 1, 2, 100, 101])
    net.forward()
    np.testing.assert_array_equal(net.blobs["label"].data, [102, 103, 0, 1, 2])
    import h5py
    with h5py.File(tmp_path / "out.h5") as f:
        np.testing.assert_array_equal(f["label"][()], [0, 1, 2, 100, 101, 102, 103, 0, 1, 2])
        assert f["data"].shape == (10, 3)


def test_hdf5_data_shuffle_covers_every_row_and_names_missing_datasets(tmp_path):
    write_h5(tmp_path / "a.h5", 6, 0)
    (tmp_path / "list.txt").write_text("a.h5\n")
    net = Net(f'layer {{ name: "h" type: "HDF5Data" top: "label" hdf5_data_param {{ source: '
              f'"{tmp_path}/list.txt" batch_size: 6 shuffle: true }} }}', TRAIN, seed=1)
    net.forward()
    assert sorted(net.blobs["label"].data) == list(range(6))
    with pytest.raises(SpecError, match="has no dataset 'scores'"):
        Net(f'layer {{ name: "h" type: "HDF5Data" top: "scores" hdf5_data_param {{ source: '
            f'"{tmp_path}/list.txt" batch_size: 2 }} }}', TEST)


def test_image_data_layer(images):
    folder, arrays = images
    spec = (f'layer {{ name: "i" type: "ImageData" top: "data" top: "label" '
            f'transform_param {{ scale: 0.5 }} image_data_param {{ source: "{folder}/list.txt" '
            f'root_folder: "{folder}/img/" batch_size: 4 }} }}')
    net = Net(spec, TEST)
    net.forward()
    np.testing.assert_allclose(net.blobs["data"].data, np.stack(arrays[:4]) * 0.5)
    np.testing.assert_array_equal(net.blobs["label"].data, [0, 1, 2, 0])
    resized = Net(spec.replace("batch_size: 4", "batch_size: 2 new_height: 10 new_width: 14 "
                                                "is_color: false shuffle: true"), TRAIN, seed=0)
    resized.forward()
    assert resized.blobs["data"].shape == (2, 1, 10, 14)


def test_memory_and_dummy_data():
    net = Net('layer { name: "m" type: "MemoryData" top: "data" top: "label" '
              'memory_data_param { batch_size: 2 channels: 1 height: 2 width: 2 } }\n'
              'layer { name: "d" type: "DummyData" top: "z" top: "g" dummy_data_param { '
              'shape { dim: 2 dim: 3 } data_filler { type: "constant" value: 7 } '
              'data_filler { type: "gaussian" } } }', TEST)
    data = np.arange(16, dtype=np.float32).reshape(4, 1, 2, 2)
    net.set_input_arrays(data, np.array([5, 6, 7, 8]))
    net.forward()
    np.testing.assert_array_equal(net.blobs["data"].data, data[:2])
    net.forward()
    np.testing.assert_array_equal(net.blobs["label"].data, [7, 8])
    assert (net.blobs["z"].data == 7).all() and net.blobs["g"].data.std() > 0
    with pytest.raises(Exception, match="multiple of batch_size"):
        net.set_input_arrays(data[:3], np.arange(3))


def test_io_helpers_round_trip(tmp_path):
    arr = RNG.normal(size=(2, 3, 4)).astype(np.float32)
    np.testing.assert_array_equal(blobproto_to_array(array_to_blobproto(arr)), arr)
    img = RNG.integers(0, 256, size=(3, 4, 5), dtype=np.uint8)
    d = array_to_datum(img, 3)
    assert d.label == 3 and d.data == img.tobytes()
    np.testing.assert_array_equal(datum_to_array(d), img)
    np.testing.assert_allclose(datum_to_array(array_to_datum(arr)), arr)
    write_mean(str(tmp_path / "m.binaryproto"), arr)
    np.testing.assert_array_equal(read_mean(str(tmp_path / "m.binaryproto")), arr)


def test_pycaffe_transformer_and_load_image(tmp_path):
    from netspec.io import Transformer, load_image
    rgb = RNG.integers(0, 256, size=(6, 8, 3), dtype=np.uint8)
    from PIL import Image
    Image.fromarray(rgb).save(tmp_path / "x.png")
    im = load_image(str(tmp_path / "x.png"))
    assert im.shape == (6, 8, 3) and im.dtype == np.float32
    np.testing.assert_allclose(im, rgb / 255.0, atol=1e-6)
    t = Transformer({"data": (1, 3, 6, 8)})
    t.set_transpose("data", (2, 0, 1))
    t.set_channel_swap("data", (2, 1, 0))      # RGB -> BGR, as Caffe models expect
    t.set_raw_scale("data", 255)
    t.set_mean("data", np.array([104.0, 117.0, 123.0]))
    x = t.preprocess("data", im)
    expected = rgb.transpose(2, 0, 1)[::-1].astype(np.float32) - np.array([104, 117, 123.0])[:, None, None]
    np.testing.assert_allclose(x, expected, atol=1e-3)
    np.testing.assert_allclose(t.deprocess("data", x), im, atol=1e-6)
    assert t.preprocess("data", np.zeros((12, 16, 3))).shape == (3, 6, 8)  # resized
    with pytest.raises(ValueError, match="one value per input channel"):
        t.set_mean("data", np.zeros(2))
