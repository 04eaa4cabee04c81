"""Bearer-token check for the REST API (ROI_RELAY_API_TOKEN; empty = open)."""

from __future__ import annotations

import hmac
from collections.abc import Callable

from fastapi import Depends, HTTPException, params
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

UNAUTHORIZED_RESPONSE: dict[int | str, dict[str, object]] = {
    401: {
        "description": "Missing or wrong bearer token",
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "properties": {"detail": {"type": "string"}},
                    "required": ["detail"],
                }
            }
        },
    }
}


def _open() -> None:
    return None


def bearer_auth(api_token: str) -> params.Depends:
    """A dependency for ``APIRouter(dependencies=[...])``: 401 unless ``Bearer <api_token>``.

    With an empty token the API is open and the OpenAPI document declares no security scheme.
    """
    if not api_token:
        return Depends(_open)
    expected = api_token.encode()
    scheme = HTTPBearer(
        auto_error=False,
        scheme_name="apiToken",
        description="The value of ROI_RELAY_API_TOKEN",
    )

    def require_token(
        credentials: HTTPAuthorizationCredentials | None = Depends(scheme),
    ) -> None:
        if credentials is None:
            raise _unauthorized("missing bearer token: send 'Authorization: Bearer <API token>'")
        if not hmac.compare_digest(credentials.credentials.encode(), expected):
            raise _unauthorized("wrong bearer token")

    check: Callable[..., None] = require_token
    return Depends(check)


def _unauthorized(message: str) -> HTTPException:
    return HTTPException(status_code=401, detail=message, headers={"WWW-Authenticate": "Bearer"})
