"""REST API for ROI templates (/api/v1/roi-templates) and the static console (/console).

Usage in the composition root::

    app.include_router(templates_router(store, [bearer_auth(settings.api_token)]))
    mount_console(app)

Templates are addressed by their stored name (``roiface1``), the one a push URL names.
Validation errors come back as 422 ``{"detail": [{"loc", "field", "msg", "type"}]}`` with the
rule in ``msg``; the router converts them itself, so it needs no app-level handler.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from fastapi import APIRouter, FastAPI, HTTPException, Request, Response, params, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse
from fastapi.routing import APIRoute
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from app.api.errors import SafeJSONResponse
from app.api.security import UNAUTHORIZED_RESPONSE
from app.roi.registry import ModelCatalog, ModelError
from app.templates.rules import (
    BUILTIN_MODELS,
    NAME_PREFIX,
    PatchBase,
    TemplateCreate,
    TemplatePatch,
    TemplateSettings,
    UnknownModelError,
    explain,
    model_choices,
    resolve_model,
)
from app.templates.store import (
    TemplateExistsError,
    TemplateNotFoundError,
    TemplateState,
    TemplateStore,
    TemplateVersion,
)

CONSOLE_DIR = Path(__file__).resolve().parent.parent / "web" / "console"
PREFIX = "/api/v1/roi-templates"


class VersionOut(TemplateSettings):
    """One version of a template: its settings and when they take effect."""

    version: int = Field(description="1, 2, ... per template")
    saved_at: datetime
    effective_at: datetime = Field(description="when this version takes (or took) effect")
    effective_in_s: float = Field(
        description="seconds from this response until effective_at; 0 once in effect"
    )


class TemplateOut(VersionOut):
    """A template: the version in force (or, never yet in force, the pending one)."""

    name: str = Field(description='the stored name, "roi" + the name given at creation')
    status: Literal["pending", "active"]
    created_at: datetime
    updated_at: datetime
    pending: VersionOut | None = Field(
        description="an edit saved but not yet in force (the fields above stay in force "
        "until its effective_at)"
    )
    warnings: list[str] = Field(
        default_factory=list, description="what may not be what was meant (e.g. a doubled prefix)"
    )


class ModelOut(BaseModel):
    name: str = Field(description="what a template's model field names")
    description: str
    builtin: bool = Field(description="shipped with the relay (else from ROI_RELAY_MODELS_DIR)")


class ErrorOut(BaseModel):
    detail: str


class Violation(BaseModel):
    loc: list[str | int]
    field: str | None = Field(description="the body field that broke a rule, if any")
    msg: str = Field(description="the rule broken")
    type: str


class ValidationErrorOut(BaseModel):
    detail: list[Violation]


def _version_out(version: TemplateVersion, as_of: datetime) -> VersionOut:
    return VersionOut(
        **version.settings.model_dump(),
        version=version.version,
        saved_at=version.saved_at,
        effective_at=version.effective_at,
        effective_in_s=round(max((version.effective_at - as_of).total_seconds(), 0.0), 3),
    )


def template_out(state: TemplateState, warnings: Sequence[str] = ()) -> TemplateOut:
    # A template never in force shows its pending version at the top and no separate
    # "pending": the status says it is not in force yet.
    waiting = state.pending if state.in_force is not None else None
    return TemplateOut(
        **_version_out(state.shown, state.as_of).model_dump(),
        name=state.name,
        status=state.status,
        created_at=state.created_at,
        updated_at=state.updated_at,
        pending=_version_out(waiting, state.as_of) if waiting else None,
        warnings=list(warnings),
    )


def _prefix_warnings(spec: TemplateCreate) -> list[str]:
    if not spec.name.lower().startswith(NAME_PREFIX):
        return []
    return [
        f"the name is stored with the prefix {NAME_PREFIX!r} added: this template is "
        f"{spec.stored_name!r} (push with ?roirecognition={spec.stored_name}); to get "
        f"{spec.name!r}, create it as {spec.name[len(NAME_PREFIX) :]!r}"
    ]


def _model_violation(exc: UnknownModelError) -> RequestValidationError:
    # The same 422 as a field rule, so the console and clients handle one error shape.
    return RequestValidationError(
        [{"type": "model_rule", "loc": ("body", "model"), "msg": str(exc), "input": exc.name}]
    )


_NOT_UTF8 = {"error": "it is not UTF-8 text"}


class _RuleErrorRoute(APIRoute):
    """Turns request validation errors into 422s whose messages name the rule broken."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def handle(request: Request) -> Response:
            try:
                return await handler(request)
            except RequestValidationError as exc:
                errors = exc.errors()
            except StarletteHTTPException as exc:
                # FastAPI answers 400 for a body it cannot even decode (not UTF-8); these
                # endpoints raise no 400 themselves, so that is what a 400 here means.
                if exc.status_code != status.HTTP_400_BAD_REQUEST:
                    raise
                errors = [{"type": "json_invalid", "loc": ("body",), "ctx": _NOT_UTF8}]
            return SafeJSONResponse(
                status_code=status.HTTP_422_UNPROCESSABLE_CONTENT,
                content={"detail": explain(errors)},
            )

        return handle


