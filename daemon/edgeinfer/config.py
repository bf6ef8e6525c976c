"""The YAML config: schema, loading, and problems reported with their key paths.

Validation is split in three so that `edgeinfer check` can report everything at once:
  1. schema (pydantic): types, ranges, allowed values, unknown keys;
  2. cross-references: ids unique, models name existing sources, backend options fit the backend;
  3. preflight (does I/O, so it is kept out of the models): files exist, devices exist.
Relative paths are resolved against the config file's folder.
"""

from __future__ import annotations

import logging
import os
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import yaml
from pydantic import BaseModel, Field, ValidationError, field_validator, model_validator

from .backends import BACKEND_CHOICES, BACKENDS, resolve_backend_type
from .decoders import DecoderConfig, YoloDecoderConfig
from .devices import DEVICE_HELP, cuda_device_problem, parse_device
from .engines.build import BuildOptions
from .outputs import JsonlOutputConfig, OutputConfig
from .preprocess import PreprocessConfig
from .ros.config import RosConfig
from .schema import StrictModel
from .sources import SourceConfig
from .watchdog import WatchdogConfig, flow_id
from .yamlload import YamlProblem, load_yaml

log = logging.getLogger(__name__)

ID_PATTERN = r"^[A-Za-z][A-Za-z0-9_\-]*$"


class FallbackLink(StrictModel):
    """One link of a model's fallback chain (`models[].fallback`), tried in order when the links before it
    cannot load. Not Triton's `backend_options.fallback` (server failover): a different thing."""

    path: Path = Field(description="engine or ONNX file of this link, relative to the config file")
    backend: Literal[BACKEND_CHOICES] = "auto"  # type: ignore[valid-type]
    backend_options: dict[str, Any] = Field(default_factory=dict)
    device: str = Field(default="auto", description=DEVICE_HELP)
    build_from: Path | None = Field(
        default=None, description="ONNX to rebuild `path` from, in the background, when it is missing or cannot "
        "run here; the daemon serves on the next link meanwhile and swaps to this one when the build loads")
    build: BuildOptions = Field(default_factory=BuildOptions, description="options of that rebuild")

    @field_validator("device")
    @classmethod
    def _known_device(cls, value: str) -> str:
        parse_device(value)
        return value


class ModelConfig(StrictModel):
    id: str = Field(pattern=ID_PATTERN)
    path: Path = Field(description="ONNX file (or engine) relative to the config file")
    backend: Literal[BACKEND_CHOICES] = "auto"  # type: ignore[valid-type]
    backend_options: dict[str, Any] = Field(default_factory=dict)
    device: str = Field(default="auto", description=DEVICE_HELP)
    sources: list[str] = Field(min_length=1, description="ids of the sources this model reads")
    labels: Path | None = None
    preprocess: PreprocessConfig = PreprocessConfig()
    decoder: DecoderConfig = YoloDecoderConfig()
    max_batch: int = Field(default=1, ge=1, le=64, description="frames of several sources in one inference")
    # 2 s: a hang detector with room for a loaded box (in the field one inference over the old 1 s on a
    # loaded 2-core machine ended the demo with a safe stop); a robot that needs a tighter bound sets its own
    budget_ms: float = Field(default=2000.0, gt=0, le=3_600_000, description="deadline of one inference")
    min_fps: float | None = Field(
        default=None, ge=0.001, le=10_000, description="watchdog: inferences must finish this often"
    )
    max_age_ms: float | None = Field(
        default=None, gt=0, le=3_600_000, description="frames older than this at publish are dropped and counted, not "
        "published as fresh (default: budget_ms); files processed in order are exempt"
    )
    fallback: list[FallbackLink] = Field(
        default_factory=list, description="links tried in order when `path` cannot load (another engine, a "
        "rebuild from the ONNX, ONNX Runtime); the heartbeat says which link serves"
    )

    @model_validator(mode="before")
    @classmethod
    def _backend_sees_budget(cls, data: Any) -> Any:
        # a remote backend's request deadline follows budget_ms unless set (backends/triton.py)
        if isinstance(data, dict) and isinstance(data.get("backend"), str) and data["backend"] in BACKENDS:
            budget = data.get("budget_ms", cls.model_fields["budget_ms"].default)
            if isinstance(budget, (int, float)) and budget > 0:
                options = data.get("backend_options", {})
                data = {**data, "backend_options": BACKENDS[data["backend"]].options_for_model(options, budget)}
        return data

    @field_validator("device")
    @classmethod
    def _known_device(cls, value: str) -> str:
        parse_device(value)  # raises ValueError naming the allowed values
        return value

    @field_validator("decoder", mode="before")
    @classmethod
    def _yolo_by_default(cls, value: Any) -> Any:
        # the decoder union is tagged by `type`; a block without one means the default decoder
        if isinstance(value, dict) and "type" not in value:
            return {"type": "yolo", **value}
        return value


