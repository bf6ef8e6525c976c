"""`edgeinfer bench` on real ONNX Runtime sessions: the numbers it reports are consistent with each other and
the outputs are well formed (speed itself is compared in benchmarks/bench_engines.py, not asserted here)."""

from __future__ import annotations

import json

import numpy as np

from edgeinfer import cli
from edgeinfer.engines.bench import format_table, percentiles, run_bench
from support.tiny_models import constant_detector

ROWS = np.array([[10, 10, 4, 4, 0.9, 0.2, 0.7]], dtype=np.float32)


def test_percentiles():
    p = percentiles([float(v) for v in range(1, 101)])
    assert p["min"] == 1 and p["max"] == 100 and p["p50"] == 50.5 and abs(p["p90"] - 90.1) < 1e-9
    assert abs(p["p99"] - 99.01) < 1e-9
    assert percentiles([]) is None


def test_run_bench_reports_consistent_numbers(tmp_path):
    model = constant_detector(tmp_path / "m.onnx", ROWS, size=32)
    result = run_bench(model, batch=2, duration=0.3)
    lat = result["latency_ms"]
    assert result["iterations"] >= 1 and result["batch"] == 2
    assert lat["min"] <= lat["p50"] <= lat["p90"] <= lat["p99"] <= lat["max"]
    # images/s over the run = runs x batch / seconds, by construction of both
    assert abs(result["throughput_ips"] - result["iterations"] * 2 / result["duration_s"]) < 0.05 * \
        result["throughput_ips"] + 1
    assert result["device_ms"] is None and result["host_ms"] is None
    assert result["split"].startswith("synchronous backend")
    assert result["backend"].startswith("onnxruntime[")
    table = format_table(result)
    assert "p50" in table and "latency" in table and "images/s (sequential)" in table


def test_cli_bench_table_json_and_errors(tmp_path, capsys):
    model = constant_detector(tmp_path / "m.onnx", ROWS, size=32)
    out_json = tmp_path / "bench.json"
    assert cli.main(["bench", str(model), "--duration", "0.2", "--json", str(out_json)]) == 0
    assert "throughput" in capsys.readouterr().out
    assert json.loads(out_json.read_text())["latency_ms"]["p99"] > 0
    assert cli.main(["bench", str(model), "--duration", "0.2", "--json", "-"]) == 0
    assert json.loads(capsys.readouterr().out)["iterations"] >= 1
    assert cli.main(["bench", str(tmp_path / "none.onnx"), "--duration", "0.1"]) == 1
    assert "ONNX file not found" in capsys.readouterr().err
    assert cli.main(["bench", str(model), "--backend-options", "{bad"]) == 2
    assert "bad option" in capsys.readouterr().err
