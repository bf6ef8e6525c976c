"""Classification and dense-map results as ROS message contents, without ROS (rclpy is never imported into
pytest): vision_msgs/Classification's ranked hypotheses, sensor_msgs/Image fields of a dense map and back.
tests/integration/test_ros2_results.py sends the real messages over DDS."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from edgeinfer.decoders import declared_payload
from edgeinfer.decoders.classify import ClassifyDecoderConfig
from edgeinfer.decoders.dense import DenseDecoder, DenseDecoderConfig
from edgeinfer.decoders.yolo import YoloDecoderConfig
from edgeinfer.preprocess.cpu import Transform
from edgeinfer.results import Classification
from edgeinfer.transports.ros import convert as cv
from edgeinfer.transports.ros.output import Ros2OutputConfig

RNG = np.random.default_rng(11)


def test_classifications_keep_the_decoders_ranking_with_numbers_or_labels_as_class_id():
    ranked = [Classification(2, "180", 0.91), Classification(0, "0", 0.06), Classification(3, "270", 0.02)]
    assert cv.classification_values(ranked, False) == [("2", 0.91), ("0", 0.06), ("3", 0.02)]
    assert cv.classification_values(ranked, True) == [("180", 0.91), ("0", 0.06), ("270", 0.02)]
    assert cv.classification_values([], False) == []  # nothing above the threshold: an empty results[]


def test_segmentation_ids_go_as_mono8_bytes_row_by_row():
    ids = RNG.integers(0, 21, (5, 7), dtype=np.uint8)
    height, width, encoding, big, step, data = cv.dense_image_fields("segmentation", ids)
    assert (height, width, encoding, big, step) == (5, 7, "mono8", 0, 7)
    assert bytes(data) == ids.tobytes()
    np.testing.assert_array_equal(cv.image_fields_to_array(encoding, height, width, step, big, bytes(data)), ids)


def test_class_ids_beyond_255_go_as_mono16_and_other_integer_maps_are_narrowed_or_widened():
    ids = RNG.integers(0, 300, (4, 6)).astype(np.uint16)
    height, width, encoding, big, step, data = cv.dense_image_fields("segmentation", ids)
    assert (encoding, step, big) == ("mono16", 12, int(sys.byteorder == "big"))
    np.testing.assert_array_equal(cv.image_fields_to_array(encoding, height, width, step, big, bytes(data)), ids)
    # an int64 argmax that fits 8 bits is mono8; one that does not is mono16
    assert cv.dense_image_fields("segmentation", np.full((2, 2), 7, np.int64))[2] == "mono8"
    assert cv.dense_image_fields("segmentation", np.full((2, 2), 700, np.int64))[2] == "mono16"


def test_saliency_and_depth_go_as_32fc1_with_the_values_unchanged():
    values = RNG.random((3, 5)).astype(np.float32) * 40.0
    for task in ("saliency", "depth"):
        height, width, encoding, big, step, data = cv.dense_image_fields(task, values)
        assert (height, width, encoding, step) == (3, 5, "32FC1", 20)
        back = cv.image_fields_to_array(encoding, height, width, step, big, bytes(data))
        assert back.dtype == np.float32
        np.testing.assert_array_equal(back, values)


def test_a_non_contiguous_map_is_published_row_by_row_without_padding():
    wide = RNG.random((4, 10)).astype(np.float32)
    view = wide[:, ::2]  # strided: every other column
    height, width, _, big, step, data = cv.dense_image_fields("depth", view)
    assert (width, step, len(bytes(data))) == (5, 20, 80)
    np.testing.assert_array_equal(cv.image_fields_to_array("32FC1", height, width, step, big, bytes(data)), view)


def test_big_endian_floats_are_read_back_the_same():
    values = np.array([[1.5, -2.25], [3.0, 1e-3]], np.float32)
    data = values.astype(">f4").tobytes()
    np.testing.assert_array_equal(cv.image_fields_to_array("32FC1", 2, 2, 8, 1, data), values)


@pytest.mark.parametrize("task, values, words", [
    ("segmentation", np.zeros((2, 2), np.float32), ["segmentation map of float32", "class ids"]),
    ("segmentation", np.full((2, 2), -1, np.int32), ["class ids"]),
    ("saliency", np.zeros((2, 2, 1), np.float32), ["[height, width]", "(2, 2, 1)"]),
    ("saliency", np.zeros((0, 3), np.float32), ["[height, width]"]),
    ("normals", np.zeros((2, 2), np.float32), ["unknown dense task", "segmentation, saliency, depth"]),
])
def test_maps_that_cannot_be_an_image_are_refused_with_the_reason(task, values, words):
    with pytest.raises(ValueError) as info:
        cv.dense_image_fields(task, values)
    assert all(w in str(info.value) for w in words), str(info.value)


@pytest.mark.parametrize("args, words", [
    (("rgb8", 2, 2, 6, 0, b"\0" * 12), ["unsupported encoding"]),
    (("32FC1", 2, 2, 8, 0, b"\0" * 12), ["12 data bytes", "2x2"]),
    (("mono16", 2, 3, 4, 0, b"\0" * 12), ["step 4"]),
])
def test_bad_dense_images_are_refused_when_read_back(args, words):
    with pytest.raises(ValueError) as info:
        cv.image_fields_to_array(*args)
    assert all(w in str(info.value) for w in words)


def test_the_kind_each_decoder_config_declares_picks_the_topic_before_any_model_loads():
    assert declared_payload(ClassifyDecoderConfig(type="classify")).kind == "classifications"
    assert declared_payload(DenseDecoderConfig(type="dense", task="depth")).kind == "dense"
    assert declared_payload(YoloDecoderConfig()).kind == "detections"


def test_result_topics_are_per_model_and_configurable():
    config = Ros2OutputConfig()
    assert config.classifications_topic == "~/{model}/classifications" and config.dense_topic == "~/{model}/dense"
    assert config.qos.dense.resolved()[0] == "reliable"  # big images: reliable (best effort loses fragments)
    with pytest.raises(ValueError, match="must contain {model}"):
        Ros2OutputConfig(classifications_topic="/classes")
    with pytest.raises(ValueError):
        Ros2OutputConfig(dense_topic="~/{model}/bad-name")


def test_segmentation_of_more_than_256_classes_is_16_bit_on_every_frame():
    # a frame whose ids all fit 8 bits still comes out 16-bit: a ROS subscriber sees one encoding (mono16)
    config = DenseDecoderConfig(type="dense", task="segmentation")
    decoder = DenseDecoder(config, [], [(1, 300, 4, 4)])
    scores = np.zeros((1, 300, 4, 4), np.float32)
    scores[0, 5] = 1.0
    transform = Transform(scale_x=1.0, scale_y=1.0, pad_x=0.0, pad_y=0.0, src_w=4, src_h=4)
    dense = decoder.decode([scores], 0, transform)
    assert dense.map.dtype == np.uint16 and int(dense.map.max()) == 5
    assert cv.dense_image_fields(dense.task, dense.map)[2] == "mono16"
    narrow = DenseDecoder(config, [], [(1, 21, 4, 4)]).decode([scores[:, :21]], 0, transform)
    assert narrow.map.dtype == np.uint8
