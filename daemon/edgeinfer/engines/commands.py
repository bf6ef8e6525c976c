"""The `build`, `inspect` and `bench` commands (wired into the CLI by `add_parsers`)."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from pydantic import ValidationError

from ..artifacts.compat import fatal, host_facts, preflight, verdict
from ..artifacts.manifest import Manifest, ManifestError
from ..backends import BACKEND_CHOICES, BackendError, resolve_backend_type
from ..backends.tensorrt import _make_logger, load_runtime_module
from ..devices import parse_device
from ..lazy import MissingDependency
from .bench import format_table, run_bench
from .build import BuildError, build_engine
from .options import BuildOptions

EXIT_OK, EXIT_RUNTIME, EXIT_CONFIG = 0, 1, 2
log = logging.getLogger("edgeinfer")


def cmd_build(args: argparse.Namespace) -> int:
    try:
        options = BuildOptions(
            runtime=args.runtime, device=args.device, gpu_fallback=args.gpu_fallback, precision=args.precision,
            shapes=args.shapes, timing_cache=args.timing_cache, workspace_mib=args.workspace,
            version_compatible=args.version_compatible, hardware_compatibility=args.hardware_compatibility,
            compute_capabilities=args.compute_capability or None)
    except ValidationError as exc:
        for err in exc.errors(include_url=False):
            option = "--" + str(err["loc"][0]).replace("_", "-") if err["loc"] else "options"
            print(f"edgeinfer build: {option}: {err['msg']}", file=sys.stderr)
        return EXIT_CONFIG
    output = Path(args.output) if args.output else Path(args.onnx).with_suffix(".engine")
    print(f"building {output} from {args.onnx}", file=sys.stderr)
    try:
        result = build_engine(Path(args.onnx), output, options)
    except (BuildError, MissingDependency) as exc:
        print(f"edgeinfer build: {exc}", file=sys.stderr)
        return EXIT_RUNTIME
    for note in result.notes:
        print(f"note: {note}", file=sys.stderr)
    print(f"built {result.engine} in {result.seconds:.1f} s; manifest {result.engine}.manifest.json")
    for line in result.manifest.summary_lines():
        print(f"  {line}")
    if not result.loads_here:
        print(f"TensorRT cannot load it on this host: {result.load_error}")
    print(f"verdict for this host: {verdict(preflight(result.engine, host_facts()))}")
    return EXIT_OK


def _engine_tensors(engine_path: Path, runtime: str, dla_core: int | None) -> tuple[list[str], str | None]:
    """Tensors of the deserialized engine, or why it cannot be loaded here."""
    try:
        trt = load_runtime_module(runtime)
    except ImportError as exc:
        return [], str(exc)
    messages: list[str] = []
    try:
        runtime_obj = trt.Runtime(_make_logger(trt, messages))
        if dla_core is not None:
            runtime_obj.DLA_core = dla_core  # a DLA engine deserializes only with its core set
        engine = runtime_obj.deserialize_cuda_engine(engine_path.read_bytes())
    except Exception as exc:  # bindings that raise instead of returning None
        return [], str(exc)
    if engine is None:
        return [], "; ".join(messages[-3:]) or "deserialize_cuda_engine returned None"
    lines = []
    for i in range(engine.num_io_tensors):
        name = engine.get_tensor_name(i)
        mode = "input" if engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT else "output"
        lines.append(f"{mode:<12} {name} {engine.get_tensor_dtype(name)} {list(engine.get_tensor_shape(name))}")
    return lines, None


TENSORRT_PLAN_MAGIC = b"ftrt"  # the first bytes of a serialized TensorRT engine (a "plan")


def not_an_engine(path: Path) -> str | None:
    """Why `path` is plainly not a TensorRT engine (read from its first bytes), or None when it may be one.
    A plan starts with b"ftrt"; Ultralytics' .engine files put [4-byte length][JSON] before it."""
    try:
        with open(path, "rb") as f:
            head = f.read(1 << 16)
    except OSError as exc:
        return f"cannot read {path}: {exc.strerror}"
    if head.startswith(TENSORRT_PLAN_MAGIC):
        return None
    if len(head) >= 8:
        length = int.from_bytes(head[:4], "little")
        if 0 < length and head[4 + length: 8 + length] == TENSORRT_PLAN_MAGIC:
            return None
    if path.suffix.lower() == ".onnx" or b"onnx" in head[:4096].lower() or b"pytorch" in head[:4096]:
        return (f"{path} is an ONNX model, not a TensorRT engine: run it as it is (backend onnxruntime), or "
                f"build an engine from it with `edgeinfer build {path}`")
    if not head.strip(b"\0"):
        return f"{path} holds only zero bytes (a sparse or truncated file), not a TensorRT engine"
    return f"{path} is not a TensorRT engine (it does not start with a TensorRT plan header) and has no manifest"


