"""A folder of still images, in natural file-name order (frame_2 before frame_10)."""

from __future__ import annotations

import os
import re
from pathlib import Path

import cv2
import numpy as np

from ..health import HealthReporter
from ..mailbox import FrameSink
from .base import BadFrame, Source, SourceError
from .schema import ImagesSourceConfig

# What cv2.imread decodes; anything else matching the pattern (notes, labels) is ignored.
IMAGE_SUFFIXES = frozenset(
    {".jpg", ".jpeg", ".jpe", ".png", ".bmp", ".dib", ".tif", ".tiff", ".webp",
     ".pbm", ".pgm", ".ppm", ".pnm", ".jp2", ".sr", ".ras"}
)




def _natural_key(path: Path) -> list[object]:
    # Digits compare as numbers so frame_2 comes before frame_10; ties fall back to the plain name.
    parts = re.split(r"(\d+)", path.as_posix())
    return [(0, int(p), p) if p.isdigit() else (1, 0, p) for p in parts]


def list_images(folder: Path, pattern: str) -> list[Path]:
    """The image files of `folder` matching `pattern`, in natural order."""
    files = [p for p in folder.glob(pattern) if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()]
    return sorted(files, key=_natural_key)


class ImagesSource(Source):
    def __init__(self, config: ImagesSourceConfig, sink: FrameSink, reporter: HealthReporter | None = None):
        super().__init__(config, sink, reporter)
        self.config: ImagesSourceConfig = config
        self._files: list[Path] = []
        self._next = 0


    @property
    def loop(self) -> bool:
        return self.config.loop

    @property
    def pace_fps(self) -> float | None:
        return self.config.fps if self.config.realtime else None

    def describe(self) -> str:
        return f"images {self.config.path / self.config.pattern}"

    def preflight(self) -> list[str]:
        folder = self.config.path
        if not folder.exists():
            return [f"path: no such folder: {folder}"]
        if not folder.is_dir():
            return [f"path: not a folder: {folder}"]
        if not os.access(folder, os.R_OK | os.X_OK):
            return [f"path: no permission to list {folder}"]
        if not list_images(folder, self.config.pattern):
            suffixes = ", ".join(sorted(IMAGE_SUFFIXES))
            return [f"pattern: no image matches '{self.config.pattern}' in {folder} (looked for {suffixes})"]
        return []

    def _open(self) -> None:
        # Listed once per pass, so a loop picks up images added meanwhile.
        if not self.config.path.is_dir():
            raise SourceError(f"no such folder: {self.config.path}")
        self._files = list_images(self.config.path, self.config.pattern)
        if not self._files:
            raise SourceError(f"no image matches '{self.config.pattern}' in {self.config.path}")
        self._next = 0

    def _read(self) -> np.ndarray | None:
        if self._next >= len(self._files):
            return None
        path = self._files[self._next]
        self._next += 1
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if image is None:
            raise BadFrame(f"cannot decode image {path}")
        return image

    def _close(self) -> None:
        self._files = []
        self._next = 0
