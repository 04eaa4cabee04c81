"""The ROI template rules, in one place (docs/roi-rules.md, after the cloud service's ROI
recognition feature).

A template has one shape: :class:`TemplateSettings` (description, model and the encoding
knobs). The create body adds the name, the patch body is the same fields all optional, the
store keeps a ``TemplateSettings`` per version, and the API answers with it; none retypes the
fields. Each field rule is one checking function, one message that names the rule, and one JSON
schema fragment (the OpenAPI contract), side by side so that validation, error messages and the
documented schema cannot drift apart. The checks are strict: a JSON string ``"5"`` is not a QP
delta, ``true`` is not an integer, ``null`` only where the rule says so.

Which recognition models exist is not a rule of the text but of the relay's model catalogue
(app/roi/registry.py): the field rule checks the shape of a model name, and
:func:`resolve_model` checks it against a catalogue and gives its canonical spelling.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Annotated, Any, Final, TypeVar

from pydantic import BaseModel, ConfigDict, PlainValidator, WithJsonSchema, create_model
from pydantic_core import PydanticCustomError

from app.roi.regions import MAX_DELTA_QP, MAX_REGIONS, MIN_DELTA_QP
from app.roi.registry import ModelCatalog, ModelError

NAME_PREFIX: Final = "roi"

# The recognition ("training") models of the cloud service; an operator may add more.
BUILTIN_MODELS: Final = ("General", "HonorOfKings", "NBA2K", "LiveShows")
DEFAULT_MODEL: Final = "General"
# A template's default boost is stronger than the ROI string's -3 (app/roi/regions.py): the
# string's default is for one region an application names, a template's for detected faces.
TEMPLATE_DELTA_QP: Final = -6

NAME_MAX = 10
DESCRIPTION_MAX = 100
MODEL_NAME_MAX = 32  # the store's column
DELTA_QP_RANGE: Final = (MIN_DELTA_QP, MAX_DELTA_QP)
MAX_REGIONS_RANGE: Final = (1, MAX_REGIONS)
BITRATE_KBPS_RANGE: Final = (100, 50000)

# Chinese here means the CJK Unified Ideographs block (U+4E00..U+9FFF); "spaces" means the
# ASCII space only (no tabs, newlines or full-width spaces).
_NAME_CHARS = "A-Za-z0-9"
_DESCRIPTION_CHARS = "\u4e00-\u9fffA-Za-z0-9 _-"
_MODEL_CHARS = "A-Za-z0-9_-"
_NAME_RE = re.compile(f"[{_NAME_CHARS}]{{1,{NAME_MAX}}}")
_DESCRIPTION_RE = re.compile(f"[{_DESCRIPTION_CHARS}]{{0,{DESCRIPTION_MAX}}}")
_MODEL_RE = re.compile(f"[{_MODEL_CHARS}]{{1,{MODEL_NAME_MAX}}}")

NAME_RULE: Final = f"name must be 1-{NAME_MAX} ASCII letters or digits"
DESCRIPTION_RULE: Final = (
    f"description must be at most {DESCRIPTION_MAX} characters of Chinese, English letters, "
    "digits, spaces, _ or -"
)
MODEL_RULE: Final = (
    "model must be one of "
    + ", ".join(BUILTIN_MODELS)
    + " (any case) or a model added in ROI_RELAY_MODELS_DIR"
)
DELTA_QP_RULE: Final = (
    f"delta_qp must be an integer from {DELTA_QP_RANGE[0]} to {DELTA_QP_RANGE[1]}"
)
MAX_REGIONS_RULE: Final = (
    f"max_regions must be an integer from {MAX_REGIONS_RANGE[0]} to {MAX_REGIONS_RANGE[1]}"
)
BITRATE_KBPS_RULE: Final = (
    f"bitrate_kbps must be an integer from {BITRATE_KBPS_RANGE[0]} to {BITRATE_KBPS_RANGE[1]}, "
    "or null to keep the publisher's bitrate"
)


def _broken(rule: str, error_type: str) -> PydanticCustomError:
    return PydanticCustomError(error_type, rule)


def _json_integer(value: object) -> int | None:
    """The integer a JSON number stands for (5 and 5.0 alike), or None for anything else."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return int(value)
    return None


def check_name(value: object) -> str:
    if isinstance(value, str) and _NAME_RE.fullmatch(value):
        return value
    raise _broken(NAME_RULE, "name_rule")


def check_description(value: object) -> str:
    if isinstance(value, str) and _DESCRIPTION_RE.fullmatch(value):
        return value
    raise _broken(DESCRIPTION_RULE, "description_rule")


def check_model(value: object) -> str:
    """The shape of a model name; whether the relay knows it is :func:`resolve_model`'s."""
    if isinstance(value, str) and _MODEL_RE.fullmatch(value):
        return value
    raise _broken(MODEL_RULE, "model_rule")


