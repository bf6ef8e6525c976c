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
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, Field, ValidationError, field_validator, model_validator

from .backends.schema import BACKEND_CHOICES, BACKEND_OPTIONS, options_for_model, resolve_backend_type
from .configfile import UnreadableFile, read_regular_file
from .decoders import DECODERS, DecoderConfig, YoloDecoderConfig
from .devices import DEVICE_HELP, parse_device
from .engines.options import BuildOptions
from .outputs import OUTPUT_TYPES
from .outputs.schema import AnnotatedOutputConfig, HttpOutputConfig, JsonlOutputConfig
from .preprocess import PreprocessConfig
from .problems import ConfigError, Problem, schema_problems
from .schema import StrictModel
from .sources import SOURCE_TYPES
from .sources.schema import (
    CameraSourceConfig,
    GStreamerSourceConfig,
    ImagesSourceConfig,
    RtspSourceConfig,
    SyntheticSourceConfig,
    VideoSourceConfig,
)
from .tracking.config import TrackerConfig
from .transports.ros.schema import Ros2OutputConfig, Ros2SourceConfig, RosConfig
from .transports.zmq.schema import ZmqOutputConfig, ZmqSourceConfig
from .watchdog.config import WatchdogConfig, flow_id
from .yamlload import YamlProblem, load_yaml

log = logging.getLogger(__name__)

ID_PATTERN = r"^[A-Za-z][A-Za-z0-9_\-]*$"

# The plugin unions are tagged by `type`: an unknown type names the allowed values, and errors point into the
# right model. A new plugin's config model joins its union here (and its implementation its registry).
SourceConfig = Annotated[
    VideoSourceConfig | ImagesSourceConfig | CameraSourceConfig | RtspSourceConfig | GStreamerSourceConfig
    | SyntheticSourceConfig | ZmqSourceConfig | Ros2SourceConfig,
    Field(discriminator="type"),
]
OutputConfig = Annotated[JsonlOutputConfig | ZmqOutputConfig | Ros2OutputConfig | HttpOutputConfig
                         | AnnotatedOutputConfig, Field(discriminator="type")]
# the `type` keys, for error paths (pydantic puts them in; users wrote no such key)
UNION_TAGS = frozenset(SOURCE_TYPES) | frozenset(OUTPUT_TYPES) | frozenset(DECODERS)


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
    batch_wait_ms: float = Field(
        default=4.0, ge=0, le=1000, description="batching deadline (max_batch > 1): once a frame waits, wait up to "
        "this long after it arrived for the other sources' frames, then infer what is there; 0 = never wait"
    )
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
    tracker: TrackerConfig | None = Field(
        default=None, description="multi-object tracking per source (off when absent): stable `track_id`s for "
        "detections, see docs/tracking.md")
    fallback: list[FallbackLink] = Field(
        default_factory=list, description="links tried in order when `path` cannot load (another engine, a "
        "rebuild from the ONNX, ONNX Runtime); the heartbeat says which link serves"
    )

    @model_validator(mode="before")
    @classmethod
    def _backend_sees_budget(cls, data: Any) -> Any:
        # a remote backend's request deadline follows budget_ms unless set (backends/triton.py)
        if isinstance(data, dict) and isinstance(data.get("backend"), str) and data["backend"] in BACKEND_OPTIONS:
            budget = data.get("budget_ms", cls.model_fields["budget_ms"].default)
            if isinstance(budget, (int, float)) and budget > 0:
                options = options_for_model(data["backend"], data.get("backend_options", {}), budget)
                data = {**data, "backend_options": options}
        return data

    @field_validator("device")
    @classmethod
    def _known_device(cls, value: str) -> str:
        parse_device(value)  # raises ValueError naming the allowed values
        return value

    @model_validator(mode="after")
    def _tracker_needs_boxes(self) -> ModelConfig:
        if self.tracker is not None and self.decoder.type in ("classify", "dense"):
            raise ValueError(f"tracker: tracks boxes, but decoder.type {self.decoder.type!r} gives none; remove the "
                             f"tracker block or use a detection decoder (yolo, detr)")
        return self

    def links(self) -> list[FallbackLink]:
        """The chain of files this model may be served from: its own `path`, then each `fallback` link."""
        primary = FallbackLink(path=self.path, backend=self.backend, backend_options=self.backend_options,
                               device=self.device)
        return [primary, *self.fallback]

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






# -- loading -----------------------------------------------------------------------------------------------
def read_config(path: str | Path) -> Config:
    """Parse, validate and resolve a config file (no preflight: `preflight.load_config` adds it); raises
    ConfigError listing every problem."""
    path = Path(path)
    try:
        raw = read_regular_file(path)  # a regular file of bounded size only: never a FIFO or /dev/zero
        base_dir = path.resolve().parent
    except UnreadableFile as exc:
        raise ConfigError(str(path), [Problem("", f"cannot read config file: {exc.strerror or exc}")]) from exc
    except (OSError, ValueError) as exc:  # ValueError: a NUL byte in the path
        raise ConfigError(str(path), [Problem("", f"cannot read config file: {getattr(exc, 'strerror', None) or exc}")]
                          ) from exc
    text = decode_config_text(raw, str(path))
    return parse_config(text, str(path), base_dir=base_dir)


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
        raise ConfigError(source, schema_problems(exc, data, Config, UNION_TAGS) + problems) from exc
    problems += path_problems(config)
    if problems:
        raise ConfigError(source, problems)
    if base_dir is not None:
        config = _resolve_paths(config, base_dir)
    return config














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
        problems += _backend_options_problems(model, f"models[{i}]")
        links = model.get("fallback")
        for j, link in enumerate(links if isinstance(links, list) else []):
            if isinstance(link, dict):
                problems += _backend_options_problems(link, f"models[{i}].fallback[{j}]")
    watchdog = data.get("watchdog")
    relevant = watchdog.get("safety_relevant") if isinstance(watchdog, dict) else None
    entity_ids = set(source_ids) | set(model_ids) | set(output_ids) | {flow_id(m) for m in model_ids}
    for i, name in enumerate(relevant if isinstance(relevant, list) else []):
        if isinstance(name, str) and name not in entity_ids:
            problems.append(Problem(f"watchdog.safety_relevant[{i}]",
                                    f"unknown entity '{name}'; known: {', '.join(sorted(entity_ids))}"))
    return problems


def _backend_options_problems(entry: dict, where: str) -> list[Problem]:
    """`backend_options` checked against the options model of the backend the entry resolves to (the schema
    cannot: which model applies depends on `backend` and the file's suffix)."""
    requested, options = entry.get("backend", "auto"), entry.get("backend_options", {})
    if requested not in BACKEND_CHOICES or not isinstance(options, dict):
        return []
    options_model = BACKEND_OPTIONS[resolve_backend_type(requested, Path(str(entry.get("path", ""))))]
    try:
        options_model.model_validate(options)
    except ValidationError as exc:
        return [Problem(f"{where}.backend_options.{p.path}".rstrip("."), p.message)
                for p in schema_problems(exc, options, options_model)]
    return []


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
