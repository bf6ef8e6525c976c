"""`edgeinfer status` and `edgeinfer tail`: the running daemon's health and its live records in a terminal.

Two channels reach a running daemon:
- the http output (default, http://127.0.0.1:8321/): `/api/status` (heartbeat + pipeline counters) and
  `/api/records` (NDJSON); read with the standard library only, so the command works on a box without
  aiohttp;
- the ZeroMQ output: the control socket's `status` command (the heartbeat only) and the PUB socket's records.
`--config FILE` picks the channel from the daemon's own config (its http output first, else its zmq output).

`status` exit codes (Nagios-style, for scripts and health checks): 0 OK, 1 DEGRADED, 2 FAULT or SAFE_STOP,
3 unknown (the daemon cannot be reached, refused the token, or has no heartbeat yet).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any

from .preflight import load_config
from .problems import ConfigError
from .transports.zmq.client import Control, ResultReader  # pyzmq itself is imported when they connect

DEFAULT_URL = "http://127.0.0.1:8321/"
EXIT_OK, EXIT_DEGRADED, EXIT_FAULT, EXIT_UNKNOWN = 0, 1, 2, 3
STATE_EXIT = {"OK": EXIT_OK, "DEGRADED": EXIT_DEGRADED, "FAULT": EXIT_FAULT, "SAFE_STOP": EXIT_FAULT}


class Unreachable(Exception):
    pass


@dataclass
class Channel:
    url: str | None = None  # the http output's base URL
    token: str | None = None
    zmq_control: str | None = None
    zmq_pub: str | None = None

    def describe(self) -> str:
        return self.url or self.zmq_control or self.zmq_pub or "?"


# -- finding the daemon ---------------------------------------------------------------------------------------

def add_channel_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--url", default=None, help=f"the http output's address (default: $EDGEINFER_URL or "
                        f"{DEFAULT_URL})")
    parser.add_argument("--token-file", default=None, help="file holding the http output's access token "
                        "(or set $EDGEINFER_TOKEN)")
    parser.add_argument("--zmq", metavar="ENDPOINT", default=None,
                        help="use the ZeroMQ output instead: its control endpoint (status) or PUB endpoint (tail)")
    parser.add_argument("--config", metavar="FILE", default=None,
                        help="find the daemon from its config: its http output, else its zmq output")
    parser.add_argument("--timeout", type=float, default=3.0, help="seconds to wait for an answer (default 3)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of the human-readable text")


def _connectable(host: str) -> str:
    return "127.0.0.1" if host in ("0.0.0.0", "", "*") else ("::1" if host == "::" else host)


def channel_from_args(args: argparse.Namespace) -> Channel:
    token = os.environ.get("EDGEINFER_TOKEN")
    if args.token_file:
        token = _read_token(args.token_file)
    if args.zmq:
        return Channel(zmq_control=args.zmq, zmq_pub=args.zmq)
    if args.url:
        return Channel(url=_with_slash(args.url), token=token)
    if args.config:
        return _channel_from_config(args.config, token)
    return Channel(url=_with_slash(os.environ.get("EDGEINFER_URL", DEFAULT_URL)), token=token)


def _read_token(path: str) -> str:
    try:
        return open(path).read().strip().splitlines()[0].strip()
    except (OSError, IndexError) as exc:
        raise Unreachable(f"cannot read a token from {path}: {exc}") from exc


def _with_slash(url: str) -> str:
    return url if url.endswith("/") else url + "/"


def _channel_from_config(path: str, token: str | None) -> Channel:
    try:
        config = load_config(path, preflight=False)  # only where the daemon listens: no file checks
    except ConfigError as exc:
        raise Unreachable(f"invalid config {path}: " + "; ".join(str(p) for p in exc.problems)) from exc
    for output in config.outputs:
        if output.type == "http":
            if output.port == 0:
                raise Unreachable(f"{path}: the http output's port is 0 (picked at start, logged as 'status "
                                  f"page on ...'): give that address with --url")
            host = _connectable(output.host)
            host = f"[{host}]" if ":" in host else host
            if output.token_file is not None:
                token = _read_token(str(output.token_file))
            elif output.token is not None:
                token = output.token
            return Channel(url=f"http://{host}:{output.port}/", token=token)
    for output in config.outputs:
        if output.type == "zmq":
            pub = output.endpoint.replace("*", "127.0.0.1").replace("0.0.0.0", "127.0.0.1")
            return Channel(zmq_control=output.control_endpoint, zmq_pub=pub)
    raise Unreachable(f"{path} has no http or zmq output: nothing to ask the daemon through "
                      f"(add `- type: http` to its outputs)")


# -- asking it ---------------------------------------------------------------------------------------------

def _request(channel: Channel, path: str, timeout: float) -> Any:
    request = urllib.request.Request(channel.url + path)
    if channel.token:
        request.add_header("Authorization", f"Bearer {channel.token}")
    try:
        return urllib.request.urlopen(request, timeout=timeout)  # noqa: S310 (the user's own daemon URL)
    except urllib.error.HTTPError as exc:
        if exc.code == 401:
            raise Unreachable(f"{channel.url}: the access token is missing or wrong (--token-file, "
                              f"$EDGEINFER_TOKEN)") from exc
        raise Unreachable(f"{channel.url}{path}: HTTP {exc.code} {exc.reason}") from exc
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise Unreachable(f"cannot reach the daemon at {channel.url}: {reason} (is it running with an http "
                          f"output? --url, --config)") from exc


def fetch_status(channel: Channel, timeout: float) -> dict[str, Any]:
    """{"state", "heartbeat", "stats"?, "models"?}: from /api/status, or the ZeroMQ control's `status`."""
    if channel.url is not None:
        with _request(channel, "api/status", timeout) as response:
            return json.loads(response.read())

    try:
        with Control(channel.zmq_control, timeout=timeout) as control:
            reply = control.status()
    except TimeoutError as exc:
        raise Unreachable(f"no answer from the control socket {channel.zmq_control} within {timeout} s") from exc
    if not reply.get("ok"):
        raise Unreachable(f"{channel.zmq_control}: {reply.get('error')}")
    heartbeat = reply.get("heartbeat")
    return {"ok": True, "state": (heartbeat or {}).get("state", "STARTING"), "heartbeat": heartbeat}


