"""`edgeinfer doctor`: what this box has, and what is missing for each capability.

Nothing here may fail: every probe catches its own errors and reports them as text.
"""

from __future__ import annotations

import glob
import importlib
import importlib.metadata
import importlib.util
import json
import os
import platform
import shutil
import subprocess
import sys
from typing import Any

from .cuda import runtime
from .sources import nvdec


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def _try_import(name: str) -> tuple[Any, str | None]:
    try:
        return importlib.import_module(name), None
    except Exception as exc:  # any import failure (missing .so, wrong CUDA) is a finding, not a crash
        return None, f"{type(exc).__name__}: {exc}"


def probe() -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {}
    found["python"] = {"ok": sys.version_info >= (3, 10), "detail": f"{platform.python_version()} "
                       f"({sys.executable}) on {platform.machine()}"}

    ort, err = _try_import("onnxruntime")
    found["onnxruntime"] = ({"ok": True, "detail": f"{ort.__version__}; providers: "
                             f"{', '.join(ort.get_available_providers())}"}
                            if ort else {"ok": False, "detail": f"missing ({err}); pip install onnxruntime"})

    cv2, err = _try_import("cv2")
    if cv2:
        info = cv2.getBuildInformation()
        backends = [name for name in ("FFMPEG", "GStreamer", "V4L/V4L2")
                    if any(line.strip().startswith(name + ":") and "YES" in line for line in info.splitlines())]
        found["opencv"] = {"ok": True, "detail": f"{cv2.__version__}; video I/O: {', '.join(backends) or 'none'}"}
    else:
        found["opencv"] = {"ok": False, "detail": f"missing ({err}); pip install opencv-python-headless"}

    trt_detail = []
    for mod in ("tensorrt", "tensorrt_lean", "tensorrt_rtx", "tensorrt_rtx_bindings"):  # the last: RTX wheel
        m, _ = _try_import(mod)
        if m is not None:
            trt_detail.append(f"{mod} {getattr(m, '__version__', '?')}")
    found["tensorrt"] = {"ok": bool(trt_detail), "detail": ", ".join(trt_detail) or
                         "not installed (JetPack ships it; on x86: pip install tensorrt-lean-cu13)"}

    cuda, err = _try_import("cuda.bindings.runtime")
    found["cuda-python"] = ({"ok": True, "detail": f"cuda-bindings {_version('cuda-bindings') or '?'}"}
                            if cuda else {"ok": False, "detail": "not installed (pip install '.[trt]' in the checkout; "
                                          "JetPack 6 / CUDA 12 needs cuda-python 12.x)"})
    if cuda:
        found["cuda"] = _probe_cuda()

    gpus = []
    if shutil.which("nvidia-smi"):
        try:
            out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=10)
            gpus = [line for line in out.stdout.splitlines() if line.strip()]
        except (OSError, subprocess.SubprocessError) as exc:
            gpus = [f"nvidia-smi failed: {exc}"]
    tegra = os.path.exists("/etc/nv_tegra_release")
    if tegra:
        gpus.append("Jetson (Tegra) integrated GPU")
    found["gpu"] = {"ok": bool(gpus) or bool(glob.glob("/dev/nvidia[0-9]*")),
                    "detail": "; ".join(gpus) or "no NVIDIA GPU found (CPU pipeline on ONNX Runtime)"}
    ok, detail = nvdec.probe()
    if ok and importlib.util.find_spec("av") is None:
        detail += " (rtsp sources decode on the CPU: PyAV, which demuxes them for NVDEC, is missing)"
    found["nvdec"] = {"ok": ok, "detail": (f"{detail}: video and rtsp sources with decode: auto decode on the GPU"
                                           if ok else
                                           f"{detail}; video and rtsp sources with decode: auto decode on the CPU"
                                           + ("; on Jetson use a gstreamer source with nvv4l2decoder"
                                              if tegra else ""))}
    dla = sorted(glob.glob("/dev/nvhost-nvdla*"))
    found["dla"] = {"ok": bool(dla), "detail": f"{len(dla)} DLA node(s): {', '.join(dla)}" if dla
                    else "no DLA cores (only Jetson AGX/NX Orin and Xavier have them)"}

    rclpy, err = _try_import("rclpy")
    found["ros2"] = ({"ok": True, "detail": f"rclpy ({os.environ.get('ROS_DISTRO', 'distro unknown')})"}
                     if rclpy else {"ok": False, "detail": "rclpy not importable: source /opt/ros/<distro>/"
                                    "setup.bash, or pip install ros-rclpy ros-rmw-fastrtps-cpp (ROS 2 Kilted wheels)"})
    missing = [p for p in ("vision_msgs", "edgeinfer_msgs", "sensor_msgs", "diagnostic_msgs", "std_srvs")
               if importlib.util.find_spec(p) is None]
    found["ros2_interfaces"] = ({"ok": True, "detail": "vision_msgs, edgeinfer_msgs, sensor_msgs, diagnostic_msgs, "
                                 "std_srvs"} if not missing else
                                {"ok": False, "detail": f"missing {', '.join(missing)} (the ros2 source/output need "
                                 f"them): apt install ros-$ROS_DISTRO-vision-msgs and colcon build ros2_ws, then "
                                 f"source its install/setup.bash; off ROS: make ros"})
    zmq, err = _try_import("zmq")
    found["zmq"] = ({"ok": True, "detail": f"pyzmq {zmq.__version__}, libzmq {zmq.zmq_version()}"}
                    if zmq else {"ok": False, "detail": "pyzmq missing: pip install pyzmq "
                                 "(or '.[zmq]' from the edgeinfer checkout)"})
    triton = _version("tritonclient")
    found["triton"] = {"ok": triton is not None,
                       "detail": f"tritonclient {triton}" if triton
                       else "pip install 'tritonclient[grpc,http]' (or '.[triton]' from the checkout)"}
    lap = _version("lap")
    found["tracking"] = {"ok": lap is not None,
                         "detail": f"lap {lap} (models[].tracker)" if lap else "lap missing (models[].tracker needs "
                         "it): pip install lap (or '.[tracking]' from the checkout)"}
    web = {name: _version(name) for name in ("aiohttp", "prometheus-client")}
    found["http"] = {"ok": all(web.values()),
                     "detail": ", ".join(f"{n} {v}" for n, v in web.items()) if all(web.values()) else
                     "the http output (status page, /metrics) needs aiohttp and prometheus-client: pip install "
                     "aiohttp prometheus-client (or '.[http]' from the checkout)"}
    found["systemd"] = {"ok": True, "detail": "NOTIFY_SOCKET set (running under systemd)"
                        if os.environ.get("NOTIFY_SOCKET") else "not under systemd (no NOTIFY_SOCKET)"}
    return found


