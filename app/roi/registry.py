"""The model registry: which recognition models exist, read from their manifests.

Built-in manifests live in ``models/`` (a source checkout) or in
``{sys.prefix}/share/roi-relay/models`` (an installed distribution); an operator adds models in
``$ROI_RELAY_MODELS_DIR``. This module only reads manifests (no ONNX Runtime), so the template
rules can ask it which names exist.
"""

from __future__ import annotations

import os
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MODELS_DIR_ENV = "ROI_RELAY_MODELS_DIR"
MANIFEST_NAME = "manifest.toml"


def _builtin_models_dir() -> Path:
    """models/ of the source tree (a checkout or an editable install), else the copy that
    `pip install .` puts under ``{sys.prefix}/share/roi-relay/models`` (pyproject data-files)."""
    beside_source = Path(__file__).resolve().parents[2] / "models"
    installed = Path(sys.prefix) / "share" / "roi-relay" / "models"
    for candidate in (beside_source, installed):
        if (candidate / "general" / MANIFEST_NAME).is_file():
            return candidate
    return beside_source


BUILTIN_MODELS_DIR = _builtin_models_dir()


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


def model_manifests(extra_dir: str | os.PathLike[str] | None = None) -> dict[str, ModelManifest]:
    """Every known model by name: built-in manifests, then the operator's directory.

    The operator's directory is ``extra_dir`` or ``$ROI_RELAY_MODELS_DIR``; its manifests add
    models and may not reuse a built-in name (that is an error rather than a silent override).
    """
    found: dict[str, ModelManifest] = {}
    dirs = [BUILTIN_MODELS_DIR.resolve()]
    extra = extra_dir if extra_dir is not None else os.environ.get(MODELS_DIR_ENV)
    if extra and Path(extra).resolve() not in dirs:  # the built-in folder named again: once
        dirs.append(Path(extra).resolve())
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


def model_names(extra_dir: str | os.PathLike[str] | None = None) -> list[str]:
    return sorted(m.name for m in model_manifests(extra_dir).values())
