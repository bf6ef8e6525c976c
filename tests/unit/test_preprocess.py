"""Preprocessing: config validation, letterbox geometry, pixel values, layouts, dtypes, errors, buffers."""

from __future__ import annotations

import tracemalloc

import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from edgeinfer.preprocess import (
    PreprocessConfig,
    PreprocessError,
    Preprocessor,
    Transform,
    cpu,
    fit_transform,
    normalisation_coefficients,
)


def solid(height: int, width: int, bgr: tuple[int, int, int]) -> np.ndarray:
    image = np.empty((height, width, 3), np.uint8)
    image[:] = bgr
    return image


def ramp_image(height: int, width: int) -> np.ndarray:
    """Distinct values per pixel and channel, so a swapped channel or axis shows."""
    values = np.arange(height * width * 3, dtype=np.int64).reshape(height, width, 3)
    return (values * 7 % 251).astype(np.uint8)


# -- config ---------------------------------------------------------------------------------------------


def test_config_defaults() -> None:
    config = PreprocessConfig()
    assert (config.resize, config.color) == ("letterbox", "rgb")
    assert (config.layout, config.dtype) == ("nchw", "float32")
    assert config.scale == pytest.approx(1 / 255)
    assert config.pad_value == 114 and config.size is None


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"std": (1.0, 0.0, 1.0)}, "std[1]"),
        # non-finite numbers are refused by every config model (StrictModel: allow_inf_nan=False)
        ({"std": (1.0, 1.0, float("nan"))}, "std.2\n  Input should be a finite number"),
        ({"mean": (float("inf"), 0.0, 0.0)}, "mean.0\n  Input should be a finite number"),
        ({"scale": 0.0}, "scale"),
        ({"scale": -1.0}, "scale"),
        ({"pad_value": 256}, "pad_value"),
        ({"pad_value": -1}, "pad_value"),
        ({"size": (0, 416)}, "size"),
        ({"resize": "crop"}, "resize"),
        ({"dtype": "uint8"}, "scale: 1"),
        ({"unknown_key": 1}, "unknown_key"),
    ],
)
def test_config_rejects_bad_values(fields: dict, message: str) -> None:
    with pytest.raises(ValidationError) as caught:
        PreprocessConfig(**fields)
    assert message in str(caught.value)


def test_config_uint8_with_identity_normalisation_is_fine() -> None:
    assert PreprocessConfig(dtype="uint8", scale=1).dtype == "uint8"


def test_normalisation_coefficients_fold_scale_mean_std() -> None:
    config = PreprocessConfig(scale=0.5, mean=(1.0, 2.0, 3.0), std=(2.0, 4.0, 0.5))
    multiply, add = normalisation_coefficients(config)
    for channel in range(3):
        pixel = 200.0
        expected = (pixel * 0.5 - config.mean[channel]) / config.std[channel]
        assert pixel * multiply[channel] + add[channel] == pytest.approx(expected)


# -- geometry -------------------------------------------------------------------------------------------


def test_letterbox_transform_splits_odd_padding_like_yolov5() -> None:
    # 640x272 into 416x416: gain 0.65 -> 416x177, vertical pad 239 = 119 above + 120 below.
    transform = fit_transform(640, 272, 416, 416, "letterbox")
    assert transform.resized_size == (416, 177)
    assert (transform.pad_x, transform.pad_y) == (0.0, 119.0)
    assert transform.scale_x == pytest.approx(0.65)
    assert transform.scale_y == pytest.approx(177 / 272)
    assert (transform.src_w, transform.src_h) == (640, 272)


def test_letterbox_transform_tall_image_pads_sideways() -> None:
    transform = fit_transform(100, 200, 416, 416, "letterbox")
    assert transform.resized_size == (208, 416)
    assert (transform.pad_x, transform.pad_y) == (104.0, 0.0)
    assert transform.scale_x == pytest.approx(2.08) and transform.scale_y == pytest.approx(2.08)


