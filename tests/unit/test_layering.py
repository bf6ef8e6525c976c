"""The layering of the package, checked on its source (issue 16): plugins behind declared registries, config
validated without loading any implementation, no import cycle among the packages, and the core calling only
what the plugin base classes declare."""

from __future__ import annotations

import ast
import subprocess
import sys
import typing

import pytest

from edgeinfer.backends import BACKENDS
from edgeinfer.backends.schema import BACKEND_OPTIONS
from edgeinfer.config import OutputConfig, SourceConfig
from edgeinfer.decoders import DECODERS, DecoderConfig
from edgeinfer.outputs import OUTPUT_TYPES, Output
from edgeinfer.sources import SOURCE_TYPES, Source
from support.layering import PACKAGE_DIR, all_imports, package_cycles

# modules `import edgeinfer.config` may load besides the core: the plugins' config schemas, their registries
# (dotted paths) and base classes, and the light wire/security helpers the zmq schema validates with
ALLOWED_UNDER_CONFIG = {
    "edgeinfer.sources": {"edgeinfer.sources", "edgeinfer.sources.base", "edgeinfer.sources.schema"},
    "edgeinfer.outputs": {"edgeinfer.outputs", "edgeinfer.outputs.base", "edgeinfer.outputs.schema"},
    "edgeinfer.backends": {"edgeinfer.backends", "edgeinfer.backends.errors", "edgeinfer.backends.schema"},
    "edgeinfer.engines": {"edgeinfer.engines", "edgeinfer.engines.options"},
    "edgeinfer.transports": {"edgeinfer.transports", "edgeinfer.transports.ros", "edgeinfer.transports.ros.schema",
                             "edgeinfer.transports.zmq", "edgeinfer.transports.zmq.schema",
                             "edgeinfer.transports.zmq.security", "edgeinfer.transports.zmq.wire"},
}
NEVER_UNDER_CONFIG = {"edgeinfer.pipeline", "edgeinfer.service", "edgeinfer.model", "edgeinfer.cli",
                      "edgeinfer.preflight", "zmq", "rclpy", "tensorrt", "tensorrt_lean", "tritonclient",
                      "onnxruntime", "cuda.bindings"}


def test_importing_the_config_loads_no_plugin_implementation_and_no_optional_package():
    code = "import sys, edgeinfer.config; print('\\n'.join(sorted(sys.modules)))"
    loaded = set(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
                 .stdout.split())
    for package, allowed in ALLOWED_UNDER_CONFIG.items():
        extra = {m for m in loaded if (m == package or m.startswith(package + ".")) and m not in allowed}
        assert not extra, f"import edgeinfer.config loads implementation modules of {package}: {sorted(extra)}"
    assert not loaded & NEVER_UNDER_CONFIG, sorted(loaded & NEVER_UNDER_CONFIG)


def test_no_import_cycle_among_the_packages():
    # function-local imports count too: a cycle hidden inside a function is still a cycle
    assert package_cycles(all_imports()) == []


def test_function_local_imports_of_own_modules_only_where_the_cli_starts_fast():
    local = sorted({imp.module for imp in all_imports() if imp.local})
    assert local == ["edgeinfer.cli"], local


CORE_MODULES = ("pipeline.py", "service.py", "cli.py")
PLUGIN_NAMES = {"output", "source", "plugin", "backend", "decoder", "o", "s", "p"}


@pytest.mark.parametrize("name", CORE_MODULES)
def test_the_core_never_probes_a_plugin_for_undeclared_methods(name):
    tree = ast.parse((PACKAGE_DIR / name).read_text())
    probes = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in (
                "getattr", "hasattr", "isinstance") and node.args:
            target = node.args[0]
            leaf = target.attr if isinstance(target, ast.Attribute) else getattr(target, "id", "")
            if node.func.id == "hasattr" or leaf in PLUGIN_NAMES:
                probes.append(f"{name}:{node.lineno} {ast.unparse(node)}")
    assert not probes


def _union_tags(union: object) -> set[str]:
    members = typing.get_args(typing.get_args(union)[0])
    return {typing.get_args(m.model_fields["type"].annotation)[0] for m in members}


@pytest.mark.parametrize("registry, union, base", [
    (SOURCE_TYPES, SourceConfig, Source), (OUTPUT_TYPES, OutputConfig, Output)])
def test_every_config_type_has_its_implementation_registered_and_the_other_way_round(registry, union, base):
    assert _union_tags(union) == set(registry)
    for key in registry:
        assert issubclass(registry[key], base), key


def test_every_backend_and_decoder_key_resolves():
    assert set(BACKEND_OPTIONS) == set(BACKENDS)
    for key in BACKENDS:
        assert BACKENDS[key].options_model is BACKEND_OPTIONS[key]
    assert _union_tags(DecoderConfig) == set(DECODERS)


def test_an_unknown_type_key_names_the_known_ones():
    with pytest.raises(KeyError, match="unknown output type 'mqtt'; known: jsonl, zmq, ros2"):
        OUTPUT_TYPES["mqtt"]
