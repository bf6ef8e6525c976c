"""The triton backend's system shared memory and requests in flight, against the real Triton server on loopback.

The server is the one of test_triton.py (nvidia-pytriton's tritonserver on the CPU, from `.venv-triton`).
Segments are counted in /dev/shm by this process's prefix (`edgeinfer_<pid>_`): other programs on the machine
create and remove their own segments meanwhile, so a count of everything there would measure them too.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from edgeinfer.backends import BackendError, create_backend
from edgeinfer.preprocess import PreprocessConfig
from support.triton_server import demo_server

pytestmark = pytest.mark.slow
pytest.importorskip("tritonclient.grpc", reason="tritonclient is in the dev extra (make setup)")

PREFIX = f"edgeinfer_{os.getpid()}_"


def our_segments() -> list[str]:
    return sorted(p.name for p in Path("/dev/shm").iterdir() if p.name.startswith(PREFIX))


def server_regions(server) -> list[str]:
    """The system shared-memory regions the server holds registered (a region unlinked here but still
    registered there keeps its memory mapped in the server)."""
    import tritonclient.grpc as grpcclient

    client = grpcclient.InferenceServerClient(server.grpc_url)
    try:
        status = client.get_system_shared_memory_status(as_json=True)
    finally:
        client.close()
    return sorted(status.get("regions", {}))


@pytest.fixture
def server(demo_model, tmp_path):
    with demo_server(demo_model.onnx, tmp_path / "triton.log") as srv:
        yield srv


def options(url: str, **extra) -> dict:
    return {"url": url, "model_name": "yolo", "deadline_ms": 5000, "connect_timeout_ms": 1000, **extra}


def test_shared_memory_gives_the_socket_outputs_and_leaves_no_segment(server, demo_model):
    x = np.random.default_rng(1).random((2, 3, 416, 416), dtype=np.float32)
    before = our_segments()
    with create_backend("m", "triton", demo_model.onnx, options(server.grpc_url, shared_memory="none")) as plain:
        assert not plain.uses_shared_memory
        want = plain.infer({"images": x})[0]
    assert our_segments() == before  # "none" creates nothing
    for protocol, url in (("grpc", server.grpc_url), ("http", server.http_url)):
        backend = create_backend("m", "triton", demo_model.onnx, options(url, protocol=protocol))  # auto
        with backend:
            assert backend.uses_shared_memory, "a loopback server gets shared memory by default"
            assert len(our_segments()) >= 2  # the warm-up's input and output regions
            got = [backend.infer({"images": x})[0] for _ in range(2)]  # the same regions again
            one = backend.infer({"images": x[:1]})[0]
            assert any(r.startswith(PREFIX) for r in server_regions(server))
        assert our_segments() == before, f"{protocol}: segments left behind"
        assert server_regions(server) == [], f"{protocol}: regions left registered on the server"
        for g in got:
            assert g.shape == want.shape and np.array_equal(g, want), protocol
        assert np.array_equal(one, want[:1])


def test_remote_url_gets_no_shared_memory_by_default(demo_model):
    backend = create_backend("m", "triton", demo_model.onnx, options("192.0.2.10:8001"))
    assert not backend.shared_memory_wanted
    backend = create_backend("m", "triton", demo_model.onnx, options("192.0.2.10:8001", shared_memory="system"))
    assert backend.shared_memory_wanted


def test_server_killed_with_regions_registered_leaks_nothing_and_a_restart_is_served(server, demo_model):
    """The server dies while our regions are registered: the request fails with a BackendError, closing
    unlinks every segment; a server restarted on the same port gets the regions registered again by the same
    backend (no re-activation) and answers through them."""
    x = np.random.default_rng(2).random((1, 3, 416, 416), dtype=np.float32)
    before = our_segments()
    server_before = sorted(p.name for p in Path("/dev/shm").iterdir() if p.name.startswith("triton"))
    backend = create_backend("m", "triton", demo_model.onnx, options(server.grpc_url))
    backend.activate()
    try:
        want = backend.infer({"images": x})[0].copy()
        held = our_segments()
        assert len(held) > len(before)
        server.kill()
        with pytest.raises(BackendError, match="UNAVAILABLE"):
            backend.infer({"images": x})
        assert our_segments() == held  # still ours, still in use by this backend
        server.start()
        got = backend.infer({"images": x})[0]  # registered again on the new server
        assert np.array_equal(got, want)
        server.kill()  # and dead again when we close: unregistering fails, unlinking must not
    finally:
        backend.deactivate()
    assert our_segments() == before, "segments left in /dev/shm after the server died"
    server_after = sorted(p.name for p in Path("/dev/shm").iterdir() if p.name.startswith("triton"))
    print(f"\nserver-side segments before {len(server_before)}, after two kills {len(server_after)}")


def test_requests_in_flight_for_every_buffer_set_give_the_synchronous_outputs(server, demo_model):
    """The pipeline's path: the input stage writes each buffer set straight into its region, `submit` sends
    without waiting, three requests are in flight at once, each set's outputs are its own."""
    rng = np.random.default_rng(3)
    images = [rng.integers(0, 256, (272, 640, 3), dtype=np.uint8) for _ in range(3)]
    config = PreprocessConfig(resize="stretch", color="rgb", scale=1 / 255)
    for shared_memory in ("system", "none"):
        backend = create_backend("m", "triton", demo_model.onnx,
                                 options(server.grpc_url, shared_memory=shared_memory, buffer_sets=3))
        with backend:
            stage = backend.open_input_stage(config, batch=1, fixed_batch=False)
            assert stage.sets == 3
            for i, image in enumerate(images):
                stage.write(i, 0, image)
            want = [backend.infer(stage.feeds(i, 1))[0].copy() for i in range(3)]
            handles = [backend.submit(i, 1) for i in range(3)]
            assert not any(h.done for h in handles)
            got = [h.wait()[0][0] for h in handles]
            for g, w in zip(got, want):
                assert np.array_equal(g, w), shared_memory
            assert not np.array_equal(got[0], got[1])  # different frames, different outputs
