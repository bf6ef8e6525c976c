"""A fake of TensorRT's builder API, for CI: no TensorRT builder can be installed here (PyPI's tensorrt-cu12/13
wheels download from a host this workplace cannot reach; TensorRT-RTX needs a GPU to build).

It implements only the calls `edgeinfer.engines.build` makes, with TensorRT's names, and records what was asked
(flags, profiles, DLA placement, compute capabilities) into the "plan" it returns, so a test can check what the
real builder would have been told. The ONNX is parsed for real (onnx), so I/O names, shapes and types come from
the file. `make_module("10.3.0.30")` is a TensorRT 10.x with fp16/int8 flags; `make_module("1.7.1.116",
rtx=True)` is TensorRT-RTX: strongly typed, several compute capabilities, and a runtime that refuses compute
capability 9.0 with TensorRT-RTX's own message.
"""

from __future__ import annotations

import enum
import json
import sys
import types

import numpy as np
import onnx


def make_module(version: str, rtx: bool = False, dla_cores: int = 0, name: str | None = None) -> types.ModuleType:
    m = types.ModuleType(name or ("fake_trt_rtx" if rtx else "fake_trt10"))
    m.__version__ = version
    m.EDGEINFER_FLAVOUR = "rtx" if rtx else "full"
    flags = ["GPU_FALLBACK", "VERSION_COMPATIBLE"] + ([] if rtx else ["FP16", "INT8"])
    m.BuilderFlag = enum.Enum("BuilderFlag", flags)
    m.MemoryPoolType = enum.Enum("MemoryPoolType", ["WORKSPACE"])
    m.DeviceType = enum.Enum("DeviceType", ["GPU", "DLA"])
    m.ProfilingVerbosity = enum.Enum("ProfilingVerbosity", ["LAYER_NAMES_ONLY", "DETAILED"])
    m.HardwareCompatibilityLevel = enum.Enum("HardwareCompatibilityLevel", ["NONE", "AMPERE_PLUS"])
    m.NetworkDefinitionCreationFlag = enum.IntEnum("NetworkDefinitionCreationFlag", {"STRONGLY_TYPED": 5})
    m.LayerInformationFormat = enum.Enum("LayerInformationFormat", ["ONELINE", "JSON"])
    m.DataType = enum.Enum("DataType", {"FLOAT": 1, "HALF": 2, "INT64": 3})
    _np = {m.DataType.FLOAT: np.float32, m.DataType.HALF: np.float16, m.DataType.INT64: np.int64}
    m.nptype = lambda dt: _np[dt]
    if rtx:
        m.ComputeCapability = enum.Enum("ComputeCapability", ["NONE", "CURRENT", "SM75", "SM80", "SM86", "SM89",
                                                              "SM120", "SM121"])

    class ILogger:
        Severity = enum.IntEnum("Severity", ["INTERNAL_ERROR", "ERROR", "WARNING", "INFO", "VERBOSE"])

        def __init__(self):
            pass

    class IProgressMonitor:
        def __init__(self):
            pass

    class Layer:
        def __init__(self, name, type_):
            self.name, self.type = name, type_

    class Tensor:
        def __init__(self, name, shape, dtype):
            self.name, self.shape, self.dtype = name, shape, dtype

    class Network:
        def __init__(self, flags):
            self.flags = flags
            self.inputs, self.outputs, self.layers = [], [], []

        num_inputs = property(lambda self: len(self.inputs))
        num_outputs = property(lambda self: len(self.outputs))
        num_layers = property(lambda self: len(self.layers))

        def get_input(self, i):
            return self.inputs[i]

        def get_output(self, i):
            return self.outputs[i]

        def get_layer(self, i):
            return self.layers[i]

    class ParserError:
        def __init__(self, text):
            self.text = text

        def desc(self):
            return self.text

    types_ = {1: m.DataType.FLOAT, 10: m.DataType.HALF, 7: m.DataType.INT64}

    class OnnxParser:
        def __init__(self, network, logger):
            self.network, self.errors = network, []

        num_errors = property(lambda self: len(self.errors))

        def get_error(self, i):
            return self.errors[i]

        def parse_from_file(self, path):
            try:
                model = onnx.load(path)
            except Exception as exc:
                self.errors.append(ParserError(f"failed to parse ONNX: {type(exc).__name__}"))
                return False
            g = model.graph
            init = {i.name for i in g.initializer}

            def tensor(v):
                dims = [d.dim_value if d.HasField("dim_value") else -1 for d in v.type.tensor_type.shape.dim]
                return Tensor(v.name, tuple(dims), types_[v.type.tensor_type.elem_type])

            self.network.inputs = [tensor(v) for v in g.input if v.name not in init]
            self.network.outputs = [tensor(v) for v in g.output]
            self.network.layers = [Layer(n.name or f"{n.op_type}_{i}", n.op_type) for i, n in enumerate(g.node)]
            return True

    class Profile:
        def __init__(self):
            self.shapes = {}

        def set_shape(self, name, lo, opt, hi):
            self.shapes[name] = [list(lo), list(opt), list(hi)]

    class TimingCache:
        def __init__(self, blob):
            self.blob = bytes(blob)

        def serialize(self):
            return self.blob + b"+timed"

    class Config:
        def __init__(self):
            self.flags, self.profiles, self.pool = [], [], {}
            self.default_device_type, self.DLA_core = m.DeviceType.GPU, -1
            self.profiling_verbosity = m.ProfilingVerbosity.LAYER_NAMES_ONLY
            self.progress_monitor = None
            self.cache = None
            self.hardware_compatibility_level = m.HardwareCompatibilityLevel.NONE
            self.num_compute_capabilities = 0
            self._ccs = {}

        def set_flag(self, flag):
            self.flags.append(flag.name)

        def set_memory_pool_limit(self, pool, size):
            self.pool[pool.name] = size

        def add_optimization_profile(self, profile):
            self.profiles.append(profile.shapes)

        def create_timing_cache(self, blob):
            return TimingCache(blob)

        def set_timing_cache(self, cache, ignore_mismatch):
            self.cache = cache
            return True

        def get_timing_cache(self):
            return self.cache

        def can_run_on_DLA(self, layer):
            return layer.type != "ReduceMax"  # a stand-in rule: some layers fall back

        def set_compute_capability(self, cc, index):
            if index >= self.num_compute_capabilities:
                raise ValueError("index out of range")
            self._ccs[index] = cc

        def get_compute_capability(self, index):
            return self._ccs[index]

    class Builder:
        def __init__(self, logger):
            self.logger = logger
            self.num_DLA_cores = dla_cores

        def create_network(self, flags):
            return Network(flags)

        def create_builder_config(self):
            return Config()

        def create_optimization_profile(self):
            return Profile()

        def build_serialized_network(self, network, config):
            mon = config.progress_monitor
            if mon is not None:
                mon.phase_start("Building engine", None, 2)
                mon.step_complete("Building engine", 0)
                mon.step_complete("Building engine", 1)
                mon.phase_finish("Building engine")
            if any(d < 0 for t in network.inputs for d in t.shape[1:]) and not config.profiles:
                self.logger.log(ILogger.Severity.ERROR, "Network has dynamic or shape inputs, but no "
                                "optimization profile has been defined.")
                return None
            return json.dumps({
                "fake_plan": True, "network_flags": network.flags, "flags": config.flags, "pool": config.pool,
                "device": config.default_device_type.name, "dla_core": config.DLA_core,
                "profiles": config.profiles, "ccs": [config._ccs[i].name for i in sorted(config._ccs)],
                "hardware": config.hardware_compatibility_level.name,
                "verbosity": config.profiling_verbosity.name,
                "layers": [x.name for x in network.layers],
                "dla_layers": [config.can_run_on_DLA(x) for x in network.layers]
                if config.default_device_type == m.DeviceType.DLA else [],
            }).encode()

    class Inspector:
        def __init__(self, plan):
            self.plan = plan

        def get_engine_information(self, fmt):
            layers = [{"Name": f"{op}_{i}", "LayerType": "DLA" if on else "CaskConvolution"}
                      for i, (op, on) in enumerate(zip(self.plan["layers"], self.plan["dla_layers"]))]
            return json.dumps({"Layers": layers})

    class Engine:
        def __init__(self, plan):
            self.plan = plan

        def create_engine_inspector(self):
            return Inspector(self.plan)

    class Runtime:
        def __init__(self, logger):
            self.logger = logger

        def deserialize_cuda_engine(self, data):
            plan = json.loads(bytes(data))
            if rtx:
                self.logger.log(ILogger.Severity.ERROR, "IRuntime::deserializeCudaEngine: Error Code 1: The engine "
                                "cannot run on this GPU, which has compute capability 9.0. Supported compute "
                                "capabilities: 8.0 8.6 8.9 12.0 12.1 >12.0.")
                return None
            return Engine(plan)

    for obj in (ILogger, IProgressMonitor, OnnxParser, Builder, Runtime):
        setattr(m, obj.__name__, obj)
    return m


def install(module: types.ModuleType) -> str:
    sys.modules[module.__name__] = module
    return module.__name__
