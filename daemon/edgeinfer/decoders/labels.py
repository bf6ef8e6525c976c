"""Class names: one per line in a text file, line i naming class id i."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path


def load_labels(path: str | os.PathLike[str]) -> list[str]:
    """Read a labels file: one name per line, stripped; trailing empty lines are ignored.

    A blank line inside the list keeps its position (ids stay aligned) and is named `class_<id>`.
    """
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8-sig")  # -sig: tolerate a BOM from Windows editors
    except FileNotFoundError:
        raise FileNotFoundError(f"labels file not found: {file}") from None
    except IsADirectoryError:
        raise IsADirectoryError(f"labels path is a directory, not a file: {file}") from None
    except UnicodeDecodeError as error:
        raise ValueError(f"labels file is not UTF-8 text: {file} ({error})") from None
    names = [line.strip() for line in text.splitlines()]
    while names and not names[-1]:
        names.pop()
    if not names:
        raise ValueError(f"labels file has no names: {file}")
    return [name or fallback_label(class_id) for class_id, name in enumerate(names)]


def fallback_label(class_id: int) -> str:
    return f"class_{class_id}"


def label_for(labels: Sequence[str], class_id: int) -> str:
    """The name of a class id; ids the list does not cover are named `class_<id>`."""
    if 0 <= class_id < len(labels):
        return labels[class_id]
    return fallback_label(class_id)
