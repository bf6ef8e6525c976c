"""The on-ramp commands' handlers (`init`, `predict`) and `models list` with sizes; their parsers are in
onramp/parsers.py."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..zoo import MEDIA, MODELS, WHEEL_MODELS
from ..zoo.fetch import model_files, wheel_model_path
from .init import InitError, make_config
from .predict import RunConfig, predict


def cmd_init(args: argparse.Namespace) -> int:
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


def predict_command(args: argparse.Namespace, run_config: RunConfig) -> int:
    return predict(args.model, args.source, args.frames, args.json, run_config)


def list_models(models_dir: Path) -> list[str]:
    """`models list`: each model and media with what it is, its download and whether it is fetched here."""
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
