"""/api/v1/roi-templates over HTTP (in-process ASGI client), on a real SQLite file."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from app.templates.rules import FIELD_RULES, NAME_RULE
from app.templates.store import TemplateStore
from tests.templates.conftest import FakeClock, build_app
from tests.templates.rule_edges import CANONICAL_MODELS, edge_params

DELAY = 300.0
URL = "/api/v1/roi-templates"


@pytest.fixture
def store(sqlite_url: str, clock: FakeClock) -> Iterator[TemplateStore]:
    opened = TemplateStore(sqlite_url, activation_delay=DELAY, clock=clock)
    yield opened
    opened.close()


@pytest.fixture
def client(store: TemplateStore) -> Iterator[TestClient]:
    with TestClient(build_app(store)) as http:
        yield http


def _only_violation(response: Any) -> dict[str, Any]:
    assert response.status_code == 422, response.text
    detail = response.json()["detail"]
    assert len(detail) == 1, detail
    return detail[0]


@pytest.mark.parametrize(("field", "value", "ok"), edge_params())
def test_create_rule_edges(client: TestClient, field: str, value: Any, ok: bool) -> None:
    body: dict[str, Any] = {"name": "face1", field: value}
    response = client.post(URL, json=body)
    if ok:
        assert response.status_code == 201, response.text
        created = response.json()
        assert created["name"] == (f"roi{value}" if field == "name" else "roiface1")
        if field != "name":
            assert created[field] == (
                CANONICAL_MODELS.get(value, value) if field == "model" else value
            )
    else:
        violation = _only_violation(response)
        assert violation["field"] == field
        assert violation["loc"] == ["body", field]
        assert violation["msg"].startswith(FIELD_RULES[field])
        assert client.get(URL).json() == []  # nothing was stored


@pytest.mark.parametrize(
    ("field", "value", "ok"), [p for p in edge_params() if p.values[0] != "name"]
)
def test_patch_rule_edges(client: TestClient, field: str, value: Any, ok: bool) -> None:
    assert client.post(URL, json={"name": "face1"}).status_code == 201
    response = client.patch(f"{URL}/roiface1", json={field: value})
    if ok:
        assert response.status_code == 200, response.text
        shown = response.json()
        # Never in force yet, so the edit shows at the top (status pending).
        want = CANONICAL_MODELS.get(value, value) if field == "model" else value
        assert shown["status"] == "pending" and shown[field] == want
    else:
        violation = _only_violation(response)
        assert violation["field"] == field
        assert violation["msg"].startswith(FIELD_RULES[field])


def test_create_shows_the_stored_template(client: TestClient, clock: FakeClock) -> None:
    response = client.post(
        URL, json={"name": "face1", "description": "主播 face_1", "model": "LiveShows"}
    )
    assert response.status_code == 201
    assert response.headers["location"] == f"{URL}/roiface1"
    body = response.json()
    assert body == {
        "name": "roiface1",
        "status": "pending",
        "version": 1,
        "description": "主播 face_1",
        "model": "LiveShows",
        "delta_qp": -6,
        "max_regions": 6,
        "bitrate_kbps": None,
        "created_at": "2026-05-01T12:00:00Z",
        "updated_at": "2026-05-01T12:00:00Z",
        "saved_at": "2026-05-01T12:00:00Z",
        "effective_at": "2026-05-01T12:05:00Z",
        "effective_in_s": 300.0,
        "pending": None,
        "warnings": [],
    }
    clock.advance(120)
    assert client.get(f"{URL}/roiface1").json()["effective_in_s"] == 180.0
    clock.advance(180)
    shown = client.get(f"{URL}/roiface1").json()
    assert (shown["status"], shown["effective_in_s"], shown["pending"]) == ("active", 0.0, None)


def test_edit_shows_the_version_in_force_and_the_pending_one(
    client: TestClient, clock: FakeClock
) -> None:
    client.post(URL, json={"name": "game1", "model": "HonorOfKings", "bitrate_kbps": 3000})
    clock.advance(DELAY + 10)
    response = client.patch(f"{URL}/roigame1", json={"delta_qp": -10, "bitrate_kbps": None})
    assert response.status_code == 200
    shown = response.json()
    assert shown["status"] == "active"
    assert (shown["version"], shown["delta_qp"], shown["bitrate_kbps"]) == (1, -6, 3000)
    pending = shown["pending"]
    assert (pending["version"], pending["delta_qp"], pending["bitrate_kbps"]) == (2, -10, None)
    assert pending["model"] == "HonorOfKings"
    assert pending["effective_in_s"] == DELAY
    assert shown["updated_at"] == pending["saved_at"]

    listed = client.get(URL).json()
    assert [t["name"] for t in listed] == ["roigame1"] and listed[0]["pending"] == pending
    clock.advance(DELAY)
    after = client.get(f"{URL}/roigame1").json()
    assert (after["version"], after["delta_qp"], after["pending"]) == (2, -10, None)


def test_delete_is_immediate(client: TestClient) -> None:
    client.post(URL, json={"name": "face1"})
    response = client.delete(f"{URL}/roiface1")
    assert response.status_code == 204 and response.content == b""
    assert client.get(f"{URL}/roiface1").status_code == 404
    assert client.delete(f"{URL}/roiface1").status_code == 404
    assert client.get(URL).json() == []


def test_taken_name_is_409(client: TestClient) -> None:
    assert client.post(URL, json={"name": "face1"}).status_code == 201
    response = client.post(URL, json={"name": "face1", "model": "NBA2K"})
    assert response.status_code == 409
    assert response.json() == {"detail": "an ROI template named 'roiface1' already exists"}


@pytest.mark.parametrize("method", ["get", "patch", "delete"])
def test_unknown_name_is_404_with_a_hint(client: TestClient, method: str) -> None:
    kwargs: dict[str, Any] = {"json": {"delta_qp": 1}} if method == "patch" else {}
    response = client.request(method, f"{URL}/face1", **kwargs)
    assert response.status_code == 404
    assert response.json()["detail"] == (
        "no ROI template named 'face1' (templates go by their stored name, e.g. 'roiface1')"
    )
    assert client.request(method, f"{URL}/roiface1", **kwargs).status_code == 404


def test_bad_bodies_are_422_naming_the_problem(client: TestClient) -> None:
    missing = _only_violation(client.post(URL, json={"model": "General"}))
    assert missing == {
        "loc": ["body", "name"],
        "field": "name",
        "msg": f"name is required: {NAME_RULE}",
        "type": "missing",
    }
    extra = _only_violation(client.post(URL, json={"name": "a", "colour": "red"}))
    assert extra["field"] == "colour" and "is not a template field" in extra["msg"]
    rename = _only_violation(client.patch(f"{URL}/roia", json={"name": "b"}))
    assert rename["msg"].startswith("name cannot be changed")
    broken = _only_violation(
        client.post(URL, content=b'{"name": ', headers={"content-type": "application/json"})
    )
    assert broken["msg"].startswith("the body is not valid JSON")
    for not_an_object in (b"[]", b'"face1"', b"null", b"17"):
        violation = _only_violation(
            client.post(URL, content=not_an_object, headers={"content-type": "application/json"})
        )
        assert violation["msg"] == "the body must be a JSON object of template fields"
    assert _only_violation(client.post(URL))["field"] is None


def test_several_rules_broken_are_all_reported(client: TestClient) -> None:
    response = client.post(
        URL, json={"name": "face_1", "description": "a/b", "model": "Live Shows", "delta_qp": 99}
    )
    assert response.status_code == 422
    detail = response.json()["detail"]
    assert {d["field"]: d["msg"] for d in detail} == {
        "name": FIELD_RULES["name"],
        "description": FIELD_RULES["description"],
        "model": FIELD_RULES["model"],
        "delta_qp": FIELD_RULES["delta_qp"],
    }


def test_unknown_model_is_422_naming_the_known_ones(client: TestClient) -> None:
    violation = _only_violation(client.post(URL, json={"name": "face1", "model": "Faces"}))
    assert violation["field"] == "model" and violation["msg"].startswith(FIELD_RULES["model"])
    assert "'Faces' is not one" in violation["msg"] and "LiveShows" in violation["msg"]
    assert client.get(URL).json() == []


def test_a_prefixed_name_gets_a_warning(client: TestClient) -> None:
    created = client.post(URL, json={"name": "roiface1"}).json()
    assert created["name"] == "roiroiface1"
    [warning] = created["warnings"]
    assert "roiroiface1" in warning and "create it as 'face1'" in warning
    assert client.post(URL, json={"name": "face2"}).json()["warnings"] == []


def test_models_lists_the_catalogue(client: TestClient) -> None:
    models = client.get("/api/v1/models").json()
    assert [m["name"] for m in models if m["builtin"]] == [
        "General",
        "HonorOfKings",
        "NBA2K",
        "LiveShows",
    ]
    assert all(m["description"] for m in models)


def test_bearer_token(store: TemplateStore) -> None:
    with TestClient(build_app(store, api_token="s3cret")) as http:
        missing = http.get(URL)
        assert missing.status_code == 401
        assert missing.headers["www-authenticate"] == "Bearer"
        assert "missing bearer token" in missing.json()["detail"]
        wrong = http.post(URL, json={"name": "a"}, headers={"Authorization": "Bearer nope"})
        assert (wrong.status_code, wrong.json()) == (401, {"detail": "wrong bearer token"})
        basic = http.get(URL, headers={"Authorization": "Basic czNjcmV0"})
        assert basic.status_code == 401
        # The token is checked before the body: no rule messages leak to strangers.
        assert http.post(URL, json={"name": "?"}).status_code == 401
        good = {"Authorization": "Bearer s3cret"}
        assert http.post(URL, json={"name": "a"}, headers=good).status_code == 201
        assert http.get(URL, headers=good).status_code == 200
        assert http.delete(f"{URL}/roia", headers=good).status_code == 204
        schema = http.get("/openapi.json").json()
        assert schema["components"]["securitySchemes"]["apiToken"]["scheme"] == "bearer"


def test_empty_token_leaves_the_api_open(client: TestClient) -> None:
    assert client.get(URL, headers={"Authorization": "Bearer anything"}).status_code == 200
    assert "securitySchemes" not in client.get("/openapi.json").json().get("components", {})


def test_openapi_documents_rules_and_errors(client: TestClient) -> None:
    schema = client.get("/openapi.json").json()
    post = schema["paths"][URL]["post"]
    assert set(post["responses"]) == {"201", "401", "409", "422"}
    create = schema["components"]["schemas"]["TemplateCreate"]
    assert create["properties"]["name"]["pattern"] == "^[A-Za-z0-9]{1,10}$"
    assert create["properties"]["delta_qp"]["minimum"] == -51
    assert create["additionalProperties"] is False
    assert set(schema["paths"][f"{URL}/{{name}}"]) == {"get", "patch", "delete"}


def test_console_is_served(client: TestClient) -> None:
    page = client.get("/console")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert "ROI templates" in page.text
    assert client.get("/console/").text == page.text
    script = client.get("/console/console.js")
    assert script.status_code == 200 and "roi-templates" in script.text
    assert client.get("/console/console.css").status_code == 200
    assert client.get("/console/nope.js").status_code == 404


@pytest.mark.parametrize("path_name", ["%00", "roi%00", "%F0%9F%98%80", "x" * 3000, "roi.."])
def test_odd_path_names_are_404(client: TestClient, path_name: str) -> None:
    for method in ("get", "delete"):
        assert client.request(method, f"{URL}/{path_name}").status_code == 404
    assert client.patch(f"{URL}/{path_name}", json={}).status_code == 404
