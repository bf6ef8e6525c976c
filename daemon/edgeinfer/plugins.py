"""Plugin registries: a type key names the module and class that implement it, imported on first use.

Registering a plugin is one line in its kind's table (`sources/__init__.py`, `outputs/__init__.py`,
`backends/__init__.py`, `decoders/__init__.py`). The table holds dotted paths, not classes, so that validating a
config (`edgeinfer.config`) never loads an implementation: a box without pyzmq or rclpy checks any config, and
a config that names only a video file never loads the ZeroMQ or ROS code.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator, Mapping
from typing import Generic, TypeVar

T = TypeVar("T")


class Registry(Mapping[str, type[T]], Generic[T]):
    """type key -> implementation class, resolved from "package.module:Class" on first lookup."""

    def __init__(self, what: str, paths: dict[str, str]):
        self.what = what
        self._paths = dict(paths)
        self._loaded: dict[str, type[T]] = {}

    def __getitem__(self, key: str) -> type[T]:
        cls = self._loaded.get(key)
        if cls is None:
            try:
                path = self._paths[key]
            except KeyError:
                raise KeyError(f"unknown {self.what} type {key!r}; known: {', '.join(self._paths)}") from None
            module, _, name = path.partition(":")
            cls = self._loaded[key] = getattr(importlib.import_module(module), name)
        return cls

    def __iter__(self) -> Iterator[str]:
        return iter(self._paths)

    def __len__(self) -> int:
        return len(self._paths)