def _not_found(name: str) -> HTTPException:
    hint = ""
    if not name.startswith(NAME_PREFIX):
        hint = f" (templates go by their stored name, e.g. {NAME_PREFIX + name!r})"
    return HTTPException(status_code=404, detail=f"no ROI template named {name!r}{hint}")


_ERRORS: dict[int | str, dict[str, Any]] = {
    **UNAUTHORIZED_RESPONSE,
    422: {"model": ValidationErrorOut, "description": "A field breaks a template rule"},
}
_NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorOut, "description": "No template by that name"}
}


def templates_router(
    store: TemplateStore, catalog: ModelCatalog, dependencies: Sequence[params.Depends] = ()
) -> APIRouter:
    """The /api/v1/roi-templates endpoints over ``store``; ``dependencies`` guard them all.

    ``catalog`` says which recognition models a template may name.
    """
    router = APIRouter(
        prefix=PREFIX,
        tags=["roi-templates"],
        dependencies=list(dependencies),
        route_class=_RuleErrorRoute,
        responses=_ERRORS,
    )

    # Sync endpoints: FastAPI runs them in its threadpool, off the event loop.
    @router.get("", summary="List ROI templates", response_model=list[TemplateOut])
    def list_templates() -> list[TemplateOut]:
        return [template_out(state) for state in store.list()]

    @router.post(
        "",
        summary="Create an ROI template (pending until the activation delay has passed)",
        status_code=201,
        response_model=TemplateOut,
        responses={409: {"model": ErrorOut, "description": "The name is taken"}},
    )
    def create_template(spec: TemplateCreate, response: Response) -> TemplateOut:
        try:
            spec = resolve_model(spec, catalog)
            state = store.create(spec)
        except UnknownModelError as exc:
            raise _model_violation(exc) from exc
        except TemplateExistsError as exc:
            raise HTTPException(status_code=409, detail=str(exc)) from exc
        response.headers["Location"] = f"{PREFIX}/{state.name}"
        return template_out(state, _prefix_warnings(spec))

    @router.get(
        "/{name}", summary="One ROI template", response_model=TemplateOut, responses=_NOT_FOUND
    )
    def get_template(name: str) -> TemplateOut:
        try:
            return template_out(store.get(name))
        except TemplateNotFoundError as exc:
            raise _not_found(name) from exc

    def edit_template(name: str, patch: PatchBase) -> TemplateOut:
        try:
            model = patch.changes().get("model")
            if model is not None:
                patch = patch.with_model(
                    resolve_model(TemplateSettings(model=model), catalog).model
                )
            return template_out(store.edit(name, patch))
        except UnknownModelError as exc:
            raise _model_violation(exc) from exc
        except TemplateNotFoundError as exc:
            raise _not_found(name) from exc

    # FastAPI takes the body's model from the annotation: the real one, made by create_model.
    edit_template.__annotations__["patch"] = TemplatePatch
    router.patch(
        "/{name}",
        summary="Edit an ROI template (takes effect after the activation delay)",
        response_model=TemplateOut,
        responses=_NOT_FOUND,
    )(edit_template)

    @router.delete(
        "/{name}",
        summary="Delete an ROI template (at once)",
        status_code=204,
        response_class=Response,
        responses=_NOT_FOUND,
    )
    def delete_template(name: str) -> Response:
        try:
            store.delete(name)
        except TemplateNotFoundError as exc:
            raise _not_found(name) from exc
        return Response(status_code=204)

    return router


def models_router(catalog: ModelCatalog, dependencies: Sequence[params.Depends] = ()) -> APIRouter:
    """GET /api/v1/models: the recognition models a template can name."""
    router = APIRouter(
        prefix="/api/v1/models",
        tags=["roi-templates"],
        dependencies=list(dependencies),
        responses={
            **UNAUTHORIZED_RESPONSE,
            503: {"model": ErrorOut, "description": "The operator's model folder is unusable"},
        },
    )

    @router.get(
        "", summary="Recognition models a template can select", response_model=list[ModelOut]
    )
    def list_models() -> list[ModelOut]:
        catalog.refresh()  # an operator may have dropped a model in since the last look
        try:
            manifests = catalog.manifests()
        except ModelError as exc:
            raise HTTPException(status_code=503, detail=f"model folder unusable: {exc}") from exc
        builtin = set(BUILTIN_MODELS)
        return [
            ModelOut(
                name=name,
                description=manifests[name.casefold()].description,
                builtin=name in builtin,
            )
            for name in model_choices(catalog)
        ]

    return router


def document_models(app: FastAPI, catalog: ModelCatalog) -> None:
    """List this relay's models as the ``model`` field's enum in the OpenAPI document.

    The document is built on its first request, so the catalogue is read then, not at import.
    """
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = build()
        names = model_choices(catalog)
        for component in schema.get("components", {}).get("schemas", {}).values():
            model = component.get("properties", {}).get("model")
            if model is not None and model.get("type") == "string":
                model["enum"] = names
                model.pop("pattern", None)
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


def mount_console(app: FastAPI) -> None:
    """Serve the console: GET /console (the page) and its assets under /console/."""
    index = CONSOLE_DIR / "index.html"

    @app.get("/console", include_in_schema=False)
    def console_page() -> FileResponse:
        return FileResponse(index, headers={"Cache-Control": "no-cache"})

    app.mount("/console", StaticFiles(directory=CONSOLE_DIR, html=True), name="console")