class Config(StrictModel):
    sources: list[SourceConfig] = Field(min_length=1)
    models: list[ModelConfig] = Field(min_length=1)
    outputs: list[OutputConfig] = Field(default_factory=lambda: [JsonlOutputConfig()])
    watchdog: WatchdogConfig = WatchdogConfig()
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    ros: RosConfig = RosConfig()  # the node every ros2 source and output shares (used only when one is configured)


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


# -- loading -----------------------------------------------------------------------------------------------
def load_config(path: str | Path, preflight: bool = True, warnings: list[Problem] | None = None) -> Config:
    """Parse, validate and resolve a config file; raises ConfigError listing every problem. Preflight
    warnings go to `warnings` when given (`check` prints them like problems), else to the log."""
    path = Path(path)
    from .configfile import UnreadableFile, read_regular_file

    try:
        raw = read_regular_file(path)  # a regular file of bounded size only: never a FIFO or /dev/zero
        base_dir = path.resolve().parent
    except UnreadableFile as exc:
        raise ConfigError(str(path), [Problem("", f"cannot read config file: {exc.strerror or exc}")]) from exc
    except (OSError, ValueError) as exc:  # ValueError: a NUL byte in the path
        raise ConfigError(str(path), [Problem("", f"cannot read config file: {getattr(exc, 'strerror', None) or exc}")]
                          ) from exc
    text = decode_config_text(raw, str(path))
    config = parse_config(text, str(path), base_dir=base_dir)
    if preflight:
        problems = preflight_problems(config)
        if any(p.fatal for p in problems):
            raise ConfigError(str(path), [p for p in problems if p.fatal])
        for problem in problems:
            if warnings is not None:
                warnings.append(problem)
            else:
                log.warning("%s: %s", path, problem)
    return config


def decode_config_text(raw: bytes, source: str) -> str:
    """UTF-8 (a BOM is tolerated), or a ConfigError saying where the first bad byte is."""
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        column = exc.start - (raw.rfind(b"\n", 0, exc.start) + 1) + 1
        raise ConfigError(source, [Problem("", f"not UTF-8 text: byte 0x{raw[exc.start]:02x} at line {line}, "
                                               f"column {column}; save the file as UTF-8")]) from None


def parse_config(text: str, source: str = "<config>", base_dir: Path | None = None) -> Config:
    try:
        data = load_yaml(text)
    except YamlProblem as exc:
        raise ConfigError(source, [Problem(exc.path, exc.message)]) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        raise ConfigError(source, [Problem("", f"not valid YAML: {where}{getattr(exc, 'problem', exc)}")]) from exc
    if not isinstance(data, dict):
        got = "an empty file" if data is None else f"a {type(data).__name__}"
        raise ConfigError(source, [Problem("", f"the config must be a mapping with keys "
                                               f"{', '.join(Config.model_fields)}; got {got}")])
    problems = cross_reference_problems(data)
    try:
        config = Config.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(source, schema_problems(exc, data) + problems) from exc
    problems += path_problems(config)
    if problems:
        raise ConfigError(source, problems)
    if base_dir is not None:
        config = _resolve_paths(config, base_dir)
    return config


# -- problem reporting -------------------------------------------------------------------------------------
def schema_problems(exc: ValidationError, data: Any, root: type[BaseModel] | None = None) -> list[Problem]:
    problems = []
    for err in exc.errors(include_url=False):
        loc = _strip_union_tags(err["loc"], data)
        message = err["msg"]
        if err["type"] == "extra_forbidden":
            allowed = _allowed_keys(loc[:-1], data, root or Config)
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


def _union_tags() -> set[str]:
    from .decoders import DECODERS
    from .outputs import OUTPUT_TYPES
    from .sources import SOURCE_TYPES

    return set(SOURCE_TYPES) | set(DECODERS) | set(OUTPUT_TYPES)


def _strip_union_tags(loc: tuple, data: Any) -> tuple:
    """pydantic puts the discriminator's value into the path (sources.0.video.path); users wrote no such key.
    A block without `type` got its default tag from us (decoder: yolo), so that tag is stripped too."""
    tags = _union_tags()
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


