"""Frames that live on the GPU (issue 17): NV12/RGB device images read in place by the preprocessing kernel,
and NVDEC decode (PyNvVideoCodec) against OpenCV's CPU decode of the same H.264 file, down to the detections.

The H.264 clip is made at test time from the demo video with PyAV (`tests/support/h264.py`), or taken from
$EDGEINFER_H264_CLIP (a clip made that way, for a GPU box without PyAV).
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from edgeinfer.preprocess import PreprocessConfig, Preprocessor

pytestmark = pytest.mark.gpu


@pytest.fixture(scope="module")
def h264_clip(tmp_path_factory, demo_video) -> Path:
    given = os.environ.get("EDGEINFER_H264_CLIP")
    if given:
        return Path(given)
    pytest.importorskip("av", reason="PyAV makes the H.264 clip (or set EDGEINFER_H264_CLIP)")
    from support.h264 import make_clip

    return make_clip(demo_video, tmp_path_factory.mktemp("h264") / "bikes1080.mp4", frames=100)


def _nvdec_or_skip():
    from edgeinfer.sources import nvdec

    ok, detail = nvdec.probe()
    if not ok:
        pytest.skip(f"NVDEC unavailable: {detail}")
    return nvdec


def _run_stage(config, shape, dtype, images, tmp_path):
    """Write `images` (host arrays or DeviceImages) into one set, run upload + kernel, return the tensor."""
    from edgeinfer.cuda import runtime as cu
    from edgeinfer.preprocess.cuda import GpuInputStage

    cu.set_device(0)
    dst = cu.DeviceBuffer(int(np.prod(shape)) * np.dtype(dtype).itemsize)
    host = cu.HostBuffer(shape, dtype)
    stream = cu.Stream()
    stage = GpuInputStage(config, shape, dtype, 1, [dst.ptr], cu.device_info(0).arch, mapped=False,
                          fixed_batch=False, cache_dir=tmp_path)
    try:
        transforms = [stage.write(0, i, image) for i, image in enumerate(images)]
        stage.enqueue_upload(0, len(images), stream)
        stage.enqueue_kernel(0, len(images), stream)
        cu.copy_async(host.ptr, dst.ptr, host.nbytes, "d2h", stream)
        stream.synchronize()
        return host.array.copy(), transforms
    finally:
        stage.close()
        dst.close()
        host.close()
        stream.close()


def _upload(array: np.ndarray):
    from edgeinfer.cuda import runtime as cu

    buf = cu.DeviceBuffer(array.nbytes)
    rt = cu.cudart()
    cu.check(rt.cudaMemcpy(buf.ptr, array.ctypes.data, array.nbytes, rt.cudaMemcpyKind.cudaMemcpyHostToDevice),
             "cudaMemcpy")
    return buf


@pytest.mark.parametrize("resize", ["letterbox", "stretch"])
def test_nv12_and_rgb_device_images_give_the_cpu_pixels(resize, tmp_path, demo_video):
    """NV12 on the device through the kernel == cv2.cvtColor(NV12 -> BGR) then the CPU preprocessor, bit for bit
    (uint8 out); an RGB device image == its BGR twin on the CPU."""
    from edgeinfer.frame import DeviceImage

    cap = cv2.VideoCapture(str(demo_video))
    frames = [cap.read()[1] for _ in range(3)]
    cap.release()
    config = PreprocessConfig(resize=resize, color="rgb", layout="nhwc", dtype="uint8", scale=1.0)
    shape = (3, 416, 416, 3)
    cpu = Preprocessor(config, shape, np.uint8)
    buffers, images = [], []
    for i, bgr in enumerate(frames[:2]):
        bgr = cv2.resize(bgr, (1920 - 2 * i, 1080))  # even sizes, as NV12 needs
        h, w = bgr.shape[:2]
        i420 = cv2.cvtColor(bgr, cv2.COLOR_BGR2YUV_I420)
        u = i420[h:h + h // 4].reshape(h // 2, w // 2)
        v = i420[h + h // 4:].reshape(h // 2, w // 2)
        nv12 = np.concatenate([i420[:h], np.stack([u, v], -1).reshape(h // 2, w)])
        buf = _upload(np.ascontiguousarray(nv12))
        buffers.append(buf)
        images.append(DeviceImage(buf.ptr, w, h, w, "nv12", uv_ptr=buf.ptr + w * h))
        cpu.write(i, cv2.cvtColor(nv12, cv2.COLOR_YUV2BGR_NV12))
    rgb = np.ascontiguousarray(frames[2][..., ::-1])
    buf = _upload(rgb)
    buffers.append(buf)
    images.append(DeviceImage(buf.ptr, rgb.shape[1], rgb.shape[0], rgb.shape[1] * 3, "rgb"))
    cpu.write(2, frames[2])
    try:
        gpu, _ = _run_stage(config, shape, np.uint8, images, tmp_path)
    finally:
        for b in buffers:
            b.close()
    diff = np.abs(gpu.astype(int) - cpu.buffer.astype(int))
    assert diff.max() == 0, (int(diff.max()), float((diff > 0).mean()))


def test_nvdec_frames_agree_with_opencv_decode(h264_clip):
    """Same number of frames, same order, and the same pixels within the bound set by the YUV -> BGR step: the
    H.264 decode itself is bit-exact in both (the standard requires it); OpenCV's frames are converted by
    FFmpeg's swscale (bilinear chroma, its own rounding), ours by OpenCV's nearest-chroma BT.601 routine."""
    nvdec = _nvdec_or_skip()
    reader = nvdec.NvdecReader(h264_clip)
    cap = cv2.VideoCapture(str(h264_clip))
    means, worst, count = [], 0, 0
    try:
        while True:
            image = reader.read()
            ok, ref = cap.read()
            if image is None or not ok:
                assert image is None and not ok, "the two decoders disagree on the number of frames"
                break
            diff = np.abs(image.download().astype(int) - ref)
            means.append(float(diff.mean()))
            worst = max(worst, int(np.percentile(diff, 99.9)))
            count += 1
            del image  # back to the pool
    finally:
        reader.close()
        cap.release()
    print(f"NVDEC vs OpenCV over {count} frames: mean abs diff {np.mean(means):.3f} (max per frame "
          f"{max(means):.3f}), 99.9th percentile {worst}")
    assert count >= 50
    assert max(means) < 2.5 and worst <= 6


def _detections(tmp_path: Path, name: str, clip: Path, engine: Path, labels: Path, decode: str) -> dict:
    out = tmp_path / f"{name}.jsonl"
    config = {"sources": [{"id": "clip", "type": "video", "path": str(clip), "decode": decode}],
              "models": [{"id": "det", "path": str(engine), "labels": str(labels), "device": "gpu",
                          "backend_options": {"runtime": "standin_tensorrt"}, "sources": ["clip"],
                          "preprocess": {"resize": "stretch", "color": "rgb", "scale": 1 / 255},
                          "decoder": {"type": "yolo", "layout": "v5"}}],
              "outputs": [{"type": "jsonl", "path": str(out), "heartbeat": False}]}
    from edgeinfer.config import parse_config
    from edgeinfer.pipeline import Pipeline

    pipeline = Pipeline(parse_config(yaml.safe_dump(config)))
    pipeline.start()
    try:
        assert pipeline.sources[0].decoder == decode
        pipeline.wait(threading.Event())
    finally:
        pipeline.stop()
    return {r["frame"]: r for r in map(json.loads, out.read_text().splitlines()) if r["type"] == "detections"}


def test_detections_on_nvdec_frames_match_the_cpu_decode(tmp_path, h264_clip, demo_model):
    """The demo network (onnx2torch stand-in) on the 1080p clip, decoded by NVDEC into GPU memory vs by OpenCV
    on the CPU: every detection scoring 0.35 or more has its twin (same label, IoU >= 0.9). The two inputs differ
    by up to 3 levels (the YUV -> BGR conversion, test above), which can move a weak detection: those within 0.1
    of the 0.25 threshold may lack a twin, bounded to 5% of the matched ones (on the H200: 14 of 374, 3.7%, all
    scoring 0.25-0.33; none at 0.35 or more)."""
    _nvdec_or_skip()
    from standin_tensorrt import write_engine
    from test_gpu_path import _iou

    engine = write_engine(tmp_path / "net.engine", standin="onnx2torch", onnx=str(demo_model.onnx), max_batch=1)
    runs = {d: _detections(tmp_path, d, h264_clip, engine, demo_model.labels, d) for d in ("cpu", "nvdec")}
    assert runs["cpu"].keys() == runs["nvdec"].keys() and len(runs["cpu"]) >= 50
    matched, unmatched, weak, ious = 0, [], [], []
    for frame, cpu in runs["cpu"].items():
        gpu = runs["nvdec"][frame]
        for ref, others in ((cpu["detections"], gpu["detections"]), (gpu["detections"], cpu["detections"])):
            for det in ref:
                same = [o for o in others if o["label"] == det["label"]]
                best = max((_iou(o["bbox"], det["bbox"]) for o in same), default=0.0)
                if best >= 0.9:
                    matched += 1
                    ious.append(best)
                elif det["score"] >= 0.25 + 0.1:
                    unmatched.append((frame, det["label"], det["score"], round(best, 3)))
                else:
                    weak.append((frame, det["label"], det["score"], round(best, 3)))
    print(f"NVDEC vs CPU decode: {matched} detections matched (worst IoU {min(ious):.3f}, median "
          f"{np.median(ious):.4f}); without a twin: {unmatched} scoring >= 0.35, {weak} below")
    assert matched >= 100
    assert not unmatched
    assert len(weak) <= 0.05 * matched


def test_nvdec_source_survives_a_damaged_file(tmp_path, h264_clip):
    """Bytes overwritten in the middle of the file: the NVDEC source counts bad frames or resynchronises, and
    ends; it never crashes the pipeline's thread or hangs."""
    _nvdec_or_skip()
    from edgeinfer.mailbox import FrameSlots
    from edgeinfer.sources.video import VideoSource, VideoSourceConfig

    data = bytearray(h264_clip.read_bytes())
    rng = np.random.default_rng(1)
    middle = len(data) // 2
    data[middle:middle + 20000] = rng.integers(0, 256, 20000, dtype=np.uint8).tobytes()
    damaged = tmp_path / "damaged.mp4"
    damaged.write_bytes(bytes(data))
    slots = FrameSlots(["clip"])
    source = VideoSource(VideoSourceConfig(id="clip", type="video", path=damaged, decode="nvdec"), slots)
    source.start()
    got = 0
    while True:
        frames = slots.take(1, timeout=5.0)
        if not frames:
            if slots.finished:
                break
            continue
        got += len(frames)
    assert source.join(10)
    stats = source.stats()
    print(f"damaged file via NVDEC: {got} frames, state {stats['state']}, bad {stats['bad_frames']}")
    assert stats["state"] in ("ended", "failed") and got > 0


