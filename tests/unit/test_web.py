"""Every service's operational metrics: each request counted and timed by route and status."""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

import orjson
import pytest
from fastapi import APIRouter, Body, Depends, FastAPI, Header, HTTPException, Path, Request
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient
from pydantic import BaseModel, ConfigDict, Field

from shared.web import DirectRoute, create_app, errors, serve_first
from tests.support.metrics import parse

JSON = {"Content-Type": "application/json"}


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    yield


async def ready(app: FastAPI) -> bool:
    return True


def test_requests_are_counted_by_route_template_and_status() -> None:
    app = create_app("t", lifespan, ready)

    @app.post("/v1/things/{thing_id}", status_code=202)
    async def post_thing(thing_id: str) -> dict[str, str]:
        return {"id": thing_id}

    with TestClient(app) as client:
        assert client.post("/v1/things/a").status_code == 202
        assert client.post("/v1/things/b").status_code == 202
        assert client.get("/nowhere").status_code == 404
        big = client.post("/v1/things/c", content=b"x" * (3 << 20))
        assert big.status_code == 413
        got = parse(client.get("/metrics").text)
    route = 'method="POST",route="/v1/things/{thing_id}"'
    assert got[f'rapport_http_requests_total{{{route},status="202"}}'] == 2  # no ids in labels
    assert got['rapport_http_requests_total{method="GET",route="unmatched",status="404"}'] == 1
    # Refused before routing, on its declared length: counted, under no route.
    assert got['rapport_http_requests_total{method="POST",route="unmatched",status="413"}'] == 1
    assert got[f"rapport_http_request_duration_seconds_count{{{route}}}"] == 2


def test_a_router_served_first_keeps_its_prefix_responses_and_dependencies() -> None:
    """``serve_first`` puts a router's routes into the app's list as they are: they must
    be complete routes (prefix, router-wide responses and dependencies applied)."""
    seen: list[str] = []

    async def note(thing_id: str) -> None:
        seen.append(thing_id)

    router = APIRouter(prefix="/v1", responses=errors(404), dependencies=[Depends(note)])

    @router.get("/things/{thing_id}")
    async def get_thing(thing_id: str) -> dict[str, str]:
        return {"id": thing_id}

    app = create_app("t", lifespan, ready)
    serve_first(app, router)
    assert isinstance(app.router.routes[0], APIRoute)
    with TestClient(app) as client:
        assert client.get("/v1/things/a").json() == {"id": "a"}
        assert client.get("/healthz").status_code == 200  # the app's own routes stay
        documented = client.get("/openapi.json").json()["paths"]["/v1/things/{thing_id}"]
    assert seen == ["a"]
    assert "404" in documented["get"]["responses"]


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

    app = create_app("t", lifespan, ready)
    serve_first(app, router)
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
]


def answers(app: FastAPI, cases: list[tuple[str, dict[str, str], Any]]) -> list[Any]:
    with TestClient(app) as client:
        out = []
        for path, headers, body in cases:
            content = None if body is None else orjson.dumps(body)
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
                                                  202, 200]  # fmt: skip
    assert expected[0][1] == {"id": "abc:None:ann:2", "name": "a"}
    assert answers(direct, ALIKE) == expected
    assert direct.openapi() == fastapi.openapi()


def test_a_direct_route_names_what_is_wrong_with_a_body_that_is_not_json() -> None:
    app = things_app(DirectRoute)
    with TestClient(app) as client:
        post = functools.partial(client.post, "/v1/things/abc")
        broken = post(content=b'{"name": }', headers=OK).json()
        assert broken["error"] == "invalid_request"
        assert broken["errors"][0]["field"] == "body"
        assert "invalid JSON" in broken["errors"][0]["reason"]
        # The standard library would read NaN; the JSON parser that reads these does not.
        assert post(content=b'{"name": "a", "count": NaN}', headers=OK).status_code == 422
        text = post(content=orjson.dumps(GOOD), headers={**OK, "Content-Type": "text/plain"})
        assert text.status_code == 422
        assert text.json()["errors"] == [
            {"field": "body", "reason": "the body must be JSON (Content-Type: application/json)"}
        ]


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
