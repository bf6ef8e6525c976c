"""The engine manifest round-trips, and the pre-flight names every difference between an engine and a host.

Host facts are built by hand here (CI has no GPU and no TensorRT): `HostFacts` is exactly what
`compat.host_facts()` gathers on a real box. The engine files are plain bytes: the pre-flight reads the
manifest and the file's size and sha256, never the plan's contents."""

from __future__ import annotations

import json

import pytest

from edgeinfer.artifacts import compat
from edgeinfer.artifacts.compat import HostFacts
from edgeinfer.artifacts.manifest import Manifest, ManifestError, Profile, TensorInfo, manifest_path, sha256_file
from edgeinfer.devices import parse_device

H200 = HostFacts({"rtx": "1.7.1.116"}, "NVIDIA H200", (9, 0), 1, 0)
RTX4090 = HostFacts({"rtx": "1.7.1.116"}, "NVIDIA GeForce RTX 4090", (8, 9), 1, 0)
ORIN = HostFacts({"full": "10.3.0.30"}, "Orin", (8, 7), 1, 2)
NO_GPU = HostFacts({"full": "10.3.0.30"}, None, None, 0, 0)


def make_engine(tmp_path, name="m.engine", **overrides) -> tuple:
    engine = tmp_path / name
    engine.write_bytes(b"plan bytes " + name.encode())
    fields = dict(
        flavour="full", tensorrt_version="10.3.0.30", runtime_module="tensorrt", gpu_name="Orin",
        compute_capability="8.7", dla_core=None, precision="fp16", onnx_sha256="ab" * 32,
        engine_sha256=sha256_file(engine), engine_bytes=engine.stat().st_size,
        io=[TensorInfo("images", "input", [-1, 3, 416, 416], "float32"),
            TensorInfo("detections", "output", [-1, 2535, 85], "float32")],
        profiles=[Profile("images", [1, 3, 416, 416], [4, 3, 416, 416], [8, 3, 416, 416])],
        build_options={"workspace_mib": 1024, "precision": "fp16"}, onnx_path="m.onnx",
    )
    fields.update(overrides)
    m = Manifest(**fields)
    m.write(engine)
    return engine, m


def test_manifest_round_trip_keeps_every_field(tmp_path):
    engine, m = make_engine(tmp_path, compute_capabilities=["8.0", "8.6", "12.0"], flavour="rtx",
                            dla_layers={"dla": 40, "gpu": 3}, version_compatible=True)
    assert manifest_path(engine).name == "m.engine.manifest.json"
    back = Manifest.read(engine)
    assert back == m
    assert json.loads(manifest_path(engine).read_text())["io"][0]["shape"] == [-1, 3, 416, 416]
    text = "\n".join(back.summary_lines())
    assert "rtx 10.3.0.30" in text and "8.0 8.6 12.0" in text and "40 on the DLA, 3 fell back" in text


@pytest.mark.parametrize("edit, message", [
    (lambda d: d.pop("engine_sha256"), "missing key.*engine_sha256"),
    (lambda d: d.update(flavour="turbo"), "flavour is 'turbo'; allowed: full, lean, rtx"),
    (lambda d: d.update(format="other/9"), "format is 'other/9'"),
    (lambda d: d.update(colour="red"), "unknown key.*colour"),
])
def test_bad_manifests_name_the_key(tmp_path, edit, message):
    engine, m = make_engine(tmp_path)
    data = m.to_dict()
    edit(data)
    manifest_path(engine).write_text(json.dumps(data))
    with pytest.raises(ManifestError, match=message):
        Manifest.read(engine)


def test_rtx_engine_on_the_h200_names_compute_capability_9_0(tmp_path):
    # the real case: TensorRT-RTX 1.7.1 builds for these and refuses the H200
    engine, _ = make_engine(tmp_path, flavour="rtx", tensorrt_version="1.7.1.116", runtime_module="tensorrt_rtx",
                            gpu_name="NVIDIA H200", compute_capability="9.0",
                            compute_capabilities=["8.0", "8.6", "8.9", "12.0", "12.1"])
    diffs = compat.preflight(engine, H200)
    assert [d.key for d in diffs] == ["compute_capability"]
    assert compat.verdict(diffs) == ("cannot run here: compute capability 9.0 (NVIDIA H200), engine supports "
                                     "8.0 8.6 8.9 12.0 12.1")
    assert compat.preflight(engine, RTX4090) == []
    assert compat.verdict([]) == "can run here"