_Settings = TypeVar("_Settings", bound="TemplateSettings")


class UnknownModelError(ValueError):
    """A template names a model the relay's catalogue does not have."""

    def __init__(self, name: str, known: Iterable[str]) -> None:
        super().__init__(f"{MODEL_RULE}; {name!r} is not one (known here: {', '.join(known)})")
        self.name = name


def model_choices(catalog: ModelCatalog) -> list[str]:
    """The models a template can name: the built-in four in the reference's order, then the
    operator's by name (only the built-in ones if the operator's folder is unusable)."""
    try:
        names = catalog.names()
    except ModelError:
        return list(BUILTIN_MODELS)
    builtin = {name.casefold() for name in BUILTIN_MODELS}
    return [n for n in BUILTIN_MODELS if n in names] + [
        n for n in names if n.casefold() not in builtin
    ]


def resolve_model(settings: _Settings, catalog: ModelCatalog) -> _Settings:
    """``settings`` with its model in the catalogue's spelling (``liveshows`` -> ``LiveShows``).

    Raises :class:`UnknownModelError` for a model the catalogue does not have.
    """
    canonical = catalog.canonical(settings.model)
    if canonical is None:  # perhaps dropped into the operator's folder since the last look
        catalog.refresh()
        canonical = catalog.canonical(settings.model)
    if canonical is None:
        raise UnknownModelError(settings.model, model_choices(catalog))
    if canonical == settings.model:
        return settings
    return settings.model_copy(update={"model": canonical})


def _ranged(rule: str, error_type: str, bounds: tuple[int, int]) -> Callable[[object], int]:
    low, high = bounds

    def check(value: object) -> int:
        number = _json_integer(value)
        if number is not None and low <= number <= high:
            return number
        raise _broken(rule, error_type)

    return check


check_delta_qp = _ranged(DELTA_QP_RULE, "delta_qp_rule", DELTA_QP_RANGE)
check_max_regions = _ranged(MAX_REGIONS_RULE, "max_regions_rule", MAX_REGIONS_RANGE)
_check_bitrate_number = _ranged(BITRATE_KBPS_RULE, "bitrate_kbps_rule", BITRATE_KBPS_RANGE)


def check_bitrate_kbps(value: object) -> int | None:
    return None if value is None else _check_bitrate_number(value)


def _int_schema(bounds: tuple[int, int], rule: str) -> dict[str, Any]:
    return {"type": "integer", "minimum": bounds[0], "maximum": bounds[1], "description": rule}


NAME_SCHEMA: Final[dict[str, Any]] = {
    "type": "string",
    "minLength": 1,
    "maxLength": NAME_MAX,
    "pattern": f"^[{_NAME_CHARS}]{{1,{NAME_MAX}}}$",
    "description": NAME_RULE + f' (stored with the prefix "{NAME_PREFIX}")',
    "examples": ["face1"],
}
DESCRIPTION_SCHEMA: Final[dict[str, Any]] = {
    "type": "string",
    "maxLength": DESCRIPTION_MAX,
    "pattern": f"^[{_DESCRIPTION_CHARS}]{{0,{DESCRIPTION_MAX}}}$",
    "description": DESCRIPTION_RULE,
}
MODEL_SCHEMA: Final[dict[str, Any]] = {
    "type": "string",
    "pattern": f"^[{_MODEL_CHARS}]{{1,{MODEL_NAME_MAX}}}$",
    "description": MODEL_RULE + " (GET /api/v1/models lists them)",
    "examples": list(BUILTIN_MODELS),
}
DELTA_QP_SCHEMA: Final = _int_schema(DELTA_QP_RANGE, DELTA_QP_RULE)
MAX_REGIONS_SCHEMA: Final = _int_schema(MAX_REGIONS_RANGE, MAX_REGIONS_RULE)
BITRATE_KBPS_SCHEMA: Final[dict[str, Any]] = {
    "anyOf": [_int_schema(BITRATE_KBPS_RANGE, BITRATE_KBPS_RULE), {"type": "null"}],
    "description": BITRATE_KBPS_RULE,
}

# The field types: the check is the whole validation (PlainValidator), the schema is what
# OpenAPI documents.
Name = Annotated[str, PlainValidator(check_name), WithJsonSchema(NAME_SCHEMA)]
Description = Annotated[str, PlainValidator(check_description), WithJsonSchema(DESCRIPTION_SCHEMA)]
ModelName = Annotated[str, PlainValidator(check_model), WithJsonSchema(MODEL_SCHEMA)]
DeltaQp = Annotated[int, PlainValidator(check_delta_qp), WithJsonSchema(DELTA_QP_SCHEMA)]
MaxRegions = Annotated[int, PlainValidator(check_max_regions), WithJsonSchema(MAX_REGIONS_SCHEMA)]
BitrateKbps = Annotated[
    int | None, PlainValidator(check_bitrate_kbps), WithJsonSchema(BITRATE_KBPS_SCHEMA)
]


