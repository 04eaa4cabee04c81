"""The model catalogue and loader: built-in manifests, an operator's folder, clear errors."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from app.config import Settings
from app.roi.detect import BoxDetector, RecognitionModel, default_providers, load_model
from app.roi.registry import ModelCatalog, ModelError, builtin_models_dir

BUILTIN = ("General", "LiveShows", "NBA2K", "HonorOfKings")
YOLO = builtin_models_dir() / "weights" / "yolov3_tiny_coco"


@pytest.mark.parametrize("name", BUILTIN)
def test_each_builtin_manifest_loads(name: str) -> None:
    model = load_model(name)
    assert isinstance(model, RecognitionModel)
    assert model.name == name
    assert model.detectors
    # Every label a detector can produce has a ranking policy in the manifest.
    for label in model.labels:
        assert label in model.ranking.labels, f"{name}: no [label.{label}]"


def test_names_are_case_insensitive_and_listed() -> None:
    assert set(BUILTIN) <= set(ModelCatalog().names())
    assert load_model("liveshows").name == "LiveShows"


def test_unknown_model_names_the_known_ones() -> None:
    with pytest.raises(ModelError, match="unknown recognition model 'Chess'.*General"):
        load_model("Chess")


def test_threads_must_be_positive() -> None:
    with pytest.raises(ValueError):
        load_model("General", threads=0)


def _operator_manifest(directory: Path, name: str, weights: str) -> Path:
    folder = directory / name.lower()
    folder.mkdir(parents=True)
    shutil.copy(YOLO / "coco.names", folder / "classes.txt")
    (folder / "manifest.toml").write_text(
        f"""
name = "{name}"
description = "cars only"

[[detector]]
kind = "boxes"
weights = "{weights}"
class_names = "classes.txt"
score_threshold = 0.4
labels = {{ car = "car" }}

[label.car]
priority = 0
qp_weight = 0.8
"""
    )
    return folder


def test_operator_directory_adds_a_model(tmp_path: Path) -> None:
    folder = _operator_manifest(tmp_path, "Traffic", "model.onnx")
    shutil.copy(YOLO / "yolov3-tiny.onnx", folder / "model.onnx")
    catalog = ModelCatalog(tmp_path)
    assert "Traffic" in catalog.names()
    model = load_model("traffic", catalog=catalog)
    assert isinstance(model.detectors[0], BoxDetector)
    assert model.labels == ("car",)
    assert model.ranking.for_label("car").qp_weight == 0.8
    assert model.detect(np.full((360, 640, 3), 100, np.uint8)) == []


def test_operator_model_may_not_take_a_builtin_name(tmp_path: Path) -> None:
    _operator_manifest(tmp_path, "General", str(YOLO / "yolov3-tiny.onnx"))
    with pytest.raises(ModelError, match="already used"):
        load_model("General", catalog=ModelCatalog(tmp_path))


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ('description = "x"', "field 'name' is required"),
        ('name = "Bad"', "at least one \\[\\[detector\\]\\]"),
        ('name = "Bad"\n[[detector]]\nkind = "magic"', "unknown kind 'magic'"),
        (
            'name = "Bad"\n[[detector]]\nkind = "retinaface"\nweights = "nope.onnx"',
            "nope.onnx does not exist",
        ),
        (
            'name = "Bad"\n[[detector]]\nkind = "retinaface"\n'
            'weights = "package:retinaface.weights:WEIGHTS"\nsha256 = "00"',
            "sha256 differs",
        ),
        (
            'name = "Bad"\n[[detector]]\nkind = "retinaface"\n'
            'weights = "package:retinaface.weights:WEIGHTS"\nscore_threshold = 3',
            "'score_threshold'=3.0 is outside",
        ),
        ('name = "Bad"\n[[detector]\n', "manifest.toml"),
    ],
)
def test_bad_manifests_say_what_is_wrong(tmp_path: Path, body: str, message: str) -> None:
    folder = tmp_path / "bad"
    folder.mkdir()
    (folder / "manifest.toml").write_text(body)
    with pytest.raises(ModelError, match=message):
        load_model("Bad", catalog=ModelCatalog(tmp_path))


def test_cuda_is_preferred_when_onnxruntime_offers_it() -> None:
    import onnxruntime as ort

    providers = default_providers()
    assert providers[-1] == "CPUExecutionProvider"
    assert ("CUDAExecutionProvider" in providers) == (
        "CUDAExecutionProvider" in ort.get_available_providers()
    )


def test_a_model_reports_the_providers_its_sessions_use() -> None:
    assert load_model("General", providers=["CPUExecutionProvider"]).providers == [
        "CPUExecutionProvider"
    ]
    # By default: what default_providers() offers, less any that onnxruntime could not start.
    providers = load_model("LiveShows").providers
    assert providers and providers[-1] == "CPUExecutionProvider"
    assert set(providers) <= set(default_providers())


def test_naming_the_builtin_folder_as_the_operator_folder_is_harmless(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The Docker image points ROI_RELAY_MODELS_DIR at the shipped models/ folder.
    monkeypatch.setenv("ROI_RELAY_MODELS_DIR", str(builtin_models_dir()))
    assert sorted(ModelCatalog(Settings().models_dir).names()) == sorted(BUILTIN)