def cross_reference_problems(data: dict) -> list[Problem]:
    """Checks between sections, on the raw YAML so they are reported together with schema problems.
    Entries the schema rejects (not mappings, ids missing) are skipped here: the schema names them."""
    problems: list[Problem] = []

    def entries(section: str) -> list[tuple[int, dict]]:
        items = data.get(section)
        return [(i, e) for i, e in enumerate(items) if isinstance(e, dict)] if isinstance(items, list) else []

    def ids(section: str, default_key: str | None = None) -> list[str]:
        found, seen = [], set()
        for i, entry in entries(section):
            entity_id = entry.get("id") or (entry.get(default_key) if default_key else None)
            if not isinstance(entity_id, str):
                continue
            if entity_id in seen:
                problems.append(Problem(f"{section}[{i}].id", f"duplicate id '{entity_id}'"))
            seen.add(entity_id)
            found.append(entity_id)
        return found

    source_ids = ids("sources")
    model_ids = ids("models")
    output_ids = ids("outputs", default_key="type") if "outputs" in data else ["jsonl"]
    for i, model in entries("models"):
        names = model.get("sources")
        for j, name in enumerate(names if isinstance(names, list) else []):
            if isinstance(name, str) and name not in source_ids:
                problems.append(Problem(f"models[{i}].sources[{j}]",
                                        f"unknown source '{name}'; defined sources: {', '.join(source_ids)}"))
        requested, options = model.get("backend", "auto"), model.get("backend_options", {})
        if requested in BACKEND_CHOICES and isinstance(options, dict):
            backend = BACKENDS[resolve_backend_type(requested, Path(str(model.get("path", ""))))]
            try:
                backend.options_model.model_validate(options)
            except ValidationError as exc:
                for p in schema_problems(exc, options, backend.options_model):
                    problems.append(Problem(f"models[{i}].backend_options.{p.path}".rstrip("."), p.message))
        links = model.get("fallback")
        for j, link in enumerate(links if isinstance(links, list) else []):
            if not isinstance(link, dict):
                continue
            requested, options = link.get("backend", "auto"), link.get("backend_options", {})
            if requested in BACKEND_CHOICES and isinstance(options, dict):
                backend = BACKENDS[resolve_backend_type(requested, Path(str(link.get("path", ""))))]
                try:
                    backend.options_model.model_validate(options)
                except ValidationError as exc:
                    for p in schema_problems(exc, options, backend.options_model):
                        problems.append(Problem(f"models[{i}].fallback[{j}].backend_options.{p.path}".rstrip("."),
                                                p.message))
    watchdog = data.get("watchdog")
    relevant = watchdog.get("safety_relevant") if isinstance(watchdog, dict) else None
    entity_ids = set(source_ids) | set(model_ids) | set(output_ids) | {flow_id(m) for m in model_ids}
    for i, name in enumerate(relevant if isinstance(relevant, list) else []):
        if isinstance(name, str) and name not in entity_ids:
            problems.append(Problem(f"watchdog.safety_relevant[{i}]",
                                    f"unknown entity '{name}'; known: {', '.join(sorted(entity_ids))}"))
    return problems


# Linux file systems allow 255 bytes per name; a longer one makes every stat() fail with ENAMETOOLONG.
MAX_NAME_BYTES = 255


def path_problems(model: BaseModel, prefix: str = "") -> list[Problem]:
    """File paths that no file system can hold (a NUL byte, a name over 255 bytes), found without I/O so
    that the preflight's stat() calls never see them."""
    problems: list[Problem] = []

    def visit(value: Any, where: str) -> None:
        if isinstance(value, Path):
            text = str(value)
            if "\0" in text:
                problems.append(Problem(where, "a path must not contain a NUL byte"))
                return
            for part in value.parts:
                size = len(os.fsencode(part))
                if size > MAX_NAME_BYTES:
                    problems.append(Problem(where, f"a path component is {size} bytes long ('{part[:24]}...'); "
                                                   f"file systems allow at most {MAX_NAME_BYTES}"))
                    return
        elif isinstance(value, BaseModel):
            for name in type(value).model_fields:
                visit(getattr(value, name), _join_key(where, name))
        elif isinstance(value, (list, tuple)):
            for i, item in enumerate(value):
                visit(item, f"{where}[{i}]")

    visit(model, prefix)
    return problems


def _join_key(where: str, name: str) -> str:
    return f"{where}.{name}" if where else name


def _file_problem(path: Path, what: str) -> str | None:
    """Why `path` is not a readable file, or None. Never raises (stat errors become the answer)."""
    try:
        if path.is_dir():
            return f"is a directory, not {what}: {path}"
        if not path.is_file():
            return f"file not found: {path}" if not path.exists() else f"not a regular file: {path}"
        if not os.access(path, os.R_OK):
            return f"no permission to read {path}"
    except (OSError, ValueError) as exc:
        return f"cannot access {path}: {getattr(exc, 'strerror', None) or exc}"
    return None


