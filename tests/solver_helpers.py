"""A tiny LMDB-backed net and solver files for the solver tests (the `data` fixture lives in
conftest.py)."""
import numpy as np

from netspec.db import write_datum_lmdb

N_ITEMS, C, H, W, CLASSES = 24, 1, 3, 4, 3


def make_data(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(N_ITEMS, C, H, W), dtype=np.uint8)
    labels = rng.integers(0, CLASSES, size=N_ITEMS)
    write_datum_lmdb(str(tmp_path / "train_lmdb"), images, labels)
    return tmp_path, images.astype(np.float64) / 256, labels


NET = """
name: "tiny"
layer {{ name: "data" type: "Data" top: "data" top: "label"
        transform_param {{ scale: 0.00390625 }}
        data_param {{ source: "{src}" batch_size: {batch} backend: LMDB }} }}
{dropout}
layer {{ name: "ip" type: "InnerProduct" bottom: "{ip_in}" top: "ip"
        param {{ lr_mult: 1 decay_mult: 1 }} param {{ lr_mult: 2 decay_mult: 0 }}
        inner_product_param {{ num_output: {classes}
          weight_filler {{ type: "gaussian" std: 0.3 }} bias_filler {{ type: "gaussian" }} }} }}
layer {{ name: "loss" type: "SoftmaxWithLoss" bottom: "ip" bottom: "label" top: "loss" }}
layer {{ name: "acc" type: "Accuracy" bottom: "ip" bottom: "label" top: "acc"
        include {{ phase: TEST }} }}
"""

DROPOUT = ('layer { name: "drop" type: "Dropout" bottom: "data" top: "dropped" '
           'dropout_param { dropout_ratio: 0.3 } }')


def write_solver(folder, dropout=False, batch=4, **settings):
    net = NET.format(src=folder / "train_lmdb", batch=batch, classes=CLASSES,
                     dropout=DROPOUT if dropout else "", ip_in="dropped" if dropout else "data")
    (folder / "net.prototxt").write_text(net)
    base = dict(net='"net.prototxt"', base_lr=0.1, lr_policy='"fixed"', momentum=0.9,
                weight_decay=0.01, max_iter=6, random_seed=7, snapshot_prefix=f'"{folder}/snap"',
                snapshot_after_train="false")
    base.update(settings)
    lines = []
    for k, v in base.items():
        for item in (v if isinstance(v, list) else [v]):
            lines.append(f"{k}: {item}")
    path = folder / "solver.prototxt"
    path.write_text("\n".join(lines) + "\n")
    return str(path)


