"""A robot without ROS: sends a video's frames to edgeinfer over ZeroMQ and prints the detections that come back.

Start the daemon with configs/zmq-robot.yaml, then:

    .venv/bin/python examples/zmq_robot.py models/media/bikes.mp4

With CURVE on (see docs/zmq.md), add --server-key keys/server.key --client-key keys/robot.key_secret.
"""

from __future__ import annotations

import argparse
import sys
import time

import cv2

from edgeinfer.transports.zmq.client import ClientKeys, Control, FrameSender, ResultReader


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("video", help="a video file (or camera index) to send")
    parser.add_argument("--frames-to", default="tcp://127.0.0.1:5555", help="the daemon's zmq source (pull)")
    parser.add_argument("--records-from", default="tcp://127.0.0.1:5560", help="the daemon's zmq output (PUB)")
    parser.add_argument("--control", default="tcp://127.0.0.1:5561", help="the daemon's control socket")
    parser.add_argument("--fps", type=float, default=25.0, help="send rate (a camera's pace)")
    parser.add_argument("--frames", type=int, default=0, help="stop after this many frames (0: the whole video)")
    parser.add_argument("--server-key", help="the daemon's public key file (CURVE)")
    parser.add_argument("--client-key", help="this robot's key pair file, NAME.key_secret (CURVE)")
    args = parser.parse_args(argv)

    keys = ClientKeys(args.server_key, args.client_key) if args.server_key and args.client_key else None
    source = int(args.video) if args.video.isdigit() else args.video
    cap = cv2.VideoCapture(source)
    if not cap.isOpened():
        print(f"cannot open {args.video}", file=sys.stderr)
        return 1
    with FrameSender(args.frames_to, source="robot", frame_id="camera", keys=keys) as sender, \
            ResultReader(args.records_from, keys=keys) as reader, \
            Control(args.control, keys=keys) as control:
        try:
            print("daemon:", control.ping())
        except TimeoutError as exc:
            print(f"no daemon answering: {exc}", file=sys.stderr)
            return 1
        period = 1.0 / args.fps
        next_send = time.monotonic()
        sent = results = 0
        while args.frames == 0 or sent < args.frames:
            ok, image = cap.read()
            if not ok:
                break
            sender.send(image)
            sent += 1
            next_send += period
            # print what came back while waiting for the next frame's slot
            while (wait := next_send - time.monotonic()) > 0:
                got = reader.recv(wait)
                if got is None:
                    break
                topic, record = got
                if topic == "heartbeat":
                    print(f"heartbeat: {record['state']}")
                    continue
                results += 1
                labels = ", ".join(f"{d['label']} {d['score']:.2f}" for d in record["detections"])
                print(f"frame {record['frame']}: {record['age_ms']:.0f} ms old, {labels or 'nothing'}")
        print(f"sent {sent} frames ({sender.dropped} dropped at the sender), {results} results received")
    return 0


if __name__ == "__main__":
    sys.exit(main())
