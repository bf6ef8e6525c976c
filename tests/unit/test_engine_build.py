"""`edgeinfer build` and `inspect` through a fake of TensorRT's builder (tests/support/fake_trt_builder.py says why:
no TensorRT builder can be installed here). What is real: the ONNX parsing, the option handling, precision per
TensorRT generation, shapes, the timing cache file, the progress display, DLA placement counting, the manifest
and the pre-flight verdict. What the fake stands for is TensorRT's own build and load calls."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest

from edgeinfer import cli
from edgeinfer.artifacts import compat
from edgeinfer.artifacts.compat import HostFacts
from edgeinfer.artifacts.manifest import Manifest
from edgeinfer.engines.build import BuildError, BuildOptions, build_engine, parse_shapes, precision_plan
from support.fake_trt_builder import install, make_module
from support.tiny_models import constant_detector

ROWS = np.array([[10, 10, 4, 4, 0.9, 0.2, 0.7]], dtype=np.float32)
H200 = HostFacts({"rtx": "1.7.1.116"}, "NVIDIA H200", (9, 0), 1)


@pytest.fixture
def onnx_file(tmp_path):
    return constant_detector(tmp_path / "det.onnx", ROWS, size=32)


def test_parse_shapes():
    assert parse_shapes("1,4,8") == (1, 4, 8)
    assert parse_shapes("images:1x3x32x32,4x3x32x32,8x3x32x32") == {
        "images": ((1, 3, 32, 32), (4, 3, 32, 32), (8, 3, 32, 32))}
    for bad, message in [("1,4", "expected MIN,OPT,MAX"), ("8,4,1", "MIN <= OPT <= MAX"),
                         ("x:1x3,2x3", "three shapes"), ("x:1x3,2xq,3x3", "'2xq' is not a shape"),
                         ("x:4x3,2x3,8x3", "MIN <= OPT <= MAX")]:
        with pytest.raises(ValueError, match=message):
            parse_shapes(bad)
    with pytest.raises(ValueError, match="shapes"):
        BuildOptions(shapes="1,2")


def test_precision_per_tensorrt_generation():
    trt10 = make_module("10.3.0.30")
    assert precision_plan(trt10, "fp16", dla=False)[:2] == (["FP16"], "fp16")
    assert precision_plan(trt10, "best", dla=False)[0] == ["FP16", "INT8"]
    assert precision_plan(trt10, "auto", dla=False)[:2] == ([], "fp32")
    flags, precision, notes = precision_plan(trt10, "auto", dla=True)
    assert (flags, precision) == (["FP16"], "fp16") and "DLA runs fp16 or int8" in notes[0]
    with pytest.raises(BuildError, match="the DLA runs fp16 or int8 only"):
        precision_plan(trt10, "fp32", dla=True)
    assert "Q/DQ" in precision_plan(trt10, "int8", dla=False)[2][0]
    for strong in (make_module("1.7.1.116", rtx=True), make_module("11.4.0")):
        assert precision_plan(strong, "auto", dla=False)[1] == "strongly typed (from the ONNX)"
        with pytest.raises(BuildError, match="strongly typed networks: precision comes from the ONNX's tensor "
                                             "types.*--precision fp16 cannot be applied.*ModelOpt AutoCast"):
            precision_plan(strong, "fp16", dla=False)


def test_tensorrt10_build_writes_engine_manifest_cache_and_progress(tmp_path, onnx_file):
    runtime = install(make_module("10.3.0.30"))
    cache = tmp_path / "timing.cache"
    progress = io.StringIO()
    options = BuildOptions(runtime=runtime, precision="fp16", shapes="1,4,8", workspace_mib=256, timing_cache=cache)
    result = build_engine(onnx_file, tmp_path / "det.engine", options, progress=progress)
    plan = json.loads((tmp_path / "det.engine").read_bytes())
    assert plan["flags"] == ["FP16"] and plan["pool"] == {"WORKSPACE": 256 << 20} and plan["network_flags"] == 0
    assert plan["profiles"] == [{"images": [[1, 3, 32, 32], [4, 3, 32, 32], [8, 3, 32, 32]]}]
    assert cache.read_bytes() == b"+timed"  # written back after the build
    assert "[build] Building engine (2 steps)" in progress.getvalue()
    assert "[build] Building engine done in" in progress.getvalue()
    m = Manifest.read(tmp_path / "det.engine")
    assert m == result.manifest and result.loads_here
    assert (m.flavour, m.tensorrt_version, m.precision, m.dla_core) == ("full", "10.3.0.30", "fp16", None)
    assert [(t.name, t.mode, t.shape, t.dtype) for t in m.io] == [
        ("images", "input", [-1, 3, 32, 32], "float32"), ("detections", "output", [-1, 1, 7], "float32")]
    assert m.profiles[0].max == [8, 3, 32, 32]
    assert m.build_options == {"runtime": runtime, "precision": "fp16", "shapes": "1,4,8", "workspace_mib": 256,
                               "timing_cache": str(cache)}
    from edgeinfer.artifacts.manifest import sha256_file
    assert m.onnx_sha256 == sha256_file(onnx_file) and m.engine_sha256 == sha256_file(tmp_path / "det.engine")


def test_dynamic_input_without_shapes_and_bad_onnx_are_named(tmp_path, onnx_file):
    runtime = install(make_module("10.3.0.30"))
    batch_only = build_engine(onnx_file, tmp_path / "b1.engine", BuildOptions(runtime=runtime))
    assert batch_only.manifest.profiles[0].max == [1, 3, 32, 32]
    assert "dynamic batch and no --shapes: built for batch 1 only" in batch_only.notes[0]
    from onnx import TensorProto, helper
    hw = helper.make_graph([helper.make_node("Identity", ["images"], ["out"])], "hw",
                           [helper.make_tensor_value_info("images", TensorProto.FLOAT, ["N", 3, "H", "W"])],
                           [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["N", 3, "H", "W"])])
    import onnx
    onnx.save(helper.make_model(hw), str(tmp_path / "hw.onnx"))
    with pytest.raises(BuildError, match=r"dynamic input\(s\) images \[-1, 3, -1, -1\]: give --shapes"):
        build_engine(tmp_path / "hw.onnx", tmp_path / "x.engine", BuildOptions(runtime=runtime))
    with pytest.raises(BuildError, match=r"input images \[-1, 3, -1, -1\] is dynamic beyond the batch"):
        build_engine(tmp_path / "hw.onnx", tmp_path / "x.engine", BuildOptions(runtime=runtime, shapes="1,2,4"))
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"garbage")
    with pytest.raises(BuildError, match="ONNX parser rejected .*bad.onnx: failed to parse ONNX"):
        build_engine(bad, tmp_path / "x.engine", BuildOptions(runtime=runtime))
    with pytest.raises(BuildError, match="ONNX file not found"):
        build_engine(tmp_path / "none.onnx", tmp_path / "x.engine", BuildOptions(runtime=runtime))
    assert not (tmp_path / "x.engine").exists()


def test_dla_build_reports_placement_from_the_inspector(tmp_path, onnx_file):
    runtime = install(make_module("10.3.0.30", dla_cores=2, name="fake_trt_orin"))
    options = BuildOptions(runtime=runtime, device="dla1", gpu_fallback=True, shapes="1,1,1")
    result = build_engine(onnx_file, tmp_path / "dla.engine", options)
    plan = json.loads((tmp_path / "dla.engine").read_bytes())
    assert plan["device"] == "DLA" and plan["dla_core"] == 1 and plan["verbosity"] == "DETAILED"
    assert plan["flags"] == ["FP16", "GPU_FALLBACK"]
    layers = plan["layers"]
    assert result.manifest.dla_core == 1 and result.manifest.gpu_fallback
    # the tiny model has one ReduceMax, which the fake's DLA cannot run
    assert result.manifest.dla_layers == {"dla": len(layers) - 1, "gpu": 1}
    assert "1 layer(s) the DLA cannot run go to the GPU: ReduceMax_4" in result.notes
    placed = json.loads((tmp_path / "dla.engine.layers.json").read_text())["Layers"]
    assert [x["LayerType"] == "DLA" for x in placed].count(False) == 1
    none = install(make_module("10.3.0.30", dla_cores=0, name="fake_trt_desktop"))
    with pytest.raises(BuildError, match=r"--device dla0: this box has 0 DLA core\(s\)"):
        build_engine(onnx_file, tmp_path / "x.engine", BuildOptions(runtime=none, device="dla0", shapes="1,1,1"))


def test_rtx_build_records_the_compute_capabilities_tensorrt_names(tmp_path, onnx_file):
    runtime = install(make_module("1.7.1.116", rtx=True))
    result = build_engine(onnx_file, tmp_path / "rtx.engine", BuildOptions(runtime=runtime, shapes="1,1,1"))
    plan = json.loads((tmp_path / "rtx.engine").read_bytes())
    assert plan["network_flags"] == 1 << 5 and plan["flags"] == []  # strongly typed, no precision flags
    m = result.manifest
    assert (m.flavour, m.precision) == ("rtx", "strongly typed (from the ONNX)")
    assert m.compute_capabilities == ["8.0", "8.6", "8.9", "12.0", "12.1", ">12.0"]
    assert not result.loads_here and "compute capability 9.0" in result.load_error
    assert compat.verdict(compat.preflight(tmp_path / "rtx.engine", H200)).startswith(
        "cannot run here: compute capability 9.0 (NVIDIA H200), engine supports 8.0 8.6 8.9 12.0 12.1")
    chosen = build_engine(onnx_file, tmp_path / "two.engine", BuildOptions(
        runtime=runtime, shapes="1,1,1", compute_capabilities=["8.9", "12.0"]))
    assert json.loads((tmp_path / "two.engine").read_bytes())["ccs"] == ["SM89", "SM120"]
    assert chosen.manifest.compute_capabilities == ["8.9", "12.0"]
    with pytest.raises(BuildError, match="capability 7.0: this TensorRT-RTX builds for 7.5, 8.0, .* or current"):
        build_engine(onnx_file, tmp_path / "x.engine", BuildOptions(runtime=runtime, shapes="1,1,1",
                                                                    compute_capabilities=["7.0"]))
    with pytest.raises(BuildError, match="TensorRT-RTX has no DLA"):
        build_engine(onnx_file, tmp_path / "x.engine", BuildOptions(runtime=runtime, device="dla0"))


def test_cli_build_then_inspect(tmp_path, onnx_file, capsys):
    runtime = install(make_module("10.3.0.30"))
    engine = tmp_path / "det.engine"
    assert cli.main(["build", str(onnx_file), "-o", str(engine), "--runtime", runtime, "--shapes", "1,2,4",
                     "--precision", "fp16"]) == 0
    out = capsys.readouterr().out
    assert f"built {engine}" in out and "precision    fp16" in out and "verdict for this host:" in out
    code = cli.main(["inspect", str(engine)])
    out = capsys.readouterr().out
    facts = compat.host_facts()
    assert "TensorRT     full 10.3.0.30" in out and "profile      images min [1, 3, 32, 32]" in out
    if facts.gpu_count == 0:  # CI
        assert code == 1 and "cannot run here: " in out and "this host has no CUDA GPU; the engine was built" in out
    code = cli.main(["inspect", str(engine), "--json"])
    data = json.loads(capsys.readouterr().out)
    assert data["manifest"]["tensorrt_version"] == "10.3.0.30" and data["verdict"].startswith(
        "cannot run here" if facts.gpu_count == 0 else "can")


def test_cli_build_option_errors_exit_2_naming_the_option(onnx_file, capsys):
    assert cli.main(["build", str(onnx_file), "--compute-capability", "nine"]) == 2
    assert "--compute-capabilities: Value error, compute capability 'nine'" in capsys.readouterr().err
    assert cli.main(["build", str(onnx_file), "--shapes", "1,2"]) == 2
    assert "--shapes" in capsys.readouterr().err
    assert cli.main(["build", str(onnx_file), "--runtime", "no_such_trt_module"]) == 1
    assert "no TensorRT builder (no_such_trt_module) can be imported" in capsys.readouterr().err