def test_stretch_transform_has_no_padding() -> None:
    transform = fit_transform(60, 30, 16, 16, "stretch")
    assert (transform.pad_x, transform.pad_y) == (0.0, 0.0)
    assert transform.scale_x == pytest.approx(16 / 60) and transform.scale_y == pytest.approx(16 / 30)
    assert transform.resized_size == (16, 16)


def test_to_source_undoes_letterbox_and_clips() -> None:
    transform = fit_transform(800, 400, 400, 400, "letterbox")  # gain 0.5, 100 px bands above and below
    boxes = np.array([[80.0, 190.0, 120.0, 210.0], [-20.0, 50.0, 450.0, 390.0]], np.float32)
    source = transform.to_source(boxes)
    np.testing.assert_allclose(source[0], [160.0, 180.0, 240.0, 220.0])
    np.testing.assert_allclose(source[1], [0.0, 0.0, 800.0, 400.0])  # clipped to the image
    assert boxes[0, 0] == 80.0  # the input is left alone


def test_to_source_accepts_integer_boxes_and_rejects_bad_shapes() -> None:
    transform = Transform(2.0, 2.0, 0.0, 0.0, 100, 100)
    np.testing.assert_allclose(transform.to_source(np.array([[10, 20, 30, 40]])), [[5, 10, 15, 20]])
    with pytest.raises(ValueError, match=r"\[N, 4\]"):
        transform.to_source(np.zeros((3, 5)))


@settings(max_examples=200, deadline=None)
@given(
    src_w=st.integers(1, 4000),
    src_h=st.integers(1, 4000),
    dst=st.sampled_from([(320, 320), (416, 416), (384, 640), (640, 384)]),
    mode=st.sampled_from(["letterbox", "stretch"]),
    fractions=st.tuples(*[st.floats(0.0, 1.0) for _ in range(4)]),
)
def test_box_round_trip_source_to_input_and_back(src_w, src_h, dst, mode, fractions) -> None:
    dst_h, dst_w = dst
    transform = fit_transform(src_w, src_h, dst_w, dst_h, mode)
    fx1, fx2 = sorted(fractions[:2])
    fy1, fy2 = sorted(fractions[2:])
    box = np.array([[fx1 * src_w, fy1 * src_h, fx2 * src_w, fy2 * src_h]])
    in_input = transform.to_input(box)
    # The image region lies inside the network input, so do all boxes within the source.
    assert in_input.min() >= -1e-6
    assert in_input[0, 2] <= dst_w + 1e-6 and in_input[0, 3] <= dst_h + 1e-6
    np.testing.assert_allclose(transform.to_source(in_input), box, atol=1.0)


@settings(max_examples=60, deadline=None)
@given(
    src_w=st.integers(16, 1500),
    aspect=st.floats(0.2, 5.0),
    dst=st.sampled_from([(320, 320), (416, 416), (384, 640)]),
    mode=st.sampled_from(["letterbox", "stretch"]),
    corner=st.tuples(st.floats(0.0, 0.5), st.floats(0.0, 0.5)),
    extent=st.tuples(st.floats(0.3, 0.5), st.floats(0.3, 0.5)),
)
def test_pixels_land_where_the_transform_says(src_w, aspect, dst, mode, corner, extent) -> None:
    """Draw a white rectangle, preprocess, find it in the buffer, map it back: the actual pixels and the
    Transform must agree (tolerance: one input pixel of interpolation blur, in source pixels)."""
    src_h = max(16, round(src_w * aspect))
    x1, y1 = round(corner[0] * src_w), round(corner[1] * src_h)
    x2, y2 = x1 + round(extent[0] * src_w), y1 + round(extent[1] * src_h)
    image = np.zeros((src_h, src_w, 3), np.uint8)
    image[y1:y2, x1:x2] = 255
    dst_h, dst_w = dst
    preprocessor = Preprocessor(PreprocessConfig(resize=mode, scale=1.0, pad_value=0), (1, 3, dst_h, dst_w))
    transform = preprocessor.write(0, image)
    bright = preprocessor.buffer[0, 0] > 127.5
    rows, cols = np.flatnonzero(bright.any(axis=1)), np.flatnonzero(bright.any(axis=0))
    found = np.array([[cols[0], rows[0], cols[-1] + 1, rows[-1] + 1]], np.float64)
    back = transform.to_source(found)[0]
    tolerance_x, tolerance_y = 1.0 / transform.scale_x + 1.0, 1.0 / transform.scale_y + 1.0
    assert abs(back[0] - x1) <= tolerance_x and abs(back[2] - x2) <= tolerance_x
    assert abs(back[1] - y1) <= tolerance_y and abs(back[3] - y2) <= tolerance_y


