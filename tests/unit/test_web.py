"""Every service's operational metrics: each request counted and timed by route and status."""

from __future__ import annotations

from fastapi.testclient import TestClient

from tests.support.apps import bare_app
from tests.support.metrics import parse


def test_requests_are_counted_by_route_template_and_status() -> None:
    app = bare_app()

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
