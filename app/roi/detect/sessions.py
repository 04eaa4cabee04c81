"""ONNX Runtime sessions for the detectors, and where their weights come from.

A detector's manifest table names its ``weights`` (a file beside the manifest, or
``package:module:attribute`` for bytes shipped in a Python package) and optionally their
``sha256``. Sessions are shared process-wide by weights, digest, thread count and execution
providers: the streams that use one model share its sessions.
"""

from __future__ import annotations

import hashlib
import importlib
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import onnxruntime as ort

from app.roi.detect.base import ManifestTable
from app.roi.registry import ModelError

_SESSIONS: dict[tuple[str, str | None, int, tuple[str, ...]], ort.InferenceSession] = {}
_SESSIONS_LOCK = threading.Lock()


def default_providers() -> list[str]:
    """CUDA when onnxruntime-gpu offers it, CPU always as the fallback."""
    available = ort.get_available_providers()
    providers = [p for p in ("CUDAExecutionProvider",) if p in available]
    return [*providers, "CPUExecutionProvider"]


def _session(
    weights: WeightsSource, threads: int, providers: Sequence[str]
) -> ort.InferenceSession:
    # The expected digest is part of the key, so a manifest naming another digest is checked.
    key = (weights.key, weights.sha256, threads, tuple(providers))
    with _SESSIONS_LOCK:
        session = _SESSIONS.get(key)
        if session is None:
            options = ort.SessionOptions()
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
            options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
            options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            # Without this the idle worker threads spin and steal the encoder's core.
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
            try:
                session = ort.InferenceSession(
                    weights.load(), sess_options=options, providers=list(providers)
                )
            except Exception as exc:  # onnxruntime raises several unrelated types
                raise ModelError(f"{weights.key}: onnxruntime cannot load it: {exc}") from exc
            _SESSIONS[key] = session
        return session


@dataclass(frozen=True, slots=True)
class WeightsSource:
    """Where a detector's ONNX bytes come from: a file, or a bytes attribute of a package."""

    key: str
    path: Path | None = None
    package_attr: tuple[str, str] | None = None
    sha256: str | None = None

    @classmethod
    def parse(cls, spec: str, base: Path, sha256: str | None, where: str) -> WeightsSource:
        if spec.startswith("package:"):
            parts = spec.split(":")
            if len(parts) != 3 or not all(parts[1:]):
                raise ModelError(f"{where}: weights {spec!r} is not package:module:attribute")
            return cls(key=spec, package_attr=(parts[1], parts[2]), sha256=sha256)
        path = (base / spec).resolve()
        if not path.is_file():
            raise ModelError(f"{where}: weights file {path} does not exist")
        return cls(key=str(path), path=path, sha256=sha256)

    def load(self) -> bytes:
        if self.path is not None:
            data = self.path.read_bytes()
        else:
            assert self.package_attr is not None
            module_name, attr = self.package_attr
            try:
                data = getattr(importlib.import_module(module_name), attr)
            except (ImportError, AttributeError) as exc:
                raise ModelError(f"{self.key}: {exc}") from exc
            if not isinstance(data, bytes):
                raise ModelError(f"{self.key}: is {type(data).__name__}, not bytes")
        if self.sha256 is not None and hashlib.sha256(data).hexdigest() != self.sha256:
            raise ModelError(f"{self.key}: sha256 differs from the manifest's")
        return data


def manifest_session(
    opts: ManifestTable, base: Path, threads: int, providers: Sequence[str]
) -> ort.InferenceSession:
    """The (shared) ONNX Runtime session of a detector's ``weights`` and ``sha256`` fields."""
    weights = WeightsSource.parse(
        opts.get("weights", str), base, opts.table.get("sha256"), opts.where
    )
    return _session(weights, threads, providers)
