"""Config problems with their key paths: what `edgeinfer check` prints and every plugin's validation reuses.

Pure functions over pydantic's errors and the raw YAML; no plugin is imported here, so any layer may use it.
"""

from __future__ import annotations

import types
import typing
from dataclasses import dataclass
from typing import Annotated, Any, Union

from pydantic import BaseModel, ValidationError


@dataclass(frozen=True)
class Problem:
    path: str  # key path, e.g. models[0].preprocess.resize
    message: str
    fatal: bool = True  # False: reported as a warning (e.g. a camera not plugged in yet)

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


class ConfigError(Exception):
    def __init__(self, source: str, problems: list[Problem]):
        self.source = source
        self.problems = problems
        super().__init__(f"{source}: {len(problems)} problem(s)\n" + "\n".join(f"  {p}" for p in problems))


# -- problem reporting -------------------------------------------------------------------------------------
def schema_problems(exc: ValidationError, data: Any, root: type[BaseModel], tags: frozenset[str] = frozenset()
                    ) -> list[Problem]:
    """One Problem per pydantic error, its path as the user wrote it. `tags`: the discriminator values of the
    tagged unions under `root` (pydantic puts them into error paths; users wrote no such key)."""
    problems = []
    for err in exc.errors(include_url=False):
        loc = _strip_union_tags(err["loc"], data, tags)
        message = err["msg"]
        if err["type"] == "extra_forbidden":
            allowed = _allowed_keys(loc[:-1], data, root)
            if allowed:
                message = f"unknown key; allowed keys: {', '.join(allowed)}"
        elif err["type"] == "missing":
            message = "required key is missing"
        problems.append(Problem(format_path(loc), message))
    return problems


def format_path(loc: tuple) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _strip_union_tags(loc: tuple, data: Any, tags: frozenset[str]) -> tuple:
    """pydantic puts the discriminator's value into the path (sources.0.video.path); users wrote no such key.
    A block without `type` got its default tag from us (decoder: yolo), so that tag is stripped too."""
    out: list = []
    node = data
    for part in loc:
        if (isinstance(node, dict) and isinstance(part, str) and part not in node and part in tags
                and node.get("type", part) == part):
            continue
        out.append(part)
        try:
            node = node[part]
        except (KeyError, IndexError, TypeError):
            node = None
    return tuple(out)


def _allowed_keys(loc: tuple, data: Any, root: type[BaseModel]) -> list[str]:
    """The keys the model at `loc` accepts, found by walking the schema alongside the input."""
    annotation: Any = root
    node = data
    for part in loc:
        model = _pick_model(annotation, node)
        if model is not None and isinstance(part, str) and part in model.model_fields:
            annotation = model.model_fields[part].annotation
        elif isinstance(part, int):
            args = typing.get_args(_unwrap(annotation))
            annotation = args[0] if args else Any
        else:
            return []
        try:
            node = node[part]
        except (KeyError, IndexError, TypeError):
            node = None
    model = _pick_model(annotation, node)
    return list(model.model_fields) if model is not None else []


def _unwrap(annotation: Any) -> Any:
    while typing.get_origin(annotation) is Annotated:
        annotation = typing.get_args(annotation)[0]
    return annotation


def _pick_model(annotation: Any, node: Any) -> type[BaseModel] | None:
    annotation = _unwrap(annotation)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if typing.get_origin(annotation) in (Union, types.UnionType):
        members = [_unwrap(a) for a in typing.get_args(annotation)]
        members = [m for m in members if isinstance(m, type) and issubclass(m, BaseModel)]
        tag = node.get("type") if isinstance(node, dict) else None
        for m in members:
            field = m.model_fields.get("type")
            if field is not None and tag in typing.get_args(field.annotation):
                return m
        if len(members) == 1:
            return members[0]
    return None
