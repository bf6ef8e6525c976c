"""Wires sources -> model workers -> outputs with threads and bounded hand-offs.

Per model three threads run concurrently so the backend is never idle waiting for Python work it could
overlap:

    frame slots --> [prepare] --(free buffer sets / ready queue)--> [infer] --(bounded queue)--> [publish]

`prepare` takes the newest frame of each source (up to max_batch) and writes it straight into one of two
preallocated input buffer sets; `infer` runs the backend on a filled set and hands the set back; `publish`
decodes, maps boxes back to source pixels and writes one record per frame to every output. Every queue is
bounded, so a slow stage applies back-pressure (files processed in order) or drops the oldest frame at the
source slot (live sources) instead of growing memory.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from .backends import BackendError
from .backends.base import InferHandle
from .decoders import declared_payload, load_labels
from .engines.chain import ModelChain
from .frame import Frame
from .health import HealthReporter, NullReporter
from .logutil import RateLimitedLog
from .mailbox import FanOut, FrameSlots
from .model import Model, PipelineError
from .outputs import Output, create_output
from .preprocess import PreprocessError
from .results import Missing, Result
from .runtime import CommandRegistry, ModelInfo, RuntimeContext
from .sources import Source, create_source
from .tracking.stage import TrackingStage
from .transports.ros.runtime import RosRuntime  # rclpy is imported only when a plugin starts it

if TYPE_CHECKING:
    from .config import Config

log = logging.getLogger(__name__)
_END = object()  # end-of-stream marker passed down a worker's queues
__all__ = ["ModelWorker", "Pipeline", "PipelineError", "check_models"]


class RateMeter:
    """Events per second over a sliding window on the monotonic clock."""

    def __init__(self, window_s: float = 5.0):
        self._window = window_s
        self._stamps: deque[float] = deque(maxlen=10_000)
        self._lock = threading.Lock()

    def tick(self, now: float | None = None) -> None:
        with self._lock:
            self._stamps.append(time.monotonic() if now is None else now)

    def rate(self, now: float | None = None) -> float:
        now = time.monotonic() if now is None else now
        with self._lock:
            while self._stamps and now - self._stamps[0] > self._window:
                self._stamps.popleft()
            if len(self._stamps) < 2:
                return 0.0
            span = now - self._stamps[0]
            return (len(self._stamps) - 1) / span if span > 0 else 0.0


@dataclass
class ModelStats:
    taken: int = 0
    bad_frames: int = 0
    inferred: int = 0
    published: int = 0
    stale_dropped: int = 0
    unclaimed: int = 0  # finished after --max-frames was reached: not published
    infer_errors: int = 0
    decode_errors: int = 0
    invalid_published: int = 0
    last_infer_ms: float = 0.0
    last_age_ms: float = 0.0
    newest_capture: dict[str, float] = field(default_factory=dict)  # source -> monotonic capture stamp
    fps: RateMeter = field(default_factory=RateMeter)

    def as_dict(self) -> dict[str, Any]:
        d = {k: v for k, v in self.__dict__.items() if k not in ("fps", "newest_capture")}
        d["fps"] = round(self.fps.rate(), 2)
        return d


class _Serving:
    """The model a worker runs and its free buffer sets. A hot swap gives the worker a new one; the old one
    closes its model once every set it lent out is back (decoded), so no batch in flight loses its buffers."""

    def __init__(self, model: Model):
        self.model = model
        self.sets = model.stage.sets
        self.free: queue.Queue[int] = queue.Queue()
        for i in range(self.sets):
            self.free.put(i)
        self.retired = False
        self.closed = False
        self._lock = threading.Lock()

    def release(self, set_index: int) -> None:
        self.free.put(set_index)
        self._close_if_idle()

    def retire(self) -> None:
        self.retired = True
        self._close_if_idle()

    def _close_if_idle(self) -> None:
        with self._lock:
            if not self.retired or self.closed or self.free.qsize() < self.sets:
                return
            self.closed = True
        self.model.close()


@dataclass
class _Batch:
    set_index: int  # which preallocated buffer set holds the input
    frames: list[Frame]
    transforms: list[Any]
    serving: _Serving | None = None  # the model whose stage filled the set: it runs and decodes this batch
    outputs: list[np.ndarray] | None = None
    infer_ms: float = 0.0
    error: str | None = None
    handle: InferHandle | None = None
    ended: bool = False  # the watchdog heard the end of this batch's inference


class PublishGate:
    """Counts published frames across all models and says when --max-frames is reached."""

    def __init__(self, max_frames: int | None):
        self.max_frames = max_frames
        self.count = 0
        self.done = threading.Event()
        self._lock = threading.Lock()

    def claim(self) -> bool:
        with self._lock:
            if self.max_frames is not None and self.count >= self.max_frames:
                return False
            self.count += 1
            if self.max_frames is not None and self.count >= self.max_frames:
                self.done.set()
            return True


def _pixels_for(stage: Any, frame: Frame) -> Any:
    """What the stage reads: a device image where the stage runs on that GPU (it never touches host memory),
    else host pixels (a device image is downloaded once, on demand)."""
    device = frame.device
    if device is not None and stage.device_index == device.device:
        return device
    return frame.pixels()


class ModelWorker:
    def __init__(self, model: Model, outputs: list[Output], inbox: FrameSlots, reporter: HealthReporter,
                 gate: PublishGate, detections_valid: Callable[[], bool]):
        config = model.config
        self.config = config
        self.id = config.id
        self._serving = _Serving(model)
        self._swap_to: Model | None = None
        self._swap_lock = threading.Lock()
        self._retired: list[_Serving] = []
        self.swaps = 0
        self.outputs = outputs
        self.inbox = inbox  # the newest frame of each source this model reads
        self.reporter = reporter
        self.gate = gate
        self.detections_valid = detections_valid
        # Sources whose frames are processed in file order (no pacing): their age is queueing, not staleness,
        # so the max-age drop does not apply to them. Filled in by the pipeline once sources exist.
        self.in_order_sources: set[str] = set()
        # max_age_ms defaults to the inference budget: perception older than that is not fresh
        self.max_age_ms = config.max_age_ms if config.max_age_ms is not None else config.budget_ms
        self.stats = ModelStats()
        # per source, between decode and publish, when the model has a `tracker:` block
        self.tracking = TrackingStage(config.tracker) if config.tracker is not None else None
        self.finished = threading.Event()
        self._stop = threading.Event()
        self._rlog = RateLimitedLog(log)
        # faults a backend handles itself (a remote fallback switch) still reach the watchdog
        self._on_fault = lambda message: reporter.fault(config.id, message)
        self.backend.on_fault = self._on_fault
        sets = self.stage.sets
        # A set goes back to its free queue only after its outputs are decoded: the backend may reuse its output
        # buffers on the set's next run.
        self._ready: queue.Queue[Any] = queue.Queue(maxsize=sets)
        self._done: queue.Queue[Any] = queue.Queue(maxsize=sets)
        self._threads = [
            threading.Thread(target=self._guard, args=(self._prepare_loop,), name=f"prepare:{self.id}",
                             daemon=True),
            threading.Thread(target=self._guard, args=(self._infer_loop,), name=f"infer:{self.id}", daemon=True),
            threading.Thread(target=self._guard, args=(self._publish_loop,), name=f"publish:{self.id}",
                             daemon=True),
        ]

    # the model now serving (a hot swap replaces it between batches)
    @property
    def model(self) -> Model:
        return self._serving.model

    @property
    def backend(self):
        return self._serving.model.backend

    @property
    def stage(self):
        return self._serving.model.stage

    @property
    def decoder(self):
        return self._serving.model.decoder

    @property
    def batch(self) -> int:
        return self._serving.model.batch

    def swap(self, model: Model) -> None:
        """Serve `model` from the next batch on (called from any thread, e.g. a background rebuild). The prepare
        thread fills the new model's sets from then on; batches already filled finish on the old model, which is
        closed when its last set is decoded."""
        with self._swap_lock:
            previous, self._swap_to = self._swap_to, model
        if previous is not None:  # two swaps before a batch: the first never served
            previous.close()

    def _current(self) -> _Serving:
        with self._swap_lock:
            model, self._swap_to = self._swap_to, None
        if model is not None:
            model.backend.on_fault = self._on_fault
            old, self._serving = self._serving, _Serving(model)
            self._retired.append(old)
            self.swaps += 1
            log.info("model '%s': swapped to %s from the next batch on", self.id, model.backend.describe())
            old.retire()
        return self._serving

    def close_models(self) -> None:
        """After the threads stopped: close the serving, retired and pending models."""
        with self._swap_lock:
            pending, self._swap_to = self._swap_to, None
        for model in [pending, self._serving.model, *(s.model for s in self._retired)]:
            if model is not None:
                model.close()

    # -- lifecycle ---------------------------------------------------------------------------------------
    def start(self) -> None:
        for t in self._threads:
            t.start()

    def stop(self) -> None:
        self._stop.set()
        self.inbox.close()

    def join(self, deadline: float) -> bool:
        for t in self._threads:
            t.join(max(0.0, deadline - time.monotonic()))
        return not any(t.is_alive() for t in self._threads)

    def _guard(self, loop) -> None:
        try:
            loop()
        except Exception:  # a bug in a loop must be loud, and must not leave the pipeline waiting forever
            log.exception("model '%s': %s crashed", self.id, threading.current_thread().name)
            self.reporter.fault(self.id, f"{threading.current_thread().name} crashed")
            self.finished.set()

    def _put(self, q: queue.Queue, item: Any) -> bool:
        while not self._stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _get(self, q: queue.Queue) -> Any:
        while not self._stop.is_set():
            try:
                return q.get(timeout=0.1)
            except queue.Empty:
                continue
        return None

    # -- stage 1: frames into preallocated input buffers -------------------------------------------------
    def _prepare_loop(self) -> None:
        # a free buffer set first, then the frames: frames that arrive while every set is in flight join the
        # next batch instead of waiting behind one taken too early
        fill_wait = self.config.batch_wait_ms / 1e3 if self.batch > 1 else 0.0
        while not self._stop.is_set():
            serving = self._current()
            set_index = self._get(serving.free)
            if set_index is None:
                return
            frames = self.inbox.take(serving.model.batch, timeout=0.1, fill_wait=fill_wait)
            if not frames:
                serving.release(set_index)
                if self.inbox.finished:
                    self._put(self._ready, _END)
                    return
                continue
            self.stats.taken += len(frames)  # counted at once: a stop while waiting for a set leaves them in flight
            kept, transforms = [], []
            stage = serving.model.stage
            for frame in frames:
                self.reporter.checkpoint(self.id, "capture", (frame.source, frame.seq))
                try:
                    transforms.append(stage.write(set_index, len(kept), _pixels_for(stage, frame)))
                    kept.append(frame)
                except PreprocessError as exc:
                    self.stats.bad_frames += 1
                    self.reporter.fault(frame.source, f"bad frame for model {self.id}: {exc}")
                    self._rlog.warning(f"bad:{frame.source}", "model '%s': dropped bad frame %d from '%s': %s",
                                       self.id, frame.seq, frame.source, exc)
            if not kept:
                serving.release(set_index)
                continue
            if not self._put(self._ready, _Batch(set_index, kept, transforms, serving)):
                return

    # -- stage 2: the backend --------------------------------------------------------------------------
    def _infer_loop(self) -> None:
        while True:
            batch = self._get(self._ready)
            if batch is None:
                return
            if batch is _END:
                self._put(self._done, _END)
                return
            self.reporter.begin(self.id)
            try:
                batch.handle = batch.serving.model.backend.submit(batch.set_index, len(batch.frames))
            except Exception as exc:  # backend errors are runtime faults: count, report, carry on
                self._infer_failed(batch, exc)
            if batch.error is not None or (batch.handle is not None and batch.handle.done):
                self._infer_finished(batch)  # synchronous backend: the work is over, say so at once
            if not self._put(self._done, batch):
                return

    def _infer_failed(self, batch: _Batch, exc: Exception) -> None:
        batch.error = f"inference failed: {exc}"
        self.stats.infer_errors += 1
        self.reporter.fault(self.id, batch.error)
        self._rlog.error("infer", "model '%s': %s", self.id, batch.error)

    def _infer_finished(self, batch: _Batch) -> None:
        """Wait for the outputs (at once for a synchronous backend) and end the deadline-supervised work."""
        if batch.ended:
            return
        batch.ended = True
        try:
            if batch.error is None and batch.handle is not None:
                batch.outputs, batch.infer_ms = batch.handle.wait()
        except Exception as exc:
            self._infer_failed(batch, exc)
        finally:
            self.reporter.end(self.id)
        self.stats.last_infer_ms = batch.infer_ms
        if batch.error is None:
            self.stats.inferred += len(batch.frames)
            for frame in batch.frames:
                self.reporter.checkpoint(self.id, "infer", (frame.source, frame.seq))

    # -- stage 3: decode and publish -----------------------------------------------------------------
    def _publish_loop(self) -> None:
        while True:
            batch = self._get(self._done)
            if batch is None:
                return
            if batch is _END:
                self.finished.set()
                return
            try:
                self._infer_finished(batch)  # an asynchronous (GPU) backend: wait for its stream here
                for index, (frame, transform) in enumerate(zip(batch.frames, batch.transforms)):
                    self._publish_one(batch, index, frame, transform)
            finally:
                batch.serving.release(batch.set_index)  # decoded: the backend may now reuse this set's buffers

    def _publish_one(self, batch: _Batch, index: int, frame: Frame, transform: Any) -> None:
        decoder = batch.serving.model.decoder
        status, error = "ok", batch.error
        payload = Missing(decoder.payload_type)  # an error or invalid record still says what it would carry
        if error is None:
            try:
                payload = decoder.decode(batch.outputs, index, transform)
                if self.tracking is not None:
                    payload = self.tracking.apply(frame, payload)
            except Exception as exc:  # a decoder bug must not stop the stream: count it, say it, go on
                error = f"decoding failed: {type(exc).__name__}: {exc}"
                self.stats.decode_errors += 1
                self.reporter.fault(self.id, error)
                self._rlog.error("decode", "model '%s': %s", self.id, error)
        if error is not None:
            status = "error"
        age_ms = (time.monotonic() - frame.mono) * 1e3
        if age_ms > self.max_age_ms and frame.source not in self.in_order_sources:
            # stale perception must not be published as fresh: drop it, count it
            self.stats.stale_dropped += 1
            self._rlog.warning("stale", "model '%s': dropped frame %d of '%s': %.0f ms old > max_age_ms %.0f",
                               self.id, frame.seq, frame.source, age_ms, self.max_age_ms)
            return
        if not self.detections_valid():
            # watchdog SAFE_STOP: say so on the detection channel rather than publish boxes nobody may trust
            status, error = "invalid", "watchdog SAFE_STOP: detections are not valid"
            payload = Missing(decoder.payload_type)
            self.stats.invalid_published += 1
        if not self.gate.claim():
            self.stats.unclaimed += 1
            return
        result = Result.for_frame(self.id, frame, status, payload, age_ms=age_ms, infer_ms=batch.infer_ms,
                                  error=error)
        for output in self.outputs:
            try:
                output.publish(result)
                self.reporter.alive(output.id)
            except Exception as exc:
                output.errors += 1
                output.last_error = str(exc)
                self.reporter.fault(output.id, f"publish failed: {exc}")
                self._rlog.error(f"out:{output.id}", "output '%s': publish failed: %s", output.id, exc)
        if batch.error is None:  # a frame whose inference failed never passed "infer": no order to check
            self.reporter.checkpoint(self.id, "publish", (frame.source, frame.seq))
        self.stats.published += 1
        self.stats.last_age_ms = age_ms
        self.stats.newest_capture[frame.source] = max(frame.mono, self.stats.newest_capture.get(frame.source, 0.0))
        self.stats.fps.tick()


class Pipeline:
    """Owns every source, worker and output of one config; `start`, `wait`, `stop`."""

    def __init__(self, config: Config, reporter: HealthReporter | None = None, max_frames: int | None = None,
                 detections_valid: Callable[[], bool] = lambda: True, commands: CommandRegistry | None = None,
                 status: Callable[[], dict[str, Any] | None] = lambda: None, preloaded: dict[str, Any] | None = None,
                 resume: dict[str, Any] | None = None):
        self.config = config
        # a reload loads the new models before the running pipeline stops (reload.py): model id -> (chain, model)
        self._preloaded: dict[str, Any] = dict(preloaded or {})
        self._resume = resume or {}  # source id -> where a finite source of the previous pipeline was
        self.reporter = reporter or NullReporter()
        self.detections_valid = detections_valid
        self.gate = PublishGate(max_frames)
        self.outputs: list[Output] = []
        self.models: list[Model] = []
        self.chains: list[ModelChain] = []  # per model: which link of its fallback chain serves, rebuilds
        self.workers: list[ModelWorker] = []
        self.sources: list[Source] = []
        self.started_at = time.monotonic()
        self.context = RuntimeContext(
            catalogue={m.id: ModelInfo(
                id=m.id, labels=load_labels(m.labels) if m.labels else [],
                # None: no decoder configured, the model's metadata may pick one (known once it is loaded)
                payload_type=declared_payload(m.decoder) if "decoder" in m.model_fields_set else None,
                sources=tuple(m.sources)) for m in config.models},
            reporter=self.reporter, commands=commands, ros_factory=self._start_ros, status=status,
            stats=self.stats)

    def start(self) -> None:
        """Open outputs, load and warm up every model, then start the sources (in that order, so no frame
        waits on a model that is still loading)."""
        ctx = self.context
        for out_cfg in self.config.outputs:
            output = create_output(out_cfg)
            self.outputs.append(output)  # before open: a failed open is closed by stop() like the others
            output.open(ctx)
        inboxes: dict[str, list[FrameSlots]] = {s.id: [] for s in self.config.sources}
        for index, model_cfg in enumerate(self.config.models):
            chain, model = self._preloaded.pop(model_cfg.id, (None, None))
            if chain is None:
                chain = ModelChain(model_cfg)
                model = chain.load()
            self.chains.append(chain)
            self.models.append(model)
            info = ctx.catalogue[model.id]
            info.labels, info.payload_type = list(model.decoder.labels), model.decoder.payload_type
            info.backend, info.device = model.backend.describe(), str(model.backend.device)
            for output in self.outputs:  # what only the loaded model knows: names and payload type
                output.on_model_loaded(info)
            for warning in model.fit_warnings:
                log.warning("models[%d].%s", index, warning)
            inbox = FrameSlots(model_cfg.sources)
            for name in model_cfg.sources:
                inboxes[name].append(inbox)
            worker = ModelWorker(model, self.outputs, inbox, self.reporter, self.gate, self.detections_valid)
            self.workers.append(worker)
            chain.attach(worker.swap)  # a background rebuild that loads is swapped in by the worker
        for worker in self.workers:
            worker.start()
        for src_cfg in self.config.sources:
            targets = inboxes[src_cfg.id]
            if not targets:
                log.warning("source '%s' is read by no model; not started", src_cfg.id)
                continue
            source = create_source(src_cfg, FanOut(targets), self.reporter)
            # decode on the GPU (decode: auto) only when every model reading this source reads GPU memory
            readers = [w for w in self.workers if src_cfg.id in w.inbox.sources]
            source.prefer_device_frames = all(w.stage.device_index is not None for w in readers)
            if src_cfg.id in self._resume:
                source.resume(self._resume[src_cfg.id])
            self.sources.append(source)
            if source.wait_for_consumer:
                for worker in self.workers:
                    worker.in_order_sources.add(source.id)
        for source in self.sources:
            source.start(ctx)
        if ctx.ros_started is not None:
            ctx.ros_started.ready()

    def _start_ros(self) -> Any:
        """The shared ROS runtime, created when the first plugin asks for it (rclpy is imported only then)."""
        ros = RosRuntime(self.config.ros, stats=self.stats, backends=self._backend_descriptions)
        ros.start()
        return ros

    def wait(self, stop: threading.Event, poll_s: float = 0.05) -> str:
        """Block until stopped, --max-frames reached, or every finite source is drained."""
        while True:
            if stop.wait(poll_s):
                return "stopped"
            if self.gate.done.is_set():
                return "max-frames"
            if all(w.finished.is_set() for w in self.workers):
                return "end-of-input"

    def stop(self, timeout_s: float = 2.0, before_close: Callable[[], None] | None = None) -> bool:
        """Stop sources, then workers, then close outputs; True when every thread ended in time.
        `before_close` runs when nothing moves any more and the outputs are still open (the final heartbeat)."""
        deadline = time.monotonic() + timeout_s
        for source in self.sources:
            source.request_stop()  # all at once, so blocked reads time out in parallel
        for worker in self.workers:
            worker.stop()  # closes the frame slots: wakes sources waiting for a free slot
        clean = all([s.join(max(0.0, deadline - time.monotonic())) for s in self.sources])
        clean = all([w.join(deadline) for w in self.workers]) and clean
        if before_close is not None:
            before_close()
        for chain in self.chains:
            chain.close()  # a rebuild that ends later is dropped
        for worker in self.workers:
            worker.close_models()
        for model in self.models:
            model.close()  # closing twice is harmless; covers a start that failed before its worker existed
        for chain, model in self._preloaded.values():  # a start that failed before it used them
            chain.close()
            model.close()
        self._preloaded.clear()
        for output in self.outputs:
            try:
                output.close()
            except Exception as exc:  # one output's error must not keep the others open
                log.error("output '%s': close failed: %s", output.id, exc)
        if self.context.ros_started is not None:
            self.context.ros_started.close()
        return clean

    def resume_points(self) -> dict[str, Any]:
        """Per finite source: where it is, for the pipeline that replaces this one at a reload."""
        return {s.id: point for s in self.sources if (point := s.resume_point()) is not None}

    def _backend_descriptions(self) -> dict[str, tuple[str, str]]:
        """Per model: (backend description, configured device) for /diagnostics; the one serving now (a hot
        swap replaces it)."""
        return {w.id: (w.backend.describe(), str(w.backend.device)) for w in list(self.workers)
                if w.backend.is_active}

    def stats(self) -> dict[str, Any]:
        return {
            "published": self.gate.count,
            "models": {w.id: w.stats.as_dict() | {"drops": dict(w.inbox.drops)} | self._backend_entry(w)
                       | ({"tracking": w.tracking.counters()} if w.tracking is not None else {})
                       for w in self.workers},
            "sources": {s.id: s.stats() for s in self.sources},
            "outputs": {o.id: {"published": o.published, "errors": o.errors} for o in self.outputs},
        }

    @staticmethod
    def _backend_entry(worker: ModelWorker) -> dict[str, Any]:
        status = worker.backend.status()
        return {"backend": status} if status is not None else {}

    def backend_status(self) -> dict[str, dict[str, Any]]:
        """Per model, what its backend reports (which link serves a remote model); empty for plain backends."""
        return {w.id: s for w in self.workers if (s := w.backend.status()) is not None}

    def frame_ages_ms(self, now: float | None = None) -> dict[str, float]:
        """Per source: how old (now, since capture) the newest frame published from it is. Grows while a
        source or model is stuck, which is what a consumer of the heartbeat must see."""
        now = time.monotonic() if now is None else now
        newest: dict[str, float] = {}
        for worker in self.workers:
            for source, mono in list(worker.stats.newest_capture.items()):
                newest[source] = max(mono, newest.get(source, 0.0))
        return {source: round((now - mono) * 1e3, 1) for source, mono in newest.items()}

    def serving(self) -> dict[str, Any]:
        """Per model: which link of its fallback chain serves (for the heartbeat)."""
        return {chain.id: chain.describe() for chain in self.chains}

    def fps(self) -> dict[str, float]:
        return {w.id: round(w.stats.fps.rate(), 2) for w in self.workers}


def check_models(config: Config, notes: list[tuple[int, str]] | None = None,
                 warnings: list[tuple[int, str]] | None = None) -> list[tuple[int, str]]:
    """Load every model and fit it to its config (input shape, preprocessing, decoder), as `run` would,
    without starting anything. Returns (model index, problem) pairs; `notes` gets (model index, choice) pairs
    saying what was read from the model and which decoder layout was picked, and why."""
    problems = []
    for index, model_cfg in enumerate(config.models):
        try:
            # a chain passes when one of its links loads
            with ModelChain(model_cfg).load(rebuild=False) as model:
                if notes is not None:
                    notes.extend((index, note) for note in model.notes)
                if warnings is not None:
                    warnings.extend((index, w) for w in model.fit_warnings)
        except (PipelineError, BackendError) as exc:
            problems.append((index, str(exc)))
    return problems
