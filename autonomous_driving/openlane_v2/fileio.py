"""Pickle files of this package: atomic writes and a loader that only rebuilds plain data."""

from __future__ import annotations

import os
import pickle
import tempfile
from typing import Any


def atomic_pickle_dump(obj: Any, path: str | os.PathLike) -> str:
    """Pickle ``obj`` to a temporary file in the target folder, fsync it, then
    ``os.replace`` it into place, so an interrupted run never leaves half a file."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            pickle.dump(obj, f, protocol=pickle.HIGHEST_PROTOCOL)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


class _PlainDataUnpickler(pickle.Unpickler):
    """Containers, numbers, strings and numpy arrays only: a submission from someone else
    must not be able to run code when it is scored."""

    _ALLOWED = {
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("numpy.core.numeric", "_frombuffer"),  # arrays under pickle protocol 5
        ("numpy._core.numeric", "_frombuffer"),
        ("collections", "OrderedDict"),
    }

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        if module in ("numpy", "numpy.dtypes") and name.endswith("DType"):
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}: only plain data and numpy arrays")


def safe_pickle_load(path: str | os.PathLike) -> Any:
    """Load a pickle of plain data (dicts, lists, tuples, numbers, strings, numpy arrays)."""
    with open(path, "rb") as f:
        return _PlainDataUnpickler(f).load()
