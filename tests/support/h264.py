"""H.264 test clips made at test time from the demo video with PyAV (libx264 in its wheel).

    python -m support.h264 SRC DST [--width 1920 --height 1080 --frames 250 --fps 25]

The clip is tagged BT.601 limited range (what FFmpeg, and so OpenCV, assume for an untagged stream), so a
decoder that reads the tags and one that assumes the default convert it to the same colours.
"""

from __future__ import annotations

import argparse
from fractions import Fraction
from pathlib import Path


def make_clip(src: Path, dst: Path, width: int = 1920, height: int = 1080, frames: int = 250, fps: int = 25,
              gop: int = 25, crf: int = 23) -> Path:
    """Scale the first `frames` frames of `src` to width x height and encode them as H.264 (yuv420p) in MP4.
    Loops over `src` when it is shorter. Returns `dst`."""
    import av
    import cv2

    dst.parent.mkdir(parents=True, exist_ok=True)
    cap = cv2.VideoCapture(str(src))
    images = []
    while len(images) < frames:
        ok, image = cap.read()
        if not ok:
            if not images:
                raise RuntimeError(f"cannot read {src}")
            cap.release()
            cap = cv2.VideoCapture(str(src))
            continue
        images.append(cv2.resize(image, (width, height), interpolation=cv2.INTER_LINEAR))
    cap.release()
    tmp = dst.with_suffix(".tmp.mp4")
    with av.open(str(tmp), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.time_base = Fraction(1, fps)
        stream.options = {"preset": "veryfast", "crf": str(crf), "g": str(gop), "bf": "0",
                          "x264-params": "colorprim=smpte170m:transfer=smpte170m:colormatrix=smpte170m:range=tv"}
        for index, image in enumerate(images):
            frame = av.VideoFrame.from_ndarray(image, format="bgr24")
            frame.pts = index
            for packet in stream.encode(frame.reformat(format="yuv420p")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    tmp.replace(dst)
    return dst


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("src", type=Path)
    parser.add_argument("dst", type=Path)
    parser.add_argument("--width", type=int, default=1920)
    parser.add_argument("--height", type=int, default=1080)
    parser.add_argument("--frames", type=int, default=250)
    parser.add_argument("--fps", type=int, default=25)
    args = parser.parse_args()
    make_clip(args.src, args.dst, args.width, args.height, args.frames, args.fps)


if __name__ == "__main__":
    main()
