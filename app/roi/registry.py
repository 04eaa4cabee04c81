"""The model catalogue: which recognition models exist, read from their manifests.

Built-in manifests live in ``models/`` (a source checkout) or in
``{sys.prefix}/share/roi-relay/models`` (an installed distribution); an operator adds models in
a folder of their own (``Settings.models_dir``, ``ROI_RELAY_MODELS_DIR``). This module only
reads manifests (no ONNX Runtime), so the template rules can ask it which names exist.

Nothing is read at import time: a :class:`ModelCatalog` scans its folders when first asked,
and again after :meth:`ModelCatalog.refresh`.
"""

from __future__ import annotations

import sys
import threading
import tomllib
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

MANIFEST_NAME = "manifest.toml"


@cache
def builtin_models_dir() -> Path:
    """models/ of the source tree (a checkout or an editable install), else the copy that
    `pip install .` puts under ``{sys.prefix}/share/roi-relay/models`` (pyproject data-files)."""
    beside_source = Path(__file__).resolve().parents[2] / "models"
    installed = Path(sys.prefix) / "share" / "roi-relay" / "models"
    for candidate in (beside_source, installed):
        if (candidate / "general" / MANIFEST_NAME).is_file():
            return candidate
    return beside_source


class ModelError(Exception):
    """A manifest or model file that cannot be used; the message names the file and field."""


@dataclass(frozen=True, slots=True)
class ModelManifest:
    name: str
    description: str
    path: Path
    table: dict[str, Any]


def _manifest_paths(directory: Path) -> list[Path]:
    if not directory.is_dir():
        return []
    return sorted(
        p for p in [directory / MANIFEST_NAME, *directory.glob(f"*/{MANIFEST_NAME}")] if p.is_file()
    )


def read_manifest(path: Path) -> ModelManifest:
    try:
        table = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ModelError(f"{path}: {exc}") from exc
    name = table.get("name")
    if not isinstance(name, str) or not name.strip():
        raise ModelError(f"{path}: field 'name' is required")
    return ModelManifest(name.strip(), str(table.get("description", "")), path, table)


def scan_manifests(extra_dir: Path | None = None) -> dict[str, ModelManifest]:
    """Every model by casefolded name: built-in manifests, then the operator's folder.

    The operator's manifests add models and may not reuse a built-in name (that is an error
    rather than a silent override).
    """
    found: dict[str, ModelManifest] = {}
    dirs = [builtin_models_dir().resolve()]
    if extra_dir is not None and extra_dir.resolve() not in dirs:  # built-in folder: once
        dirs.append(extra_dir.resolve())
    for directory in dirs:
        for path in _manifest_paths(directory):
            manifest = read_manifest(path)
            key = manifest.name.casefold()
            if key in found:
                raise ModelError(
                    f"{path}: model name {manifest.name!r} is already used by {found[key].path}"
                )
            found[key] = manifest
    return found


class ModelCatalog:
    """The recognition models one relay knows: built-in ones plus the operator's folder.

    Names are matched case-insensitively; :meth:`canonical` gives a name's stored spelling.
    Thread-safe (the template API asks from FastAPI's thread pool).
    """

    def __init__(self, extra_dir: Path | None = None) -> None:
        self.extra_dir = extra_dir
        self._lock = threading.Lock()
        self._manifests: dict[str, ModelManifest] | None = None
        self._error: ModelError | None = None

    def refresh(self) -> None:
        """Forget what was scanned: the next question reads the folders again."""
        with self._lock:
            self._manifests = None
            self._error = None

    def manifests(self) -> dict[str, ModelManifest]:
        """Every model by casefolded name; raises :class:`ModelError` for a broken folder."""
        with self._lock:
            if self._manifests is None and self._error is None:
                try:
                    self._manifests = scan_manifests(self.extra_dir)
                except ModelError as exc:
                    self._error = exc
            if self._error is not None:
                raise self._error
            assert self._manifests is not None
            return self._manifests

    def names(self) -> list[str]:
        return sorted(m.name for m in self.manifests().values())

    def manifest(self, name: str) -> ModelManifest:
        manifest = self.manifests().get(name.casefold())
        if manifest is None:
            raise ModelError(
                f"unknown recognition model {name!r}; known: {', '.join(self.names())}"
            )
        return manifest

    def canonical(self, name: str) -> str | None:
        """The model's own spelling of ``name`` (``liveshows`` -> ``LiveShows``), or None."""
        try:
            manifest = self.manifests().get(name.casefold())
        except ModelError:
            return None
        return manifest.name if manifest is not None else None
