"""`edgeinfer build MODEL.onnx -o MODEL.engine`: TensorRT's builder, then the manifest beside the engine.

Every call into the builder sits in a small function below, so a failure says which step failed and what
TensorRT logged. Precision depends on the TensorRT generation:
  * TensorRT 10.x (JetPack 6): builder flags fp16 / int8 / best on a weakly typed network;
  * TensorRT 11.x and TensorRT-RTX: networks are strongly typed; precision comes from the ONNX's own types
    (convert it first, e.g. with ModelOpt AutoCast), and asking for a precision here is refused with that reason.
TensorRT-RTX builds for several compute capabilities at once (`--compute-capability`, default: the builder's own
list); which ones the engine supports is recorded in the manifest when the builder says so.
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import re
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import __version__
from ..artifacts import compat
from ..artifacts.manifest import Manifest, Profile, TensorInfo, sha256_file
from ..backends.tensorrt import _make_logger
from ..lazy import MissingDependency
from .options import BuildOptions, parse_shapes

log = logging.getLogger(__name__)

PRECISIONS = ("auto", "fp32", "fp16", "int8", "best")
BUILDER_MODULES = {"tensorrt": ("tensorrt",), "tensorrt_rtx": ("tensorrt_rtx", "tensorrt_rtx_bindings")}


class BuildError(RuntimeError):
    """The engine cannot be built; the message names the step and TensorRT's own words."""






def major_version(trt: Any) -> int:
    try:
        return int(str(getattr(trt, "__version__", "0")).split(".")[0])
    except ValueError:
        return 0


def strongly_typed(trt: Any) -> bool:
    """TensorRT 11.x and TensorRT-RTX: precision comes from the network's types, no FP16/INT8 flags."""
    flags = getattr(trt, "BuilderFlag", None)
    return (compat.flavour_of(trt) == "rtx" or major_version(trt) >= 11
            or (flags is not None and not hasattr(flags, "FP16")))


def precision_plan(trt: Any, precision: str, dla: bool) -> tuple[list[str], str, list[str]]:
    """(builder flags to set, precision as recorded, notes to print). Raises BuildError when the asked
    precision is not something this TensorRT's builder does."""
    if strongly_typed(trt):
        name = "TensorRT-RTX" if compat.flavour_of(trt) == "rtx" else f"TensorRT {trt.__version__}"
        if precision not in ("auto", "fp32"):
            raise BuildError(f"{name} builds strongly typed networks: precision comes from the ONNX's tensor types, "
                             f"not from a builder flag, so --precision {precision} cannot be applied. Convert the "
                             "ONNX to the precision you want first (e.g. NVIDIA ModelOpt AutoCast for fp16), or "
                             "leave --precision at auto")
        return [], "strongly typed (from the ONNX)", [f"{name}: strongly typed network, precision comes from the "
                                                      "ONNX's tensor types"]
    notes = []
    if precision == "auto":
        precision = "fp16" if dla else "fp32"
        if dla:
            notes.append("DLA runs fp16 or int8: building fp16")
    flags = {"fp32": [], "fp16": ["FP16"], "int8": ["INT8", "FP16"], "best": ["FP16", "INT8"]}[precision]
    if "INT8" in flags:
        notes.append("int8 without a calibrator: only layers with Q/DQ nodes in the ONNX run in int8")
    if dla and precision == "fp32":
        raise BuildError("the DLA runs fp16 or int8 only: use --precision fp16 (or int8, best)")
    return flags, precision, notes


# -- the builder, one small function per step ---------------------------------------------------------------
def load_builder_module(name: str):
    names = ("tensorrt", "tensorrt_rtx") if name == "auto" else (name,)
    for candidate in names:
        for module in BUILDER_MODULES.get(candidate, (candidate,)):
            try:
                trt = importlib.import_module(module)
            except ImportError:
                continue
            if not hasattr(trt, "Builder"):
                raise BuildError(f"module {module} {getattr(trt, '__version__', '')} has no builder (the lean "
                                 "runtime only loads engines); install full TensorRT or TensorRT-RTX to build")
            return trt
    raise MissingDependency(
        f"no TensorRT builder ({' or '.join(names)}) can be imported. On Jetson: JetPack's python3-libnvinfer "
        "(a venv needs --system-site-packages); on an RTX PC: pip install tensorrt-rtx-cu13-libs "
        "tensorrt-rtx-cu13-bindings; elsewhere: NVIDIA's tensorrt wheels (pip install '.[trt]' in the checkout gives "
        "only the lean runtime, which loads engines but cannot build them).")


