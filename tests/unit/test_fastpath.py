"""The fast path: a DirectRoute answers and is documented as FastAPI's own route class
would, on made-up routes of every kind it serves and on the real recognition writes, and
refuses what it does not serve."""

from __future__ import annotations

import codecs
import functools
from typing import Annotated, Any

import orjson
import pytest
from fastapi import APIRouter, Body, Depends, FastAPI, Header, HTTPException, Path, Request
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient
from pydantic import BaseModel, ConfigDict, Field

from shared.infra.fastpath import DirectRoute, serve_first
from shared.infra.web import errors
from tests.support.apps import JSON, bare_app


class Thing(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1)
    count: int
    tags: tuple[str, ...] = ()


class Made(BaseModel):
    id: str
    name: str


async def caller(request: Request) -> str:
    who = request.headers.get("x-caller")
    if who is None:
        raise HTTPException(401, "who is calling?")
    return who


ThingId = Annotated[str, Path(max_length=8, pattern=r"^[a-z]+$")]
Key = Annotated[str | None, Header(alias="Idempotency-Key", max_length=16)]


def things_app(route_class: type[APIRoute]) -> FastAPI:
    """The kinds of parameter the writer services' routes have, served by ``route_class``."""
    router = APIRouter(prefix="/v1", route_class=route_class, responses=errors(401, 422))

    @router.post("/things/{thing_id}", status_code=202, response_model=Made)
    async def post_thing(
        thing_id: ThingId, body: Thing, who: Annotated[str, Depends(caller)], key: Key = None
    ) -> Made:
        return Made(id=f"{thing_id}:{key}:{who}:{body.count}", name=body.name)

    @router.put("/names/{name}", response_model=list[Made])
    async def put_name(name: str, request: Request) -> list[Made]:
        return [Made(id=request.method, name=name)]

    app = bare_app()
    if route_class is DirectRoute:
        serve_first(app, router)
    else:
        app.include_router(router)
    return app


OK = {**JSON, "x-caller": "ann"}
GOOD = {"name": "a", "count": 2}
# (path, headers, body): answered alike by FastAPI's own handler and DirectRoute.
ALIKE = [
    ("/v1/things/abc", OK, GOOD),
    ("/v1/things/abc", {**OK, "Idempotency-Key": "k1"}, {**GOOD, "tags": ["x"]}),
    ("/v1/things/abc", JSON, GOOD),  # no caller: 401 before the body is looked at
    ("/v1/things/abc", JSON, {"name": ""}),
    ("/v1/things/abc", OK, {"name": "", "count": "many", "colour": "red"}),
    ("/v1/things/ABC", OK, GOOD),
    ("/v1/things/abcdefghij", {**OK, "Idempotency-Key": "k" * 17}, {"count": 1}),
    ("/v1/things/abc", OK, [1, 2]),
    ("/v1/things/abc", OK, None),  # no body at all
    ("/v1/things/abc", {**OK, "Content-Type": "application/merge-patch+json"}, GOOD),
    ("/v1/names/zed", OK, None),
    # JSON in another encoding, or behind a byte-order mark, as json.loads reads bytes.
    ("/v1/things/abc", OK, codecs.BOM_UTF8 + orjson.dumps(GOOD)),
    ("/v1/things/abc", OK, orjson.dumps(GOOD).decode().encode("utf-16")),
]


def answers(app: FastAPI, cases: list[tuple[str, dict[str, str], Any]]) -> list[Any]:
    with TestClient(app) as client:
        out = []
        for path, headers, body in cases:
            content = body if body is None or isinstance(body, bytes) else orjson.dumps(body)
            method = "PUT" if path.startswith("/v1/names") else "POST"
            got = client.request(method, path, headers=headers, content=content)
            out.append((got.status_code, got.json()))
        return out


def test_a_direct_route_answers_as_fastapi_would_and_is_documented_alike() -> None:
    """DirectRoute serves without FastAPI's dependency solving: the same answers (status,
    body, every field at fault) as FastAPI's own handler, and the same OpenAPI. Fails
    when an upgrade of FastAPI or pydantic makes them differ."""
    fastapi, direct = things_app(APIRoute), things_app(DirectRoute)
    expected = answers(fastapi, ALIKE)
    assert [status for status, _ in expected] == [202, 202, 401, 401, 422, 422, 422, 422, 422,
                                                  202, 200, 202, 202]  # fmt: skip
    assert expected[0][1] == {"id": "abc:None:ann:2", "name": "a"}
    assert answers(direct, ALIKE) == expected
    assert direct.openapi() == fastapi.openapi()


