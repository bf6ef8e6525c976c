"""Pre-flight before deserializing: does this engine run on this host?

TensorRT itself only logs "...not compatible with this version of TensorRT..." or "...incompatible device..."
and returns None. Here the manifest beside the engine is compared with the host's facts first, and every
difference gets a message that names exactly what differs and what would fix it. The host's facts come from
`host_facts()` (TensorRT modules, CUDA device properties, DLA cores) or from a test that builds a `HostFacts`.

The plan file's own header is not parsed: its layout is not documented and changes between versions. What is
checked about the file is that the manifest describes it (size and sha256), so a manifest left beside a
replaced engine is not believed.
"""

from __future__ import annotations

import importlib
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..cuda import runtime as cu
from .manifest import Manifest, ManifestError, manifest_path, sha256_file

log = logging.getLogger(__name__)

# import name -> flavour; TensorRT-RTX's wheel installs `tensorrt_rtx_bindings` (checked: the 1.7.1 wheel's
# layout), some installs expose `tensorrt_rtx`
RUNTIME_MODULES = {
    "tensorrt": "full",
    "tensorrt_lean": "lean",
    "tensorrt_rtx": "rtx",
    "tensorrt_rtx_bindings": "rtx",
}
FLAVOUR_NAMES = {"full": "TensorRT", "lean": "TensorRT lean runtime", "rtx": "TensorRT-RTX"}
FLAVOUR_MODULES = {"full": "tensorrt", "lean": "tensorrt_lean", "rtx": "tensorrt_rtx"}
DLA_HINT = "DLA cores exist on Jetson AGX/NX Orin and Xavier"


@dataclass(frozen=True)
class HostFacts:
    runtimes: dict[str, str] = field(default_factory=dict)  # flavour -> installed version
    gpu_name: str | None = None
    compute_capability: tuple[int, int] | None = None
    gpu_count: int = 0
    dla_cores: int = 0

    @property
    def cc(self) -> str | None:
        return None if self.compute_capability is None else "{}.{}".format(*self.compute_capability)


@dataclass(frozen=True)
class Difference:
    key: str  # what differs: flavour, tensorrt_version, compute_capability, gpu, dla, manifest, engine
    message: str
    fatal: bool = True

    def __str__(self) -> str:
        return self.message


def flavour_of(module: Any) -> str:
    name = getattr(module, "__name__", "")
    return RUNTIME_MODULES.get(name.split(".")[0], getattr(module, "EDGEINFER_FLAVOUR", "full"))


def installed_runtimes() -> dict[str, str]:
    """flavour -> version of every TensorRT runtime module that imports here."""
    found: dict[str, str] = {}
    for name, flavour in RUNTIME_MODULES.items():
        if flavour in found:
            continue
        try:
            module = importlib.import_module(name)
        except Exception:  # ImportError, or a broken install that fails inside its own import
            continue
        found[flavour] = str(getattr(module, "__version__", "?"))
    return found


def host_facts(cuda_index: int = 0, runtime_module: Any = None) -> HostFacts:
    """This host's facts. With `runtime_module` (the backend's loaded module) only that runtime counts."""
    if runtime_module is not None:
        runtimes = {flavour_of(runtime_module): str(getattr(runtime_module, "__version__", "?"))}
    else:
        runtimes = installed_runtimes()
    gpu_name, cc, count = None, None, 0
    try:
        count = cu.device_count()
        if cuda_index < count:
            info = cu.device_info(cuda_index)
            gpu_name, cc = info.name, info.compute_capability
    except Exception as exc:  # no cuda-python, no driver: a host without a GPU, said by the rules below
        log.debug("no CUDA device facts: %s", exc)
    return HostFacts(runtimes, gpu_name, cc, count, _dla_cores(runtime_module, count))


def _dla_cores(module: Any, gpu_count: int) -> int:
    if gpu_count == 0:
        return 0
    try:
        if module is None:
            module = importlib.import_module("tensorrt")
        logger = module.Logger(module.Logger.ERROR) if hasattr(module, "Logger") else None
        return int(getattr(module.Runtime(logger), "num_DLA_cores", 0) or 0)
    except Exception:
        return 0


# -- the rules -------------------------------------------------------------------------------------------
def _version_tuple(text: str) -> tuple[int, ...]:
    parts = []
    for piece in str(text).split("."):
        digits = "".join(ch for ch in piece if ch.isdigit())
        if not digits:
            break
        parts.append(int(digits))
    return tuple(parts)


def _cc_tuple(text: str) -> tuple[int, int]:
    major, _, minor = text.strip().lstrip(">").partition(".")
    return int(major), int(minor or 0)


def cc_supported(host_cc: tuple[int, int], manifest: Manifest) -> tuple[bool, str]:
    """(runs, what the engine supports in words)."""
    if manifest.compute_capabilities:
        for token in manifest.compute_capabilities:
            if token.startswith(">"):
                if host_cc > _cc_tuple(token):
                    return True, ""
            elif host_cc == _cc_tuple(token):
                return True, ""
        return False, " ".join(manifest.compute_capabilities)
    built = _cc_tuple(manifest.compute_capability) if manifest.compute_capability else None
    if manifest.flavour == "rtx":
        return True, ""  # RTX builds for several; with no list recorded, TensorRT-RTX decides
    if manifest.hardware_compatibility == "ampere_plus":
        return host_cc >= (8, 0), "8.0 and newer (hardware compatibility ampere_plus)"
    if built is None:
        return True, ""
    return host_cc == built, f"{manifest.compute_capability} only"