def _step(what: str, messages: list[str], fn, *args):
    try:
        result = fn(*args)
    except Exception as exc:  # TensorRT raises TypeError/RuntimeError from its bindings
        raise BuildError(f"{what} failed: {exc}{_said(messages)}") from exc
    return result


def _said(messages: list[str]) -> str:
    return f" (TensorRT: {'; '.join(messages[-3:])})" if messages else ""


def make_progress_monitor(trt: Any, stream=None):
    """IProgressMonitor where this TensorRT has it (10.x from 10.0, RTX): one line per phase, steps on a tty."""
    base = getattr(trt, "IProgressMonitor", None)
    if base is None:
        return None
    out = stream or sys.stderr
    tty = hasattr(out, "isatty") and out.isatty()

    class _Progress(base):
        def __init__(self):
            base.__init__(self)
            self.started: dict[str, float] = {}
            self.steps: dict[str, int] = {}

        def phase_start(self, phase_name, parent_phase, num_steps):
            depth = 1 if parent_phase else 0
            self.started[phase_name] = time.monotonic()
            self.steps[phase_name] = num_steps
            print(f"{'  ' * depth}[build] {phase_name} ({num_steps} steps)", file=out, flush=True)

        def step_complete(self, phase_name, step):
            if tty:
                print(f"\r  [build] {phase_name}: {step + 1}/{self.steps.get(phase_name, '?')}", end="",
                      file=out, flush=True)
            return True  # False would cancel the build

        def phase_finish(self, phase_name):
            took = time.monotonic() - self.started.pop(phase_name, time.monotonic())
            print(f"{chr(13) if tty else ''}[build] {phase_name} done in {took:.1f} s", file=out, flush=True)

    return _Progress()


def _create_network(trt, builder, messages):
    flags = 0
    creation = getattr(trt, "NetworkDefinitionCreationFlag", None)
    if strongly_typed(trt) and creation is not None and hasattr(creation, "STRONGLY_TYPED"):
        flags = 1 << int(creation.STRONGLY_TYPED)  # required on RTX, ignored (always on) in 11.x
    return _step("creating the network", messages, builder.create_network, flags)


def _parse_onnx(trt, network, logger, onnx: Path, messages):
    parser = _step("creating the ONNX parser", messages, trt.OnnxParser, network, logger)
    if not parser.parse_from_file(os.fspath(onnx)):
        errors = [str(parser.get_error(i).desc()) for i in range(parser.num_errors)]
        raise BuildError(f"TensorRT's ONNX parser rejected {onnx}: {'; '.join(errors) or _said(messages)}")
    return parser


def _network_io(trt, network) -> tuple[list, list]:
    inputs = [network.get_input(i) for i in range(network.num_inputs)]
    outputs = [network.get_output(i) for i in range(network.num_outputs)]
    return inputs, outputs


def _dtype_name(trt, dtype) -> str:
    try:
        import numpy as np

        return np.dtype(trt.nptype(dtype)).name
    except Exception:  # bfloat16, fp8, int4: numpy has no such type
        return str(dtype).split(".")[-1].lower()


def _apply_flags(trt, config, flags: list[str], messages):
    for flag in flags:
        _step(f"setting builder flag {flag}", messages, config.set_flag, getattr(trt.BuilderFlag, flag))


def _apply_workspace(trt, config, mib: int, messages):
    _step("setting the workspace limit", messages, config.set_memory_pool_limit, trt.MemoryPoolType.WORKSPACE,
          mib << 20)


