"""Reading HDF5 files that stay inside themselves.

HDF5 can declare a dataset's storage in another file (external storage), link to an object in
another file (external links), or assemble a dataset from other files (virtual datasets).
Followed blindly, an HDF5Data source or a .caffemodel.h5 could read any file the user can
(/etc/passwd into the next snapshot). netspec refuses all three, naming the dataset, unless
the user opts in with NETSPEC_HDF5_EXTERNAL=1."""
from __future__ import annotations

import os
from contextlib import contextmanager

OPT_IN = "NETSPEC_HDF5_EXTERNAL"


class OutsideFile(ValueError):
    """An HDF5 object that reads another file (the message names it and how to allow it)."""


@contextmanager
def open_h5(path: str):
    """h5py.File(path, "r"), refused (OutsideFile) if anything in it reaches another file."""
    import h5py
    with h5py.File(path, "r") as f:
        if os.environ.get(OPT_IN) != "1":
            check_self_contained(f, path)
        yield f


def check_self_contained(f, path: str) -> None:
    import h5py

    def visit(name: str, link):
        """Why `name` reaches outside the file, or None (h5py stops at the first answer)."""
        if isinstance(link, h5py.ExternalLink):
            return f"is an external link to {link.filename}:{link.path}"
        if isinstance(link, h5py.SoftLink):
            return None  # (its target is visited under its own name)
        obj = f.get(name)
        if isinstance(obj, h5py.Dataset):
            if obj.is_virtual:
                return "is a virtual dataset (its data live in other files)"
            if obj.external:
                return f"keeps its data in another file ({obj.external[0][0]!r})"
        return None

    def first(name: str, link):
        why = visit(name, link)
        return (name, why) if why else None

    found = f.visititems_links(first)
    if found:
        raise OutsideFile(f"{path}: '{found[0]}' {found[1]}: netspec does not follow it (set "
                          f"{OPT_IN}=1 to allow files that read other files)")