def _runtime_differences(m: Manifest, host: HostFacts) -> list[Difference]:
    if not host.runtimes:
        return [Difference("flavour", f"cannot run here: no TensorRT runtime is installed; the engine needs "
                                      f"{FLAVOUR_NAMES[m.flavour]} {m.tensorrt_version} "
                                      f"(module {FLAVOUR_MODULES[m.flavour]})")]
    built = _version_tuple(m.tensorrt_version)
    have = ", ".join(f"{FLAVOUR_NAMES[f]} {v}" for f, v in sorted(host.runtimes.items()))
    if m.flavour == "rtx":
        candidates = {"rtx"}
    elif m.version_compatible or m.flavour == "lean":
        candidates = {"full", "lean"}
    else:
        candidates = {"full"}
    usable = {f: v for f, v in host.runtimes.items() if f in candidates}
    if not usable:
        needs = " or ".join(FLAVOUR_NAMES[f] for f in sorted(candidates))
        extra = (" (the lean runtime loads only engines built with --version-compatible)"
                 if "lean" in host.runtimes and candidates == {"full"} else "")
        return [Difference("flavour", f"cannot run here: engine built with {FLAVOUR_NAMES[m.flavour]} "
                                      f"{m.tensorrt_version} needs {needs}; this host has {have}{extra}")]
    problems = []
    for flavour, version in sorted(usable.items()):
        mine = _version_tuple(version)
        if m.version_compatible and flavour in ("full", "lean"):
            ok = mine[:1] == built[:1] and mine >= built
            rule = "a version-compatible engine runs on the same major version, same or newer"
        else:
            ok = mine[:3] == built[:3]
            rule = "an engine runs only on the TensorRT version it was built with"
        if ok:
            return []
        problems.append(f"{FLAVOUR_NAMES[flavour]} {version}")
    return [Difference("tensorrt_version", f"cannot run here: engine built with {FLAVOUR_NAMES[m.flavour]} "
                                           f"{m.tensorrt_version}, this host has {', '.join(problems)} ({rule}; "
                                           "rebuild it here with `edgeinfer build`)")]


def check_manifest(m: Manifest, host: HostFacts, device: Any = None) -> list[Difference]:
    """Every difference between what the engine needs and this host (and the model's `device:`)."""
    diffs = _runtime_differences(m, host)
    if host.gpu_count == 0 or host.compute_capability is None:
        built = m.gpu_name or "a GPU"
        if m.compute_capability:
            built += f" (compute capability {m.compute_capability})"
        diffs.append(Difference("gpu", f"cannot run here: this host has no CUDA GPU; the engine was built for {built}"))
        return diffs
    runs, supported = cc_supported(host.compute_capability, m)
    if not runs:
        diffs.append(Difference("compute_capability", f"cannot run here: compute capability {host.cc} "
                                f"({host.gpu_name}), engine supports {supported}"))
    elif (m.gpu_name and host.gpu_name and m.gpu_name != host.gpu_name and not m.compute_capabilities
          and m.hardware_compatibility == "none"):
        diffs.append(Difference("gpu", f"built on {m.gpu_name}, this GPU is {host.gpu_name} (same compute "
                                       f"capability {host.cc}: it loads, but tactics were timed on the other "
                                       "GPU; rebuild here for full speed)", fatal=False))
    processor = device.processor if device is not None else None
    index = device.index if device is not None else 0
    if m.dla_core is not None:
        if host.dla_cores == 0:
            diffs.append(Difference("dla", f"cannot run here: engine built for DLA core {m.dla_core}; this host "
                                           f"has no DLA ({DLA_HINT})"))
        elif processor == "dla" and index >= host.dla_cores:
            diffs.append(Difference("dla", f"cannot run here: device dla{index}; this host has {host.dla_cores} "
                                           "DLA core(s)"))
        elif processor == "gpu":
            diffs.append(Difference("dla", f"engine built for DLA core {m.dla_core} but the model's device is "
                                           f"{device}; set device: dla0 or dla1"))
    elif processor == "dla":
        diffs.append(Difference("dla", f"device {device} but the engine was built for the GPU; build it with "
                                       f"`edgeinfer build --device {device}`"))
    return diffs


def preflight(engine: str | os.PathLike, host: HostFacts, device: Any = None) -> list[Difference]:
    """The engine file and its manifest against this host. Non-fatal differences are warnings."""
    engine = Path(engine)
    try:
        size = engine.stat().st_size
    except OSError as exc:
        return [Difference("engine", f"cannot read engine {engine}: {exc.strerror}")]
    if size == 0:
        return [Difference("engine", f"engine file {engine} is empty")]
    try:
        m = Manifest.read(engine)
    except ManifestError as exc:
        return [Difference("manifest", f"{exc}; cannot check before loading, TensorRT will decide", fatal=False)]
    if m is None:
        return [Difference("manifest", f"no manifest beside {engine} ({manifest_path(engine).name}): cannot "
                                       "check before loading, TensorRT will decide", fatal=False)]
    if size != m.engine_bytes or sha256_file(engine) != m.engine_sha256:
        return [Difference("manifest", f"{manifest_path(engine).name} describes another file (engine changed "
                                       "after the manifest was written): not believed, TensorRT will decide",
                           fatal=False)]
    return check_manifest(m, host, device)


def verdict(diffs: list[Difference]) -> str:
    fatal = [d.message.removeprefix("cannot run here: ") for d in diffs if d.fatal]
    if fatal:
        return "cannot run here: " + "; ".join(fatal)
    warnings = [d.message for d in diffs]
    return "can run here" + (f" (warning: {'; '.join(warnings)})" if warnings else "")


def fatal(diffs: list[Difference]) -> bool:
    return any(d.fatal for d in diffs)