def cmd_inspect(args: argparse.Namespace) -> int:

    engine = Path(args.engine)
    if not engine.is_file():
        print(f"edgeinfer inspect: engine not found: {engine}", file=sys.stderr)
        return EXIT_RUNTIME
    try:
        device = parse_device(args.device)
    except ValueError as exc:
        print(f"edgeinfer inspect: --device: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    try:  # a tampered manifest (non-UTF-8, nested, wrong types, a FIFO, 1 GiB): one line, exit 1
        manifest = Manifest.read(engine)
    except ManifestError as exc:
        print(f"edgeinfer inspect: {exc}", file=sys.stderr)
        return EXIT_RUNTIME
    if manifest is None:  # nothing vouches for the file: it must at least look like an engine
        problem = not_an_engine(engine)
        if problem:
            print(f"edgeinfer inspect: {problem}", file=sys.stderr)
            return EXIT_RUNTIME
    facts = host_facts(device.cuda_index)
    diffs = preflight(engine, facts, device if device.processor != "auto" else None)
    tensors, load_error = [], None
    if not fatal(diffs) and facts.gpu_count:
        dla_core = device.index if device.processor == "dla" else (manifest.dla_core if manifest else None)
        tensors, load_error = _engine_tensors(engine, args.runtime, dla_core)
    if args.json:
        print(json.dumps({"engine": str(engine), "manifest": manifest.to_dict() if manifest else None,
                          "host": {"runtimes": facts.runtimes, "gpu": facts.gpu_name, "compute_capability": facts.cc,
                                   "dla_cores": facts.dla_cores},
                          "differences": [{"key": d.key, "fatal": d.fatal, "message": d.message} for d in diffs],
                          "tensors": tensors, "load_error": load_error, "verdict": verdict(diffs)}, indent=2))
    else:
        print(f"engine       {engine} ({engine.stat().st_size} bytes)")
        if manifest is not None:
            for line in manifest.summary_lines():
                print(f"  {line}")
        print(f"this host    {', '.join(f'{k} {v}' for k, v in facts.runtimes.items()) or 'no TensorRT'}; "
              f"{facts.gpu_name or 'no CUDA GPU'}"
              + (f" (compute capability {facts.cc})" if facts.cc else "")
              + (f"; {facts.dla_cores} DLA core(s)" if facts.dla_cores else ""))
        if tensors:
            print("loaded       tensors:")
            for line in tensors:
                print(f"  {line}")
        elif load_error:
            print(f"not loaded   {load_error}")
        for diff in diffs:
            if not diff.fatal:
                print(f"warning      {diff.message}")
        print(verdict(diffs))
    return EXIT_RUNTIME if fatal(diffs) or load_error else EXIT_OK


def cmd_bench(args: argparse.Namespace) -> int:

    try:
        options = json.loads(args.backend_options) if args.backend_options else {}
        size = tuple(int(v) for v in args.size.split("x")) if args.size else None
    except (ValueError, json.JSONDecodeError) as exc:
        print(f"edgeinfer bench: bad option: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    try:
        result = run_bench(Path(args.model), args.backend, args.device, args.batch, args.duration, options, size)
    except ValueError as exc:
        print(f"edgeinfer bench: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except (BackendError, MissingDependency) as exc:
        print(f"edgeinfer bench: {exc}", file=sys.stderr)
        return EXIT_RUNTIME
    if args.json == "-":
        print(json.dumps(result, indent=2))
    else:
        print(format_table(result))
        if args.json:
            Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return EXIT_OK


def add_parsers(sub) -> None:

    build = sub.add_parser("build", help="build a TensorRT engine from an ONNX file, with its manifest")
    build.add_argument("onnx", help="the ONNX model to build the engine from")
    build.add_argument("-o", "--output", help="engine file (default: the ONNX's name with .engine)")
    build.add_argument("--runtime", default="auto", help="builder: auto, tensorrt, tensorrt_rtx")
    build.add_argument("--device", default="gpu", choices=["gpu", "dla0", "dla1"])
    build.add_argument("--gpu-fallback", action="store_true", help="DLA: run unsupported layers on the GPU")
    build.add_argument("--precision", default="auto", choices=["auto", "fp32", "fp16", "int8", "best"],
                       help="TensorRT 10.x builder flags; 11.x and TensorRT-RTX take precision from the ONNX")
    build.add_argument("--shapes", help="dynamic batch MIN,OPT,MAX (1,4,8) or NAME:MINx..,OPTx..,MAXx..")
    build.add_argument("--timing-cache", type=Path, help="timing cache file, read and updated")
    build.add_argument("--workspace", type=int, help="builder workspace limit in MiB")
    build.add_argument("--version-compatible", action="store_true",
                       help="TensorRT 10.x: loadable by the lean runtime of a newer 10.x")
    build.add_argument("--hardware-compatibility", default="none",
                       choices=["none", "ampere_plus", "same_compute_capability"])
    build.add_argument("--compute-capability", action="append", metavar="CC",
                       help="TensorRT-RTX: build for this compute capability (repeat; e.g. 8.9, 12.0, current)")
    build.set_defaults(func=cmd_build)

    inspect = sub.add_parser("inspect", help="an engine's manifest, tensors and whether it runs on this host")
    inspect.add_argument("engine", help="a TensorRT engine file (its manifest is read from beside it)")
    inspect.add_argument("--device", default="auto", help="the device it would run on (gpu, gpu:N, dla0, dla1)")
    inspect.add_argument("--runtime", default="auto", help="TensorRT runtime module to load it with")
    inspect.add_argument("--json", action="store_true")
    inspect.set_defaults(func=cmd_inspect)

    bench = sub.add_parser("bench", help="latency percentiles and throughput of a model or engine")
    bench.add_argument("model", help="an ONNX model or a TensorRT engine")
    bench.add_argument("--batch", type=int, default=1)
    bench.add_argument("--duration", type=float, default=5.0, help="seconds of timed runs")
    bench.add_argument("--backend", default="auto", choices=list(BACKEND_CHOICES))
    bench.add_argument("--device", default="auto")
    bench.add_argument("--backend-options", help="JSON object, as backend_options in a config")
    bench.add_argument("--size", help="HxW for a model with a dynamic height/width")
    bench.add_argument("--json", metavar="FILE", help="also write the result as JSON (- : JSON on stdout only)")
    bench.set_defaults(func=cmd_bench)


def check_engines(config) -> list[str]:
    """`edgeinfer check`: the pre-flight verdict of every engine in every model's chain, for this host."""
    lines, facts = [], None
    for i, model in enumerate(config.models):
        links = [("", model.path, model.backend, model.device)]
        links += [(f".fallback[{j}]", f.path, f.backend, f.device) for j, f in enumerate(model.fallback)]
        for where, path, backend, device in links:
            if resolve_backend_type(backend, path) != "tensorrt" or not path.is_file():
                continue
            facts = facts or host_facts()
            dev = parse_device(device)
            lines.append(f"models[{i}]{where}.path: {path.name}: "
                         f"{verdict(preflight(path, facts, dev if dev.processor != 'auto' else None))}")
    return lines