def test_a_looping_nvdec_source_keeps_its_decoder(h264_clip):
    """A looping file rewinds its demuxer and keeps its NVDEC decoder: tearing a decoder down holds the GIL for
    tens of milliseconds, which stalled every other stream at each pass when 32 looped."""
    _nvdec_or_skip()
    import cv2 as _cv2

    from edgeinfer.mailbox import FrameSlots
    from edgeinfer.sources.video import VideoSource, VideoSourceConfig

    cap = _cv2.VideoCapture(str(h264_clip))
    length = int(cap.get(_cv2.CAP_PROP_FRAME_COUNT))
    cap.release()
    slots = FrameSlots(["clip"])
    source = VideoSource(VideoSourceConfig(id="clip", type="video", path=h264_clip, decode="nvdec", loop=True), slots)
    source.start()
    readers, seqs = set(), []
    try:
        while len(seqs) < length + length // 2:
            frames = slots.take(1, timeout=5.0)
            assert frames, "the looping source stopped delivering"
            seqs += [f.seq for f in frames]
            readers.add(id(source._nvdec or source._spare_nvdec))
    finally:
        source.stop()
    assert seqs == list(range(len(seqs)))  # in order across the loop, nothing lost
    assert len(readers - {id(None)}) == 1, "the decoder was recreated at the loop"


