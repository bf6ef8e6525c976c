"""The on-ramp commands (`init`, `predict`), `models list` with sizes, and an example under every subcommand's
help: what a new user reaches for first."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

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
}


def add_parsers(sub: argparse._SubParsersAction) -> None:
    from .init import OUTPUT_KINDS

    init = sub.add_parser("init", help="write a commented config for a model and a source (to stdout)",
                          description="Read the model (metadata, shapes, names), pick preprocessing and a "
                          "decoder, fit them as `check` does, and print a commented config.")
    init.add_argument("model", help="the model file (.onnx; an engine gets a skeleton to complete)")
    init.add_argument("--source", required=True, metavar="SRC",
                      help="a video file, an image folder, a camera (0, /dev/video0), rtsp:// or http:// URL, "
                      "tcp:// or ipc:// (ZeroMQ frames in), ros2:/topic, a GStreamer pipeline, or 'synthetic'")
    init.add_argument("--output", choices=OUTPUT_KINDS, default="jsonl",
                      help="where records go: jsonl (stdout), zmq (PUB on 127.0.0.1:5560), ros2 (default: jsonl)")
    init.add_argument("--id", default=None, help="the model's id (default: from the file name)")
    init.set_defaults(func=cmd_init)

    predict = sub.add_parser("predict", help="a quick look: run a model on a source once, one line per frame",
                             description="Run MODEL on SOURCE with the config `init` would write and print "
                             "what it finds, one line per frame (records as JSON with --json).")
    predict.add_argument("model", help="the model file (.onnx)")
    predict.add_argument("source", help="a video file, image, image folder, camera, URL, ... (as init --source)")
    predict.add_argument("--frames", type=int, default=None, metavar="N",
                         help="stop after N frames (default: the whole file or folder; 1 from a live source)")
    predict.add_argument("--json", action="store_true", help="print the JSON records instead of a summary")
    predict.set_defaults(func=cmd_predict)


def cmd_init(args: argparse.Namespace) -> int:
    from .init import InitError, make_config

    try:
        result = make_config(args.model, args.source, args.output, model_id=args.id)
    except InitError as exc:
        print(f"edgeinfer: {exc}", file=sys.stderr)
        return 2
    sys.stdout.write(result.text)
    if result.problems:
        print("edgeinfer: the config above does not pass `check` yet; edit what it names:", file=sys.stderr)
        for problem in result.problems:
            print(f"  models[0].{problem.removeprefix('models[0].')}", file=sys.stderr)
        return 2
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from .predict import predict

    return predict(args.model, args.source, args.frames, args.json)


def list_models(models_dir: Path) -> list[str]:
    """`models list`: each model and media with what it is, its download and whether it is fetched here."""
    from ..zoo import MEDIA, MODELS, WHEEL_MODELS
    from ..zoo.fetch import model_files, wheel_model_path

    rows = []
    for name, spec in MODELS.items():
        files = model_files(name, models_dir)
        rows.append(("model", name, spec, [files.onnx, files.cfg, files.weights, files.labels]))
    for name, spec in WHEEL_MODELS.items():
        rows.append(("model", name, spec, [wheel_model_path(name, models_dir)]))
    for name, spec in MEDIA.items():
        rows.append(("media", name, spec, [models_dir / "media" / spec.filename]))
    lines = [f"{'kind':6} {'name':18} {'download':>9}  {'here':<28} what", ]
    for kind, name, spec, paths in rows:
        present = [p for p in paths if p.is_file()]
        if len(present) == len(paths):
            here = f"fetched, {sum(p.stat().st_size for p in present) / 1e6:.1f} MB"
        elif present:
            here = "partly fetched"
        else:
            here = "not fetched"
        download = f"{spec.download_mb:.1f} MB" if spec.download_mb else "?"
        lines.append(f"{kind:6} {name:18} {download:>9}  {here:<28} {spec.what} (pip: {spec.requirement})")
    lines.append(f"(in {models_dir}; fetch one with `edgeinfer models fetch NAME --dir {models_dir}`)")
    return lines


def add_examples(parser: argparse.ArgumentParser) -> None:
    """Put each subcommand's examples under its --help (after every module has added its subcommands)."""
    for action in parser._subparsers._group_actions if parser._subparsers else ():
        for name, subparser in action.choices.items():
            if name in EXAMPLES and not subparser.epilog:
                subparser.epilog = "examples:\n  " + EXAMPLES[name]
                subparser.formatter_class = argparse.RawDescriptionHelpFormatter
