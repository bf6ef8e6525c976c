"""The manifest written beside every engine: what it was built from, with what, for which hardware.

A TensorRT engine runs only on the TensorRT version (and flavour) and the GPU or DLA it was built for, and the
plan file itself says so only when TensorRT refuses it. The manifest keeps those facts readable without
TensorRT, so `compat` can check them before deserializing and `edgeinfer inspect` can print them.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..configfile import UnreadableFile, read_regular_file

FORMAT = "edgeinfer-engine-manifest/1"
FLAVOURS = ("full", "lean", "rtx")
MANIFEST_SUFFIX = ".manifest.json"
MAX_MANIFEST_BYTES = 1 << 20  # a manifest is a few kB; larger is not one edgeinfer wrote


class ManifestError(ValueError):
    """A manifest that cannot be read; the message names the file and the key."""


def manifest_path(engine: str | os.PathLike) -> Path:
    """`model.engine` -> `model.engine.manifest.json` (beside the engine, so copying both is one glob)."""
    engine = Path(engine)
    return engine.with_name(engine.name + MANIFEST_SUFFIX)


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


@dataclass
class TensorInfo:
    name: str
    mode: str  # input | output
    shape: list[int]  # -1 where dynamic
    dtype: str  # numpy name (float32, float16, int8, ...) or TensorRT's name when numpy lacks it


@dataclass
class Profile:
    input: str
    min: list[int]
    opt: list[int]
    max: list[int]


@dataclass
class Manifest:
    flavour: str  # full | lean | rtx
    tensorrt_version: str
    runtime_module: str
    gpu_name: str | None
    compute_capability: str | None  # of the GPU it was built on, "8.7"
    dla_core: int | None
    precision: str
    onnx_sha256: str | None
    engine_sha256: str
    engine_bytes: int
    io: list[TensorInfo]
    profiles: list[Profile] = field(default_factory=list)
    # the compute capabilities the engine runs on, when the builder says (TensorRT-RTX builds for several);
    # None: the build GPU's only (full TensorRT), unless hardware_compatibility widens it
    compute_capabilities: list[str] | None = None
    hardware_compatibility: str = "none"  # none | ampere_plus | same_compute_capability
    version_compatible: bool = False  # built with VERSION_COMPATIBLE: a newer lean runtime of the major loads it
    gpu_fallback: bool = False
    dla_layers: dict[str, int] | None = None  # {"dla": n, "gpu": m} after a DLA build
    onnx_path: str | None = None
    build_options: dict[str, Any] = field(default_factory=dict)
    built_at: str | None = None
    built_by: str | None = None  # "edgeinfer 0.1.0"
    format: str = FORMAT

    # -- (de)serialisation ----------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Any, source: str = "<manifest>") -> Manifest:
        if not isinstance(data, dict):
            raise ManifestError(f"{source}: a manifest is a JSON object, got {type(data).__name__}")
        if data.get("format") != FORMAT:
            raise ManifestError(f"{source}: format is {data.get('format')!r}; this edgeinfer reads {FORMAT!r}")
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(data) - known)
        if unknown:
            raise ManifestError(f"{source}: unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        missing = [k for k, f in cls.__dataclass_fields__.items() if k not in data and _required(f)]
        if missing:
            raise ManifestError(f"{source}: missing key(s) {', '.join(missing)}")
        if data["flavour"] not in FLAVOURS:
            raise ManifestError(f"{source}: flavour is {data['flavour']!r}; allowed: {', '.join(FLAVOURS)}")
        values = dict(data)
        try:
            values["io"] = [TensorInfo(**t) for t in data["io"]]
            values["profiles"] = [Profile(**p) for p in data.get("profiles") or []]
        except TypeError as exc:
            raise ManifestError(f"{source}: io/profiles: {exc}") from exc
        return cls(**values)

    def write(self, engine: str | os.PathLike) -> Path:
        """Write beside `engine` (atomically: a half-written manifest would describe nothing)."""
        path = manifest_path(engine)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(self.to_dict(), indent=2) + "\n", encoding="utf-8")
        os.replace(tmp, path)
        return path

    @classmethod
    def read(cls, engine: str | os.PathLike) -> Manifest | None:
        """The manifest beside `engine`; None when there is none. Raises ManifestError when it is unreadable."""
        path = manifest_path(engine)
        try:  # a regular file of bounded size only: a FIFO would hang, a 1 GiB file be read whole
            raw = read_regular_file(path, MAX_MANIFEST_BYTES, what="manifest")
        except FileNotFoundError:
            return None
        except UnreadableFile as exc:
            if exc.errno == errno.ENOENT:
                return None
            raise ManifestError(f"{path}: cannot read: {exc.strerror or exc}") from exc
        try:
            data = json.loads(raw.decode("utf-8"))
        except UnicodeDecodeError as exc:
            raise ManifestError(f"{path}: not UTF-8 text (byte 0x{raw[exc.start]:02x} at offset {exc.start})"
                                ) from None
        except json.JSONDecodeError as exc:
            raise ManifestError(f"{path}: not valid JSON: line {exc.lineno}: {exc.msg}") from exc
        except RecursionError:
            raise ManifestError(f"{path}: JSON nested too deeply to be a manifest") from None
        try:
            return cls.from_dict(data, str(path))
        except ManifestError:
            raise
        except (TypeError, ValueError, KeyError, AttributeError) as exc:  # wrong types in a tampered file
            raise ManifestError(f"{path}: not a manifest edgeinfer wrote: {type(exc).__name__}: {exc}"[:300]
                                ) from None

    # -- for people ---------------------------------------------------------------------------------------
    def summary_lines(self) -> list[str]:
        ccs = " ".join(self.compute_capabilities) if self.compute_capabilities else (
            f"{self.compute_capability} only" if self.hardware_compatibility == "none" else
            f"{self.hardware_compatibility} (built on {self.compute_capability})")
        lines = [
            f"TensorRT     {self.flavour} {self.tensorrt_version} ({self.runtime_module})"
            + (", version-compatible" if self.version_compatible else ""),
            f"built on     {self.gpu_name or '?'} (compute capability {self.compute_capability or '?'})"
            + (f" at {self.built_at}" if self.built_at else ""),
            f"runs on      compute capability {ccs}",
            f"device       {'dla' + str(self.dla_core) if self.dla_core is not None else 'gpu'}"
            + (" with GPU fallback" if self.gpu_fallback else ""),
            f"precision    {self.precision}",
            f"onnx         {self.onnx_path or '?'} sha256 {self.onnx_sha256 or '?'}",
            f"engine       {self.engine_bytes} bytes sha256 {self.engine_sha256}",
        ]
        if self.dla_layers is not None:
            lines.append(f"DLA layers   {self.dla_layers.get('dla', 0)} on the DLA, "
                         f"{self.dla_layers.get('gpu', 0)} fell back to the GPU")
        for t in self.io:
            lines.append(f"{t.mode:<12} {t.name} {t.dtype} {list(t.shape)}")
        for p in self.profiles:
            lines.append(f"profile      {p.input} min {p.min} opt {p.opt} max {p.max}")
        if self.build_options:
            lines.append("build        " + " ".join(f"{k}={v}" for k, v in sorted(self.build_options.items())))
        return lines


def _required(f) -> bool:
    from dataclasses import MISSING

    return f.default is MISSING and f.default_factory is MISSING