# -- pixel values ---------------------------------------------------------------------------------------


NORMALISING = PreprocessConfig(scale=1 / 255, mean=(0.1, 0.2, 0.3), std=(0.5, 0.25, 2.0))


def expected_normalised(image: np.ndarray, config: PreprocessConfig) -> np.ndarray:
    """HxWx3 in the configured colour order, normalised in float64."""
    ordered = image[:, :, ::-1] if config.color == "rgb" else image
    return (ordered.astype(np.float64) * config.scale - np.array(config.mean)) / np.array(config.std)


def test_value_at_a_pixel_after_scale_mean_std_and_rgb_swap() -> None:
    image = ramp_image(4, 6)
    preprocessor = Preprocessor(NORMALISING, (1, 3, 4, 6))
    transform = preprocessor.write(0, image)
    assert transform == Transform(1.0, 1.0, 0.0, 0.0, 6, 4)
    # Hand-checked single value: output channel 0 is red = BGR channel 2.
    y, x = 2, 5
    red = int(image[y, x, 2])
    assert preprocessor.buffer[0, 0, y, x] == pytest.approx((red / 255 - 0.1) / 0.5, rel=1e-6)
    expected = expected_normalised(image, NORMALISING).transpose(2, 0, 1)
    np.testing.assert_allclose(preprocessor.buffer[0], expected, rtol=1e-6, atol=1e-6)


def test_bgr_keeps_channel_order() -> None:
    image = ramp_image(4, 6)
    config = NORMALISING.model_copy(update={"color": "bgr"})
    preprocessor = Preprocessor(config, (1, 3, 4, 6))
    preprocessor.write(0, image)
    assert preprocessor.buffer[0, 0, 1, 1] == pytest.approx((image[1, 1, 0] / 255 - 0.1) / 0.5, rel=1e-6)
    np.testing.assert_allclose(
        preprocessor.buffer[0], expected_normalised(image, config).transpose(2, 0, 1), rtol=1e-6, atol=1e-6
    )


@pytest.mark.parametrize("color", ["rgb", "bgr"])
@pytest.mark.parametrize("base", [NORMALISING, PreprocessConfig()], ids=["per-channel", "uniform"])
@pytest.mark.parametrize("input_hw", [(5, 7), (12, 10)], ids=["same-size", "letterboxed"])
def test_nhwc_matches_nchw(color: str, base: PreprocessConfig, input_hw: tuple[int, int]) -> None:
    image = ramp_image(5, 7)
    height, width = input_hw
    nchw = Preprocessor(base.model_copy(update={"color": color}), (1, 3, height, width))
    nhwc = Preprocessor(base.model_copy(update={"color": color, "layout": "nhwc"}), (1, height, width, 3))
    nchw.write(0, image)
    nhwc.write(0, image)
    assert nhwc.buffer.shape == (1, height, width, 3)
    np.testing.assert_allclose(nhwc.buffer[0], nchw.buffer[0].transpose(1, 2, 0), rtol=1e-6, atol=1e-6)
    if input_hw == (5, 7):
        expected = expected_normalised(image, nhwc.config)
        np.testing.assert_allclose(nhwc.buffer[0], expected, rtol=1e-6, atol=1e-6)


