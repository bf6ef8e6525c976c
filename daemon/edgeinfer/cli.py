"""Command line: run, check, doctor, keys, models.

Exit codes: 0 done, 1 runtime failure, 2 bad config (or a config that does not fit the model),
3 safe stop (watchdog). systemd's unit does not restart on 2: restarting cannot fix a config.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import time
from pathlib import Path

from . import __version__
from .logutil import setup_logging

log = logging.getLogger("edgeinfer")

EXIT_OK, EXIT_RUNTIME, EXIT_CONFIG = 0, 1, 2


def _print_config_error(exc) -> None:
    print(f"edgeinfer: invalid config {exc.source}:", file=sys.stderr)
    for problem in exc.problems:
        print(f"  {problem}", file=sys.stderr)


def _load_config(path: str):
    """The validated config, or None after printing every problem (the caller exits 2)."""
    from .config import ConfigError, load_config

    try:
        return load_config(path)
    except ConfigError as exc:
        _print_config_error(exc)
        return None


def cmd_check(args: argparse.Namespace) -> int:
    config = _load_config(args.config)
    if config is None:
        return EXIT_CONFIG
    if not args.no_models:
        from .config import ConfigError, Problem
        from .pipeline import check_models

        problems = [Problem(f"models[{i}]", message) for i, message in check_models(config)]
        if problems:
            _print_config_error(ConfigError(args.config, problems))
            return EXIT_CONFIG
    print(f"{args.config}: OK ({len(config.sources)} source(s), {len(config.models)} model(s), "
          f"{len(config.outputs)} output(s))")
    return EXIT_OK


def cmd_run(args: argparse.Namespace) -> int:
    from .backends import BackendError
    from .lazy import MissingDependency
    from .outputs import OutputError
    from .pipeline import PipelineError
    from .service import Daemon
    from .sources import SourceError

    config = _load_config(args.config)
    if config is None:
        return EXIT_CONFIG
    setup_logging(args.log_level or config.log_level)
    _quiet_opencv(args.log_level or config.log_level)

    daemon = Daemon(config, max_frames=args.max_frames)

    def on_stop_signal(signum, _frame):
        log.info("%s received, stopping", signal.Signals(signum).name)
        daemon.stop_requested.set()

    def on_reset_signal(_signum, _frame):
        # `systemctl kill -s USR1 edgeinfer`: leave a latched SAFE_STOP without restarting
        daemon.supervisor.reset()

    signal.signal(signal.SIGINT, on_stop_signal)
    signal.signal(signal.SIGTERM, on_stop_signal)
    signal.signal(signal.SIGUSR1, on_reset_signal)

    t0 = time.monotonic()
    try:
        daemon.start()
    except PipelineError as exc:
        log.error("%s", exc)
        daemon.stop()
        return EXIT_CONFIG
    except (BackendError, SourceError, OutputError, MissingDependency) as exc:
        log.error("cannot start: %s", exc)
        daemon.stop()
        return EXIT_RUNTIME
    log.info("running: %d source(s), %d model(s)", len(daemon.pipeline.sources), len(daemon.pipeline.workers))
    reason, code = daemon.run()
    elapsed = time.monotonic() - t0
    daemon.stop()
    stats = daemon.pipeline.stats()
    log.info("stopped (%s) after %.1f s: %d frame(s) published, %.1f fps%s", reason, elapsed,
             stats["published"], stats["published"] / elapsed if elapsed > 0 else 0.0,
             "" if daemon.clean_stop else "; some threads did not stop in time")
    log.debug("final stats: %s", json.dumps(stats, default=str))
    if code:
        log.critical("exiting with code %d after a watchdog safe stop", code)
    if not daemon.clean_stop:
        # A thread stuck inside a native call (a hung model) cannot be joined; leave without waiting for it.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code


def _quiet_opencv(level: str) -> None:
    """OpenCV prints its own warnings (stream timeouts) to stderr; ours already say it, rate-limited."""
    if level != "DEBUG":
        import cv2

        try:
            cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)
        except AttributeError:  # builds without the logging utilities: keep OpenCV's default
            pass


def cmd_doctor(args: argparse.Namespace) -> int:
    from .doctor import run_doctor

    return run_doctor(as_json=args.json)


def cmd_models(args: argparse.Namespace) -> int:
    from .zoo import MEDIA, MODELS, FetchError, fetch_media, fetch_model

    if args.models_cmd == "list":
        for name in MODELS:
            print(f"model  {name}")
        for name in MEDIA:
            print(f"media  {name}")
        return EXIT_OK
    setup_logging("INFO")
    try:
        if args.name in MEDIA:
            print(fetch_media(args.name, Path(args.dir)))
        else:
            files = fetch_model(args.name, Path(args.dir))
            print(files.onnx)
    except FetchError as exc:
        print(f"edgeinfer: {exc}", file=sys.stderr)
        return EXIT_RUNTIME
    return EXIT_OK


def cmd_keys(args: argparse.Namespace) -> int:
    from .lazy import MissingDependency
    from .zmqcommon import make_key_pair

    folder = Path(args.dir)
    existing = [p for p in (folder / f"{args.name}.key", folder / f"{args.name}.key_secret") if p.exists()]
    if existing and not args.force:
        print(f"edgeinfer: {existing[0]} exists; use another name or --force to replace it", file=sys.stderr)
        return EXIT_RUNTIME
    try:
        public, secret = make_key_pair(folder, args.name)
    except MissingDependency as exc:
        print(f"edgeinfer: {exc}", file=sys.stderr)
        return EXIT_RUNTIME
    print(f"public key (give to peers, or put in the daemon's curve.clients folder): {public}")
    print(f"key pair (keep private; curve.secret_key or the client's secret key):   {secret}")
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="edgeinfer", description="Inference daemon for robots and edge boxes")
    parser.add_argument("--version", action="version", version=f"edgeinfer {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run the daemon on a config")
    run.add_argument("config")
    run.add_argument("--max-frames", type=int, default=None, help="stop after N published frames")
    run.add_argument("--log-level", choices=["DEBUG", "INFO", "WARNING", "ERROR"], default=None)
    run.set_defaults(func=cmd_run)

    check = sub.add_parser("check", help="validate a config; exit 0 when valid, 2 when not")
    check.add_argument("config")
    check.add_argument("--no-models", action="store_true",
                       help="skip loading the models (schema, references and files only)")
    check.set_defaults(func=cmd_check)

    doctor = sub.add_parser("doctor", help="say what this box has: runtimes, GPU, DLA, ROS 2, ZeroMQ")
    doctor.add_argument("--json", action="store_true")
    doctor.set_defaults(func=cmd_doctor)

    keys = sub.add_parser("keys", help="make a CURVE key pair for ZeroMQ (NAME.key and NAME.key_secret)")
    keys.add_argument("name", help="file name stem, e.g. server or robot1")
    keys.add_argument("--dir", default=".", help="folder to write into (default: .)")
    keys.add_argument("--force", action="store_true", help="replace an existing pair")
    keys.set_defaults(func=cmd_keys)

    models = sub.add_parser("models", help="fetch the demo model and media")
    models_sub = models.add_subparsers(dest="models_cmd", required=True)
    fetch = models_sub.add_parser("fetch", help="download and convert a known model (or media)")
    fetch.add_argument("name")
    fetch.add_argument("--dir", default="models", help="models folder (default: ./models)")
    models_sub.add_parser("list", help="known models and media")
    models.set_defaults(func=cmd_models)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command != "run":
        logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
