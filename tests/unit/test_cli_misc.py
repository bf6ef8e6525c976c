"""CLI pieces that need no model: doctor, models list, outputs."""

from __future__ import annotations

import json
import subprocess
import sys

from edgeinfer.cli import main
from edgeinfer.outputs import create_output
from edgeinfer.outputs.schema import JsonlOutputConfig
from edgeinfer.runtime import RuntimeContext


def test_doctor_reports_each_capability(capsys):
    assert main(["doctor", "--json"]) == 0
    found = json.loads(capsys.readouterr().out)
    for key in ("python", "onnxruntime", "opencv", "tensorrt", "gpu", "dla", "ros2", "zmq", "triton", "tracking",
                "http"):
        assert key in found and isinstance(found[key]["ok"], bool) and found[key]["detail"]
    assert found["onnxruntime"]["ok"] and "CPUExecutionProvider" in found["onnxruntime"]["detail"]


def test_bare_import_pulls_no_optional_package():
    code = ("import sys, edgeinfer.pipeline, edgeinfer.cli, edgeinfer.config, edgeinfer.statuscli; "
            "heavy = {'tensorrt', 'tensorrt_lean', 'rclpy', 'tritonclient', 'cuda', 'zmq', 'aiohttp', "
            "'prometheus_client'} & set(sys.modules); "
            "print(sorted(heavy))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_models_list_names_the_demo(capsys):
    assert main(["models", "list"]) == 0
    out = capsys.readouterr().out
    assert "yolov3-tiny" in out and "bikes" in out


def test_jsonl_file_output_appends_one_line_per_record(tmp_path):
    out = create_output(JsonlOutputConfig(path=str(tmp_path / "sub" / "o.jsonl"), heartbeat=True))
    out.open(RuntimeContext())
    out.write_record({"type": "detections", "frame": 0})
    out.heartbeat({"type": "heartbeat", "state": "OK"})
    out.close()
    lines = (tmp_path / "sub" / "o.jsonl").read_text().splitlines()
    assert [json.loads(x)["type"] for x in lines] == ["detections", "heartbeat"]
    assert out.id == "jsonl" and out.published == 2