def _apply_dla(trt, builder, config, core: int, gpu_fallback: bool, messages):
    cores = int(getattr(builder, "num_DLA_cores", 0) or 0)
    if core >= cores:
        raise BuildError(f"--device dla{core}: this box has {cores} DLA core(s) ({compat.DLA_HINT}; TensorRT "
                         "11.0-11.3 has no DLA support)")
    config.default_device_type = trt.DeviceType.DLA
    config.DLA_core = core
    if gpu_fallback:
        _apply_flags(trt, config, ["GPU_FALLBACK"], messages)
    if hasattr(trt, "ProfilingVerbosity"):
        config.profiling_verbosity = trt.ProfilingVerbosity.DETAILED  # the inspector then names each layer's device


def _apply_profile(trt, builder, config, inputs, shapes, messages, notes) -> list[Profile]:
    dynamic = [t for t in inputs if any(int(d) < 0 for d in t.shape)]
    if not dynamic:
        if shapes is not None:
            raise BuildError(f"--shapes given but every input of the ONNX is static: "
                             f"{', '.join(f'{t.name} {list(t.shape)}' for t in inputs)}")
        return []
    if shapes is None and all(int(d) >= 0 for t in dynamic for d in list(t.shape)[1:]):
        shapes = (1, 1, 1)  # trtexec's default too: say so, as batching needs a profile with a larger max
        notes.append("dynamic batch and no --shapes: built for batch 1 only (give --shapes 1,4,8 to batch)")
    if shapes is None:
        raise BuildError("the ONNX has dynamic input(s) " + ", ".join(f"{t.name} {list(t.shape)}" for t in dynamic)
                         + ": give --shapes MIN,OPT,MAX (batch) or NAME:MINx..,OPTx..,MAXx..")
    profile = _step("creating an optimization profile", messages, builder.create_optimization_profile)
    recorded = []
    for t in dynamic:
        dims = [int(d) for d in t.shape]
        if isinstance(shapes, tuple):
            if any(d < 0 for d in dims[1:]):
                raise BuildError(f"input {t.name} {dims} is dynamic beyond the batch: give its shapes as "
                                 f"{t.name}:MINx..,OPTx..,MAXx..")
            triple = tuple((b, *dims[1:]) for b in shapes)
        elif t.name in shapes:
            triple = shapes[t.name]
        else:
            raise BuildError(f"--shapes names {', '.join(str(k) for k in shapes)}; input {t.name} {dims} has none")
        _step(f"setting the profile of {t.name}", messages, profile.set_shape, t.name, *triple)
        recorded.append(Profile(t.name, *[list(s) for s in triple]))
    _step("adding the optimization profile", messages, config.add_optimization_profile, profile)
    return recorded


def _apply_timing_cache(config, path: Path | None, messages):
    blob = path.read_bytes() if path is not None and path.is_file() else b""
    cache = _step("creating the timing cache", messages, config.create_timing_cache, blob)
    _step("setting the timing cache", messages, config.set_timing_cache, cache, False)


def _save_timing_cache(config, path: Path):
    cache = config.get_timing_cache()
    if cache is not None:
        _atomic_write(path, bytes(cache.serialize()))


def _apply_compatibility(trt, config, options: BuildOptions, messages):
    if options.version_compatible:
        _apply_flags(trt, config, ["VERSION_COMPATIBLE"], messages)
    if options.hardware_compatibility != "none":
        level = getattr(trt.HardwareCompatibilityLevel, options.hardware_compatibility.upper())
        _step("setting hardware compatibility", messages, setattr, config, "hardware_compatibility_level", level)


def _apply_compute_capabilities(trt, config, ccs: list[str], messages):
    enum = getattr(trt, "ComputeCapability", None)
    if enum is None or not hasattr(config, "set_compute_capability"):
        raise BuildError("--compute-capability is a TensorRT-RTX option; this builder has no ComputeCapability")
    members = []
    for cc in ccs:
        name = "CURRENT" if cc == "current" else "SM" + cc.replace(".", "")
        if not hasattr(enum, name):
            known = sorted((m for m in dir(enum) if m.startswith("SM")), key=lambda m: int(m[2:]))
            raise BuildError(f"compute capability {cc}: this TensorRT-RTX builds for "
                             f"{', '.join(k[2:-1] + '.' + k[-1] for k in known)} or current")
        members.append(getattr(enum, name))
    config.num_compute_capabilities = len(members)
    for i, member in enumerate(members):
        _step(f"setting compute capability {ccs[i]}", messages, config.set_compute_capability, member, i)


