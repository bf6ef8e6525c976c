"""Read a PyTorch checkpoint (the zip format of torch.save) without torch: tensors as numpy arrays, modules as
plain objects holding their attributes (`_modules`, `_parameters`, `_buffers`, and the rest of their
__dict__). Enough to rebuild a network in ONNX by hand (see yolov5_seg.py); nothing in it is ever executed."""

from __future__ import annotations

import pickle
import zipfile
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np

_STORAGE_DTYPES = {"FloatStorage": np.float32, "HalfStorage": np.float16, "DoubleStorage": np.float64,
                   "LongStorage": np.int64, "IntStorage": np.int32, "BoolStorage": np.bool_,
                   "ByteStorage": np.uint8}


class Stub:
    """A pickled object of a class not loaded here: its class name and state."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.__dict__["_args"] = args

    def __setstate__(self, state: Any) -> None:
        if isinstance(state, tuple) and len(state) == 2 and isinstance(state[1], dict):
            state = {**(state[0] or {}), **state[1]}
        if isinstance(state, dict):
            self.__dict__.update(state)

    def __getattr__(self, name: str) -> Any:
        for bag in ("_modules", "_parameters", "_buffers"):
            values = self.__dict__.get(bag)
            if values is not None and name in values:
                return values[name]
        raise AttributeError(f"{type(self).__name__} has no {name}")

    def children(self) -> list[Any]:
        return list(self.__dict__.get("_modules", {}).values())


def _stub_class(module: str, name: str) -> type:
    return type(name, (Stub,), {"__module__": module})


def _getattr(obj: Any, name: str, *default: Any) -> Any:
    """getattr for the pickle: a method of a class not loaded here (a bound forward) is just its name."""
    try:
        return getattr(obj, name, *default)
    except AttributeError:
        return f"{getattr(obj, '__name__', obj)}.{name}"


def _rebuild_tensor(storage, offset, size, stride, *args):
    itemsize = storage.itemsize
    return np.lib.stride_tricks.as_strided(storage[offset:], shape=tuple(size),
                                           strides=tuple(s * itemsize for s in stride)).copy()


class _Unpickler(pickle.Unpickler):
    def __init__(self, file, archive: zipfile.ZipFile, prefix: str):
        super().__init__(file)
        self.archive, self.prefix = archive, prefix
        self.classes: dict[tuple[str, str], type] = {}

    def find_class(self, module: str, name: str) -> Any:
        if module == "collections" and name == "OrderedDict":
            return OrderedDict
        if module in ("__builtin__", "builtins") and name in ("set", "getattr", "frozenset", "slice"):
            return {"set": set, "getattr": _getattr, "frozenset": frozenset, "slice": slice}[name]
        if module == "torch._utils" and name == "_rebuild_tensor_v2":
            return _rebuild_tensor
        if module == "torch._utils" and name == "_rebuild_parameter":
            return lambda data, *args: data
        if module == "torch" and name in _STORAGE_DTYPES:
            return name
        if module == "torch" and name == "Size":
            return tuple
        key = (module, name)
        if key not in self.classes:
            self.classes[key] = _stub_class(module, name)
        return self.classes[key]

    def persistent_load(self, pid: Any) -> np.ndarray:
        _, storage_type, key, _location, _numel = pid
        data = self.archive.read(f"{self.prefix}/data/{key}")
        return np.frombuffer(data, dtype=_STORAGE_DTYPES[storage_type])


def load_checkpoint(path: Path) -> Any:
    with zipfile.ZipFile(path) as archive:
        pkl = next(n for n in archive.namelist() if n.endswith("/data.pkl"))
        prefix = pkl.rsplit("/", 1)[0]
        with archive.open(pkl) as stream:
            return _Unpickler(stream, archive, prefix).load()