def test_pyav_demuxed_packets_decode_to_the_same_frames(h264_clip):
    """Network streams are demuxed by PyAV (read timeouts, RTSP options) and decoded by the same NVDEC decoder
    with no display delay: fed the clip's packets through PyAV, it gives the frames PyNvVideoCodec's own demuxer
    gives, bit for bit, in the same order (the RTSP side of the demux is tests/integration/test_nvdec_packets.py)."""
    nvdec = _nvdec_or_skip()
    pytest.importorskip("av")
    own = nvdec.NvdecReader(h264_clip)
    streamed = nvdec.NvdecReader(h264_clip, packets=nvdec.AnnexBPackets(str(h264_clip)))
    count = 0
    try:
        assert streamed.codec == own.codec == "H264"
        while True:
            a, b = own.read(), streamed.read()
            if a is None or b is None:
                assert a is None and b is None, f"frame counts differ after {count}"
                break
            assert np.array_equal(a.download(), b.download()), f"frame {count} differs"
            count += 1
            del a, b
    finally:
        own.close()
        streamed.close()
    assert count >= 50


def test_a_stream_source_decodes_on_nvdec(h264_clip, tmp_path):
    """A network source with `decode: nvdec`, end to end: the clip as an MPEG-TS stream over HTTP (no RTSP server
    can run on the GPU box; RTSP's own demux is tested on CI against GStreamer's server). Frames arrive as GPU
    images, each the same pixels as the file's frame of that number, and the source reports its decoder."""
    import hashlib
    import time
    from functools import partial
    from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

    nvdec = _nvdec_or_skip()
    av = pytest.importorskip("av")
    from edgeinfer.mailbox import FrameSlots
    from edgeinfer.sources.schema import RtspSourceConfig
    from edgeinfer.sources.stream import RtspSource

    with av.open(str(h264_clip)) as inp, av.open(str(tmp_path / "clip.ts"), "w", format="mpegts") as out:
        source_stream = inp.streams.video[0]
        ts_stream = out.add_stream_from_template(source_stream)
        for packet in inp.demux(source_stream):
            if packet.dts is not None:
                packet.stream = ts_stream
                out.mux(packet)
    reference, reader = [], nvdec.NvdecReader(h264_clip)
    try:
        while (image := reader.read()) is not None:
            reference.append(hashlib.sha1(image.download()).hexdigest())
            del image
    finally:
        reader.close()
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(SimpleHTTPRequestHandler, directory=str(tmp_path)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    slots = FrameSlots(["cam"])
    source = RtspSource(RtspSourceConfig(id="cam", url=f"http://127.0.0.1:{server.server_port}/clip.ts",
                                         decode="nvdec"), slots)
    checked = 0
    try:
        source.start()
        deadline = time.monotonic() + 60
        while checked < 40 and time.monotonic() < deadline:
            for frame in slots.take(1, timeout=5.0):
                assert frame.device is not None, "a frame in host memory: NVDEC was not used"
                if frame.stream == 1:  # the first pass (the source reopens the stream when it ends)
                    assert hashlib.sha1(frame.pixels()).hexdigest() == reference[frame.seq], frame.seq
                    checked += 1
        assert source.counters()["decode"] == "nvdec"
    finally:
        source.stop()
        server.shutdown()
    assert checked >= 40, f"only {checked} frames of the stream's first pass were compared"