def preflight_problems(config: Config) -> list[Problem]:
    """Checks that touch the file system; kept out of the schema so validation has no I/O."""
    from .mailbox import FanOut
    from .sources import SOURCE_TYPES  # sources own their preflight

    problems: list[Problem] = []
    for i, model in enumerate(config.models):
        # with a fallback chain, a primary that cannot run here is what the chain is for: a warning
        chained = bool(model.fallback)
        problem = _file_problem(model.path, "a model file (ONNX or engine)")
        if problem:
            problems.append(Problem(f"models[{i}].path", problem + ("; the fallback chain serves" if chained else ""),
                                    not chained))
        problems += _fallback_problems(i, model)
        device = parse_device(model.device)
        backend = resolve_backend_type(model.backend, model.path)
        if device.kind == "dla" and backend != "tensorrt":
            problems.append(Problem(f"models[{i}].device", f"{device} runs TensorRT engines only; this model uses "
                                    f"backend {backend} (build an engine for the DLA, or use device gpu or cpu)"))
        elif device.kind == "cpu" and backend == "tensorrt":
            problems.append(Problem(f"models[{i}].device", "a TensorRT engine runs on a GPU or DLA, not on "
                                    "the cpu; use device gpu, gpu:N, dla0 or dla1"))
        else:
            needs_cuda = device if backend != "tensorrt" or device.kind != "auto" else parse_device("gpu")
            problem = cuda_device_problem(needs_cuda)
            if problem:
                problems.append(Problem(f"models[{i}].device", problem
                                        + ("; the fallback chain serves" if chained else ""), not chained))
        problem = _file_problem(model.labels, "a labels file") if model.labels is not None else None
        if problem:
            problems.append(Problem(f"models[{i}].labels", problem))
    for i, source in enumerate(config.sources):
        probe = SOURCE_TYPES[source.type](source, FanOut([]))
        # a camera that is not plugged in yet is worth a warning, not a refusal: live sources retry
        fatal = probe.finite or probe.preflight_problems_are_permanent
        try:
            messages = probe.preflight()
        except (OSError, ValueError) as exc:  # a plugin's stat() that failed in a way it did not expect
            messages = [f"cannot access what the source names: {getattr(exc, 'strerror', None) or exc}"]
        for message in messages:
            # sources say "<field>: <what is wrong>"; fold the field into the key path
            field, sep, rest = message.partition(": ")
            if sep and field in type(source).model_fields:
                problems.append(Problem(f"sources[{i}].{field}", rest, fatal))
            else:
                problems.append(Problem(f"sources[{i}]", message, fatal))
    from .outputs import OUTPUT_TYPES

    for i, output in enumerate(config.outputs):
        for message in OUTPUT_TYPES[output.type].preflight_config(output):
            field, sep, rest = message.partition(": ")
            problems.append(Problem(f"outputs[{i}].{field}", rest) if sep else Problem(f"outputs[{i}]", message))
    return problems


def _fallback_problems(i: int, model: ModelConfig) -> list[Problem]:
    """A link's file may be missing (a rebuild makes it, or a later link serves): a warning. The ONNX a link
    rebuilds from must exist, and the last link should be one that loads anywhere."""
    problems = []
    for j, link in enumerate(model.fallback):
        where = f"models[{i}].fallback[{j}]"
        if link.build_from is not None and not link.build_from.is_file():
            problems.append(Problem(f"{where}.build_from", f"file not found: {link.build_from}"))
        elif not link.path.is_file():
            problems.append(Problem(f"{where}.path", f"file not found: {link.path}"
                                    + ("; rebuilt from build_from when the chain reaches it"
                                       if link.build_from else "; skipped"), False))
        device = parse_device(link.device)
        if device.kind == "dla" and resolve_backend_type(link.backend, link.path) != "tensorrt":
            problems.append(Problem(f"{where}.device", f"{device} runs TensorRT engines only"))
    return problems


def _resolve_paths(model: StrictModel, base: Path) -> Any:
    updates = {}
    for name in type(model).model_fields:
        value = getattr(model, name)
        new = _resolve_value(value, base)
        if new is not value:
            updates[name] = new
    return model.model_copy(update=updates) if updates else model


def _resolve_value(value: Any, base: Path) -> Any:
    if isinstance(value, Path):
        return value if value.is_absolute() else (base / value)
    if isinstance(value, StrictModel):
        return _resolve_paths(value, base)
    if isinstance(value, list):
        new = [_resolve_value(v, base) for v in value]
        return new if any(a is not b for a, b in zip(new, value)) else value
    return value
