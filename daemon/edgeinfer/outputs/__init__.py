"""Outputs: `schema.py` holds every output's config model, one module per output holds its code.

`OUTPUT_TYPES` maps each `type:` key to its implementation, imported on first use. A new output is one module
(its class, subclassing `Output` or `RecordOutput`) plus its config model in `schema.py` and one line here.
"""

from __future__ import annotations

from ..plugins import Registry
from .base import Output, OutputError, RecordOutput
from .schema import OutputConfigBase

OUTPUT_TYPES: Registry[Output] = Registry("output", {
    "jsonl": "edgeinfer.outputs.jsonl:JsonlOutput",
    "zmq": "edgeinfer.transports.zmq.output:ZmqOutput",
    "ros2": "edgeinfer.transports.ros.output:Ros2Output",
    "http": "edgeinfer.outputs.http:HttpOutput",
    "annotated": "edgeinfer.outputs.annotated:AnnotatedOutput",
})


def create_output(config: OutputConfigBase) -> Output:
    output_type = config.type  # type: ignore[attr-defined]
    return OUTPUT_TYPES[output_type](config, config.id or output_type)


__all__ = ["OUTPUT_TYPES", "Output", "OutputConfigBase", "OutputError", "RecordOutput", "create_output"]
