"""The on-ramp subcommands' parsers (`init`, `predict`) and an example under every subcommand's help. Light on
purpose (argparse only): the CLI builds its parser on every start; the handlers live in onramp/commands.py."""

from __future__ import annotations

import argparse
from collections.abc import Callable

Handler = Callable[[argparse.Namespace], int]
OUTPUT_KINDS = ("jsonl", "zmq", "ros2")

# Shown under `edgeinfer SUBCOMMAND --help`; a subcommand without an entry gets none (a test keeps them complete).
EXAMPLES: dict[str, str] = {
    "run": "edgeinfer run configs/demo.yaml\n  edgeinfer run robot.yaml --max-frames 100 --log-level DEBUG",
    "check": "edgeinfer check robot.yaml\n  sudo edgeinfer check --as-user edgeinfer /etc/edgeinfer/config.yaml\n"
             "  edgeinfer check --no-models robot.yaml      # schema, references and files only",
    "init": "edgeinfer init models/yolov3-tiny/yolov3-tiny.onnx --source models/media/bikes.mp4 > robot.yaml\n"
            "  edgeinfer init yolov8n.onnx --source /dev/video0 --output ros2 > robot.yaml\n"
            "  edgeinfer init best.onnx --source rtsp://10.0.0.5/stream --output zmq > robot.yaml",
    "predict": "edgeinfer predict models/yolov3-tiny/yolov3-tiny.onnx models/media/bikes.mp4 --frames 20\n"
               "  edgeinfer predict best.onnx photos/ --json",
    "doctor": "edgeinfer doctor\n  edgeinfer doctor --json",
    "keys": "edgeinfer keys server --dir keys/\n  edgeinfer keys robot1 --dir keys/clients",
    "models": "edgeinfer models list\n  edgeinfer models fetch yolov3-tiny\n"
              "  edgeinfer models fetch bikes --dir /var/lib/edgeinfer/models",
    "build": "edgeinfer build yolov8n.onnx -o yolov8n.engine --device dla0 --precision fp16",
    "inspect": "edgeinfer inspect yolov8n.engine\n  edgeinfer inspect yolov8n.engine --json",
    "bench": "edgeinfer bench models/yolov3-tiny/yolov3-tiny.onnx --duration 10\n"
             "  edgeinfer bench yolov8n.engine --batch 4 --json bench.json",
    "status": "edgeinfer status                      # the http output on 127.0.0.1:8321\n"
              "  edgeinfer status --config /etc/edgeinfer/config.yaml --json\n"
              "  edgeinfer status --zmq tcp://127.0.0.1:5561 || echo 'not OK'",
    "tail": "edgeinfer tail\n  edgeinfer tail --model yolov3-tiny --heartbeats\n"
            "  edgeinfer tail --zmq tcp://127.0.0.1:5560",
}


def add_parsers(sub: argparse._SubParsersAction, init: Handler, predict: Handler) -> None:
    init_parser = sub.add_parser("init", help="write a commented config for a model and a source (to stdout)",
                          description="Read the model (metadata, shapes, names), pick preprocessing and a "
                          "decoder, fit them as `check` does, and print a commented config.")
    init_parser.add_argument("model", help="the model file (.onnx; an engine gets a skeleton to complete)")
    init_parser.add_argument("--source", required=True, metavar="SRC",
                      help="a video file, an image folder, a camera (0, /dev/video0), rtsp:// or http:// URL, "
                      "tcp:// or ipc:// (ZeroMQ frames in), ros2:/topic, a GStreamer pipeline, or 'synthetic'")
    init_parser.add_argument("--output", choices=OUTPUT_KINDS, default="jsonl",
                      help="where records go: jsonl (stdout), zmq (PUB on 127.0.0.1:5560), ros2 (default: jsonl)")
    init_parser.add_argument("--id", default=None, help="the model's id (default: from the file name)")
    init_parser.set_defaults(func=init)

    predict_parser = sub.add_parser("predict", help="a quick look: run a model on a source once, one line per frame",
                             description="Run MODEL on SOURCE with the config `init` would write and print "
                             "what it finds, one line per frame (records as JSON with --json).")
    predict_parser.add_argument("model", help="the model file (.onnx)")
    predict_parser.add_argument("source", help="a video file, image, image folder, camera, URL, ... (as init --source)")
    predict_parser.add_argument("--frames", type=int, default=None, metavar="N",
                         help="stop after N frames (default: the whole file or folder; 1 from a live source)")
    predict_parser.add_argument("--json", action="store_true", help="print the JSON records instead of a summary")
    predict_parser.set_defaults(func=predict)


def add_examples(parser: argparse.ArgumentParser) -> None:
    """Put each subcommand's examples under its --help (after every module has added its subcommands)."""
    for action in parser._subparsers._group_actions if parser._subparsers else ():
        for name, subparser in action.choices.items():
            if name in EXAMPLES and not subparser.epilog:
                subparser.epilog = "examples:\n  " + EXAMPLES[name]
                subparser.formatter_class = argparse.RawDescriptionHelpFormatter
