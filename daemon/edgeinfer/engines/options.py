"""The options of an engine build (`edgeinfer build` flags, a fallback link's `build:` block), without the
builder: the config validates them with no TensorRT and no builder code loaded."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator

from ..schema import StrictModel


class BuildOptions(StrictModel):
    """Also the `build:` block of a fallback link that rebuilds its engine from the ONNX."""

    runtime: str = Field(default="auto", description="builder module: auto (tensorrt, else tensorrt_rtx), "
                         "tensorrt, tensorrt_rtx, or a module implementing TensorRT's builder API")
    device: Literal["gpu", "dla0", "dla1"] = "gpu"
    gpu_fallback: bool = Field(default=False, description="DLA: layers the DLA cannot run go to the GPU")
    precision: Literal["auto", "fp32", "fp16", "int8", "best"] = Field(
        default="auto", description="TensorRT 10.x builder flags; 11.x and RTX take precision from the ONNX")
    shapes: str | None = Field(default=None, description="dynamic batch: MIN,OPT,MAX (e.g. 1,4,8) or "
                               "NAME:MINxCxHxW,OPTx...,MAXx... per input; several inputs separated by ';'")
    timing_cache: Path | None = Field(default=None, description="read before and written after the build")
    workspace_mib: int | None = Field(default=None, ge=1, description="builder workspace limit")
    version_compatible: bool = Field(default=False, description="TensorRT 10.x: an engine the lean runtime of a "
                                     "newer version of the same major can load")
    hardware_compatibility: Literal["none", "ampere_plus", "same_compute_capability"] = "none"
    compute_capabilities: list[str] | None = Field(
        default=None, description="TensorRT-RTX: build for these (e.g. [8.6, 8.9, 12.0]) or [current]; "
        "default: the builder's own list")

    @field_validator("compute_capabilities")
    @classmethod
    def _cc_names(cls, value: list[str] | None) -> list[str] | None:
        for cc in value or []:
            if cc != "current" and not re.fullmatch(r"\d{1,2}\.\d", cc):
                raise ValueError(f"compute capability {cc!r}: use MAJOR.MINOR (8.6, 12.0) or current")
        return value

    @field_validator("shapes")
    @classmethod
    def _shapes_parse(cls, value: str | None) -> str | None:
        if value is not None:
            parse_shapes(value)
        return value


# -- pure helpers (unit-tested without TensorRT) -----------------------------------------------------------
def parse_shapes(text: str) -> dict[str | None, tuple[tuple[int, ...], ...]] | tuple[int, int, int]:
    """`1,4,8` -> (1, 4, 8) (batch only); `images:1x3x416x416,4x3x416x416,8x3x416x416` -> {name: (min, opt,
    max)}. Raises ValueError saying what is expected."""
    text = text.strip()
    if ":" not in text:
        parts = [p.strip() for p in text.split(",")]
        if len(parts) != 3 or not all(p.isdigit() and int(p) > 0 for p in parts):
            raise ValueError(f"shapes {text!r}: expected MIN,OPT,MAX batch sizes (e.g. 1,4,8) or "
                             "NAME:MINxCxHxW,OPTxCxHxW,MAXxCxHxW")
        lo, opt, hi = (int(p) for p in parts)
        if not lo <= opt <= hi:
            raise ValueError(f"shapes {text!r}: need MIN <= OPT <= MAX")
        return lo, opt, hi
    out: dict[str | None, tuple[tuple[int, ...], ...]] = {}
    for item in text.split(";"):
        name, _, dims = item.strip().partition(":")
        triple = []
        for shape in dims.split(","):
            try:
                triple.append(tuple(int(d) for d in shape.strip().split("x")))
            except ValueError:
                raise ValueError(f"shapes {item!r}: {shape!r} is not a shape like 4x3x416x416") from None
        if len(triple) != 3 or len({len(s) for s in triple}) != 1:
            raise ValueError(f"shapes {item!r}: expected NAME:MIN,OPT,MAX with three shapes of one rank")
        if not all(a <= b <= c for a, b, c in zip(*triple)):
            raise ValueError(f"shapes {item!r}: need MIN <= OPT <= MAX in every dimension")
        out[name.strip()] = tuple(triple)
    return out
