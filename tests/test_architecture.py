"""The shape of the code, as docs/ARCHITECTURE.md draws it, checked on every run.

Data flows one way (ingest -> hub -> ROI stage -> hub -> outputs) and each stage imports only
what its row below allows: the hub knows only media, nothing in a stage reaches into the API
layer or the composition root, outputs never import ingest, the ROI stage never imports an
output. The API routers, metrics, the CLI and the composition root sit beside the flow and may
use any stage. A type checker (mypy, configured in pyproject.toml) runs over app/ too.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
APP = ROOT / "app"

# package (or module) -> the app packages/modules it may import besides itself.
ALLOWED: dict[str, set[str]] = {
    "app.media": set(),
    "app.auth": set(),
    "app.config": set(),
    "app.database": set(),
    "app.hub": {"app.media"},
    # Ingest; RTMP play shares the session and chunk code, so it lives here too.
    "app.rtmp": {"app.media", "app.hub", "app.auth", "app.config"},
    "app.roi": {"app.media", "app.hub", "app.config", "app.templates.rules"},
    # app.auth: the Admit type every play entry point is handed (app/hooks implements it).
    "app.outputs": {"app.media", "app.hub", "app.config", "app.roi.regions", "app.auth"},
    # The template rules use the ROI string limits and the model catalogue, nothing else.
    "app.templates": {"app.roi.regions", "app.roi.registry", "app.database"},
}
# Beside the flow: may import anything in app.
BESIDE = {"app", "app.api", "app.server", "app.cli", "app.metrics", "app.hooks"}


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def app_imports(path: Path) -> Iterator[tuple[int, str]]:
    """(line, module) of every import of an app module, relative imports resolved."""
    package = (
        module_name(path).rsplit(".", 1)[0] if path.name != "__init__.py" else module_name(path)
    )
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name == "app" or alias.name.startswith("app."):
                    yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            if target == "app" or target.startswith("app."):
                yield node.lineno, target


def owner(module: str) -> str | None:
    """The ALLOWED/BESIDE key a module belongs to (its longest matching prefix)."""
    keys = sorted([*ALLOWED, *BESIDE], key=len, reverse=True)
    for key in keys:
        if module == key or module.startswith(key + "."):
            return key
    return None


def is_allowed(importer: str, imported: str) -> bool:
    home = owner(importer)
    if home is None or home in BESIDE:
        return True
    if imported == "app":  # `from app import __version__` and the like
        return True
    if owner(imported) == home:
        return True
    return any(imported == a or imported.startswith(a + ".") for a in ALLOWED[home])


def violations(root: Path = APP) -> list[str]:
    found = []
    for path in sorted(root.rglob("*.py")):
        importer = module_name(path)
        for line, imported in app_imports(path):
            if not is_allowed(importer, imported):
                found.append(f"{path.relative_to(ROOT)}:{line}: {importer} imports {imported}")
    return found


def test_every_module_has_a_place_in_the_flow() -> None:
    homeless = [module_name(p) for p in APP.rglob("*.py") if owner(module_name(p)) is None]
    assert homeless == [], "add them to ALLOWED or BESIDE (and to docs/ARCHITECTURE.md)"


def test_imports_follow_the_flow() -> None:
    assert violations() == []


def test_the_rule_catches_an_import_against_the_flow(tmp_path: Path) -> None:
    # A hub that imports an output, and an output that imports ingest, must both be caught.
    assert not is_allowed("app.hub", "app.outputs.flv")
    assert not is_allowed("app.outputs.hls", "app.rtmp.session")
    assert not is_allowed("app.roi.pipeline", "app.outputs.webrtc")
    assert not is_allowed("app.rtmp.server", "app.api.streams")
    assert is_allowed("app.api.streams", "app.roi.regions")
    assert is_allowed("app.outputs.hls", "app.hub")


def mypy(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mypy", *args], cwd=ROOT, capture_output=True, text=True
    )


@pytest.mark.slow
def test_type_checker_is_clean() -> None:
    result = mypy()  # files and strictness from [tool.mypy] in pyproject.toml
    assert result.returncode == 0, result.stdout[-6000:]