def _configured_compute_capabilities(config) -> list[str] | None:
    n = int(getattr(config, "num_compute_capabilities", 0) or 0)
    out = []
    for i in range(n):
        name = str(config.get_compute_capability(i)).split(".")[-1]
        if name.startswith("SM"):
            out.append(f"{name[2:-1]}.{name[-1]}")
    return out or None


def _dla_placement(trt, config, network) -> tuple[dict[str, int], list[str]]:
    """What the builder will place where, asked layer by layer before the build: counts, and the names of the
    layers the DLA cannot run (they go to the GPU with --gpu-fallback, or fail the build without it)."""
    counts, on_gpu = {"dla": 0, "gpu": 0}, []
    for i in range(network.num_layers):
        layer = network.get_layer(i)
        if config.can_run_on_DLA(layer):
            counts["dla"] += 1
        else:
            counts["gpu"] += 1
            on_gpu.append(str(getattr(layer, "name", layer)))
    return counts, on_gpu


def _build(builder, network, config, messages) -> bytes:
    plan = _step("building the engine", messages, builder.build_serialized_network, network, config)
    if plan is None:
        raise BuildError(f"TensorRT could not build the engine{_said(messages) or ' (no message from TensorRT)'}")
    return bytes(plan)


SUPPORTED_CC = re.compile(r"[Ss]upported compute capabilities:\s*([0-9. >]+)")


def make_build_logger(trt: Any, messages: list[str]):
    """A TensorRT logger keeping warnings and errors (TensorRT-RTX's refusal names the compute capabilities it
    supports; which severity it uses is not documented), forwarding everything to logging."""

    return _make_logger(trt, messages, keep_from=logging.WARNING, keep=50)


def probe_engine(trt, plan: bytes, logger, messages) -> tuple[Any, list[str] | None, str | None]:
    """Load the plan back here: (engine or None, compute capabilities TensorRT named when it refused, reason)."""
    start = len(messages)
    try:
        runtime = trt.Runtime(logger)
        engine = runtime.deserialize_cuda_engine(plan)
    except Exception as exc:  # some bindings raise instead of returning None: the text is what counts
        messages.append(str(exc))
        engine = None
    said = messages[start:]
    if engine is not None:
        return engine, None, None
    ccs = None
    for message in said:
        match = SUPPORTED_CC.search(message)
        if match:
            ccs = [token.rstrip(".") for token in match.group(1).split()]
    return None, ccs, "; ".join(said) or "deserialize_cuda_engine returned None"


def inspector_layers(trt, engine) -> tuple[dict[str, int] | None, Any]:
    """Per-layer device from the engine inspector (DETAILED verbosity): counts and the raw JSON."""
    try:
        inspector = engine.create_engine_inspector()
        info = json.loads(inspector.get_engine_information(trt.LayerInformationFormat.JSON))
    except Exception as exc:  # an engine built without DETAILED verbosity, or an older inspector
        log.debug("engine inspector unavailable: %s", exc)
        return None, None
    counts = {"dla": 0, "gpu": 0}
    for layer in info.get("Layers", []):
        text = json.dumps(layer)
        counts["dla" if "DLA" in text else "gpu"] += 1
    return counts, info


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


@dataclass
class BuildResult:
    engine: Path
    manifest: Manifest
    seconds: float
    notes: list[str]
    loads_here: bool
    load_error: str | None


