"""Lazy import of heavy optional modules, with a failure message that says how to fix it."""

from __future__ import annotations

import importlib
from types import ModuleType


class MissingDependency(ImportError):
    pass


def lazy_import(name: str, install_hint: str) -> ModuleType:
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        raise MissingDependency(f"Python module '{name}' is not available ({exc}). {install_hint}") from exc
