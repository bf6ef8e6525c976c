"""What stages tell the supervisor. Stages depend on this protocol, never on the watchdog itself."""

from __future__ import annotations

from typing import Protocol


class HealthReporter(Protocol):
    def alive(self, entity: str) -> None:
        """The entity made progress (a source captured, an output published)."""

    def begin(self, entity: str) -> None:
        """A deadline-supervised piece of work (one inference) started."""

    def end(self, entity: str) -> None:
        """The work started by the last `begin` finished."""

    def checkpoint(self, entity: str, point: str, token: object) -> None:
        """Logical supervision: `token` (e.g. (source, seq)) passed `point` (capture, infer, publish)."""

    def fault(self, entity: str, message: str) -> None:
        """A counted runtime fault (decoder exception, bad frame, read error)."""


class NullReporter:
    """Used where no supervisor runs (unit tests, `edgeinfer bench`)."""

    def alive(self, entity: str) -> None:
        pass

    def begin(self, entity: str) -> None:
        pass

    def end(self, entity: str) -> None:
        pass

    def checkpoint(self, entity: str, point: str, token: object) -> None:
        pass

    def fault(self, entity: str, message: str) -> None:
        pass
