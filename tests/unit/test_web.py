"""Every service's operational metrics: each request counted and timed by route and status."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import APIRouter, Depends, FastAPI
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient

from shared.web import JsonRoute, create_app, errors, serve_first

JSON = {"Content-Type": "application/json"}


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    yield


async def ready(app: FastAPI) -> bool:
    return True


def samples(client: TestClient) -> dict[str, float]:
    out = {}
    for line in client.get("/metrics").text.splitlines():
        if line.startswith("rapport_http_request"):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


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
        got = samples(client)
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


def test_a_json_route_parses_with_orjson_and_answers_invalid_json_with_422() -> None:
    router = APIRouter(route_class=JsonRoute)

    @router.post("/things")
    async def post_things(body: dict[str, float]) -> dict[str, float]:
        return body

    app = create_app("t", lifespan, ready)
    serve_first(app, router)
    with TestClient(app) as client:
        assert client.post("/things", json={"a": 1.5}).json() == {"a": 1.5}
        broken = client.post("/things", content=b'{"a": }', headers=JSON)
        assert broken.status_code == 422 and broken.json()["error"] == "invalid_request"
        # The standard library would read NaN; orjson, which parses these bodies, does not.
        assert client.post("/things", content=b'{"a": NaN}', headers=JSON).status_code == 422
