"""JSON responses that can always be written, and the app-wide error handlers that use them.

Python's ``json`` takes NaN, Infinity and lone surrogates (``"\\ud800"`` is valid JSON text and
decodes to one), but JSON has no non-finite numbers and UTF-8 has no surrogates: Starlette's
``JSONResponse`` then raises while rendering, and a request that merely *echoes* such a value
(a validation error quoting its input) becomes a 500. Here a non-finite number is written as
``null`` and a lone surrogate as its ``\\udXXX`` escape text.
"""

from __future__ import annotations

import json
import math
from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response


def json_safe(value: Any) -> Any:
    """``value`` with non-finite floats as None and strings made UTF-8-encodable."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return value.encode("utf-8", "backslashreplace").decode("utf-8")
        return value
    if isinstance(value, dict):
        return {json_safe(k) if isinstance(k, str) else k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return value


class SafeJSONResponse(JSONResponse):
    """A ``JSONResponse`` that never fails to render (see the module docstring)."""

    def render(self, content: Any) -> bytes:
        try:
            return super().render(content)
        except (ValueError, UnicodeEncodeError):
            return json.dumps(
                json_safe(content), ensure_ascii=False, allow_nan=False, separators=(",", ":")
            ).encode("utf-8")


async def _validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    return SafeJSONResponse(status_code=422, content={"detail": jsonable_encoder(exc.errors())})


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    headers = getattr(exc, "headers", None)
    if exc.status_code in (204, 304):
        return Response(status_code=exc.status_code, headers=headers)
    return SafeJSONResponse(
        status_code=exc.status_code, content={"detail": exc.detail}, headers=headers
    )


def install_error_handlers(app: FastAPI) -> None:
    """FastAPI's default handlers, rendering with :class:`SafeJSONResponse`."""
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
