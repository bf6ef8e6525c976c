"""Serve a Triton model repository (e.g. examples/triton/model_repository) with the `tritonserver` binary bundled
in nvidia-pytriton, started directly: its Python backend runs the repository's model.py files and its ensemble
scheduler chains them, as a full Triton would (the bundled build has no ONNX Runtime or TensorRT backend).

Run by the Triton venv's Python (`make triton-server`), never imported by edgeinfer:

    .venv-triton/bin/python tests/support/triton_serve_repository.py REPO --onnx MODEL.onnx --workspace DIR \
        --grpc-port 8001 --http-port 8000 --metrics-port 8002 [--instances 2]

The repository is copied into the workspace and MODEL.onnx linked in as `yolo/1/model.onnx`; the server's
files are copied there with the Python backend stub of this Python (what pytriton does before it starts the same
binary). The Python backend stub embeds libpython and finds its packages through PATH (this venv's bin first),
so this script sets PATH and LD_LIBRARY_PATH and then becomes the server (exec): killing this process kills
the server.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import sys
from pathlib import Path

from triton_serve_onnx import _ensure_libpython_path

NETWORK = "yolo"  # the repository's network model: MODEL.onnx becomes its 1/model.onnx
# the Python backend's shared-memory regions (/dev/shm) of this server: a killed server leaves them behind, and
# TritonServer.kill removes them by this prefix (the same pid: this script becomes the server)
SHM_PREFIX = "tritontest{pid}-"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("repository", type=Path)
    parser.add_argument("--onnx", type=Path, required=True)
    parser.add_argument("--workspace", type=Path, required=True, help="a folder of this server's own (created)")
    parser.add_argument("--grpc-port", type=int, required=True)
    parser.add_argument("--http-port", type=int, required=True)
    parser.add_argument("--metrics-port", type=int, required=True)
    parser.add_argument("--instances", type=int, default=1, help=f"instances of '{NETWORK}' (instance_group count)")
    parser.add_argument("--threads", type=int, default=0, help="ONNX Runtime intra-op threads (0: default)")
    args = parser.parse_args()
    _ensure_libpython_path()

    import pytriton

    bundled = Path(pytriton.__file__).parent / "tritonserver"
    libs = Path(pytriton.__file__).parent.parent / "nvidia_pytriton.libs"
    version = f"{sys.version_info[0]}.{sys.version_info[1]}"
    stub = bundled / "python_backend_stubs" / version / "triton_python_backend_stub"
    if not stub.exists():
        raise SystemExit(f"nvidia-pytriton ships no Python backend stub for Python {version} ({stub})")

    workspace = args.workspace.resolve()
    server, models = workspace / "tritonserver", workspace / "models"
    shutil.rmtree(workspace, ignore_errors=True)
    shutil.copytree(bundled, server, ignore=shutil.ignore_patterns("python_backend_stubs"))
    shutil.copy(stub, server / "backends" / "python" / "triton_python_backend_stub")
    shutil.copytree(args.repository, models, ignore=shutil.ignore_patterns("__pycache__", "model.onnx"))
    os.symlink(args.onnx.resolve(), models / NETWORK / "1" / "model.onnx")
    config = models / NETWORK / "config.pbtxt"
    text = re.sub(r"count: \d+", f"count: {args.instances}", config.read_text())
    if args.threads:
        text += f'parameters {{ key: "intra_op_threads" value {{ string_value: "{args.threads}" }} }}\n'
    config.write_text(text)

    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["LD_LIBRARY_PATH"] = f"{env.get('LD_LIBRARY_PATH', '')}{os.pathsep}{libs}".lstrip(os.pathsep)
    binary = server / "bin" / "tritonserver"
    command = [str(binary), "--model-repository", str(models), "--backend-directory", str(server / "backends"),
               "--cache-directory", str(server / "caches"), "--grpc-address", "127.0.0.1",
               "--grpc-port", str(args.grpc_port), "--http-address", "127.0.0.1", "--http-port", str(args.http_port),
               "--metrics-address", "127.0.0.1", "--metrics-port", str(args.metrics_port), "--allow-metrics", "false",
               "--exit-timeout-secs", "2", "--log-verbose", "0",
               # the Python backend's shared memory between server and stubs, named per server, as pytriton does
               "--backend-config", f"python,shm-region-prefix-name={SHM_PREFIX.format(pid=os.getpid())}",
               "--backend-config", "python,shm-default-byte-size=4194304",
               "--backend-config", "python,shm-growth-byte-size=1048576"]
    print(" ".join(command), flush=True)
    os.execve(binary, command, env)


if __name__ == "__main__":
    main()
