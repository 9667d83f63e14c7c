"""What every Rapport HTTP service has: health, readiness, operational metrics, errors."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.telemetry import TelemetryConfig
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
)
from prometheus_client.exposition import choose_encoder
from prometheus_client.openmetrics.exposition import CONTENT_TYPE_LATEST as OPENMETRICS
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shared.infra.errors import InvalidInput, NotFound, RapportError, Unavailable

MAX_BODY_BYTES = 2 << 20
RETRY_AFTER_S = "5"


class FieldError(BaseModel):
    field: str  # dotted path into the body, or the parameter's name
    reason: str


class ErrorOut(BaseModel):
    """Every error answer: a code, a sentence, and for 422 the fields at fault."""

    error: str
    message: str
    errors: list[FieldError] | None = None


_MEANING = {
    401: "Missing or invalid API key.",
    403: "The API key lacks the scope this endpoint needs.",
    404: "What the path names does not exist.",
    413: "The request body is over 2 MiB.",
    422: "Invalid input: every field at fault is named.",
    429: "Past the key's rate limit, or too many invalid keys from this address: see Retry-After.",
    503: "A dependency is missing (error: broker_unavailable, not_ready or smtp_unavailable): "
    "nothing was done; retry after Retry-After.",
}


def errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` for error answers in the shared format."""
    return {code: {"model": ErrorOut, "description": _MEANING[code]} for code in codes}


# What a write endpoint can answer besides success.
WRITE_ERRORS = errors(401, 403, 413, 422, 429, 503)