def _probe_cuda() -> dict[str, Any]:
    """The GPUs the TensorRT backend would see, and whether NVRTC (the preprocessing kernel) loads."""
    try:
        count = runtime.device_count()
        devices = []
        for index in range(count):
            info = runtime.device_info(index)
            shared = ", integrated: mapped memory" if info.integrated else ""
            devices.append(f"gpu:{index} {info.name} ({info.arch}{shared}, {info.total_memory / 2**30:.0f} GiB)")
        try:
            runtime.nvrtc().nvrtcVersion()
            nvrtc = "NVRTC ok"
        except Exception as exc:
            nvrtc = f"NVRTC missing ({type(exc).__name__}): the GPU preprocessing kernel cannot compile"
        if not count:
            return {"ok": False, "detail": f"no CUDA device visible; {nvrtc}"}
        return {"ok": "missing" not in nvrtc, "detail": "; ".join(devices + [nvrtc])}
    except Exception as exc:
        return {"ok": False, "detail": f"CUDA probe failed: {type(exc).__name__}: {exc}"}


def run_doctor(as_json: bool = False) -> int:
    found = probe()
    if as_json:
        print(json.dumps(found, indent=2))
        return 0
    width = max(len(k) for k in found)
    for name, item in found.items():
        mark = "ok " if item["ok"] else "-- "
        print(f"{mark} {name.ljust(width)}  {item['detail']}")
    return 0
