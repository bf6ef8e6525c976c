"""Checks that touch the file system and ask each plugin about its config: files exist, devices exist, a
camera is plugged in. Kept out of `config.py` so that validating a config does no I/O and loads no plugin.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from .backends.schema import resolve_backend_type
from .config import Config, ModelConfig, read_config
from .devices import cuda_device_problem, parse_device
from .outputs import OUTPUT_TYPES
from .problems import ConfigError, Problem
from .sources import SOURCE_TYPES

log = logging.getLogger(__name__)


def load_config(path: str | Path, preflight: bool = True, warnings: list[Problem] | None = None) -> Config:
    """Parse, validate and resolve a config file, then run the preflight; raises ConfigError listing every
    problem. Preflight warnings go to `warnings` when given (`check` prints them like problems), else to the log."""
    config = read_config(path)
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
        if device.processor == "dla" and backend != "tensorrt":
            problems.append(Problem(f"models[{i}].device", f"{device} runs TensorRT engines only; this model uses "
                                    f"backend {backend} (build an engine for the DLA, or use device gpu or cpu)"))
        elif device.processor == "cpu" and backend == "tensorrt":
            problems.append(Problem(f"models[{i}].device", "a TensorRT engine runs on a GPU or DLA, not on "
                                    "the cpu; use device gpu, gpu:N, dla0 or dla1"))
        else:
            needs_cuda = device if backend != "tensorrt" or device.processor != "auto" else parse_device("gpu")
            problem = cuda_device_problem(needs_cuda)
            if problem:
                problems.append(Problem(f"models[{i}].device", problem
                                        + ("; the fallback chain serves" if chained else ""), not chained))
        problem = _file_problem(model.labels, "a labels file") if model.labels is not None else None
        if problem:
            problems.append(Problem(f"models[{i}].labels", problem))
    for i, source in enumerate(config.sources):
        source_class = SOURCE_TYPES[source.type]
        # a camera that is not plugged in yet is worth a warning, not a refusal: live sources retry
        fatal = source.finite or source_class.preflight_problems_are_permanent
        try:
            messages = source_class.preflight_config(source)
        except (OSError, ValueError) as exc:  # a plugin's stat() that failed in a way it did not expect
            messages = [f"cannot access what the source names: {getattr(exc, 'strerror', None) or exc}"]
        for message in messages:
            # sources say "<field>: <what is wrong>"; fold the field into the key path
            field, sep, rest = message.partition(": ")
            if sep and field in type(source).model_fields:
                problems.append(Problem(f"sources[{i}].{field}", rest, fatal))
            else:
                problems.append(Problem(f"sources[{i}]", message, fatal))
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
        if device.processor == "dla" and resolve_backend_type(link.backend, link.path) != "tensorrt":
            problems.append(Problem(f"{where}.device", f"{device} runs TensorRT engines only"))
    return problems