class HttpMetrics:
    """Request rate and latency per route (operational, not culture, metrics)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.requests = Counter(
            "rapport_http_requests",
            "HTTP requests handled, by route and status code.",
            ["route", "method", "status"],
            registry=registry,
        )
        self.latency = Histogram(
            "rapport_http_request_duration_seconds",
            "HTTP request latency in seconds, by route.",
            ["route", "method"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
            registry=registry,
        )
        self.publish_failures = Counter(
            "rapport_publish_failures",
            "Requests answered 503 because the broker did not acknowledge.",
            registry=registry,
        )
        self._children: dict[tuple[str, str, int], tuple[Histogram, Counter]] = {}

    def observe(self, route: str, method: str, status: int, seconds: float) -> None:
        """Count and time one request. The labelled series are kept per route, method
        and status (a few dozen), not looked up again on each request."""
        key = (route, method, status)
        children = self._children.get(key)
        if children is None:
            children = (self.latency.labels(route, method),
                        self.requests.labels(route, method, str(status)))  # fmt: skip
            self._children[key] = children
        children[0].observe(seconds)
        children[1].inc()
        if status == 503 and method != "GET":
            self.publish_failures.inc()


class Measure:
    """Count and time every request by route (pure ASGI: no per-request task or copy)."""

    def __init__(self, app: ASGIApp, metrics: HttpMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            # The router records the matched route in the scope it was given.
            path = getattr(scope.get("route"), "path", "unmatched")
            self.metrics.observe(path, scope["method"], status, time.perf_counter() - start)


class BodyLimit:
    """Answer 413 to bodies over the limit, however they are sent.

    A declared length is checked before anything is read (the server never reads past
    it); a body without one (chunked) is read up to the limit first, then handed on.

    Not FastAPI's ``max_body_size`` (Starlette's ``RequestBodyLimitMiddleware``, outside
    every middleware an app adds): a route that does not read its body gets a plain-text
    413 there instead of the JSON error every other answer has, and ``Measure`` counts
    that request under the status the route meant to send.
    """

    def __init__(self, app: ASGIApp, limit: int = MAX_BODY_BYTES) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = next((v for k, v in scope["headers"] if k == b"content-length"), None)
        if declared is not None and declared.isdigit():
            if int(declared) > self.limit:
                await _too_large(self.limit)(scope, receive, send)
            else:
                await self.app(scope, receive, send)
            return
        chunks: list[bytes] = []
        seen = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away
            chunk = message.get("body", b"")
            seen += len(chunk)
            if seen > self.limit:
                await _too_large(self.limit)(scope, receive, send)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        whole: Message | None = {"type": "http.request", "body": b"".join(chunks)}

        async def replay() -> Message:
            nonlocal whole
            if whole is not None:
                message, whole = whole, None
                return message
            return await receive()

        await self.app(scope, replay, send)


def _too_large(limit: int) -> JSONResponse:
    return _error(413, "payload_too_large", f"request body exceeds {limit} bytes")


def _error(status: int, code: str, message: str, **extra: Any) -> JSONResponse:
    return JSONResponse({"error": code, "message": message, **extra}, status_code=status)


def _validation_error(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    errors = []
    for err in exc.errors():
        loc = [str(p) for p in err["loc"] if p != "body"]
        reason = err["msg"].removeprefix("Value error, ")
        if err["type"] == "value_error" and ": " in reason:
            # Model-level rules say "field: reason"; report them on that field.
            name, reason = reason.split(": ", 1)
            loc.append(name)
        if err["type"] == "extra_forbidden":
            reason = "unknown field"
        if not loc and isinstance(err.get("input"), bytes):  # a body FastAPI did not parse
            reason = "the body must be JSON (Content-Type: application/json)"
        if err["type"] == "json_invalid":  # FastAPI's: ("body", the character at fault)
            at = loc.pop() if loc else "?"
            reason = f"invalid JSON at character {at}: {err.get('ctx', {}).get('error', reason)}"
        field = ".".join(loc) or "body"
        errors.append({"field": field, "reason": reason})
    message = "; ".join(f"{e['field']}: {e['reason']}" for e in errors)
    return _error(422, "invalid_request", message, errors=errors)


HTTP_CODES = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
              405: "method_not_allowed", 429: "rate_limited"}  # fmt: skip


def _http_error(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    response = _error(exc.status_code, HTTP_CODES.get(exc.status_code, "error"), str(exc.detail))
    response.headers.update(exc.headers or {})
    return response


def _domain_error(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, RapportError)
    if isinstance(exc, InvalidInput):
        errors = [{"field": exc.field, "reason": exc.reason}]
        return _error(422, "invalid_request", str(exc), errors=errors)
    if isinstance(exc, NotFound):
        return _error(404, "not_found", str(exc))
    if isinstance(exc, Unavailable):
        response = _error(503, exc.code, exc.public())
        response.headers["Retry-After"] = RETRY_AFTER_S
        return response
    return _error(exc.status, "error", str(exc))


class Readiness(BaseModel):
    ready: bool


def create_app(
    title: str,
    lifespan: Callable[[FastAPI], AbstractAsyncContextManager[None]],
    ready: Callable[[FastAPI], Awaitable[bool]],
    registry: CollectorRegistry | None = None,
) -> FastAPI:
    """Build a service app with /healthz, /readyz, /metrics and the shared error format."""
    # FastAPI's own OpenTelemetry off: every request is counted and timed in /metrics
    # (Prometheus); on, it looks up the global providers on each request (a tenth of a
    # POST's time here) to find none.
    off = TelemetryConfig(tracing=False, metrics=False, logs=False, operation_spans=False)
    app = FastAPI(title=title, lifespan=lifespan, telemetry=off)
    app.state.registry = registry = registry or CollectorRegistry()
    app.state.http_metrics = metrics = HttpMetrics(registry)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(RapportError, _domain_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)

    app.add_middleware(BodyLimit)
    app.add_middleware(Measure, metrics=metrics)  # outermost: 413s are counted too

    @app.get("/healthz", tags=["ops"])
    async def healthz() -> dict[str, str]:
        """Say the process is alive."""
        return {"status": "ok"}

    @app.get(
        "/readyz",
        tags=["ops"],
        responses={
            200: {"model": Readiness},
            503: {"model": Readiness, "description": "Not ready"},
        },
    )
    async def readyz() -> JSONResponse:
        """Say whether the broker is reachable and the service can take work."""
        ok = await ready(app)
        if ok:
            return JSONResponse({"ready": True})
        return JSONResponse({"ready": False}, 503, {"Retry-After": RETRY_AFTER_S})

    @app.get(
        "/metrics",
        tags=["ops"],
        response_class=Response,
        responses={200: {"content": {CONTENT_TYPE_LATEST: {}, OPENMETRICS: {}},
                         "description": "Prometheus text, or OpenMetrics when asked"}},
    )  # fmt: skip
    async def metrics_endpoint(request: Request) -> Response:
        """Expose metrics in the Prometheus text format, or in OpenMetrics when the
        scraper's Accept header asks for it (as the aggregator's server does)."""
        encode, media_type = choose_encoder(request.headers.get("accept", ""))
        return Response(encode(registry), media_type=media_type)

    return app
