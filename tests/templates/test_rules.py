"""The template rules (app/templates/rules.py) at their edges, without HTTP."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from app.roi.registry import ModelCatalog
from app.templates.rules import (
    FIELD_RULES,
    NAME_RULE,
    TemplateCreate,
    TemplatePatch,
    TemplateSettings,
    UnknownModelError,
    explain,
    resolve_model,
    stored_name,
)
from tests.templates.rule_edges import CANONICAL_MODELS, UNKNOWN_MODELS, edge_params


def _rule_alone(field: str, value: Any, ok: bool) -> bool:
    """Whether the field rule alone (no model catalogue) accepts ``value``."""
    return ok or (field == "model" and value in UNKNOWN_MODELS)


def _create_body(field: str, value: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"name": "face1"}
    body[field] = value
    return body


@pytest.mark.parametrize(("field", "value", "ok"), edge_params())
def test_create_rule_edges(field: str, value: Any, ok: bool) -> None:
    body = _create_body(field, value)
    if _rule_alone(field, value, ok):
        created = TemplateCreate.model_validate(body)
        got = getattr(created, field)
        assert got == value
        if isinstance(value, float):  # JSON 6.0 is stored as the integer 6
            assert type(got) is int
    else:
        with pytest.raises(ValidationError) as caught:
            TemplateCreate.model_validate(body)
        [error] = caught.value.errors()
        assert error["loc"] == (field,)
        assert error["msg"] == FIELD_RULES[field]


@pytest.mark.parametrize(
    ("field", "value", "ok"), [p for p in edge_params() if p.values[0] != "name"]
)
def test_patch_rule_edges(field: str, value: Any, ok: bool) -> None:
    if _rule_alone(field, value, ok):
        patch = TemplatePatch.model_validate({field: value})
        assert patch.model_fields_set == {field}
        assert getattr(patch.apply(TemplateSettings()), field) == value
    else:
        with pytest.raises(ValidationError) as caught:
            TemplatePatch.model_validate({field: value})
        assert caught.value.errors()[0]["msg"] == FIELD_RULES[field]


def test_defaults_follow_the_reference() -> None:
    created = TemplateCreate.model_validate({"name": "face1"})
    assert created.stored_name == "roiface1"
    assert created.settings() == TemplateSettings(
        description="", model="General", delta_qp=-6, max_regions=6, bitrate_kbps=None
    )


def test_messages_name_each_rule() -> None:
    assert NAME_RULE == "name must be 1-10 ASCII letters or digits"
    assert "100 characters of Chinese" in FIELD_RULES["description"]
    assert FIELD_RULES["model"] == (
        "model must be one of General, HonorOfKings, NBA2K, LiveShows (any case)"
        " or a model added in ROI_RELAY_MODELS_DIR"
    )
    assert FIELD_RULES["delta_qp"] == "delta_qp must be an integer from -51 to 51"
    assert FIELD_RULES["max_regions"] == "max_regions must be an integer from 1 to 6"
    assert FIELD_RULES["bitrate_kbps"].startswith(
        "bitrate_kbps must be an integer from 100 to 50000"
    )


def test_stored_name_applies_the_name_rule() -> None:
    assert stored_name("face1") == "roiface1"
    with pytest.raises(ValueError, match="1-10 ASCII letters or digits"):
        stored_name("face_1")


def test_patch_bitrate_null_clears_and_absent_keeps() -> None:
    base = TemplateSettings(bitrate_kbps=2500, delta_qp=-4)
    assert TemplatePatch.model_validate({"delta_qp": -8}).apply(base).bitrate_kbps == 2500
    assert TemplatePatch.model_validate({"bitrate_kbps": None}).apply(base).bitrate_kbps is None
    assert TemplatePatch.model_validate({}).apply(base) == base


def test_unknown_fields_are_refused() -> None:
    with pytest.raises(ValidationError):
        TemplateCreate.model_validate({"name": "a", "colour": "red"})
    with pytest.raises(ValidationError):
        TemplatePatch.model_validate({"name": "b"})


def test_explain_names_field_and_rule() -> None:
    errors = [
        {"type": "missing", "loc": ("body", "name"), "msg": "Field required"},
        {"type": "extra_forbidden", "loc": ("body", "colour"), "msg": "Extra inputs"},
        {"type": "extra_forbidden", "loc": ("body", "name"), "msg": "Extra inputs"},
        {"type": "json_invalid", "loc": ("body", 3), "msg": "JSON", "ctx": {"error": "bad"}},
        {"type": "model_attributes_type", "loc": ("body",), "msg": "not a dict"},
        {"type": "string_type", "loc": ("path", "name"), "msg": "Input should be a string"},
    ]
    explained = explain(errors)
    assert [e["field"] for e in explained] == ["name", "colour", "name", None, None, None]
    assert explained[0]["msg"] == f"name is required: {NAME_RULE}"
    assert explained[1]["msg"].startswith("colour is not a template field")
    assert explained[2]["msg"].startswith("name cannot be changed")
    assert explained[3]["msg"] == "the body is not valid JSON: bad"
    assert explained[4]["msg"] == "the body must be a JSON object of template fields"
    assert explained[5]["msg"] == "name: Input should be a string"
    assert explained[0]["loc"] == ["body", "name"]


def test_models_resolve_against_the_catalogue() -> None:
    catalog = ModelCatalog()
    for given, canonical in CANONICAL_MODELS.items():
        assert resolve_model(TemplateSettings(model=given), catalog).model == canonical
    with pytest.raises(UnknownModelError) as caught:
        resolve_model(TemplateSettings(model="Faces"), catalog)
    assert str(caught.value).startswith(FIELD_RULES["model"])
    assert "known here: General, HonorOfKings, NBA2K, LiveShows" in str(caught.value)


def test_patch_has_the_settings_fields_and_their_rules() -> None:
    # Derived from TemplateSettings, so a new settings field is patchable with the same rule.
    assert set(TemplatePatch.model_fields) == set(TemplateSettings.model_fields)
    for field in TemplateSettings.model_fields:
        assert TemplatePatch.model_fields[field].metadata == (
            TemplateSettings.model_fields[field].metadata
        )