def test_letterbox_padding_rows_hold_the_pad_value() -> None:
    # 4 wide, 2 high into 4x4: no resize (gain 1), one pad row above and one below.
    image = solid(2, 4, (10, 20, 30))
    preprocessor = Preprocessor(PreprocessConfig(), (1, 3, 4, 4))
    transform = preprocessor.write(0, image)
    assert (transform.pad_x, transform.pad_y) == (0.0, 1.0)
    buffer = preprocessor.buffer[0]
    for channel, value in enumerate((30, 20, 10)):  # RGB order
        np.testing.assert_allclose(buffer[channel, [0, 3]], 114 / 255, rtol=1e-6)
        np.testing.assert_allclose(buffer[channel, 1:3], value / 255, rtol=1e-6)


def test_letterbox_with_resize_places_image_between_bands() -> None:
    # 640x272 into 416x416: rows 0..118 pad, 119..295 image, 296..415 pad.
    image = solid(272, 640, (0, 100, 200))
    config = PreprocessConfig(scale=1.0, pad_value=7)
    preprocessor = Preprocessor(config, (1, 3, 416, 416))
    preprocessor.write(0, image)
    red = preprocessor.buffer[0, 0]
    assert np.all(red[:119] == 7) and np.all(red[296:] == 7)
    assert np.all(red[119:296] == 200)  # bilinear resize of a solid colour is exact


def test_letterbox_region_matches_cv2_resize() -> None:
    image = np.random.default_rng(1).integers(0, 256, (272, 640, 3), dtype=np.uint8)
    preprocessor = Preprocessor(NORMALISING, (1, 3, 416, 416))
    preprocessor.write(0, image)
    reference = cv2.resize(image, (416, 177), interpolation=cv2.INTER_LINEAR)
    expected = expected_normalised(reference, NORMALISING).transpose(2, 0, 1)
    np.testing.assert_allclose(preprocessor.buffer[0, :, 119:296, :], expected, rtol=1e-5, atol=1e-5)


def test_stretch_fills_the_whole_input() -> None:
    preprocessor = Preprocessor(PreprocessConfig(resize="stretch", scale=1.0), (1, 3, 16, 16))
    transform = preprocessor.write(0, solid(30, 60, (1, 2, 3)))
    assert (transform.pad_x, transform.pad_y) == (0.0, 0.0)
    assert transform.scale_x == pytest.approx(16 / 60) and transform.scale_y == pytest.approx(16 / 30)
    assert np.all(preprocessor.buffer[0, 0] == 3) and np.all(preprocessor.buffer[0, 2] == 1)


@pytest.mark.parametrize("layout", ["nchw", "nhwc"])
@pytest.mark.parametrize("opencv_cast", [True, False], ids=["cv2-cast", "numpy-cast"])
def test_float16_buffer_holds_normalised_values(layout: str, opencv_cast: bool, monkeypatch) -> None:
    if not opencv_cast:
        monkeypatch.setattr(cpu, "_CONVERT_FP16", None)
    image = ramp_image(4, 6)
    shape = (1, 3, 8, 6) if layout == "nchw" else (1, 8, 6, 3)  # letterboxed: 2 pad rows each side
    preprocessor = Preprocessor(NORMALISING.model_copy(update={"layout": layout}), shape, np.float16)
    preprocessor.write(0, image)
    assert preprocessor.buffer.dtype == np.float16
    slot = preprocessor.buffer[0].astype(np.float64)
    if layout == "nhwc":
        slot = slot.transpose(2, 0, 1)
    expected = expected_normalised(image, NORMALISING).transpose(2, 0, 1)
    np.testing.assert_allclose(slot[:, 2:6], expected, rtol=2e-3, atol=2e-3)
    pad_red = (114 / 255 - 0.1) / 0.5
    np.testing.assert_allclose(slot[0, :2], pad_red, rtol=2e-3)


@pytest.mark.parametrize("layout", ["nchw", "nhwc"])
def test_uint8_buffer_holds_raw_pixels(layout: str) -> None:
    image = ramp_image(2, 4)
    shape = (1, 3, 4, 4) if layout == "nchw" else (1, 4, 4, 3)
    preprocessor = Preprocessor(PreprocessConfig(dtype="uint8", scale=1, layout=layout), shape)
    preprocessor.write(0, image)
    slot = preprocessor.buffer[0] if layout == "nhwc" else preprocessor.buffer[0].transpose(1, 2, 0)
    assert preprocessor.buffer.dtype == np.uint8
    np.testing.assert_array_equal(slot[1:3], image[:, :, ::-1])
    assert np.all(slot[0] == 114) and np.all(slot[3] == 114)


