"""DETR-family detectors (RT-DETR, DETR, RF-DETR, D-FINE, Deformable DETR): a fixed set of queries, one box
each, so no NMS; the best `max_detections` above `conf_threshold` are kept per image.

Layouts (B = batch, Q = queries, nc = classes):
  combined       [B, Q, 4 + nc]             one output; boxes cxcywh normalised to the input, scores already
                                            sigmoid (Ultralytics RT-DETR export); best class per query
  split_softmax  [B, Q, 4] + [B, Q, nc + 1] boxes and logits; softmax over nc + 1 where the last class is
                                            "no object" (the original DETR); best real class per query
  split_sigmoid  [B, Q, 4] + [B, Q, nc]     boxes and logits; sigmoid per class (RF-DETR, D-FINE and
                                            Deformable DETR without their postprocessor); top-k over Q x nc
  triple         boxes [B, K, 4] xyxy + scores [B, K] + labels [B, K]   already post-processed (the D-FINE /
                                            RT-DETR-Paddle exports with an `orig_target_sizes` input)

`layout: auto` picks only where the shapes leave no doubt:
  one 3-D output                       -> combined
  two outputs [B, Q, 4] and [B, Q, C]  -> split_softmax if C == len(labels) + 1, split_sigmoid if C ==
                                          len(labels); without labels (or neither) the two share a shape, so
                                          the config must say which (a config error names both)
  three outputs                        -> triple (labels told from scores by integer type, else by name)
Where the box output cannot be told from the logits by shape (both end in 4), the one output whose name holds
"box" is taken; failing that, `outputs:` must name them.

Box units: combined and split layouts are normalised to the network input. Triple boxes are in the pixels of
the size the model was given: the pipeline fills `orig_target_sizes` with the network input size, so they are
input pixels and go through the same letterbox undo as every other detector (filling it with the frame size
would only be right for a stretched, never for a letterboxed input). A triple model without that input
usually emits normalised boxes: `box_units` says which when the default is wrong.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
from pydantic import Field, field_validator

from edgeinfer.decoders.base import (
    DecodeError,
    Decoder,
    DecoderContext,
    OutputInfo,
    check_batch_item,
    check_outputs,
    normalize_shape,
    resolve_class_filter,
    validate_classes,
)
from edgeinfer.preprocess.cpu import Transform
from edgeinfer.results import Detections
from edgeinfer.schema import StrictModel

DetrLayout = Literal["combined", "split_softmax", "split_sigmoid", "triple"]
ROLES = ("boxes", "logits", "scores", "labels")


class DetrDecoderConfig(StrictModel):
    type: Literal["detr"]
    layout: Literal["auto", "combined", "split_softmax", "split_sigmoid", "triple"] = "auto"
    conf_threshold: float = Field(0.5, ge=0.0, le=1.0)  # kept when score >= conf_threshold
    max_detections: int = Field(100, gt=0)  # top-k per image
    classes: list[int | str] | None = None  # keep only these class ids or names; None keeps all
    box_format: Literal["cxcywh", "xyxy"] | None = None  # None: cxcywh, triple: xyxy
    box_units: Literal["normalized", "input_pixels"] | None = None  # None: see the module docstring
    outputs: dict[Literal["boxes", "logits", "scores", "labels"], str] | None = Field(
        default=None, description="output names by role, when shapes cannot tell them apart"
    )

    @field_validator("classes")
    @classmethod
    def _classes_valid(cls, value: list[int | str] | None) -> list[int | str] | None:
        return validate_classes(value)


def _describe(shape: Sequence[Any]) -> str:
    return "[" + ", ".join("?" if d is None else str(d) for d in normalize_shape(shape)) + "]"


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (np.tanh(0.5 * x) + 1.0)  # no overflow warning for large negative logits


class DetrDecoder(Decoder):
    def __init__(self, config: DetrDecoderConfig, labels: Sequence[str], output_shapes: Sequence[Sequence[Any]],
                 context: DecoderContext | None = None) -> None:
        super().__init__(labels)
        self.config = config
        context = context or DecoderContext()
        infos = list(context.outputs) or [OutputInfo(f"output {i}", tuple(shape))
                                          for i, shape in enumerate(output_shapes)]
        has_size_input = context.has_size_input
        self.input_size = context.input_size
        if not infos:
            raise DecodeError("the DETR decoder needs at least one model output, got none")
        self.layout, self.reason, self.roles = self._resolve(infos)
        self.box_format = config.box_format or ("xyxy" if self.layout == "triple" else "cxcywh")
        if config.box_units is not None:
            self.box_units = config.box_units
        elif self.layout == "triple" and has_size_input:
            self.box_units = "input_pixels"
        else:
            self.box_units = "normalized"
        self._classes = resolve_class_filter(config.classes, self.labels)

    def describe(self) -> str:
        roles = ", ".join(f"{role}=output {index}" for role, index in self.roles.items())
        return (f"detr layout {self.layout} ({self.reason}); {roles}; boxes {self.box_format} "
                f"{self.box_units.replace('_', ' ')}")

    # -- choosing the layout -----------------------------------------------------------------------------
    def _resolve(self, infos: list[OutputInfo]) -> tuple[str, str, dict[str, int]]:
        config = self.config
        shapes = [normalize_shape(info.shape) for info in infos]
        described = ", ".join(f"{info.name} {_describe(info.shape)}" for info in infos)
        named = self._named_roles(infos)
        layout = config.layout
        if layout == "auto":
            if len(infos) == 1:
                layout, reason = "combined", "auto: one output"
            elif len(infos) == 2:
                layout, reason = self._split_kind(infos, named, described)
            elif len(infos) == 3:
                layout, reason = "triple", "auto: three outputs"
            else:
                raise DecodeError(f"cannot pick a DETR layout for {len(infos)} outputs ({described}); set "
                                  "decoder.layout (combined, split_softmax, split_sigmoid, triple) and "
                                  "decoder.outputs")
        else:
            reason = "set in the config"
        if layout == "combined":
            if len(shapes[0]) != 3 or (shapes[0][2] is not None and shapes[0][2] < 5):
                raise DecodeError(f"DETR layout combined expects output 0 as [B, Q, 4 + nc], got {described}")
            return layout, reason, {"boxes": 0}
        if layout in ("split_softmax", "split_sigmoid"):
            return layout, reason, self._split_roles(infos, named, described)
        return layout, reason, self._triple_roles(infos, named, described)

    def _named_roles(self, infos: list[OutputInfo]) -> dict[str, int]:
        if not self.config.outputs:
            return {}
        by_name = {info.name: index for index, info in enumerate(infos)}
        roles = {}
        for role, name in self.config.outputs.items():
            if name not in by_name:
                raise DecodeError(f"outputs.{role}: the model has no output {name!r}; its outputs: "
                                  f"{', '.join(by_name)}")
            roles[role] = by_name[name]
        return roles

    def _split_roles(self, infos: list[OutputInfo], named: dict[str, int], described: str) -> dict[str, int]:
        if len(infos) < 2:
            raise DecodeError(f"DETR split layouts need two outputs (boxes [B, Q, 4], logits [B, Q, nc]), got "
                              f"{described}")
        if "boxes" in named and "logits" in named:
            return {"boxes": named["boxes"], "logits": named["logits"]}
        shapes = [normalize_shape(info.shape) for info in infos[:2]]
        four = [i for i, shape in enumerate(shapes) if len(shape) == 3 and shape[2] == 4]
        if len(four) == 2:  # nc (+ no-object) == 4: the shapes are equal, only the names can tell
            four = [i for i, info in enumerate(infos[:2]) if "box" in info.name.lower()]
        if len(four) != 1:
            raise DecodeError(f"cannot tell the boxes output from the logits: {described}; set decoder.outputs "
                              "{boxes: NAME, logits: NAME}")
        return {"boxes": four[0], "logits": 1 - four[0]}

    def _split_kind(self, infos: list[OutputInfo], named: dict[str, int], described: str) -> tuple[str, str]:
        roles = self._split_roles(infos, named, described)
        classes = normalize_shape(infos[roles["logits"]].shape)[-1]
        count = len(self.labels)
        if count and classes == count + 1:
            return "split_softmax", f"auto: {classes} logits = {count} labels + no-object"
        if count and classes == count:
            return "split_sigmoid", f"auto: {classes} logits = {count} labels"
        have = f"{count} labels" if count else "no labels"
        raise DecodeError(f"DETR outputs {described} fit both split_softmax (DETR: logits nc + 1 with a "
                          f"no-object class) and split_sigmoid (RF-DETR, D-FINE: logits nc), and {have} cannot "
                          "tell them apart; set decoder.layout to split_softmax or split_sigmoid")

    def _triple_roles(self, infos: list[OutputInfo], named: dict[str, int], described: str) -> dict[str, int]:
        if len(infos) < 3:
            raise DecodeError(f"DETR layout triple needs three outputs (boxes, scores, labels), got {described}")
        roles = dict(named)
        rest = [i for i in range(3) if i not in roles.values()]
        if "boxes" not in roles:
            four = [i for i in rest if len(normalize_shape(infos[i].shape)) == 3]
            if len(four) != 1:
                raise DecodeError(f"cannot tell the boxes output of {described}; set decoder.outputs")
            roles["boxes"] = four[0]
            rest.remove(four[0])
        if rest and ("scores" not in roles or "labels" not in roles):
            integer = [i for i in rest if infos[i].dtype is not None and np.issubdtype(infos[i].dtype, np.integer)]
            by_name = [i for i in rest if "label" in infos[i].name.lower() or "class" in infos[i].name.lower()]
            pick = integer if len(integer) == 1 else by_name if len(by_name) == 1 else []
            if not pick or len(rest) != 2:
                raise DecodeError(f"cannot tell scores from labels in {described} (same shape and type); set "
                                  "decoder.outputs {boxes: NAME, scores: NAME, labels: NAME}")
            roles.setdefault("labels", pick[0])
            roles.setdefault("scores", next(i for i in rest if i != pick[0]))
        return {role: roles[role] for role in ("boxes", "scores", "labels")}

    # -- decoding ----------------------------------------------------------------------------------------
    def decode(self, outputs: Sequence[np.ndarray], index: int, transform: Transform) -> Detections:
        check_outputs(outputs, max(self.roles.values()) + 1, f"DETR layout {self.layout}")
        boxes_out = outputs[self.roles["boxes"]]
        check_batch_item(boxes_out, index, "the boxes output")
        if self.layout == "combined":
            item = boxes_out[index]
            if item.ndim != 2 or item.shape[1] < 5:
                raise DecodeError(f"DETR combined output: expected [B, Q, 4 + nc], got {boxes_out.shape}")
            boxes, class_scores = item[:, :4], item[:, 4:]
            class_ids = class_scores.argmax(axis=1)
            scores = class_scores[np.arange(item.shape[0]), class_ids]
        elif self.layout == "split_softmax":
            boxes, logits = boxes_out[index], self._item(outputs, "logits", index)
            logits = logits.astype(np.float64)
            logits -= logits.max(axis=1, keepdims=True)
            probs = np.exp(logits)
            probs /= probs.sum(axis=1, keepdims=True)
            real = probs[:, :-1]  # the last class is "no object"
            class_ids = real.argmax(axis=1)
            scores = real[np.arange(real.shape[0]), class_ids]
        elif self.layout == "split_sigmoid":
            boxes, logits = boxes_out[index], self._item(outputs, "logits", index)
            columns = None
            if self._classes is not None:  # rank only the wanted classes, so rare ones are not crowded out
                columns = self._classes[self._classes < logits.shape[1]]
                logits = logits[:, columns]
            flat = logits.reshape(-1)
            # top-k over queries x classes first, then the sigmoid on k values only (it is monotonic)
            k = min(self.config.max_detections, flat.size)
            best = np.argpartition(-flat, k - 1)[:k] if 0 < k < flat.size else np.arange(flat.size)
            scores = _sigmoid(flat[best].astype(np.float64))
            queries, class_ids = np.divmod(best, max(logits.shape[1], 1))
            if columns is not None:
                class_ids = columns[class_ids]
            boxes = boxes[queries]
        else:
            boxes = boxes_out[index]
            scores = self._item(outputs, "scores", index).reshape(-1)
            class_ids = np.rint(self._item(outputs, "labels", index).reshape(-1)).astype(np.int64)
        if boxes.ndim != 2 or boxes.shape[1] != 4 or boxes.shape[0] != scores.shape[0]:
            raise DecodeError(f"DETR {self.layout}: boxes {boxes.shape} do not pair with {scores.shape[0]} scores")
        keep = scores >= self.config.conf_threshold
        if self._classes is not None:
            keep &= np.isin(class_ids, self._classes)
        keep &= class_ids >= 0  # negative ids mark padding rows in some exports
        boxes, scores, class_ids = boxes[keep], scores[keep], class_ids[keep]
        order = np.argsort(-scores, kind="stable")[: self.config.max_detections]
        pixels = self._to_input_pixels(boxes[order], transform)
        return self.make_detections(class_ids[order], scores[order].astype(np.float64),
                                    transform.to_source(pixels))

    def _item(self, outputs: Sequence[np.ndarray], role: str, index: int) -> np.ndarray:
        output = outputs[self.roles[role]]
        check_batch_item(output, index, f"the {role} output")
        return output[index]

    def _to_input_pixels(self, boxes: np.ndarray, transform: Transform) -> np.ndarray:
        out = boxes.astype(np.float64)
        if self.box_format == "cxcywh":
            half = out[:, 2:] * 0.5
            out[:, 2:] = out[:, :2] + half
            out[:, :2] -= half
        if self.box_units == "normalized":
            if self.input_size is None:
                raise DecodeError("normalised DETR boxes need the network input size, which is unknown")
            width, height = self.input_size
            out[:, 0::2] *= width
            out[:, 1::2] *= height
        return out
