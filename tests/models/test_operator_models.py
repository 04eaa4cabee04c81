"""An operator adds a recognition model by dropping a manifest (and its ONNX file) into
ROI_RELAY_MODELS_DIR: it loads, detects, and templates can select it by name."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from app.roi.detect import load_model
from app.roi.registry import BUILTIN_MODELS_DIR, MODELS_DIR_ENV, model_names
from app.templates.rules import TemplateCreate, operator_models

FACE = Path(__file__).resolve().parents[1] / "data" / "images" / "grace_hopper.jpg"


@pytest.fixture
def operator_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A model folder whose manifest reuses the built-in face detector under a new name."""
    folder = tmp_path / "models" / "studio"
    folder.mkdir(parents=True)
    manifest = (BUILTIN_MODELS_DIR / "liveshows" / "manifest.toml").read_text()
    lines = [
        'name = "StudioFaces"' if line.startswith("name") else line
        for line in manifest.splitlines()
    ]
    (folder / "manifest.toml").write_text("\n".join(lines) + "\n")
    monkeypatch.setenv(MODELS_DIR_ENV, str(tmp_path / "models"))
    return folder


def test_operator_model_loads_detects_and_is_selectable(operator_dir: Path) -> None:
    import av

    assert "StudioFaces" in model_names()
    assert operator_models() == ["StudioFaces"]
    frame = next(av.open(str(FACE)).decode(video=0)).to_ndarray(format="rgb24")
    found = load_model("StudioFaces").detect(frame)
    assert any(d.label == "face" for d in found)
    template = TemplateCreate.model_validate({"name": "studio", "model": "StudioFaces"})
    assert template.model == "StudioFaces"


def test_unknown_model_is_refused_with_the_rule(operator_dir: Path) -> None:
    with pytest.raises(ValidationError) as err:
        TemplateCreate.model_validate({"name": "studio", "model": "NoSuchModel"})
    assert "model must be one of General" in str(err.value)
    assert MODELS_DIR_ENV in str(err.value)


def test_without_operator_folder_only_builtins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(MODELS_DIR_ENV, raising=False)
    assert operator_models() == []
    assert sorted(model_names()) == sorted(["General", "HonorOfKings", "LiveShows", "NBA2K"])
    frame = np.zeros((64, 64, 3), np.uint8)
    assert load_model("General").detect(frame) == []