def test_slot_reuse_with_changing_source_sizes_repaints_padding() -> None:
    preprocessor = Preprocessor(PreprocessConfig(scale=1.0), (2, 3, 4, 4))
    preprocessor.write(0, solid(2, 4, (50, 50, 50)))  # pad rows 0 and 3
    preprocessor.write(0, solid(4, 4, (9, 9, 9)))  # covers everything: no stale padding may survive
    assert np.all(preprocessor.buffer[0] == 9)
    preprocessor.write(0, solid(2, 4, (50, 50, 50)))  # padding comes back
    assert np.all(preprocessor.buffer[0, :, 0] == 114) and np.all(preprocessor.buffer[0, :, 1:3] == 50)
    preprocessor.write(1, solid(4, 2, (60, 60, 60)))  # tall image: pad columns 0 and 3 in slot 1 only
    assert np.all(preprocessor.buffer[1, :, :, 0] == 114) and np.all(preprocessor.buffer[1, :, :, 1:3] == 60)
    assert np.all(preprocessor.buffer[0, :, 1:3] == 50)


def test_invalidate_repaints_padding_after_outside_writes() -> None:
    preprocessor = Preprocessor(PreprocessConfig(scale=1.0), (1, 3, 4, 4))
    image = solid(2, 4, (50, 50, 50))
    preprocessor.write(0, image)
    preprocessor.buffer[0] = -1.0  # someone else scribbles over the whole slot
    preprocessor.invalidate()
    preprocessor.write(0, image)
    assert np.all(preprocessor.buffer[0, :, 0] == 114) and np.all(preprocessor.buffer[0, :, 3] == 114)


def test_caller_supplied_buffer_is_used_in_place() -> None:
    owned = np.full((2, 3, 4, 4), -1.0, np.float32)
    preprocessor = Preprocessor(PreprocessConfig(scale=1.0), (2, 3, 4, 4), buffer=owned)
    preprocessor.write(1, solid(4, 4, (1, 2, 3)))
    assert preprocessor.buffer is owned and np.all(owned[1, 0] == 3) and np.all(owned[0] == -1.0)
    with pytest.raises(ValueError, match=r"float16\[2, 3, 4, 4\]; this model needs float32\[2, 3, 4, 4\]"):
        Preprocessor(PreprocessConfig(), (2, 3, 4, 4), buffer=np.zeros((2, 3, 4, 4), np.float16))


def test_non_contiguous_image_view_is_accepted() -> None:
    big = ramp_image(10, 12)
    view = big[2:6, 3:9]  # rows are strided
    preprocessor = Preprocessor(NORMALISING, (1, 3, 4, 6))
    preprocessor.write(0, view)
    expected = expected_normalised(np.ascontiguousarray(view), NORMALISING).transpose(2, 0, 1)
    np.testing.assert_allclose(preprocessor.buffer[0], expected, rtol=1e-6, atol=1e-6)


# -- errors ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("image", "message"),
    [
        (np.zeros((4, 4), np.uint8), "HxWx3"),
        (np.zeros((4, 4, 4), np.uint8), "HxWx3"),
        (np.zeros((4, 4, 3), np.float32), "uint8"),
        (np.zeros((0, 4, 3), np.uint8), "empty"),
        (np.zeros((4, 0, 3), np.uint8), "empty"),
        ([[1, 2, 3]], "numpy array"),
        (None, "numpy array"),
    ],
)
def test_bad_image_raises_preprocess_error(image, message: str) -> None:
    preprocessor = Preprocessor(PreprocessConfig(), (1, 3, 8, 8))
    with pytest.raises(PreprocessError, match=message):
        preprocessor.write(0, image)


