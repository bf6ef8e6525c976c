"""System shared memory between the triton backend and a Triton server on the same host.

Over loopback gRPC a [1,3,416,416] fp32 frame is 2 MB serialised into protobuf, copied through the socket and
parsed again, and the 0.86 MB of outputs make the same trip back. With shared memory the request carries only
region names and offsets: the input stage writes the tensor straight into a POSIX shared-memory segment that
the server maps, and the server writes the outputs into another one that the decoder reads in place.

One `ShmBufferSet` per buffer set (input region + one region holding every output), created, registered with
the server once, and reused for every frame of that set. Regions are named after this process and backend, so
two daemons (or two models) never share one. `close` unregisters (best effort: a dead server has nothing to
unregister) and always unlinks the segments, so nothing is left in /dev/shm; Python's resource tracker unlinks
them too if the daemon itself is killed. A server that restarted has forgotten every registration: after a
failed request one status call says which regions the server still holds, and the others are registered again
before the next request (`mark_stale`).

The segments are the standard library's `multiprocessing.shared_memory` (what tritonclient's
`tritonclient.utils.shared_memory` wraps): its helper closes the mapping before unlinking and gives up on the
unlink when a numpy view into the segment is still alive (a decoder holding outputs), which would leak the
segment; here the unlink always runs.
"""

from __future__ import annotations

import itertools
import logging
import os
import threading
from dataclasses import dataclass, field
from multiprocessing import shared_memory
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

_counter = itertools.count()
LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1", "[::1]")


def server_is_local(url: str) -> bool:
    """True when host:port names this machine by loopback (what `shared_memory: auto` selects system shared
    memory for). A LAN address of this very host is not recognised: set `shared_memory: system` there."""
    host = url.rpartition(":")[0]
    return host in LOCAL_HOSTS or host.startswith("127.")


@dataclass
class ShmRegion:
    name: str  # the region's name on the server (also the /dev/shm key without its slash)
    size: int
    segment: shared_memory.SharedMemory | None = None

    @property
    def key(self) -> str:
        return "/" + self.name

    def array(self, dtype: np.dtype, shape: tuple[int, ...], offset: int = 0) -> np.ndarray:
        """A numpy view over the segment (no copy)."""
        return np.ndarray(shape, dtype, buffer=self.segment.buf, offset=offset)


@dataclass
class ShmBufferSet:
    """The regions of one buffer set: the image input, and every output at its own offset."""

    input: ShmRegion
    output: ShmRegion | None  # None when an output's size is not known up front (outputs then come in the reply)
    output_offsets: list[int] = field(default_factory=list)
    output_sizes: list[int] = field(default_factory=list)


class ShmPool:
    """Creates, registers, re-registers and destroys the regions of every buffer set of one backend."""

    def __init__(self, model_id: str):
        self._prefix = f"edgeinfer_{os.getpid()}_{next(_counter)}_{model_id[:40]}"
        self.sets: dict[Any, ShmBufferSet] = {}
        self._registered: set[str] = set()
        self._retired: list[str] = []  # registered names of replaced sets: unregistered at the next chance
        self._stale = False
        self._lock = threading.Lock()  # the pipeline's thread and a fallback's prober may both register
        self.registrations = 0  # register calls made (once per region, again after a server restart)

    def regions(self) -> list[ShmRegion]:
        out = []
        for s in self.sets.values():
            out.append(s.input)
            if s.output is not None:
                out.append(s.output)
        return out

    def create_set(self, key: Any, input_bytes: int, output_bytes: list[int] | None) -> ShmBufferSet:
        """Create (not yet register) the regions for buffer set `key`; replaces an existing one of that key."""
        old = self.sets.pop(key, None)
        if old is not None:  # grown for a larger batch: new names, the server may still hold the old ones
            old_regions = [old.input, *([old.output] if old.output else [])]
            self._retired += [r.name for r in old_regions if r.name in self._registered]
            self._registered.difference_update(r.name for r in old_regions)
            self._destroy(old_regions)
        tag = f"{self._prefix}_{key}_{next(_counter)}"
        regions = [ShmRegion(f"{tag}_in", max(input_bytes, 1))]
        offsets: list[int] = []
        if output_bytes is not None:
            total = 0
            for size in output_bytes:
                offsets.append(total)
                total += -(-size // 64) * 64  # each output 64-byte aligned
            regions.append(ShmRegion(f"{tag}_out", max(total, 1)))
        try:
            for r in regions:
                r.segment = shared_memory.SharedMemory(r.key, create=True, size=r.size)
        except Exception:
            self._destroy(regions)
            raise
        buffer_set = ShmBufferSet(regions[0], regions[1] if len(regions) > 1 else None, offsets,
                                  list(output_bytes or []))
        self.sets[key] = buffer_set
        return buffer_set

    def ensure_registered(self, client: Any, call) -> None:
        """Register every region the server does not know yet (all of them after `mark_stale`).
        `call(what, fn, *args)` runs a client call and raises BackendError."""
        if not self._stale and not self._retired and len(self._registered) == len(self.regions()):
            return  # the hot path: everything known to the server
        with self._lock:
            self._register_locked(client, call)

    def _register_locked(self, client: Any, call) -> None:
        retired, self._retired = self._retired, []
        for name in retired:
            try:
                call("unregister_system_shared_memory", client.unregister_system_shared_memory, name)
            except Exception:  # a restarted server never knew it
                pass
        if self._stale:
            # one status call says which of ours the server still holds (a restarted one: none), instead of
            # unregistering and registering everything after every failed request
            status = call("get_system_shared_memory_status", client.get_system_shared_memory_status)
            self._registered &= _region_names(status)
            self._stale = False
        for r in self.regions():
            if r.name not in self._registered:
                call("register_system_shared_memory", client.register_system_shared_memory, r.name, r.key, r.size)
                self._registered.add(r.name)
                self.registrations += 1

    def mark_stale(self) -> None:
        """A request failed: the server may have restarted and forgotten the regions."""
        self._stale = True

    def close(self, client: Any | None, call) -> None:
        """Unregister (best effort) and unlink every region."""
        if client is not None:
            names = [r.name for r in self.regions() if r.name in self._registered] + self._retired
            for name in names:
                try:
                    call("unregister_system_shared_memory", client.unregister_system_shared_memory, name)
                except Exception as exc:  # a dead server: nothing to unregister, the unlink below still runs
                    log.debug("unregistering %s: %s", name, exc)
                    break  # one failure says the server is gone: do not wait once per region
        self._registered.clear()
        self._retired.clear()
        self._destroy(self.regions())
        self.sets.clear()

    @staticmethod
    def _destroy(regions: list[ShmRegion]) -> None:
        for r in regions:
            segment, r.segment = r.segment, None
            if segment is None:
                continue
            try:
                segment.close()
            except BufferError:  # numpy views still point into it: the mapping goes when they do
                pass
            try:
                segment.unlink()  # the name goes now, whatever the mapping does
            except FileNotFoundError:
                pass
            except OSError as exc:  # never leave the others behind because one failed
                log.warning("shared memory %s: %s", r.key, exc)


def _region_names(status: Any) -> set[str]:
    """Region names from a shared-memory status reply: gRPC (protobuf with a `regions` map) or HTTP (a list of
    {"name": ...} dicts)."""
    regions = getattr(status, "regions", None)
    if regions is not None:
        return set(regions.keys())
    if isinstance(status, dict):
        return set(status.get("regions", {}))
    return {r["name"] for r in status if isinstance(r, dict) and "name" in r}