def test_a_body_that_is_not_json_is_named_alike_on_both_paths() -> None:
    expected = None
    for route_class in (APIRoute, DirectRoute):
        with TestClient(things_app(route_class)) as client:
            post = functools.partial(client.post, "/v1/things/abc")
            broken = post(content=b'{"name": }', headers=OK).json()
            text = post(content=orjson.dumps(GOOD), headers={**OK, "Content-Type": "text/plain"})
            got = (broken, text.status_code, text.json())
        expected = expected or got
        assert got == expected
    assert broken["error"] == "invalid_request"
    assert broken["errors"] == [
        {"field": "body", "reason": "invalid JSON at character 9: Expecting value"}
    ]
    assert text.status_code == 422
    assert text.json()["errors"] == [
        {"field": "body", "reason": "the body must be JSON (Content-Type: application/json)"}
    ]


def test_a_direct_route_refuses_nan_where_fastapi_would_read_it() -> None:
    """The one deliberate difference: orjson reads JSON, and NaN is not JSON."""
    with TestClient(things_app(DirectRoute)) as client:
        nan = client.post("/v1/things/abc", content=b'{"name": "a", "count": NaN}', headers=OK)
    assert nan.status_code == 422 and "invalid JSON" in nan.json()["errors"][0]["reason"]


def test_a_direct_route_refuses_what_it_cannot_serve_when_it_is_added() -> None:
    router = APIRouter(route_class=DirectRoute)

    async def paged(page: int = 1) -> list[int]:  # a query parameter
        return [page]

    with pytest.raises(TypeError, match="page"):
        router.get("/pages")(paged)

    async def embedded(body: Annotated[Thing, Body(embed=True)]) -> dict[str, int]:
        return {}

    with pytest.raises(TypeError, match="body"):  # {"body": {...}}, not a plain body
        router.post("/embedded")(embedded)

    async def plain() -> dict[str, int]:
        return {}

    with pytest.raises(TypeError, match="response_model_exclude_none"):
        router.get("/plain", response_model_exclude_none=True)(plain)


def test_a_direct_route_refuses_a_plain_def_and_options_it_does_not_serve() -> None:
    router = APIRouter(route_class=DirectRoute)

    def sync() -> dict[str, int]:  # FastAPI would run it in a thread; a direct route cannot
        return {}

    with pytest.raises(TypeError, match="async def"):
        router.get("/sync")(sync)

    async def plain() -> dict[str, int]:
        return {}

    for option in ({"max_body_size": 10}, {"strict_content_type": False},
                   {"response_model_by_alias": False}):  # fmt: skip
        with pytest.raises(TypeError, match=next(iter(option))):
            router.post("/plain", **option)(plain)  # type: ignore[arg-type]
    assert not router.routes
    router.post("/plain", tags=["t"], summary="s", deprecated=True, operation_id="p")(plain)
    assert len(router.routes) == 1  # what only OpenAPI shows is served


def test_overridden_dependencies_are_applied_as_fastapi_applies_them() -> None:
    async def nobody() -> str:
        return "test-caller"

    cases = [("/v1/things/abc", JSON, GOOD)]  # no x-caller: only the override lets it in
    results = []
    for route_class in (APIRoute, DirectRoute):
        app = things_app(route_class)
        app.dependency_overrides[caller] = nobody
        results.append(answers(app, cases))
    assert results[0] == results[1] == [(202, {"id": "abc:None:test-caller:2", "name": "a"})]


def test_serve_first_puts_complete_direct_routes_ahead_and_refuses_others() -> None:
    """Not include_router: a router's routes go into the app's list as they are, so they
    must be complete routes (prefix and router-wide responses applied)."""
    router = APIRouter(prefix="/v1", responses=errors(404), route_class=DirectRoute)

    @router.get("/things/{thing_id}")
    async def get_thing(thing_id: str) -> dict[str, str]:
        return {"id": thing_id}

    app = bare_app()
    serve_first(app, router)
    assert app.router.routes[0] is router.routes[0]
    with TestClient(app) as client:
        assert client.get("/v1/things/a").json() == {"id": "a"}
        assert client.get("/healthz").status_code == 200  # the app's own routes stay
        documented = client.get("/openapi.json").json()["paths"]["/v1/things/{thing_id}"]
    assert "404" in documented["get"]["responses"]
    plain = APIRouter()
    plain.get("/plain")(get_thing)
    with pytest.raises(TypeError, match="DirectRoute routes only"):
        serve_first(app, plain)
