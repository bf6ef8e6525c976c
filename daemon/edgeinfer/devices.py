"""The `device:` of a model: where it runs. Parsing is pure; whether the box has the device is asked lazily."""

from __future__ import annotations

import re
from dataclasses import dataclass

from .cuda import runtime
from .lazy import MissingDependency

DEVICE_PATTERN = r"^(auto|cpu|gpu|gpu:[0-9]{1,2}|dla[01])$"
DEVICE_HELP = "auto, cpu, gpu, gpu:N (CUDA device N), dla0 or dla1 (a DLA core; TensorRT engines only)"


@dataclass(frozen=True)
class Device:
    processor: str  # auto | cpu | gpu | dla
    index: int = 0  # CUDA device for gpu; DLA core for dla (which runs on CUDA device 0)

    @property
    def cuda_index(self) -> int:
        return self.index if self.processor == "gpu" else 0

    def __str__(self) -> str:
        if self.processor == "dla":
            return f"dla{self.index}"
        if self.processor == "gpu":
            return f"gpu:{self.index}"
        return self.processor


def parse_device(text: str) -> Device:
    if not re.match(DEVICE_PATTERN, text or ""):
        raise ValueError(f"unknown device {text!r}; use {DEVICE_HELP}")
    if text.startswith("dla"):
        return Device("dla", int(text[3:]))
    if text.startswith("gpu"):
        return Device("gpu", int(text[4:]) if ":" in text else 0)
    return Device(text)


def cuda_device_problem(device: Device) -> str | None:
    """Why this box cannot run on `device` (None when it can, or when the device is the CPU)."""
    if device.processor in ("auto", "cpu"):
        return None
    try:
        count = runtime.device_count()
    except MissingDependency as exc:
        return f"device {device} needs CUDA: {exc}"
    if count == 0:
        return f"device {device}: this box has no CUDA GPU (or no NVIDIA driver)"
    if device.cuda_index >= count:
        return f"device {device}: this box has {count} CUDA GPU(s) (gpu:0..gpu:{count - 1})"
    return None
