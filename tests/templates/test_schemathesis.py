"""Property-based run over the templates API's OpenAPI document (schemathesis).

Positive and negative cases for every operation: no 500, no response outside the documented
status codes, content types and schemas, and bad data always refused with a 4xx.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode

from app.templates.rules import TemplateCreate
from app.templates.store import TemplateStore
from tests.templates.conftest import build_app

TOKEN = "schemathesis-token"
OPERATIONS = [
    ("GET", "/api/v1/roi-templates"),
    ("POST", "/api/v1/roi-templates"),
    ("GET", "/api/v1/roi-templates/{name}"),
    ("PATCH", "/api/v1/roi-templates/{name}"),
    ("DELETE", "/api/v1/roi-templates/{name}"),
    ("GET", "/api/v1/models"),
]
EXAMPLES = 150


SEEDS = ("a", "A", "0", "face1")


def _reset(store: TemplateStore) -> None:
    """Only the seed templates: short names that generated path parameters can hit, so that
    GET/PATCH/DELETE meet existing templates too and not only 404s."""
    for state in store.list():
        store.delete(state.name)
    for name in SEEDS:
        store.create(TemplateCreate(name=name))


@pytest.fixture
def store(tmp_path: Path) -> Iterator[TemplateStore]:
    opened = TemplateStore(f"sqlite:///{tmp_path / 'roi-relay.db'}", activation_delay=1)
    _reset(opened)
    yield opened
    opened.close()


@pytest.fixture
def api_schema(store: TemplateStore) -> schemathesis.BaseSchema:
    return schemathesis.openapi.from_asgi("/openapi.json", build_app(store, api_token=TOKEN))


def test_every_operation_is_covered(api_schema: schemathesis.BaseSchema) -> None:
    found = {
        (op.method.upper(), op.path)
        for result in api_schema.get_all_operations()
        for op in [result.ok()]
    }
    assert found == set(OPERATIONS)


@pytest.mark.slow
@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
@pytest.mark.parametrize(("method", "path"), OPERATIONS)
def test_operation_conforms_to_its_schema(
    api_schema: schemathesis.BaseSchema, method: str, path: str, mode: GenerationMode
) -> None:
    operation = api_schema[path][method]

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    def check(case: schemathesis.Case) -> None:
        case.call_and_validate(headers={"Authorization": f"Bearer {TOKEN}"})

    check()


@pytest.mark.slow
def test_stateful_sequences(api_schema: schemathesis.BaseSchema, store: TemplateStore) -> None:
    """Create -> get/patch/delete chains, following the links schemathesis infers."""
    statuses: Counter[tuple[str, int]] = Counter()

    class Templates(api_schema.as_state_machine()):  # type: ignore[misc]
        def setup(self) -> None:
            _reset(store)  # every sequence starts from the same database

        def get_call_kwargs(self, case: schemathesis.Case) -> dict[str, Any]:
            return {"headers": {"Authorization": f"Bearer {TOKEN}"}}

        def after_call(self, response: schemathesis.Response, case: schemathesis.Case) -> None:
            statuses[(case.method, response.status_code)] += 1

    Templates.run(
        settings=settings(
            max_examples=80,
            stateful_step_count=6,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
    )
    # The chains really reached existing templates, not only the doors.
    assert statuses[("POST", 201)] > 0
    assert statuses[("PATCH", 200)] > 0
    assert statuses[("DELETE", 204)] > 0