# -- edgeinfer status ---------------------------------------------------------------------------------------

def cmd_status(args: argparse.Namespace) -> int:
    try:
        channel = channel_from_args(args)
        status = fetch_status(channel, args.timeout)
    except Unreachable as exc:
        if args.json:
            print(json.dumps({"ok": False, "state": "UNKNOWN", "error": str(exc)}))
        else:
            print(f"edgeinfer: UNKNOWN: {exc}", file=sys.stderr)
        return EXIT_UNKNOWN
    state = status.get("state") or "UNKNOWN"
    if args.json:
        print(json.dumps(status, default=str))
    else:
        print(format_status(status, channel))
    return STATE_EXIT.get(state, EXIT_UNKNOWN)


def _ms(value: Any) -> str:
    return "–" if value is None else f"{value:.0f} ms"


def format_status(status: dict[str, Any], channel: Channel) -> str:
    hb = status.get("heartbeat") or {}
    stats = status.get("stats") or {}
    entities = hb.get("entities") or {}
    state = status.get("state") or "UNKNOWN"
    lines = []
    heard = f", heartbeat {time.time() - hb['stamp']:.1f} s old" if "stamp" in hb else ""
    lines.append(f"edgeinfer {state}  (cycle {hb.get('cycle', '–')}{heard}; {channel.describe()})")
    for eid, e in entities.items():
        if e.get("status") != "OK":
            why = e.get("last_violation") or e.get("last_fault") or ""
            lines.append(f"  ! {e.get('kind')} {eid}: {e.get('status')}{' - ' + why if why else ''}")
    if hb.get("failing_outputs"):
        lines.append(f"  ! failing outputs: {', '.join(hb['failing_outputs'])}")

    models = stats.get("models") or {}
    infos = status.get("models") or {}
    fps = hb.get("fps") or {}
    model_ids = list(dict.fromkeys([*fps, *models]))
    if model_ids:
        lines.append("models:")
        for mid in model_ids:
            m, info = models.get(mid, {}), infos.get(mid, {})
            serving = (hb.get("serving") or {}).get(mid) or info.get("serving") or {}
            backend = info.get("backend") or serving.get("backend") or ""
            parts = [f"  {mid:<20} {entities.get(mid, {}).get('status', '?'):<8}",
                     f"{fps.get(mid, m.get('fps', 0.0)):6.1f} fps"]
            if m:
                parts.append(f"infer {_ms(m.get('last_infer_ms'))}, age {_ms(m.get('last_age_ms'))}, "
                             f"published {m.get('published', 0)}, stale drops {m.get('stale_dropped', 0)}, "
                             f"errors {m.get('infer_errors', 0) + m.get('decode_errors', 0)}")
            if backend:
                parts.append(f"{backend}{' on ' + info['device'] if info.get('device') else ''}")
            if serving.get("path") is not None:
                parts.append(f"link {serving.get('link')} {serving.get('path')}")
            lines.append("  ".join(parts))

    sources = stats.get("sources") or {}
    ages = hb.get("frame_age_ms") or {}
    drops: dict[str, int] = {}
    for m in models.values():
        for sid, n in (m.get("drops") or {}).items():
            drops[sid] = drops.get(sid, 0) + n
    source_ids = list(dict.fromkeys([*sources, *ages,
                                     *(k for k, e in entities.items() if e.get("kind") == "source")]))
    if source_ids:
        lines.append("sources:")
        for sid in source_ids:
            s = sources.get(sid, {})
            parts = [f"  {sid:<20} {entities.get(sid, {}).get('status', '?'):<8}"]
            if s:
                parts.append(f"{s.get('fps', 0.0):6.1f} fps")
            parts.append(f"newest frame {_ms(ages.get(sid))} old")
            if s:
                parts.append(f"{s.get('state')}, frames {s.get('frames', 0)}, dropped {drops.get(sid, 0)}, "
                             f"bad {s.get('bad_frames', 0)}, reconnects {s.get('reconnects', 0)}")
            lines.append("  ".join(parts))
    outputs = [(k, e) for k, e in entities.items() if e.get("kind") == "output"]
    if outputs:
        out_stats = stats.get("outputs") or {}
        lines.append("outputs:")
        for oid, e in outputs:
            o = out_stats.get(oid)
            counts = f"  published {o['published']}, errors {o['errors']}" if o else ""
            lines.append(f"  {oid:<20} {e.get('status', '?'):<8}{counts}")
    return "\n".join(lines)


