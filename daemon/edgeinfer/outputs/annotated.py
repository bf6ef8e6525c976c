"""Results drawn on their frames (boxes, labels, scores; track ids, masks, keypoints when the payload has them),
written as video files (one per model and source, rotated by size or time) or as JPEG snapshots when chosen
classes are seen.

Drawing and encoding run on this output's own thread behind a bounded drop-oldest queue (`queue:` results):
the publish thread only hands the result over, so inference never waits for the encoder; results dropped
because the encoder fell behind are counted (`counters()["dropped"]`, in the heartbeat).
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..draw import annotate, payload_parts
from ..handoff import DropOldestWorker
from .base import Output, OutputError
from .schema import AnnotatedOutputConfig

log = logging.getLogger(__name__)
_SAFE_NAME = re.compile(r"[^A-Za-z0-9_.-]+")


def _safe(name: str) -> str:
    return _SAFE_NAME.sub("_", name)


@dataclass
class _VideoFile:
    path: Path
    writer: Any  # cv2.VideoWriter
    size: tuple[int, int]  # width, height
    opened_at: float
    frames: int = 0


class AnnotatedOutput(Output):
    config: AnnotatedOutputConfig

    def __init__(self, config: AnnotatedOutputConfig, output_id: str):
        super().__init__(config, output_id)
        self._worker = DropOldestWorker(f"annotate:{output_id}", self._draw_and_write, depth=config.queue)
        self._videos: dict[tuple[str, str], _VideoFile] = {}
        self._last_snapshot: dict[tuple[str, str, str], float] = {}
        self._lock = threading.Lock()
        self.files: list[Path] = []  # every file written, in order
        self.frames_written = 0
        self.snapshots = 0

    @classmethod
    def preflight_config(cls, config: AnnotatedOutputConfig) -> list[str]:  # type: ignore[override]
        folder = Path(config.dir)
        existing = next((p for p in (folder, *folder.parents) if p.exists()), None)
        if existing is not None and not existing.is_dir():
            return [f"dir: {existing} is not a folder"]
        if existing is not None and not os.access(existing, os.W_OK | os.X_OK):
            return [f"dir: no permission to write in {existing}"]
        return []

    # -- lifecycle -----------------------------------------------------------------------------------------
    def open(self, ctx: Any) -> None:
        try:
            self.config.dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise OutputError(f"output '{self.id}': cannot create {self.config.dir}: {exc.strerror}") from exc
        self._worker.start()

    def close(self) -> None:
        """Draws what is queued, then closes every file (so the last video is complete)."""
        if not self._worker.close(timeout=10.0):
            log.error("output '%s': drawing thread did not finish in 10 s; files may be incomplete", self.id)
        with self._lock:
            for video in self._videos.values():
                video.writer.release()
            self._videos.clear()

    # -- the pipeline's side: hand over, never wait --------------------------------------------------------
    def publish(self, result: Any) -> None:
        cfg = self.config
        if (cfg.models is not None and result.model not in cfg.models) or \
                (cfg.sources is not None and result.source not in cfg.sources):
            return
        if getattr(result, "frame", None) is None:  # a marker not tied to a frame (safe stop): nothing to draw
            return
        if cfg.mode == "snapshots" and not self._triggers(result):
            return
        self._worker.offer(result)
        self.published += 1

    def counters(self) -> dict[str, Any]:
        return {"dropped": self._worker.dropped, "frames_written": self.frames_written,
                "snapshots": self.snapshots, "files": len(self.files), "draw_errors": self._worker.errors}

    # -- the drawing thread --------------------------------------------------------------------------------
    def _triggers(self, result: Any) -> bool:
        """A snapshot is due: a wanted class above min_score, and none of it lately for this model and source."""
        _, detections, classifications, _ = payload_parts(result)
        wanted = set(self.config.classes or ())
        now = time.monotonic()
        for item in [*detections, *classifications]:
            if item.label in wanted and item.score >= self.config.min_score:
                key = (result.model, result.source, item.label)
                if now - self._last_snapshot.get(key, -1e18) >= self.config.snapshot_every_s:
                    self._last_snapshot[key] = now
                    return True
        return False

    def _draw_and_write(self, result: Any) -> None:
        import cv2

        image = annotate(result)
        if image is None:
            return
        try:
            if self.config.mode == "snapshots":
                self._write_snapshot(cv2, result, image)
            else:
                self._write_video_frame(cv2, result, image)
        except OSError as exc:
            self.errors += 1
            self.last_error = str(exc)
            raise

    def _write_snapshot(self, cv2: Any, result: Any, image: Any) -> None:
        stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(result.stamp))
        seq = result.seq if result.seq is not None else 0
        path = self.config.dir / f"{_safe(result.model)}_{_safe(result.source)}_{stamp}_{seq:08d}.jpg"
        ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, self.config.jpeg_quality])
        if not ok:
            raise OSError(f"JPEG encoding failed for {path.name}")
        path.write_bytes(data.tobytes())
        self.files.append(path)
        self.snapshots += 1

    def _write_video_frame(self, cv2: Any, result: Any, image: Any) -> None:
        key = (result.model, result.source)
        height, width = image.shape[:2]
        with self._lock:
            video = self._videos.get(key)
            if video is not None and self._due_for_rotation(video, (width, height)):
                video.writer.release()
                video = None
            if video is None:
                video = self._videos[key] = self._new_video(cv2, key, (width, height))
            video.writer.write(image)
            video.frames += 1
            self.frames_written += 1

    def _due_for_rotation(self, video: _VideoFile, size: tuple[int, int]) -> bool:
        cfg = self.config
        if size != video.size:  # a camera that came back at another resolution: a file holds one size
            return True
        if cfg.rotate_s is not None and time.monotonic() - video.opened_at >= cfg.rotate_s:
            return True
        if cfg.rotate_mb is not None and video.frames % 10 == 0:  # a stat() every 10 frames is plenty
            try:
                return video.path.stat().st_size >= cfg.rotate_mb * 1e6
            except OSError:
                return False
        return False

    def _new_video(self, cv2: Any, key: tuple[str, str], size: tuple[int, int]) -> _VideoFile:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        base = f"{_safe(key[0])}_{_safe(key[1])}_{stamp}"
        path = self.config.dir / f"{base}.{self.config.container}"
        n = 1
        while path.exists() or path in self.files:
            path = self.config.dir / f"{base}_{n}.{self.config.container}"
            n += 1
        writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*self.config.codec), self.config.fps, size)
        if not writer.isOpened():
            writer.release()
            raise OSError(f"OpenCV cannot write a {self.config.codec} video to {path}: codec or container not "
                          f"supported by this OpenCV build (try codec MJPG with container avi)")
        log.info("output '%s': writing %s (%dx%d)", self.id, path, *size)
        self.files.append(path)
        return _VideoFile(path, writer, size, time.monotonic())