def test_slot_index_out_of_range() -> None:
    preprocessor = Preprocessor(PreprocessConfig(), (2, 3, 8, 8))
    with pytest.raises(IndexError, match="slot index 2"):
        preprocessor.write(2, solid(8, 8, (0, 0, 0)))


@pytest.mark.parametrize(
    ("config", "shape", "dtype", "message"),
    [
        (PreprocessConfig(), (3, 8, 8), None, "4-D"),
        (PreprocessConfig(), (1, 1, 8, 8), None, "channels"),
        (PreprocessConfig(layout="nhwc"), (1, 3, 8, 8), None, "channels"),
        (PreprocessConfig(), (1, 3, "height", "width"), None, "preprocess.size"),
        (PreprocessConfig(size=(16, 16)), (1, 3, 8, 8), None, "differs"),
        (PreprocessConfig(dtype="float16"), (1, 3, 8, 8), np.float32, "preprocess.dtype is float16"),
        (PreprocessConfig(), (1, 3, 8, 8), np.uint8, "scale: 1"),
        (PreprocessConfig(), (1, 3, 8, 8), np.int64, "not supported"),
    ],
)
def test_bad_model_input_is_reported_at_construction(config, shape, dtype, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Preprocessor(config, shape, dtype)


def test_dynamic_dims_take_batch_one_and_configured_size() -> None:
    preprocessor = Preprocessor(PreprocessConfig(size=(32, 48)), ("batch", 3, None, -1))
    assert preprocessor.buffer.shape == (1, 3, 32, 48)
    assert preprocessor.input_size == (32, 48)


def test_model_dtype_wins_over_default_config_dtype() -> None:
    assert Preprocessor(PreprocessConfig(), (1, 3, 8, 8), np.float16).buffer.dtype == np.float16
    assert Preprocessor(PreprocessConfig(), (1, 3, 8, 8), "float32").buffer.dtype == np.float32
    assert Preprocessor(PreprocessConfig(dtype="float16"), (1, 3, 8, 8)).buffer.dtype == np.float16


# -- buffers --------------------------------------------------------------------------------------------


def test_buffer_is_allocated_once_and_batch_is_a_view() -> None:
    preprocessor = Preprocessor(PreprocessConfig(), (4, 3, 64, 64))
    buffer = preprocessor.buffer
    address = buffer.ctypes.data
    rng = np.random.default_rng(2)
    for frame in range(40):
        height, width = (48, 80) if frame % 2 else (90, 30)
        preprocessor.write(frame % 4, rng.integers(0, 256, (height, width, 3), dtype=np.uint8))
    assert preprocessor.buffer is buffer and preprocessor.buffer.ctypes.data == address
    view = preprocessor.batch(3)
    assert view.shape == (3, 3, 64, 64) and np.shares_memory(view, buffer)
    with pytest.raises(ValueError, match="1..4"):
        preprocessor.batch(5)
    with pytest.raises(ValueError, match="1..4"):
        preprocessor.batch(0)


@pytest.mark.parametrize("layout", ["nchw", "nhwc"])
@pytest.mark.parametrize(
    "config",
    [
        PreprocessConfig(),
        PreprocessConfig(mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225)),
        PreprocessConfig(color="bgr", dtype="float16"),
        PreprocessConfig(dtype="uint8", scale=1),
    ],
    ids=["scale-only", "imagenet", "bgr-float16", "uint8"],
)
def test_steady_state_write_allocates_no_frame_sized_arrays(layout: str, config: PreprocessConfig) -> None:
    shape = (1, 3, 416, 416) if layout == "nchw" else (1, 416, 416, 3)
    preprocessor = Preprocessor(config.model_copy(update={"layout": layout}), shape)
    image = np.random.default_rng(3).integers(0, 256, (272, 640, 3), dtype=np.uint8)
    preprocessor.write(0, image)  # first frame of this size allocates its scratch images
    tracemalloc.start()
    try:
        for _ in range(20):
            preprocessor.write(0, image)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # One 416x177 plane alone would be 73 KB (uint8) or 295 KB (float32); only small objects are allowed.
    assert peak < 16_000, f"per-frame allocations peaked at {peak} bytes"