class TemplateSettings(BaseModel):
    """What one version of a template says: the model and the encoding knobs.

    The one shape of a template: the create and patch bodies, the stored versions and the API
    answers are all made from these fields.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    description: Description = ""
    model: ModelName = DEFAULT_MODEL
    delta_qp: DeltaQp = TEMPLATE_DELTA_QP
    max_regions: MaxRegions = MAX_REGIONS
    bitrate_kbps: BitrateKbps = None


class TemplateCreate(TemplateSettings):
    """POST body: a new template. ``name`` is the user's part, without the prefix."""

    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        json_schema_extra={"examples": [{"name": "face1", "model": "LiveShows"}]},
    )

    name: Name

    @property
    def stored_name(self) -> str:
        return NAME_PREFIX + self.name

    def settings(self) -> TemplateSettings:
        return TemplateSettings(**self.model_dump(exclude={"name"}))


def _patch_schema(schema: dict[str, Any]) -> None:
    # A left-out field keeps its value: there is no default to document, and "null" is not
    # a value of these fields (bitrate_kbps documents its own null).
    for prop in schema.get("properties", {}).values():
        prop.pop("default", None)
    schema["examples"] = [{"description": "host face", "delta_qp": -8}]


def _optional(field: str) -> Any:
    """A settings field's type for PATCH: the same checks, None meaning "not sent"."""
    info = TemplateSettings.model_fields[field]
    optional: Any = info.annotation | None  # type: ignore[operator]  # a field always has one
    return (Annotated[(optional, *info.metadata)], None)


class PatchBase(BaseModel):
    """What every template patch can do; :data:`TemplatePatch` adds the fields."""

    model_config = ConfigDict(extra="forbid", frozen=True, json_schema_extra=_patch_schema)

    def changes(self) -> dict[str, Any]:
        """The fields this patch sent, with their values."""
        return {field: getattr(self, field) for field in self.model_fields_set}

    def apply(self, base: TemplateSettings) -> TemplateSettings:
        """``base`` with the fields this patch sent; ``bitrate_kbps: null`` clears the bitrate."""
        return base.model_copy(update=self.changes())

    def with_model(self, model: str) -> PatchBase:
        return self.model_copy(update={"model": model})


# Made by create_model so that it cannot drift from TemplateSettings; type checkers know it
# only as a PatchBase.
TemplatePatch: type[PatchBase] = create_model(
    "TemplatePatch",
    __base__=PatchBase,
    __doc__="PATCH body: the fields to change; a field left out keeps its value.",
    **{field: _optional(field) for field in TemplateSettings.model_fields},
)

# Messages for a field that is missing or unknown, keyed by field name.
FIELD_RULES: Final[Mapping[str, str]] = {
    "name": NAME_RULE,
    "description": DESCRIPTION_RULE,
    "model": MODEL_RULE,
    "delta_qp": DELTA_QP_RULE,
    "max_regions": MAX_REGIONS_RULE,
    "bitrate_kbps": BITRATE_KBPS_RULE,
}


def stored_name(name: str) -> str:
    """The name a template is stored and pushed with: ``face1`` -> ``roiface1``."""
    return NAME_PREFIX + check_name(name)


def is_stored_name(name: str) -> bool:
    """Whether ``name`` could name a stored template (``roi`` + a valid name)."""
    return name.startswith(NAME_PREFIX) and bool(_NAME_RE.fullmatch(name[len(NAME_PREFIX) :]))


def explain(errors: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Pydantic/FastAPI validation errors as ``{loc, field, msg, type}`` naming the rule broken.

    ``field`` is the body field concerned (None for the body as a whole or a path parameter).
    """
    explained = []
    for error in errors:
        loc = [part for part in error.get("loc", ()) if isinstance(part, str | int)]
        kind = str(error.get("type", "invalid"))
        in_body = bool(loc) and loc[0] == "body"
        field = loc[1] if in_body and len(loc) == 2 and isinstance(loc[1], str) else None
        message = str(error.get("msg", "invalid value"))
        if field is not None and kind == "missing":
            message = f"{field} is required: {FIELD_RULES.get(field, message)}"
        elif field is not None and kind == "extra_forbidden":
            if field == "name":
                message = "name cannot be changed: delete the template and create it anew"
            else:
                message = f"{field} is not a template field (fields: {', '.join(FIELD_RULES)})"
        elif in_body and kind == "json_invalid":
            field = None
            message = f"the body is not valid JSON: {error.get('ctx', {}).get('error', kind)}"
        elif in_body and len(loc) == 1:
            message = "the body must be a JSON object of template fields"
        elif not in_body and loc:
            message = f"{loc[-1]}: {message}"
        explained.append({"loc": loc, "field": field, "msg": message, "type": kind})
    return explained
