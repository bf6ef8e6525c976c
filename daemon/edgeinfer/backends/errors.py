"""The error every backend raises: importable without loading a backend."""


class BackendError(RuntimeError):
    """The model cannot be loaded or run; the message says which model and why."""