def build_engine(onnx: Path, output: Path, options: BuildOptions, progress=None) -> BuildResult:
    """Build `output` from `onnx` and write its manifest. Raises BuildError / MissingDependency."""
    onnx, output = Path(onnx), Path(output)
    if not onnx.is_file():
        raise BuildError(f"ONNX file not found: {onnx}")
    trt = load_builder_module(options.runtime)
    flavour = compat.flavour_of(trt)
    dla = options.device.startswith("dla")
    flags, precision, notes = precision_plan(trt, options.precision, dla)
    if flavour == "rtx" and dla:
        raise BuildError("TensorRT-RTX has no DLA (DLA cores are on Jetson, with JetPack's TensorRT)")
    shapes = parse_shapes(options.shapes) if options.shapes else None
    facts = compat.host_facts()
    messages: list[str] = []
    logger = make_build_logger(trt, messages)
    t0 = time.monotonic()
    builder = _step("creating the builder", messages, trt.Builder, logger)
    network = _create_network(trt, builder, messages)
    parser = _parse_onnx(trt, network, logger, onnx, messages)  # noqa: F841 (owns the weights until built)
    inputs, outputs = _network_io(trt, network)
    config = _step("creating the builder config", messages, builder.create_builder_config)
    monitor = make_progress_monitor(trt, progress)
    if monitor is not None:
        config.progress_monitor = monitor
    _apply_flags(trt, config, flags, messages)
    if options.workspace_mib:
        _apply_workspace(trt, config, options.workspace_mib, messages)
    if dla:
        _apply_dla(trt, builder, config, int(options.device[3:]), options.gpu_fallback, messages)
    profiles = _apply_profile(trt, builder, config, inputs, shapes, messages, notes)
    if options.timing_cache is not None:
        _apply_timing_cache(config, options.timing_cache, messages)
    _apply_compatibility(trt, config, options, messages)
    if options.compute_capabilities:
        _apply_compute_capabilities(trt, config, options.compute_capabilities, messages)
    planned = None
    if dla:
        planned, on_gpu = _dla_placement(trt, config, network)
        if on_gpu:
            shown = ", ".join(on_gpu[:12]) + (f" and {len(on_gpu) - 12} more" if len(on_gpu) > 12 else "")
            notes.append(f"{len(on_gpu)} layer(s) the DLA cannot run"
                         f"{' go to the GPU' if options.gpu_fallback else ' (no --gpu-fallback: the build fails)'}"
                         f": {shown}")
    plan = _build(builder, network, config, messages)
    seconds = time.monotonic() - t0
    output.parent.mkdir(parents=True, exist_ok=True)
    _atomic_write(output, plan)
    if options.timing_cache is not None:
        _save_timing_cache(config, options.timing_cache)
    engine, refused_ccs, load_error = probe_engine(trt, plan, logger, messages)
    dla_layers = planned
    if engine is not None and dla:
        placed, info = inspector_layers(trt, engine)
        if placed is not None:
            dla_layers = placed
            _atomic_write(output.with_name(output.name + ".layers.json"), json.dumps(info, indent=1).encode())
    ccs = _configured_compute_capabilities(config) if options.compute_capabilities else None
    ccs = ccs or refused_ccs
    manifest = Manifest(
        flavour=flavour, tensorrt_version=str(trt.__version__), runtime_module=trt.__name__,
        gpu_name=facts.gpu_name, compute_capability=facts.cc,
        dla_core=int(options.device[3:]) if dla else None, precision=precision,
        onnx_sha256=sha256_file(onnx), engine_sha256=sha256_file(output), engine_bytes=output.stat().st_size,
        io=[TensorInfo(t.name, mode, [int(d) for d in t.shape], _dtype_name(trt, t.dtype))
            for mode, group in (("input", inputs), ("output", outputs)) for t in group],
        profiles=profiles, compute_capabilities=ccs, hardware_compatibility=options.hardware_compatibility,
        version_compatible=options.version_compatible, gpu_fallback=options.gpu_fallback, dla_layers=dla_layers,
        onnx_path=os.fspath(onnx), build_options=options.model_dump(mode="json", exclude_defaults=True),
        built_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        built_by=f"edgeinfer {__version__} on {socket.gethostname()}",
    )
    manifest.write(output)
    return BuildResult(output, manifest, seconds, notes, engine is not None, load_error)
