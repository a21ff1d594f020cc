"""Files in and out: atomic writes that never follow links, and guarded reading of `.npz`/`.h5` arrays.

Reading checks what a file declares before loading it: an `.npz` must be a zip archive of
`.npy` arrays without pickled objects, an HDF5 file may not point outside itself (external
links, external raw storage, virtual datasets), and the arrays it declares must fit in the
memory available. Every failure is a `ValueError` (or `MemoryError`) of one line naming the file.
"""

import os
import re
import tempfile
import zipfile
from pathlib import Path

import numpy as np


def atomic_write(path: str | os.PathLike, data: bytes) -> None:
    """Write `data` to `path` through a temporary file in the same directory and `os.replace`.

    The rename replaces a link at `path` instead of writing through it, so a symlink planted
    under an output name cannot redirect the write.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.lexists(tmp):
            os.remove(tmp)
        raise
    try:  # make the rename itself durable (not possible on every platform)
        dir_fd = os.open(path.parent, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dir_fd)
    except OSError:
        pass
    finally:
        os.close(dir_fd)


def temporary_name_of(name: str) -> re.Pattern:
    """The names `atomic_write` gives its temporary files for `name` (left behind by a killed write)."""
    return re.compile(rf"^\.{re.escape(name)}\.[A-Za-z0-9_]+\.tmp$")


def _gib(n: int) -> str:
    return f"{n / 2**30:.3g} GiB"


def _check_size(path: str, declared: int) -> None:
    from .._memory import available_memory

    free = available_memory(_cpu())
    if free is not None and declared > free:
        raise MemoryError(f"{path!r} declares arrays of {_gib(declared)} in total, more than the {_gib(free)} of "
                          "memory available; refusing to load it.")


def _cpu():
    import jax

    return jax.devices("cpu")[0]


def read_npz(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """All arrays of an `.npz` file, after checking that it is a zip of `.npy` arrays without
    pickled objects whose declared sizes fit in the available memory."""
    path = os.fspath(path)
    bad = f"{path!r} is not a valid .npz file"
    if not zipfile.is_zipfile(path):
        raise ValueError(f"{bad} (not a zip archive; it may be empty, truncated or of another format).")
    declared = 0
    try:
        with zipfile.ZipFile(path) as z:
            for info in z.infolist():
                if not info.filename.endswith(".npy"):
                    raise ValueError(f"{bad} (member {info.filename!r} is not a .npy array).")
                with z.open(info) as f:
                    version = np.lib.format.read_magic(f)
                    read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                                   else np.lib.format.read_array_header_2_0)
                    shape, _, dtype = read_header(f)
                if dtype.hasobject:
                    raise ValueError(f"{bad}: array {info.filename[:-4]!r} holds Python objects (pickled data), "
                                     "which are not loaded; save plain numeric arrays.")
                declared += int(np.prod(shape, dtype=object)) * dtype.itemsize
    except (zipfile.BadZipFile, EOFError, OSError, ValueError, TypeError, NotImplementedError) as e:
        if str(e).startswith(bad):
            raise
        raise ValueError(f"{bad} ({type(e).__name__}: {e}).".replace("\n", " ")) from None
    _check_size(path, declared)
    try:
        with np.load(path, allow_pickle=False) as f:
            return {name: f[name] for name in f.files}
    except (zipfile.BadZipFile, EOFError, OSError, ValueError) as e:
        raise ValueError(f"{bad} ({type(e).__name__}: {e}).".replace("\n", " ")) from None


def read_h5(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """All datasets of an HDF5 file by '/'-joined path, refusing links, storage or virtual
    datasets outside the file, and declared sizes beyond the available memory."""
    path = os.fspath(path)
    try:
        import h5py
    except ImportError as e:
        raise ImportError("reading .h5 files needs h5py: `pip install h5py` (or 'arhmm_eqx[hdf5]').") from e
    bad = f"{path!r} is not a valid HDF5 file"
    try:
        with h5py.File(path, "r") as f:
            datasets = []

            def walk(group, prefix):
                for name in group:
                    link = group.get(name, getlink=True)
                    full = f"{prefix}{name}"
                    if isinstance(link, h5py.ExternalLink):
                        raise ValueError(f"{path!r}: {full!r} is an external link to {link.filename!r}; "
                                         "only data stored in the file itself are read.")
                    if isinstance(link, h5py.SoftLink):
                        continue  # an alias of an object read under its own name
                    obj = group[name]
                    if isinstance(obj, h5py.Group):
                        walk(obj, full + "/")
                    elif isinstance(obj, h5py.Dataset):
                        if obj.external or obj.is_virtual:
                            kind = "external raw storage" if obj.external else "a virtual dataset"
                            raise ValueError(f"{path!r}: dataset {full!r} is {kind} that reads other files; "
                                             "only data stored in the file itself are read.")
                        datasets.append((full, obj))

            walk(f, "")
            _check_size(path, sum(int(d.size) * d.dtype.itemsize for _, d in datasets))
            return {name: d[()] for name, d in datasets}
    except OSError as e:
        raise ValueError(f"{bad} ({e}).".replace("\n", " ")) from None


def read_arrays(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """`read_npz` or `read_h5` by extension (`.npz`, `.h5`, `.hdf5`)."""
    ext = os.path.splitext(os.fspath(path))[1].lower()
    return read_npz(path) if ext == ".npz" else read_h5(path)
