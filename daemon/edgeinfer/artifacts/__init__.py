"""Engines as files: the manifest written beside each engine and the compatibility pre-flight that reads it
against this host. Below both the backends (TensorRT checks an engine before deserializing it) and the engine
tools (build writes manifests, `inspect` reads them)."""
