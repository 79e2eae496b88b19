"""The OpenAPI document: valid OpenAPI 3.1, and in step with the routes the app registers."""

from __future__ import annotations

import pytest
from openapi_spec_validator import validate
from openapi_spec_validator.validation.exceptions import OpenAPIValidationError
from redis.asyncio import Redis

from api import openapi
from api.app import create_app
from api.settings import ApiSettings

# aiohttp answers HEAD for every GET route by itself; OpenAPI has no need to repeat them.
UNDOCUMENTED_METHODS = {"HEAD"}


async def _routes() -> set[tuple[str, str]]:
    redis = Redis()  # never connected: the routes are all we look at
    try:
        app = create_app(ApiSettings(), redis=redis)
        return {
            (route.method.lower(), route.resource.canonical)
            for route in app.router.routes()
            if route.resource is not None and route.method not in UNDOCUMENTED_METHODS
        }
    finally:
        await redis.aclose()


def _documented() -> set[tuple[str, str]]:
    return {(method, path) for path, item in openapi.document()["paths"].items() for method in item}


def test_the_document_is_valid_openapi_3_1() -> None:
    document = openapi.document()
    assert document["openapi"].startswith("3.1.")
    validate(document)


def test_the_validator_refuses_a_broken_document() -> None:
    broken = openapi.document()
    broken["paths"]["/api/data/views/now"]["get"]["parameters"][0]["in"] = "body"  # Swagger 2
    with pytest.raises(OpenAPIValidationError):
        validate(broken)
    validate(openapi.document())  # the next document is whole: the edit was to a copy


async def test_every_api_route_is_documented_and_nothing_else() -> None:
    routes = await _routes()
    documented = _documented()
    api_routes = {(m, p) for m, p in routes if p.startswith("/api/")}
    assert api_routes, "no /api routes found: the route walk is broken"
    assert api_routes - documented == set(), "routes under /api missing from the document"
    assert documented - routes == set(), "documented operations the app does not serve"


def test_every_api_operation_declares_its_refusals() -> None:
    for path, item in openapi.document()["paths"].items():
        if not path.startswith("/api/"):
            continue
        for method, operation in item.items():
            responses = operation["responses"]
            assert "429" in responses, (method, path)
            for status in ("429", "503"):
                if status in responses:
                    assert "Retry-After" in responses[status]["headers"], (method, path, status)
            if method == "get":
                assert {"400", "401", "403", "503"} <= set(responses), path