def test_greater_than_token_admits_newer_gpus(tmp_path):
    engine, _ = make_engine(tmp_path, flavour="rtx", tensorrt_version="1.7.1", compute_capabilities=["8.9", ">12.0"])
    assert compat.preflight(engine, HostFacts({"rtx": "1.7.1"}, "future", (13, 0), 1)) == []
    assert compat.fatal(compat.preflight(engine, H200))


def test_full_tensorrt_engine_runs_only_on_its_build_compute_capability(tmp_path):
    engine, _ = make_engine(tmp_path)
    assert compat.preflight(engine, ORIN) == []
    other = HostFacts({"full": "10.3.0.30"}, "NVIDIA RTX A2000", (8, 6), 1)
    assert "compute capability 8.6 (NVIDIA RTX A2000), engine supports 8.7 only" in compat.verdict(
        compat.preflight(engine, other))
    engine2, _ = make_engine(tmp_path, name="hc.engine", hardware_compatibility="ampere_plus")
    assert compat.preflight(engine2, other) == []
    turing = HostFacts({"full": "10.3.0.30"}, "T4", (7, 5), 1)
    assert "8.0 and newer" in compat.verdict(compat.preflight(engine2, turing))


def test_same_compute_capability_other_gpu_is_a_warning(tmp_path):
    engine, _ = make_engine(tmp_path, gpu_name="Jetson AGX Orin", compute_capability="8.7")
    diffs = compat.preflight(engine, HostFacts({"full": "10.3.0.30"}, "Jetson Orin NX", (8, 7), 1))
    assert [(d.key, d.fatal) for d in diffs] == [("gpu", False)]
    assert compat.verdict(diffs).startswith("can run here (warning: built on Jetson AGX Orin, this GPU is Jetson")


def test_tensorrt_version_must_match_unless_version_compatible(tmp_path):
    engine, _ = make_engine(tmp_path)  # 10.3.0.30
    upgraded = HostFacts({"full": "10.7.0.23"}, "Orin", (8, 7), 1, 2)
    v = compat.verdict(compat.preflight(engine, upgraded))
    assert "engine built with TensorRT 10.3.0.30, this host has TensorRT 10.7.0.23" in v
    assert "rebuild it here with `edgeinfer build`" in v
    assert compat.preflight(engine, HostFacts({"full": "10.3.0.26"}, "Orin", (8, 7), 1)) == []  # same x.y.z
    vc, _ = make_engine(tmp_path, name="vc.engine", version_compatible=True)
    assert compat.preflight(vc, upgraded) == []
    assert compat.preflight(vc, HostFacts({"lean": "10.9.0"}, "Orin", (8, 7), 1)) == []
    older = compat.verdict(compat.preflight(vc, HostFacts({"lean": "10.2.0"}, "Orin", (8, 7), 1)))
    assert "this host has TensorRT lean runtime 10.2.0 (a version-compatible engine runs on the same major" in older
    assert compat.fatal(compat.preflight(vc, HostFacts({"lean": "11.4.0"}, "Orin", (8, 7), 1)))


def test_flavour_rules(tmp_path):
    engine, _ = make_engine(tmp_path)
    lean_only = HostFacts({"lean": "10.3.0.30"}, "Orin", (8, 7), 1)
    v = compat.verdict(compat.preflight(engine, lean_only))
    assert "needs TensorRT; this host has TensorRT lean runtime 10.3.0.30 (the lean runtime loads only engines " \
           "built with --version-compatible)" in v
    rtx, _ = make_engine(tmp_path, name="rtx.engine", flavour="rtx", tensorrt_version="1.7.1",
                         compute_capabilities=["8.7"])
    assert "engine built with TensorRT-RTX 1.7.1 needs TensorRT-RTX; this host has TensorRT 10.3.0.30" in \
        compat.verdict(compat.preflight(rtx, ORIN))
    nothing = HostFacts({}, "Orin", (8, 7), 1)
    assert "no TensorRT runtime is installed; the engine needs TensorRT 10.3.0.30 (module tensorrt)" in \
        compat.verdict(compat.preflight(engine, nothing))