# -- edgeinfer tail -----------------------------------------------------------------------------------------

def format_record(record: dict[str, Any]) -> str:
    clock = time.strftime("%H:%M:%S", time.localtime(record.get("stamp") or time.time()))
    if record.get("type") == "heartbeat":
        fps = ", ".join(f"{k} {v:.1f} fps" for k, v in (record.get("fps") or {}).items())
        return f"{clock} heartbeat {record.get('state')} cycle {record.get('cycle')}  {fps}"
    head = (f"{clock} {record.get('source')}#{record.get('frame')} {record.get('model')} {record.get('status')}"
            f"  infer {_ms(record.get('infer_ms'))}  age {_ms(record.get('age_ms'))}")
    if record.get("error"):
        return f"{head}  error: {record['error']}"
    if "detections" in record:
        found = ", ".join(_detection(d) for d in record["detections"])
        return f"{head}  {len(record['detections'])} found{': ' + found if found else ''}"
    if "classifications" in record:
        return head + "  " + ", ".join(f"{c['label']} {c['score']:.2f}" for c in record["classifications"])
    if record.get("dense"):
        return f"{head}  {record['dense'].get('task')} {record['dense'].get('summary', '')}"
    return head


def _detection(d: dict[str, Any]) -> str:
    track = d.get("track_id")
    return f"{'' if track is None else f'#{track} '}{d.get('label')} {d.get('score', 0.0):.2f}"


def cmd_tail(args: argparse.Namespace) -> int:
    try:
        channel = channel_from_args(args)
        records = _http_records(channel, args) if channel.url is not None else _zmq_records(channel, args)
        shown = 0
        for record in records:
            if args.model and record.get("model") not in (None, args.model):
                continue
            if args.source and record.get("source") not in (None, args.source):
                continue
            print(json.dumps(record, separators=(",", ":")) if args.json else format_record(record), flush=True)
            shown += 1
            if args.count and shown >= args.count:
                break
    except Unreachable as exc:
        print(f"edgeinfer: {exc}", file=sys.stderr)
        return EXIT_UNKNOWN
    except KeyboardInterrupt:
        pass
    except BrokenPipeError:  # `edgeinfer tail | head`
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return EXIT_OK


def _http_records(channel: Channel, args: argparse.Namespace):
    query = "?heartbeats=1" if args.heartbeats else ""
    # the server writes a keep-alive line every 5 s, so a read timeout means the daemon is gone
    with _request(channel, "api/records" + query, max(args.timeout, 10.0)) as response:
        try:
            for line in response:
                if line.strip():
                    yield json.loads(line)
        except (OSError, ValueError) as exc:
            raise Unreachable(f"the record stream from {channel.url} ended: {exc}") from exc
    raise Unreachable(f"the daemon at {channel.url} closed the record stream (stopped?)")


def _zmq_records(channel: Channel, args: argparse.Namespace):
    topics = ("detections/", "classifications/", "dense/", *(("heartbeat",) if args.heartbeats else ()))
    with ResultReader(channel.zmq_pub, topics=topics) as reader:
        while True:
            got = reader.recv(1.0)
            if got is not None:
                yield got[1]


def add_parsers(sub: Any) -> None:
    status = sub.add_parser("status", help="the running daemon's health: state, fps and frame ages per model and "
                            "source (exit 0 OK, 1 DEGRADED, 2 FAULT/SAFE_STOP, 3 unreachable)")
    add_channel_arguments(status)
    status.set_defaults(func=cmd_status)

    tail = sub.add_parser("tail", help="the running daemon's live records, one line each")
    add_channel_arguments(tail)
    tail.add_argument("--heartbeats", action="store_true", help="also show the watchdog's heartbeats")
    tail.add_argument("--model", default=None, help="only this model's records")
    tail.add_argument("--source", default=None, help="only this source's records")
    tail.add_argument("-n", "--count", type=int, default=None, help="stop after N records")
    tail.set_defaults(func=cmd_tail)
