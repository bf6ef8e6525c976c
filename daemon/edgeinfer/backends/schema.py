"""The options models of the backends (`models[].backend_options`), without their code.

`edgeinfer.config` validates options against these models without loading a backend; `BACKEND_OPTIONS` ties
each `backend:` key to its model, `backends/__init__.py` ties it to its implementation.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError, field_validator, model_validator

from ..problems import schema_problems
from ..schema import StrictModel


class OnnxRuntimeOptions(StrictModel):
    providers: list[str] | None = Field(
        default=None, description="execution providers in order of preference; null = best available"
    )
    intra_op_threads: int | None = Field(default=None, ge=0, description="0/null = ONNX Runtime's default")
    inter_op_threads: int | None = Field(default=None, ge=0)
    graph_optimization: Literal["disable", "basic", "extended", "all"] = "all"
    log_warnings: bool = Field(
        default=False, description="let ONNX Runtime print its own warnings (per run: they can flood a journal)"
    )


ENGINE_SUFFIXES = (".engine", ".plan", ".trt")


RUNTIME_CHOICES = ("tensorrt", "tensorrt_lean", "tensorrt_rtx")


class TensorRTOptions(StrictModel):
    runtime: str = Field(
        default="auto",
        description="auto (tensorrt, else tensorrt_lean, else tensorrt_rtx: the first installed), one of those, "
        "or the name of a module implementing TensorRT's runtime API",
    )
    cuda_graph: Literal["auto", "off"] = Field(
        default="auto", description="replay preprocess -> engine -> download as a CUDA graph after warm-up"
    )
    mapped_memory: Literal["auto", "on", "off"] = Field(
        default="auto", description="zero-copy host memory for frames and outputs; auto = on integrated GPUs"
    )
    buffer_sets: int = Field(default=3, ge=2, le=8, description="sets in flight: filling, computing, decoding")
    host_wait: Literal["block", "spin"] = Field(
        default="block", description="how the thread collecting results waits for the GPU: block (sleeps until "
        "the GPU signals: no CPU spent, as trtexec's default) or spin (busy-waits on a core: tens of us sooner, "
        "as trtexec --useSpinWait)"
    )
    kernel_cache: Path | None = Field(
        default=None, description="folder for the compiled preprocessing kernel; default: $STATE_DIRECTORY or "
        "$XDG_CACHE_HOME/edgeinfer"
    )

    @field_validator("runtime")
    @classmethod
    def _module_name(cls, value: str) -> str:
        if value != "auto" and not all(part.isidentifier() for part in value.split(".")):
            raise ValueError(f"runtime must be auto, {', '.join(RUNTIME_CHOICES)} or a module name, got {value!r}")
        return value


def _absolute(value: Path | None) -> Path | None:
    # backend_options is free-form for the config loader, so relative paths here would silently depend on the
    # daemon's working directory: refuse them
    if value is not None and not value.is_absolute():
        raise ValueError(f"'{value}' must be an absolute path")
    return value


class TritonTls(StrictModel):
    """TLS towards the server. gRPC: files handed to grpc.ssl_channel_credentials; HTTP: to the SSL context."""

    root_certificates: Path | None = Field(default=None, description="CA bundle (PEM); null = system roots")
    private_key: Path | None = Field(default=None, description="client key (PEM), for mutual TLS")
    certificate_chain: Path | None = Field(default=None, description="client certificate (PEM), for mutual TLS")

    _abs = field_validator("root_certificates", "private_key", "certificate_chain")(_absolute)


class FallbackOptions(StrictModel):
    backend: str = Field(default="onnxruntime", description="local backend that serves while the server cannot")
    path: Path | None = Field(default=None, description="model file of the local backend; null = the model's path")
    backend_options: dict[str, Any] = Field(default_factory=dict, description="options of the local backend")
    recover_probes: int = Field(default=3, ge=1, le=100,
                                description="consecutive healthy probes before the server serves again")
    probe_interval_ms: float = Field(default=500.0, gt=0, le=60_000, description="health probe period while local")

    @field_validator("backend")
    @classmethod
    def _local_backend(cls, value: str) -> str:
        if value not in LOCAL_BACKENDS:
            raise ValueError(f"'{value}' is not a local backend; allowed: {', '.join(LOCAL_BACKENDS)}")
        return value

    _abs = field_validator("path")(_absolute)

    @model_validator(mode="after")
    def _local_options(self) -> FallbackOptions:
        options_model = BACKEND_OPTIONS[self.backend]
        try:
            options_model.model_validate(self.backend_options)
        except ValidationError as exc:
            problems = schema_problems(exc, self.backend_options, options_model)
            raise ValueError("; ".join(f"backend_options.{p}" for p in problems)) from None
        return self


class TritonOptions(StrictModel):
    url: str = Field(default="127.0.0.1:8001", description="host:port of the server (no scheme; TLS: set tls)")
    protocol: Literal["grpc", "http"] = "grpc"
    model_name: str | None = Field(default=None, description="model on the server; null = the model's id")
    model_version: str = Field(default="", description="'' = the server's version policy")
    deadline_ms: float | None = Field(
        default=None, gt=0, description="per-request deadline; null = budget_ms (budget_ms / 2 with a fallback, "
        "so a late request served locally still ends within the budget)")
    connect_timeout_ms: float = Field(default=3000.0, gt=0, description="health and metadata calls")
    input_name: str | None = Field(default=None, description="checked against the server's metadata")
    output_names: list[str] | None = Field(default=None, description="outputs in decoder order; null = all")
    compression: Literal["none", "gzip", "deflate"] = Field(default="none", description="request compression")
    shared_memory: Literal["auto", "system", "none"] = Field(
        default="auto", description="tensors through system shared memory instead of the socket: auto = when the "
        "server is on this host (a loopback url, no TLS); system = always (the server must see this host's "
        "/dev/shm); none = never (docs/triton.md)")
    buffer_sets: int = Field(default=3, ge=2, le=8, description="buffer sets: one being filled, the others' "
                             "requests in flight at once (gRPC; HTTP sends one at a time)")
    send: Literal["float", "uint8", "jpeg"] = Field(
        default="float", description="what goes to the server: float = the network's input tensor (preprocessed "
        "here); uint8 = the letterboxed/resized BGR frame, H x W x 3, the server model (an ensemble with a "
        "preprocessing step) casts, normalises and lays it out; jpeg = a JPEG of that frame (docs/triton.md)")
    jpeg_quality: int = Field(default=90, ge=1, le=100, description="JPEG quality of send: jpeg")
    tls: TritonTls | None = None
    headers: dict[str, str] = Field(default_factory=dict, description="sent with every call")
    headers_from_env: dict[str, str] = Field(
        default_factory=dict, description="header name -> environment variable holding its value (tokens)")
    fallback: FallbackOptions | None = None

    @model_validator(mode="after")
    def _jpeg_over_the_socket(self) -> TritonOptions:
        if self.send == "jpeg" and self.shared_memory == "system":
            raise ValueError("send: jpeg is for a server on another host (it goes over the socket); with shared "
                             "memory send uint8 or float")
        if self.send != "float" and self.fallback is not None:
            raise ValueError(f"send: {self.send} cannot have a fallback (not built: the local model takes the "
                             "float tensor, the server the frame); use send: float with a fallback")
        return self

    @field_validator("url")
    @classmethod
    def _host_port(cls, value: str) -> str:
        if "://" in value:
            raise ValueError("give host:port without a scheme (e.g. triton.local:8001); for TLS set `tls`")
        host, sep, port = value.rpartition(":")
        if not sep or not host or not port.isdigit():
            raise ValueError(f"'{value}' is not host:port")
        return value


BACKEND_OPTIONS: dict[str, type[StrictModel]] = {
    "onnxruntime": OnnxRuntimeOptions,
    "tensorrt": TensorRTOptions,
    "triton": TritonOptions,
}
LOCAL_BACKENDS = ("onnxruntime", "tensorrt")  # what a remote backend may fall back to
BACKEND_CHOICES = ("auto", *BACKEND_OPTIONS)


def resolve_backend_type(requested: str, path: Path) -> str:
    """`auto` picks the best backend this box can run for the model file."""
    if requested != "auto":
        return requested
    if Path(path).suffix.lower() in ENGINE_SUFFIXES:
        return "tensorrt"  # a serialized engine: only TensorRT can run it
    return "onnxruntime"


def options_for_model(backend: str, options: Any, budget_ms: float) -> Any:
    """Options completed from the model's config: a remote request's deadline follows `budget_ms` (half of it
    with a local fallback, so a late request served locally still ends within the budget)."""
    if backend != "triton" or not isinstance(options, dict) or options.get("deadline_ms") is not None:
        return options
    return {**options, "deadline_ms": budget_ms / 2 if options.get("fallback") is not None else budget_ms}