def test_no_gpu(tmp_path):
    engine, _ = make_engine(tmp_path)
    assert "this host has no CUDA GPU; the engine was built for Orin (compute capability 8.7)" in \
        compat.verdict(compat.preflight(engine, NO_GPU))


def test_dla_rules(tmp_path):
    engine, _ = make_engine(tmp_path, dla_core=0, gpu_fallback=True)
    assert compat.preflight(engine, ORIN, parse_device("dla0")) == []
    assert compat.preflight(engine, ORIN, parse_device("dla1")) == []  # either core runs a DLA engine
    desktop = HostFacts({"full": "10.3.0.30"}, "Orin", (8, 7), 1, 0)
    assert "engine built for DLA core 0; this host has no DLA (DLA cores exist on Jetson" in compat.verdict(
        compat.preflight(engine, desktop, parse_device("dla0")))
    one_core = HostFacts({"full": "10.3.0.30"}, "Orin", (8, 7), 1, 1)
    assert "device dla1; this host has 1 DLA core(s)" in compat.verdict(
        compat.preflight(engine, one_core, parse_device("dla1")))
    assert "set device: dla0 or dla1" in compat.verdict(compat.preflight(engine, ORIN, parse_device("gpu")))
    gpu_engine, _ = make_engine(tmp_path, name="g.engine")
    assert "build it with `edgeinfer build --device dla0`" in compat.verdict(
        compat.preflight(gpu_engine, ORIN, parse_device("dla0")))


def test_several_differences_are_all_named(tmp_path):
    engine, _ = make_engine(tmp_path, dla_core=1)
    diffs = compat.preflight(engine, HostFacts({"full": "10.7.0"}, "RTX 3060", (8, 6), 1, 0))
    assert [d.key for d in diffs] == ["tensorrt_version", "compute_capability", "dla"]
    v = compat.verdict(diffs)
    assert v.count("; ") >= 2 and v.startswith("cannot run here: engine built with TensorRT 10.3.0.30")


def test_missing_stale_or_broken_manifest_is_a_warning_and_missing_engine_an_error(tmp_path):
    bare = tmp_path / "bare.engine"
    bare.write_bytes(b"x")
    [d] = compat.preflight(bare, ORIN)
    assert not d.fatal and "no manifest beside" in d.message and "TensorRT will decide" in d.message
    engine, _ = make_engine(tmp_path)
    engine.write_bytes(b"a different engine copied over")
    [d] = compat.preflight(engine, ORIN)
    assert not d.fatal and "describes another file" in d.message
    manifest_path(engine).write_text("{ nope")
    [d] = compat.preflight(engine, ORIN)
    assert not d.fatal and "not valid JSON: line 1" in d.message
    [d] = compat.preflight(tmp_path / "gone.engine", ORIN)
    assert d.fatal and "cannot read engine" in d.message
    (tmp_path / "empty.engine").write_bytes(b"")
    assert "is empty" in compat.verdict(compat.preflight(tmp_path / "empty.engine", ORIN))


def test_host_facts_here_and_flavour_names():
    import types

    facts = compat.host_facts()  # whatever this box has; CI: no GPU
    assert isinstance(facts.runtimes, dict)
    if facts.gpu_count == 0:
        assert facts.compute_capability is None and facts.dla_cores == 0
    assert compat.flavour_of(types.ModuleType("tensorrt_rtx_bindings")) == "rtx"
    assert compat.flavour_of(types.ModuleType("tensorrt_lean")) == "lean"
    assert compat.flavour_of(types.ModuleType("tensorrt")) == "full"
