"""An operator adds a recognition model by dropping a manifest (and its ONNX file, if any) into
their models folder (``Settings.models_dir``): a catalogue built on that folder lists it, and
it loads and detects like a built-in one."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from app.config import Settings
from app.roi.detect import SaliencyDetector, load_model
from app.roi.registry import ModelCatalog, ModelError, builtin_models_dir
from tests.data import scenes

BUILTIN = ["General", "HonorOfKings", "LiveShows", "NBA2K"]


@pytest.fixture
def operator_catalog(tmp_path: Path) -> ModelCatalog:
    """An operator folder whose manifest reuses the built-in face detector under a new name."""
    folder = tmp_path / "models" / "studio"
    folder.mkdir(parents=True)
    manifest = (builtin_models_dir() / "liveshows" / "manifest.toml").read_text()
    lines = [
        'name = "StudioFaces"' if line.startswith("name") else line
        for line in manifest.splitlines()
    ]
    (folder / "manifest.toml").write_text("\n".join(lines) + "\n")
    return ModelCatalog(tmp_path / "models")


def test_operator_model_is_listed_loads_and_detects(operator_catalog: ModelCatalog) -> None:
    assert operator_catalog.names() == sorted([*BUILTIN, "StudioFaces"])
    assert operator_catalog.canonical("studiofaces") == "StudioFaces"
    frame = scenes.load_image("grace_hopper.jpg")
    found = load_model("StudioFaces", catalog=operator_catalog).detect(frame)
    assert any(d.label == "face" for d in found)


def test_unknown_model_names_the_operator_models_too(operator_catalog: ModelCatalog) -> None:
    assert operator_catalog.canonical("NoSuchModel") is None
    with pytest.raises(ModelError, match="unknown recognition model 'NoSuchModel'.*StudioFaces"):
        load_model("NoSuchModel", catalog=operator_catalog)


def test_without_operator_folder_only_builtins() -> None:
    catalog = ModelCatalog()
    assert catalog.names() == BUILTIN
    assert load_model("General", catalog=catalog).detect(np.zeros((64, 64, 3), np.uint8)) == []


def test_a_catalogue_on_an_empty_or_missing_folder_has_the_builtins(tmp_path: Path) -> None:
    assert ModelCatalog(tmp_path).names() == BUILTIN
    assert ModelCatalog(tmp_path / "not-there").names() == BUILTIN


def test_the_folder_comes_from_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "salient"
    folder.mkdir()
    (folder / "manifest.toml").write_text(SALIENT_MANIFEST)
    monkeypatch.setenv("ROI_RELAY_MODELS_DIR", str(tmp_path))
    assert "Salient" in ModelCatalog(Settings().models_dir).names()
    monkeypatch.delenv("ROI_RELAY_MODELS_DIR")
    assert "Salient" not in ModelCatalog(Settings().models_dir).names()


def test_a_catalogue_reads_its_folder_when_asked_and_again_after_refresh(tmp_path: Path) -> None:
    catalog = ModelCatalog(tmp_path)  # nothing is read yet: the folder may be filled later
    folder = tmp_path / "salient"
    folder.mkdir()
    (folder / "manifest.toml").write_text(SALIENT_MANIFEST)
    assert "Salient" in catalog.names()
    (folder / "manifest.toml").unlink()
    assert "Salient" in catalog.names()  # what was read is kept
    catalog.refresh()
    assert "Salient" not in catalog.names()


# The model of the report in issue 11: one saliency detector, no network, no [label] tables.
SALIENT_MANIFEST = """
name = "Salient"
description = "whatever stands out"

[[detector]]
kind = "saliency"
"""


def test_a_saliency_only_operator_model_detects(tmp_path: Path) -> None:
    folder = tmp_path / "salient"
    folder.mkdir()
    (folder / "manifest.toml").write_text(SALIENT_MANIFEST)
    catalog = ModelCatalog(tmp_path)
    assert catalog.canonical("salient") == "Salient"
    model = load_model("Salient", catalog=catalog)
    assert model.name == "Salient"
    assert [type(d) for d in model.detectors] == [SaliencyDetector]
    assert model.labels == ("salient",)
    assert model.providers == []  # no detector of this model runs on ONNX Runtime

    cup = scenes.load_image("coffee.jpg")  # a cup on a saucer, in the middle of a plain table
    h, w = cup.shape[:2]
    found = model.detect(cup)
    assert [d.label for d in found] == ["salient"]
    x0, y0, x1, y1 = found[0].box
    assert 0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h
    # The object, not the whole picture and not a speck; and it contains the picture's centre.
    assert 0.05 < (x1 - x0) * (y1 - y0) / (w * h) < 0.6
    assert x0 < w / 2 < x1 and y0 < h / 2 < y1
    assert 0 < found[0].score <= 1
    assert model.detect(np.full((360, 640, 3), 128, np.uint8)) == []
