"""Serve an ONNX model through a real Triton Inference Server (the `tritonserver` bundled in nvidia-pytriton).

Run by the Triton venv's Python (`make triton-server`; it pins numpy<2, so it is kept apart from the product's
venv), never imported by edgeinfer. The bundled server has only Triton's Python backend, so pytriton binds a
callable that runs the ONNX file with ONNX Runtime on the CPU; the server in front of it is the real one (gRPC,
HTTP, health, metadata, dynamic batching).

    .venv-triton/bin/python tests/support/triton_serve_onnx.py MODEL.onnx --name yolo --grpc-port 8001 ...

The server's Python backend stub loads libpython: with a pyenv/self-built Python it must find that Python's own
lib directory first (FACTS.md), so this script re-executes itself once with LD_LIBRARY_PATH set.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import sysconfig


def _ensure_libpython_path() -> None:
    libdir = sysconfig.get_config_var("LIBDIR") or ""
    current = os.environ.get("LD_LIBRARY_PATH", "")
    if libdir and libdir not in current.split(":"):
        os.environ["LD_LIBRARY_PATH"] = f"{libdir}:{current}" if current else libdir
        os.execv(sys.executable, [sys.executable, *sys.argv])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("onnx")
    parser.add_argument("--name", default="yolo")
    parser.add_argument("--grpc-port", type=int, required=True)
    parser.add_argument("--http-port", type=int, required=True)
    parser.add_argument("--metrics-port", type=int, required=True)
    parser.add_argument("--max-batch", type=int, default=8)
    parser.add_argument("--queue-delay-us", type=int, default=0, help="dynamic batcher max_queue_delay")
    parser.add_argument("--threads", type=int, default=0, help="ONNX Runtime intra-op threads (0: default)")
    parser.add_argument("--instances", type=int, default=1,
                        help="model instances (Triton's instance_group count): requests served at once")
    args = parser.parse_args()
    _ensure_libpython_path()

    import numpy as np
    import onnxruntime as ort
    from pytriton.decorators import batch
    from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor
    from pytriton.triton import Triton, TritonConfig, TritonSecurityConfig

    logging.basicConfig(level=logging.WARNING, format="triton-serve: %(levelname)s %(message)s")
    so = ort.SessionOptions()
    if args.threads:
        so.intra_op_num_threads = args.threads
    sessions = [ort.InferenceSession(args.onnx, sess_options=so, providers=["CPUExecutionProvider"])
                for _ in range(args.instances)]
    ins, outs = sessions[0].get_inputs(), sessions[0].get_outputs()
    types = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(uint8)": np.uint8}
    out_names = [o.name for o in outs]

    def instance(session):
        @batch
        def infer(**inputs):
            results = session.run(out_names, {i.name: inputs[i.name] for i in ins})
            return dict(zip(out_names, results))
        return infer

    infer = [instance(s) for s in sessions]  # pytriton: one callable per model instance

    def spec(node) -> Tensor:  # the batch dimension is Triton's (max_batch_size), not part of the shape
        return Tensor(name=node.name, dtype=types[node.type],
                      shape=tuple(d if isinstance(d, int) else -1 for d in node.shape[1:]))

    config = TritonConfig(grpc_address="127.0.0.1", grpc_port=args.grpc_port, http_address="127.0.0.1",
                          http_port=args.http_port, metrics_address="127.0.0.1", metrics_port=args.metrics_port,
                          allow_metrics=False, exit_timeout_secs=2, log_verbose=0)
    # pytriton puts shared memory and statistics behind a generated token by default; a stock tritonserver
    # leaves them open, and the triton backend registers shared memory (same host) and the benchmarks read the
    # server's statistics: open those two, keep the repository API restricted as before
    security = TritonSecurityConfig(restricted_endpoints=["model-repository", "trace", "logging"])
    with Triton(config=config, security_config=security) as triton:
        triton.bind(model_name=args.name, infer_func=infer, inputs=[spec(i) for i in ins],
                    outputs=[spec(o) for o in outs],
                    config=ModelConfig(max_batch_size=args.max_batch,
                                       batcher=DynamicBatcher(max_queue_delay_microseconds=args.queue_delay_us)),
                    strict=False)
        print(f"serving '{args.name}' on grpc 127.0.0.1:{args.grpc_port} http 127.0.0.1:{args.http_port}",
              flush=True)
        triton.serve()


if __name__ == "__main__":
    main()
